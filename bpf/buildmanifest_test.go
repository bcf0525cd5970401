package bpf

import (
	"crypto/sha256"
	"testing"
)

func TestBuildObjects(t *testing.T) {
	objs, err := BuildObjects()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]byte{"shield": _ShieldBytes, "sentinel": _SentinelBytes, "fortress": _FortressBytes}
	if len(objs) != len(want) {
		t.Fatalf("%d objects, want %d", len(objs), len(want))
	}
	for _, o := range objs {
		if o.SHA256 != sha256.Sum256(want[o.Name]) {
			t.Errorf("%s: digest is not the embedded object's", o.Name)
		}
		if len(o.Programs) == 0 {
			t.Errorf("%s: no programs", o.Name)
		}
	}
}
