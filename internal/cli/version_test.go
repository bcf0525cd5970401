package cli

import (
	"bytes"
	"strings"
	"testing"
)

func TestRegisterVersion(t *testing.T) {
	r := NewRegistry("pulse-x")
	r.RegisterVersion(func(p string) string { return p + " v1.2.3 (revision abc)" })
	for _, args := range [][]string{{"--version"}, {"version"}} {
		var out, errOut bytes.Buffer
		if code := r.Main(args, &out, &errOut); code != 0 || out.String() != "pulse-x v1.2.3 (revision abc)\n" || errOut.Len() != 0 {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, code, out.String(), errOut.String())
		}
	}
	var out, errOut bytes.Buffer
	if code := r.Main([]string{"version", "extra"}, &out, &errOut); code != 2 || out.Len() != 0 {
		t.Errorf("version with an argument: exit %d, stdout %q", code, out.String())
	}
	out.Reset()
	r.Main([]string{"help"}, &out, &errOut)
	if !strings.Contains(out.String(), "  version ") || strings.Contains(out.String(), "--version") {
		t.Errorf("usage lists version but not --version:\n%s", out.String())
	}
}
