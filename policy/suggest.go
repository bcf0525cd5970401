package policy

import (
	"fmt"
	"sort"
	"strings"
)

// suggest returns the candidate closest to got, when it is close enough to
// be a likely typo, else "".
func suggest(got string, candidates []string) string {
	best, bestD := "", 0
	g := strings.ToLower(got)
	// A unique candidate that starts with what was typed is the best guess
	// ("EV_EFI_BOOT_SERVICES_APP" → "EV_EFI_BOOT_SERVICES_APPLICATION").
	var prefixed []string
	for _, c := range candidates {
		if len(g) >= 3 && strings.HasPrefix(strings.ToLower(c), g) {
			prefixed = append(prefixed, c)
		}
	}
	if len(prefixed) == 1 {
		return prefixed[0]
	}
	for _, c := range candidates {
		d := editDistance(g, strings.ToLower(c))
		if best == "" || d < bestD {
			best, bestD = c, d
		}
	}
	limit := 1 + len(got)/3
	if best == "" || bestD > limit {
		return ""
	}
	return best
}

// maybe returns "; did you mean "x"?" or "".
func maybe(got string, candidates []string) string {
	if s := suggest(got, candidates); s != "" {
		return fmt.Sprintf("; did you mean %q?", s)
	}
	return ""
}

// didYouMean returns "did you mean "x"?" or a list of the accepted names.
func didYouMean(got string, candidates []string) string {
	if s := suggest(got, candidates); s != "" {
		return fmt.Sprintf("did you mean %q?", s)
	}
	c := append([]string(nil), candidates...)
	sort.Strings(c)
	return "expected one of: " + strings.Join(c, ", ")
}

// editDistance is the Levenshtein distance between a and b (bytes).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
