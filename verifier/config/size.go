package config

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Bounds of memory_limit.
const (
	MinMemoryLimit = 64 << 20 // below this the collector would run almost continuously
	MaxMemoryLimit = 4 << 40
)

// ErrBadSize is a size that is not an integer with an optional binary unit.
var ErrBadSize = errors.New("not a size")

// sizeUnits are the units GOMEMLIMIT accepts, largest first.
var sizeUnits = []struct {
	suffix string
	shift  uint
}{{"TiB", 40}, {"GiB", 30}, {"MiB", 20}, {"KiB", 10}, {"B", 0}}

// ParseSize reads a byte count written as GOMEMLIMIT writes it: a
// non-negative integer with an optional unit B, KiB, MiB, GiB or TiB
// ("512MiB", "2GiB", "1073741824"). Decimal units (MB, GB) and fractions
// are refused rather than guessed at.
func ParseSize(s string) (int64, error) {
	num, shift := s, uint(0)
	for _, u := range sizeUnits {
		if strings.HasSuffix(s, u.suffix) {
			num, shift = strings.TrimSuffix(s, u.suffix), u.shift
			break
		}
	}
	if num == "" || strings.TrimLeft(num, "0123456789") != "" {
		hint := "an integer with an optional unit B, KiB, MiB, GiB or TiB, such as \"512MiB\" or \"2GiB\""
		for _, d := range []string{"KB", "MB", "GB", "TB", "kB", "K", "M", "G", "T"} {
			if strings.HasSuffix(s, d) {
				hint = "binary units only (KiB, MiB, GiB, TiB), as GOMEMLIMIT takes them"
			}
		}
		return 0, fmt.Errorf("%q: %w: use %s", s, ErrBadSize, hint)
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n > math.MaxInt64>>shift {
		return 0, fmt.Errorf("%q: %w: too large", s, ErrBadSize)
	}
	return n << shift, nil
}

// FormatSize writes n in the largest binary unit that divides it.
func FormatSize(n int64) string {
	for _, u := range sizeUnits {
		if u.shift > 0 && n != 0 && n%(1<<u.shift) == 0 {
			return fmt.Sprintf("%d%s", n>>u.shift, u.suffix)
		}
	}
	return fmt.Sprintf("%dB", n)
}
