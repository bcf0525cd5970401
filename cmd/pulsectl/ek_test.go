package main

import (
	"errors"
	"strings"
	"testing"
)

var (
	dA = strings.Repeat("a", 64)
	dB = strings.Repeat("b", 64)
	dC = strings.Repeat("c", 64)
)

func TestApproveDigests(t *testing.T) {
	for _, tc := range []struct {
		name      string
		src       string
		digests   []string
		added     int
		total     int
		wantInOut []string
		err       bool
	}{
		{"no enrollment block", "listen = \"x\"\n", []string{dB, dA}, 2, 2, []string{"enrollment {", dA, dB}, false},
		{"merge and keep comments", "# fleet verifier\nenrollment {\n  # vendor roots\n  ek_roots = [\"r.pem\"]\n  ek_allow_sha256 = [\"" + dC + "\"]\n}\n",
			[]string{dA, dC, strings.ToUpper(dA)}, 1, 2, []string{"# fleet verifier", "# vendor roots", "ek_roots", dA, dC}, false},
		{"nothing new", "enrollment {\n  ek_allow_sha256 = [\"" + dA + "\"]\n}\n", []string{dA}, 0, 1, []string{dA}, false},
		{"bad existing digest", "enrollment {\n  ek_allow_sha256 = [\"xyz\"]\n}\n", []string{dA}, 0, 0, nil, true},
		{"not hcl", "enrollment {", []string{dA}, 0, 0, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, added, total, err := approveDigests([]byte(tc.src), "verifier.hcl", tc.digests)
			if (err != nil) != tc.err {
				t.Fatalf("err = %v", err)
			}
			if err != nil {
				return
			}
			if added != tc.added || total != tc.total {
				t.Fatalf("added %d total %d, want %d %d\n%s", added, total, tc.added, tc.total, out)
			}
			for _, w := range tc.wantInOut {
				if !strings.Contains(string(out), w) {
					t.Fatalf("%q missing from\n%s", w, out)
				}
			}
			got, err := existingDigests(out, "out.hcl")
			if err != nil || len(got) != tc.total {
				t.Fatalf("rewritten list %v (%v)", got, err)
			}
			for i := 1; i < len(got); i++ {
				if got[i-1] >= got[i] {
					t.Fatalf("list not sorted and unique: %v", got)
				}
			}
		})
	}
}

func TestReadDigests(t *testing.T) {
	good := "# EK digests from the manufacturing line\n\n" + dA + "  edge-0001\nek_sha256=" + dB + "\n" + strings.ToUpper(dC) + "\n"
	got, err := readDigests(strings.NewReader(good), "list")
	if err != nil || len(got) != 3 || got[0] != dA || got[1] != dB || got[2] != dC {
		t.Fatalf("%v %v", got, err)
	}
	for name, bad := range map[string]string{
		"short":   dA[:63] + "\n",
		"not hex": strings.Repeat("g", 64) + "\n",
		"long":    dA + "00\n",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := readDigests(strings.NewReader(dA+"\n"+bad), "list")
			if !errors.Is(err, errBadDigest) || !strings.Contains(err.Error(), "list:2") {
				t.Fatalf("err = %v, want errBadDigest naming line 2", err)
			}
		})
	}
}

func FuzzReadDigests(f *testing.F) {
	f.Add(dA + "\n# c\n" + dB + " x\n")
	f.Add("ek_sha256=" + dC)
	f.Add("\x00\xff\n\n")
	f.Fuzz(func(t *testing.T, s string) {
		got, err := readDigests(strings.NewReader(s), "fuzz")
		if err != nil {
			return
		}
		for _, d := range got {
			if checkDigest(d) != nil {
				t.Fatalf("accepted %q", d)
			}
		}
	})
}
