package verifier_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
)

// TestPolicyReload: an invalid edit leaves the loaded policy in force (and
// says why); a valid edit takes effect without a restart.
func TestPolicyReload(t *testing.T) {
	e := newEnv(t, "rhel8-uefi")
	if e == nil {
		return
	}
	a := e.agent("edge-p", e.openTPM(e.sw))
	if res := a.Enroll(); !res.GetEnrolled() {
		t.Fatal(res.GetMessage())
	}
	a.MeasureBinary()
	a.Challenge()
	first := a.Pulse(nil)
	wantVerdict(t, first, trusted, pulsev1.Reason_REASON_OK)
	digest := first.GetPolicyDigest()
	if digest == "" {
		t.Fatal("verdict without policy digest")
	}
	path := filepath.Join(e.dir, "policy.hcl")
	write := func(src string) {
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}

	// A broken edit (typo in a key): the old policy stays in force.
	write(strings.Replace(testPolicy, "secure_boot {}", "secure_bot {}", 1))
	w := e.daemon.Watcher
	waitFor(t, "the bad edit to be rejected", func() bool { return w.Stats().Rejected > 0 })
	if !w.Stats().Failing || !strings.Contains(w.Stats().LastError, "secure_bot") {
		t.Fatalf("watcher stats %+v", w.Stats())
	}
	resp := a.Pulse(nil)
	wantVerdict(t, resp, trusted, pulsev1.Reason_REASON_OK)
	if resp.GetPolicyDigest() != digest {
		t.Fatal("a rejected edit changed the policy in force")
	}

	// A valid edit that denies this agent takes effect without a restart.
	write(strings.Replace(testPolicy, "secure_boot {}", "secure_boot {}\n    pcr \"0\" {\n      values = [\""+strings.Repeat("00", 32)+"\"]\n    }", 1))
	waitFor(t, "the new policy", func() bool { return w.Current().Digest() != digest })
	resp = a.Pulse(nil)
	wantVerdict(t, resp, untrusted, pulsev1.Reason_REASON_POLICY_DENIED)
	if resp.GetPolicyDigest() == digest || w.Stats().Failing {
		t.Fatalf("new policy not in force: digest %s stats %+v", resp.GetPolicyDigest(), w.Stats())
	}
}
