package policy

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/hashicorp/hcl/v2"
)

// Overlaps reports policies of different files whose matches partly
// overlap: some agent is selected by both, and neither match covers the
// other. The policy loaded first takes every agent both select, so the
// other one silently loses part of what it was written for; which one wins
// depends only on the files' names. Inside one file the order is written
// down and intended, and a later policy a first one covers is already an
// error (unreachable), so neither is reported here.
//
// The result holds warnings only, each at the losing policy's name, naming
// the winner's file:line and an example agent both select.
func (s *Set) Overlaps() hcl.Diagnostics {
	if s == nil {
		return nil
	}
	var diags hcl.Diagnostics
	for j, pj := range s.policies {
		for _, pi := range s.policies[:j] {
			if pi.Pos.File == pj.Pos.File || covers(pi.Match, pj.Match) || covers(pj.Match, pi.Match) {
				continue
			}
			part, ok := intersectAny(pi.Match.Partitions, pj.Match.Partitions, "default")
			if !ok {
				continue
			}
			agent, ok := intersectAny(pi.Match.Agents, pj.Match.Agents, "")
			if !ok {
				continue
			}
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagWarning,
				Summary:  fmt.Sprintf("policy %q partly overlaps policy %q at %s", pj.Name, pi.Name, pi.Pos),
				Detail: fmt.Sprintf("both select agents such as %s in partition %s (%s of %q and %s of %q); "+
					"%q is loaded first and takes every agent both select, so %q gets only the agents %q does not select, "+
					"and renaming a file can swap them. Make the matches disjoint, or move both policies into one file so their order is written down",
					quoteExample(agent), quoteExample(part), describeMatch(pi.Match), pi.Name, describeMatch(pj.Match), pj.Name,
					pi.Name, pj.Name, pi.Name),
				Subject: pj.nameRange.Ptr(),
			})
		}
	}
	return diags
}

func describeMatch(m Match) string {
	return fmt.Sprintf("partitions %s, agents %s", globList(m.Partitions), globList(m.Agents))
}

func globList(pats []string) string {
	q := make([]string, len(pats))
	for i, p := range pats {
		q[i] = strconv.Quote(p)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

func quoteExample(s string) string {
	if s == "" {
		return `"" (the empty name)`
	}
	return strconv.Quote(s)
}

// intersectAny returns a name some pattern of a and some pattern of b both
// match, preferring prefer when it is one; ok is false when there is none.
func intersectAny(a, b []string, prefer string) (string, bool) {
	if prefer != "" && anyGlob(a, prefer) && anyGlob(b, prefer) {
		return prefer, true
	}
	best, found := "", false
	for _, pa := range a {
		for _, pb := range b {
			if w, ok := GlobIntersect(pa, pb); ok && (!found || len(w) < len(best) || len(w) == len(best) && w < best) {
				best, found = w, true
			}
		}
	}
	return best, found
}

// globTok is one element of a glob: a star, or a single character test.
type globTok struct {
	star bool
	any  bool // ?
	lit  rune
	cls  *class
}

func (t globTok) accepts(r rune) bool {
	switch {
	case t.star, t.any:
		return true
	case t.cls != nil:
		return t.cls.matches(r)
	default:
		return t.lit == r
	}
}

func globTokens(p string) []globTok {
	var out []globTok
	for i := 0; i < len(p); {
		switch p[i] {
		case '*':
			if len(out) == 0 || !out[len(out)-1].star {
				out = append(out, globTok{star: true})
			}
			i++
		case '?':
			out = append(out, globTok{any: true})
			i++
		case '[':
			c, next, _ := parseClass(p, i)
			out = append(out, globTok{cls: &c})
			i = next
		case '\\':
			r, n := utf8.DecodeRuneInString(p[i+1:])
			out = append(out, globTok{lit: r})
			i += 1 + n
		default:
			r, n := utf8.DecodeRuneInString(p[i:])
			out = append(out, globTok{lit: r})
			i += n
		}
	}
	return out
}

// commonRune returns a character both tokens accept, preferring their
// literals and plain ASCII so examples read like agent names.
func commonRune(x, y globTok) (rune, bool) {
	var cands []rune
	for _, t := range []globTok{x, y} {
		if !t.star && !t.any && t.cls == nil {
			cands = append(cands, t.lit)
		}
	}
	cands = append(cands, 'x', 'a', '0', '-')
	for _, t := range []globTok{x, y} {
		if t.cls != nil {
			for _, rr := range t.cls.ranges {
				cands = append(cands, rr.lo, rr.hi, rr.lo-1, rr.hi+1)
			}
		}
	}
	for r := rune('!'); r <= '~'; r++ {
		cands = append(cands, r)
	}
	for _, r := range cands {
		if r > 0 && utf8.ValidRune(r) && x.accepts(r) && y.accepts(r) {
			return r, true
		}
	}
	return 0, false
}

// GlobIntersect reports whether some name matches both valid patterns, and
// returns the shortest such name it finds. It walks the product of the two
// patterns' automata, so it is exact except that characters are picked
// among the patterns' own literals, class bounds and printable ASCII (two
// negated classes excluding all of those are taken as disjoint).
func GlobIntersect(a, b string) (string, bool) {
	if ValidateGlob(a) != nil || ValidateGlob(b) != nil {
		return "", false
	}
	ta, tb := globTokens(a), globTokens(b)
	w := len(tb) + 1
	type edge struct {
		from int
		r    rune // -1: epsilon
	}
	n := (len(ta) + 1) * w
	prev := make([]edge, n)
	// 0-1 BFS: star skips cost nothing, characters one each, so the first
	// accepting state reached has the shortest example.
	deque := []int{0}
	settled := make([]bool, n)
	dist := make([]int, n)
	for i := range dist {
		dist[i] = -1
	}
	dist[0] = 0
	relax := func(from, to int, r rune, front bool) {
		d := dist[from]
		if r >= 0 {
			d++
		}
		if dist[to] >= 0 && dist[to] <= d {
			return
		}
		dist[to] = d
		prev[to] = edge{from: from, r: r}
		if front {
			deque = append([]int{to}, deque...)
		} else {
			deque = append(deque, to)
		}
	}
	for len(deque) > 0 {
		s := deque[0]
		deque = deque[1:]
		if settled[s] {
			continue
		}
		settled[s] = true
		i, j := s/w, s%w
		if i == len(ta) && j == len(tb) {
			var rs []rune
			for s != 0 {
				if e := prev[s]; e.r >= 0 {
					rs = append(rs, e.r)
				}
				s = prev[s].from
			}
			for l, r := 0, len(rs)-1; l < r; l, r = l+1, r-1 {
				rs[l], rs[r] = rs[r], rs[l]
			}
			return string(rs), true
		}
		if i < len(ta) && ta[i].star {
			relax(s, (i+1)*w+j, -1, true)
		}
		if j < len(tb) && tb[j].star {
			relax(s, i*w+j+1, -1, true)
		}
		if i == len(ta) || j == len(tb) {
			continue
		}
		r, ok := commonRune(ta[i], tb[j])
		if !ok {
			continue
		}
		ni, nj := i+1, j+1
		if ta[i].star {
			ni = i
		}
		if tb[j].star {
			nj = j
		}
		if ni == i && nj == j {
			continue // both stars: skipping either is never longer
		}
		relax(s, ni*w+nj, r, false)
	}
	return "", false
}
