package config_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/pulse-attest/pulse/internal/hclconf"
	"github.com/pulse-attest/pulse/verifier/config"
)

func TestParseSize(t *testing.T) {
	good := []struct {
		in   string
		want int64
	}{
		{"0", 0},
		{"1073741824", 1 << 30},
		{"512B", 512},
		{"64KiB", 64 << 10},
		{"512MiB", 512 << 20},
		{"2GiB", 2 << 30},
		{"1TiB", 1 << 40},
		{"0002GiB", 2 << 30},
		{"8388607TiB", 8388607 << 40},
	}
	for _, c := range good {
		got, err := config.ParseSize(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
	bad := []struct{ in, hint string }{
		{"", "an integer"},
		{"GiB", "an integer"},
		{"-1GiB", "an integer"},
		{"+2GiB", "an integer"},
		{"1.5GiB", "an integer"},
		{" 2GiB", "an integer"},
		{"2 GiB", "an integer"},
		{"2gib", "an integer"},
		{"2GB", "binary units only"},
		{"512MB", "binary units only"},
		{"2G", "binary units only"},
		{"1kB", "binary units only"},
		{"two GiB", "an integer"},
		{"0x10MiB", "an integer"},
		{"8388608TiB", "too large"},
		{"9223372036854775808", "too large"},
		{"99999999999999999999B", "too large"},
	}
	for _, c := range bad {
		_, err := config.ParseSize(c.in)
		if !errors.Is(err, config.ErrBadSize) || !strings.Contains(err.Error(), c.hint) {
			t.Errorf("ParseSize(%q) = %v; want ErrBadSize saying %q", c.in, err, c.hint)
		}
	}
}

// TestMemoryLimitSetting: memory_limit is unset by default, read in the
// binary units GOMEMLIMIT takes, and a malformed or out-of-range value is
// an error at its line.
func TestMemoryLimitSetting(t *testing.T) {
	c, err := load(t, good)
	if err != nil {
		t.Fatal(err)
	}
	if c.MemoryLimit != 0 {
		t.Fatalf("memory_limit unset gives %d, want 0 (no limit set by the configuration)", c.MemoryLimit)
	}
	cases := []struct {
		value string
		want  int64
		err   string // "" when valid
	}{
		{`"2GiB"`, 2 << 30, ""},
		{`"512MiB"`, 512 << 20, ""},
		{`"64MiB"`, config.MinMemoryLimit, ""},
		{`"4TiB"`, config.MaxMemoryLimit, ""},
		{`"1073741824"`, 1 << 30, ""},
		{`1073741824`, 1 << 30, ""}, // a number converts to its decimal string
		{`"2GB"`, 0, ":16: invalid size"},
		{`"lots"`, 0, ":16: invalid size"},
		{`"1.5GiB"`, 0, ":16: invalid size"},
		{`"-1"`, 0, ":16: invalid size"},
		{`"0"`, 0, ":16: size out of range"},
		{`"63MiB"`, 0, ":16: size out of range"},
		{`"5TiB"`, 0, ":16: size out of range"},
		{`true`, 0, ":16: "}, // converted to "true": not a size
		{`["2GiB"]`, 0, ":16: Unsuitable value type"},
	}
	for _, tc := range cases {
		t.Run(tc.value, func(t *testing.T) {
			c, err := load(t, good+"memory_limit = "+tc.value+"\n")
			if tc.err == "" {
				if err != nil || c.MemoryLimit != tc.want {
					t.Fatalf("memory_limit = %s: %v, %v; want %d", tc.value, c, err, tc.want)
				}
				return
			}
			var he *hclconf.Error
			// The value starts at column 16 of the line appended to good.
			want := fmt.Sprintf("verifier.hcl:%d%s", strings.Count(good, "\n")+1, tc.err)
			if !errors.As(err, &he) || !strings.Contains(err.Error(), want) {
				t.Fatalf("memory_limit = %s: %v; want an error at %q", tc.value, err, want)
			}
		})
	}
}

// FuzzParseSize: any string gives a non-negative size or ErrBadSize, and a
// size written back by FormatSize reads as itself.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"2GiB", "512MiB", "1073741824", "2GB", "1.5GiB", "", "8388608TiB", "0B"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := config.ParseSize(s)
		if err != nil {
			if !errors.Is(err, config.ErrBadSize) {
				t.Fatalf("ParseSize(%q): %v is not ErrBadSize", s, err)
			}
			return
		}
		if n < 0 {
			t.Fatalf("ParseSize(%q) = %d", s, n)
		}
		back, err := config.ParseSize(config.FormatSize(n))
		if err != nil || back != n {
			t.Fatalf("FormatSize(%d) = %q reads as %d, %v", n, config.FormatSize(n), back, err)
		}
	})
}
