package policy

import (
	"errors"
	"strings"
	"testing"
)

func TestPolicyGlob(t *testing.T) {
	cases := []struct {
		pattern, name string
		want          bool
	}{
		{"*", "", true},
		{"*", "anything/at all", true},
		{"gw-*", "gw-01", true},
		{"gw-*", "gw-", true},
		{"gw-*", "db-01", false},
		{"*-eu", "edge-eu", true},
		{"*-eu", "edge-us", false},
		{"edge-*-[0-9]", "edge-eu-7", true},
		{"edge-*-[0-9]", "edge-eu-x", false},
		{"gw-??", "gw-01", true},
		{"gw-??", "gw-001", false},
		{"gw-[!0-9]", "gw-x", true},
		{"gw-[!0-9]", "gw-5", false},
		{"gw-[^0-9]", "gw-5", false},
		{`gw-\*`, "gw-*", true},
		{`gw-\*`, "gw-1", false},
		{"a*b*c", "aXXbYYc", true},
		{"a*b*c", "aXXbYY", false},
		{"*a*a*a*a*a*a*b", strings.Repeat("a", 60), false},
		{"gw-é?", "gw-éü", true},
		{"[a-c]x", "bx", true},
		{"[]]", "]", false}, // invalid: empty class
		{"gw-[", "gw-[", false},
	}
	for _, c := range cases {
		if got := Glob(c.pattern, c.name); got != c.want {
			t.Errorf("Glob(%q, %q) = %v, want %v", c.pattern, c.name, got, c.want)
		}
	}
}

func TestPolicyValidateGlob(t *testing.T) {
	for _, bad := range []string{"", "[abc", "x[", `x\`, "[z-a]", "[]", `[a\`} {
		var ge *GlobError
		if err := ValidateGlob(bad); !errors.As(err, &ge) {
			t.Errorf("ValidateGlob(%q) = %v, want *GlobError", bad, err)
		}
	}
	for _, good := range []string{"*", "gw-[0-9][0-9]", `\[lit\]`, "[!a]", "a-b", "[-a]"} {
		if err := ValidateGlob(good); err != nil {
			t.Errorf("ValidateGlob(%q) = %v", good, err)
		}
	}
}

func TestPolicyGlobCovers(t *testing.T) {
	cases := []struct {
		a, b string
		want bool
	}{
		{"*", "gw-[0-9]", true},
		{"**", "x", true},
		{"gw-*", "gw-canary-*", true},
		{"gw-*", "gw-07", true},
		{"gw-*", "db-*", false},
		{"gw-canary-*", "gw-*", false},
		{"*-eu", "edge-*-eu", true},
		{"*-eu", "edge-eu-*", false},
		{"gw-0[1-3]", "gw-02", true},
		{"gw-0[1-3]", "gw-0[1-4]", false},
		{"x", "x", true},
		{"x", "y", false},
	}
	for _, c := range cases {
		if got := globCovers(c.a, c.b); got != c.want {
			t.Errorf("globCovers(%q, %q) = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}
