package policy

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Glob patterns select agents, partitions and eBPF program names:
//
//	*      any run of characters, including none (it also matches "/")
//	?      exactly one character
//	[abc]  one of the characters; [a-z] a range; [!abc] none of them
//	\x     the character x itself (\*, \?, \[, \\)
//
// Everything else matches itself, case-sensitively.

// GlobError says why a pattern is malformed.
type GlobError struct {
	Pattern string
	// Offset is the byte offset of the problem in Pattern.
	Offset int
	Reason string
}

func (e *GlobError) Error() string { return fmt.Sprintf("bad glob %q: %s", e.Pattern, e.Detail()) }

// Detail is the reason with its position.
func (e *GlobError) Detail() string {
	if e.Pattern == "" {
		return e.Reason
	}
	return fmt.Sprintf("%s at character %d", e.Reason, e.Offset+1)
}

// ValidateGlob checks a pattern's syntax.
func ValidateGlob(pattern string) error {
	if pattern == "" {
		return &GlobError{Pattern: pattern, Reason: "an empty pattern matches nothing"}
	}
	for i := 0; i < len(pattern); {
		switch pattern[i] {
		case '\\':
			if i+1 >= len(pattern) {
				return &GlobError{Pattern: pattern, Offset: i, Reason: `trailing \ escapes nothing`}
			}
			_, n := utf8.DecodeRuneInString(pattern[i+1:])
			i += 1 + n
		case '[':
			_, next, err := parseClass(pattern, i)
			if err != nil {
				return err
			}
			i = next
		default:
			i++
		}
	}
	return nil
}

type runeRange struct{ lo, hi rune }

// parseClass parses the class starting at pattern[start] == '['. It returns
// the ranges, whether the class is negated (in the first range slot as a
// flag), and the index after ']'.
func parseClass(pattern string, start int) (class, int, error) {
	var c class
	i := start + 1
	if i < len(pattern) && (pattern[i] == '!' || pattern[i] == '^') {
		c.negated = true
		i++
	}
	first := true
	for {
		if i >= len(pattern) {
			return c, 0, &GlobError{Pattern: pattern, Offset: start, Reason: "unterminated [ (add a closing ])"}
		}
		if pattern[i] == ']' && !first {
			return c, i + 1, nil
		}
		if pattern[i] == ']' && first {
			return c, 0, &GlobError{Pattern: pattern, Offset: start, Reason: "empty character class []"}
		}
		first = false
		lo, n, err := classRune(pattern, i)
		if err != nil {
			return c, 0, err
		}
		i += n
		hi := lo
		if i+1 < len(pattern) && pattern[i] == '-' && pattern[i+1] != ']' {
			at := i
			hi, n, err = classRune(pattern, i+1)
			if err != nil {
				return c, 0, err
			}
			if hi < lo {
				return c, 0, &GlobError{Pattern: pattern, Offset: at, Reason: fmt.Sprintf("range %c-%c is backwards", lo, hi)}
			}
			i += 1 + n
		}
		c.ranges = append(c.ranges, runeRange{lo, hi})
	}
}

func classRune(pattern string, i int) (rune, int, error) {
	if pattern[i] == '\\' {
		if i+1 >= len(pattern) {
			return 0, 0, &GlobError{Pattern: pattern, Offset: i, Reason: `trailing \ escapes nothing`}
		}
		r, n := utf8.DecodeRuneInString(pattern[i+1:])
		return r, 1 + n, nil
	}
	r, n := utf8.DecodeRuneInString(pattern[i:])
	return r, n, nil
}

type class struct {
	negated bool
	ranges  []runeRange
}

func (c class) matches(r rune) bool {
	in := false
	for _, rr := range c.ranges {
		if r >= rr.lo && r <= rr.hi {
			in = true
			break
		}
	}
	return in != c.negated
}

// Glob reports whether name matches pattern. A malformed pattern matches
// nothing (patterns are validated when a policy loads).
func Glob(pattern, name string) bool {
	if ValidateGlob(pattern) != nil {
		return false
	}
	return globMatch(pattern, name)
}

// globMatch is the classic iterative matcher with single-star backtracking:
// linear in practice and never exponential.
func globMatch(p, s string) bool {
	pi, si := 0, 0
	starP, starS := -1, 0
	for si < len(s) {
		if pi < len(p) {
			switch p[pi] {
			case '*':
				starP, starS = pi, si
				pi++
				continue
			case '?':
				_, n := utf8.DecodeRuneInString(s[si:])
				pi++
				si += n
				continue
			case '[':
				c, next, _ := parseClass(p, pi)
				r, n := utf8.DecodeRuneInString(s[si:])
				if c.matches(r) {
					pi = next
					si += n
					continue
				}
			case '\\':
				r, n := utf8.DecodeRuneInString(p[pi+1:])
				sr, sn := utf8.DecodeRuneInString(s[si:])
				if r == sr {
					pi += 1 + n
					si += sn
					continue
				}
			default:
				r, n := utf8.DecodeRuneInString(p[pi:])
				sr, sn := utf8.DecodeRuneInString(s[si:])
				if r == sr {
					pi += n
					si += sn
					continue
				}
			}
		}
		if starP < 0 {
			return false
		}
		// Let the last star absorb one more character and retry.
		pi = starP + 1
		_, n := utf8.DecodeRuneInString(s[starS:])
		starS += n
		si = starS
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}

// isLiteral reports whether a valid pattern has no wildcard.
func isLiteral(p string) bool { return !strings.ContainsAny(p, `*?[\`) }

// literalPrefix returns the characters of a valid pattern before its first
// wildcard, with escapes resolved.
func literalPrefix(p string) string {
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '*', '?', '[':
			return b.String()
		case '\\':
			if i+1 < len(p) {
				i++
			}
		}
		b.WriteByte(p[i])
	}
	return b.String()
}

// literalSuffix returns the characters of a valid pattern after its last
// wildcard when that suffix has no escapes, else "".
func literalSuffix(p string) string {
	i := strings.LastIndexAny(p, `*?]\`)
	if i >= 0 && p[i] == '\\' {
		return ""
	}
	return p[i+1:]
}

// globCovers reports whether every name b matches is also matched by a. It is
// sound but incomplete: true only in cases it can prove (equal patterns, a
// star-only pattern, "prefix*" covering patterns with that literal prefix,
// "*suffix" covering patterns with that literal suffix).
func globCovers(a, b string) bool {
	if a == b {
		return true
	}
	if strings.Trim(a, "*") == "" {
		return true
	}
	// a = "lit*" with no other wildcard.
	if strings.HasSuffix(a, "*") {
		head := strings.TrimRight(a, "*")
		if isLiteral(head) && strings.HasPrefix(literalPrefix(b), head) {
			return true
		}
	}
	// a = "*lit" with no other wildcard.
	if strings.HasPrefix(a, "*") {
		tail := strings.TrimLeft(a, "*")
		if isLiteral(tail) && strings.HasSuffix(literalSuffix(b), tail) {
			return true
		}
	}
	if isLiteral(b) && !isLiteral(a) {
		return globMatch(a, b)
	}
	return false
}

// isCatchAll reports whether the patterns match every name.
func isCatchAll(patterns []string) bool {
	for _, p := range patterns {
		if strings.Trim(p, "*") == "" {
			return true
		}
	}
	return false
}
