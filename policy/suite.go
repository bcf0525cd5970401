package policy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// A regression suite is a directory of evidence files (NAME.json, see
// Evidence) each with an expectation beside it (NAME.expect):
//
//	# comments start with #
//	verdict deny                      # required: allow or deny
//	policy  production                # optional: the policy that must be selected
//	enforce measured_boot.secure_boot # every finding, by mode and rule name
//	warn    fortress
//
// A case passes when the verdict matches, the selected policy matches (when
// given), and the findings are exactly the listed ones: a rule that starts
// or stops failing is a change the suite reports.

// ExpectedFinding is one finding line of an expectation.
type ExpectedFinding struct {
	Mode Mode
	Rule string
}

func (f ExpectedFinding) String() string { return f.Mode.String() + " " + f.Rule }

// Expectation is a parsed NAME.expect file.
type Expectation struct {
	Verdict  string
	Policy   string
	Findings []ExpectedFinding
}

// ParseExpectation reads an expectation file.
func ParseExpectation(data []byte) (*Expectation, error) {
	var x Expectation
	sc := bufio.NewScanner(bytes.NewReader(data))
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		key, rest, _ := strings.Cut(line, " ")
		rest = strings.TrimSpace(rest)
		if rest == "" {
			return nil, fmt.Errorf("line %d: %q needs a value", n, key)
		}
		switch key {
		case "verdict":
			if rest != "allow" && rest != "deny" {
				return nil, fmt.Errorf("line %d: verdict is allow or deny, not %q", n, rest)
			}
			if x.Verdict != "" {
				return nil, fmt.Errorf("line %d: second verdict", n)
			}
			x.Verdict = rest
		case "policy":
			x.Policy = rest
		case "enforce":
			x.Findings = append(x.Findings, ExpectedFinding{Enforce, rest})
		case "warn":
			x.Findings = append(x.Findings, ExpectedFinding{Warn, rest})
		default:
			return nil, fmt.Errorf("line %d: unknown keyword %q (want verdict, policy, enforce or warn)", n, key)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if x.Verdict == "" {
		return nil, errors.New("no verdict line (verdict allow or verdict deny)")
	}
	return &x, nil
}

// FormatExpectation writes the expectation a result meets.
func FormatExpectation(r Result) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Expected verdict, written by pulsectl policy test --update; review before committing.\n")
	fmt.Fprintf(&b, "verdict %s\n", r.Verdict())
	if r.Policy != "" {
		fmt.Fprintf(&b, "policy %s\n", r.Policy)
	}
	for _, f := range findingSet(r) {
		fmt.Fprintf(&b, "%s\n", f)
	}
	return b.Bytes()
}

// findingSet is the sorted, de-duplicated (mode, rule) pairs of a result.
func findingSet(r Result) []ExpectedFinding {
	seen := map[ExpectedFinding]bool{}
	var out []ExpectedFinding
	for _, f := range r.Findings {
		k := ExpectedFinding{f.Mode, f.Rule}
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	sortFindings(out)
	return out
}

func sortFindings(fs []ExpectedFinding) {
	sort.Slice(fs, func(i, j int) bool {
		if fs[i].Rule != fs[j].Rule {
			return fs[i].Rule < fs[j].Rule
		}
		return fs[i].Mode < fs[j].Mode
	})
}

// Compare lists the differences between a result and the expectation.
func (x *Expectation) Compare(r Result) []string {
	var diffs []string
	if got := r.Verdict(); got != x.Verdict {
		diffs = append(diffs, fmt.Sprintf("verdict: expected %s, got %s", x.Verdict, got))
	}
	if x.Policy != "" && x.Policy != r.Policy {
		got := r.Policy
		if got == "" {
			got = "(none)"
		}
		diffs = append(diffs, fmt.Sprintf("policy: expected %s, got %s", x.Policy, got))
	}
	want := map[ExpectedFinding]bool{}
	for _, f := range x.Findings {
		want[f] = true
	}
	got := map[ExpectedFinding]bool{}
	for _, f := range r.Findings {
		k := ExpectedFinding{f.Mode, f.Rule}
		if !want[k] && !got[k] {
			diffs = append(diffs, fmt.Sprintf("unexpected finding: %s at %s: %s", k, f.Where(), f.Message))
		}
		got[k] = true
	}
	missing := []ExpectedFinding{}
	for _, f := range x.Findings {
		if !got[f] {
			missing = append(missing, f)
		}
	}
	sortFindings(missing)
	for _, f := range missing {
		diffs = append(diffs, fmt.Sprintf("missing finding: %s", f))
	}
	return diffs
}

// SuiteCase is one evidence file of a suite and its outcome.
type SuiteCase struct {
	Name         string
	EvidencePath string
	ExpectPath   string
	// Err is set when the evidence or expectation could not be read.
	Err    error
	Result Result
	Expect *Expectation
	// Diffs are the mismatches between Result and Expect.
	Diffs []string
}

// OK reports whether the case ran and met its expectation.
func (c SuiteCase) OK() bool { return c.Err == nil && len(c.Diffs) == 0 }

// RunSuite evaluates every DIR/*.json evidence file against the set and
// compares it with DIR/NAME.expect. Each case is evaluated at its
// evidence's recorded_at time, or at now when it has none. A directory with
// no evidence file is an error.
func RunSuite(set *Set, dir string, now time.Time) ([]SuiteCase, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, fmt.Errorf("policy: suite: %w", err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("policy: suite: no evidence files (*.json) in %s", dir)
	}
	sort.Strings(files)
	cases := make([]SuiteCase, 0, len(files))
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".json")
		c := SuiteCase{Name: name, EvidencePath: f, ExpectPath: filepath.Join(dir, name+".expect")}
		ev, err := LoadEvidence(f)
		if err != nil {
			c.Err = err
			cases = append(cases, c)
			continue
		}
		at := now
		if !ev.RecordedAt.IsZero() {
			at = ev.RecordedAt
		}
		c.Result = set.Evaluate(*ev, at)
		data, err := os.ReadFile(c.ExpectPath)
		if err != nil {
			c.Err = fmt.Errorf("no expectation: %w", err)
			cases = append(cases, c)
			continue
		}
		x, err := ParseExpectation(data)
		if err != nil {
			c.Err = fmt.Errorf("%s: %w", c.ExpectPath, err)
			cases = append(cases, c)
			continue
		}
		c.Expect = x
		c.Diffs = x.Compare(c.Result)
		cases = append(cases, c)
	}
	return cases, nil
}
