package verifier

import (
	"strings"
	"testing"
)

func TestReportedVersion(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"v0.4.0+b6d9127a0c1e", "v0.4.0+b6d9127a0c1e"},
		{"", ""},
		{"v1 \x1b[31mred", "v1??[31mred"},
		{"v1\u00e9<script>", "v1?<script>"},
		{strings.Repeat("a", 200), strings.Repeat("a", MaxAgentVersionLen)},
	} {
		if got := ReportedVersion(tc.in); got != tc.want {
			t.Errorf("ReportedVersion(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func FuzzReportedVersion(f *testing.F) {
	f.Add("v0.4.0")
	f.Add("\xff\xfe\x00 x")
	f.Fuzz(func(t *testing.T, in string) {
		out := ReportedVersion(in)
		if len(out) > MaxAgentVersionLen {
			t.Fatalf("%d bytes", len(out))
		}
		for i := 0; i < len(out); i++ {
			if out[i] <= ' ' || out[i] >= 0x7f {
				t.Fatalf("byte %#x kept", out[i])
			}
		}
	})
}
