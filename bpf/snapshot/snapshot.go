// Package snapshot holds the eBPF snapshot a pulse carries and the pure logic
// that compares the agent's load records with the live pins. It takes plain
// values and imports no eBPF library, so the verifier and policy tests can use
// its types and typed problems without a kernel.
package snapshot

import (
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
)

// The typed problems a pinned program can have. Match them with errors.Is on
// the error returned by [Snapshot.Err] or [PinError.Unwrap].
var (
	// ErrPinMissing: a program the agent loaded and pinned is no longer pinned.
	ErrPinMissing = errors.New("ebpf program pin missing")
	// ErrPinReplaced: the pin resolves to a different program than the one the
	// agent loaded (other instructions, or the same instructions re-loaded and
	// re-pinned as a new program, or not a program at all).
	ErrPinReplaced = errors.New("ebpf program pin replaced")
	// ErrDetached: the program is still pinned but one of the links the agent
	// attached it with is gone, detached or now runs another program.
	ErrDetached = errors.New("ebpf program detached")
	// ErrUnexpectedPin: something is pinned in the agent's directory that the
	// agent did not load.
	ErrUnexpectedPin = errors.New("unexpected ebpf program pinned")
)

// Problem is the JSON form of a typed problem.
type Problem string

// Problem codes, one per typed error.
const (
	ProblemNone       Problem = ""
	ProblemPinMissing Problem = "pin_missing"
	ProblemReplaced   Problem = "pin_replaced"
	ProblemDetached   Problem = "detached"
	ProblemUnexpected Problem = "unexpected_pin"
)

// Err returns the typed error for p, or nil for ProblemNone.
func (p Problem) Err() error {
	switch p {
	case ProblemNone:
		return nil
	case ProblemPinMissing:
		return ErrPinMissing
	case ProblemReplaced:
		return ErrPinReplaced
	case ProblemDetached:
		return ErrDetached
	case ProblemUnexpected:
		return ErrUnexpectedPin
	}
	return fmt.Errorf("unknown ebpf snapshot problem %q", string(p))
}

// PinError names the pin a typed problem was found on.
type PinError struct {
	Name    string
	Problem Problem
	Detail  string
}

func (e *PinError) Error() string {
	msg := fmt.Sprintf("%s: %v", e.Name, e.Problem.Err())
	if e.Detail != "" {
		msg += " (" + e.Detail + ")"
	}
	return msg
}

// Unwrap returns the typed problem (ErrPinMissing, ErrPinReplaced...).
func (e *PinError) Unwrap() error { return e.Problem.Err() }

// Digest is a SHA-256 value that marshals as lowercase hex.
type Digest [32]byte

// String returns the lowercase hex form.
func (d Digest) String() string { return hex.EncodeToString(d[:]) }

// IsZero reports whether d is unset.
func (d Digest) IsZero() bool { return d == Digest{} }

// MarshalText implements encoding.TextMarshaler.
func (d Digest) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Digest) UnmarshalText(b []byte) error {
	if len(b) != 64 {
		return fmt.Errorf("digest: want 64 hex characters, got %d", len(b))
	}
	_, err := hex.Decode(d[:], b)
	if err != nil {
		return fmt.Errorf("digest: %w", err)
	}
	return nil
}

// Expectation is what the agent recorded when it loaded and pinned a program:
// the kernel's ID and tag for it, the SHA-256 of the instructions it handed to
// the kernel, and the pin names of the links it attached it with.
type Expectation struct {
	ID         uint32   `json:"id"`
	Type       string   `json:"type"`
	Tag        string   `json:"tag"`
	InsnSHA256 Digest   `json:"insn_sha256"`
	Links      []string `json:"links,omitempty"`
}

// LivePin is what a pin under the agent's directory resolves to right now.
// Err is set when the pin exists but is not a readable program.
type LivePin struct {
	ID   uint32
	Type string
	Tag  string
	Err  error
}

// LiveLink is what a link pin resolves to right now. Detached is true when the
// kernel reports the link no longer attached to its hook (e.g. tcx/xdp link
// with ifindex 0 after BPF_LINK_DETACH). Err is set when the pin is missing or
// not a link.
type LiveLink struct {
	ProgramID uint32
	Detached  bool
	Err       error
}

// Pinned is one entry of the snapshot's pinned map.
type Pinned struct {
	ID         uint32   `json:"id,omitempty"`
	Type       string   `json:"type,omitempty"`
	Tag        string   `json:"tag,omitempty"`
	InsnSHA256 string   `json:"insn_sha256,omitempty"`
	Links      []string `json:"links,omitempty"`
	OK         bool     `json:"ok"`
	Problem    Problem  `json:"problem,omitempty"`
	Detail     string   `json:"detail,omitempty"`
}

// Program is one loaded program on the host, as `bpftool prog show` lists it.
type Program struct {
	ID   uint32 `json:"id"`
	Name string `json:"name"`
	Type string `json:"type"`
	Tag  string `json:"tag"`
}

// Snapshot is the eBPF part of a pulse.
type Snapshot struct {
	TakenAt       time.Time `json:"taken_at"`
	KernelRelease string    `json:"kernel_release,omitempty"`
	PinDir        string    `json:"pin_dir"`
	// Checked is true when the pins were compared with the agent's load
	// records; without them (a fresh host, or a tool run without the agent's
	// manifest) the pinned entries describe the live pins only.
	Checked  bool              `json:"checked"`
	Pinned   map[string]Pinned `json:"pinned"`
	Programs []Program         `json:"programs"`
}

// Compare checks the live pins and links against the agent's records. A
// program with several problems reports the first of: missing, replaced,
// detached. Pins the agent did not record are unexpected.
func Compare(expected map[string]Expectation, pins map[string]LivePin, links map[string]LiveLink) map[string]Pinned {
	out := make(map[string]Pinned, len(expected)+len(pins))
	for name, exp := range expected {
		p := Pinned{Type: exp.Type, Links: append([]string(nil), exp.Links...)}
		live, ok := pins[name]
		switch {
		case !ok:
			p.Problem = ProblemPinMissing
			p.Detail = fmt.Sprintf("recorded id %d tag %s", exp.ID, exp.Tag)
		case live.Err != nil:
			p.Problem = ProblemReplaced
			p.Detail = live.Err.Error()
		case live.ID != exp.ID || live.Tag != exp.Tag:
			p.ID, p.Type, p.Tag = live.ID, live.Type, live.Tag
			p.Problem = ProblemReplaced
			if live.Tag == exp.Tag {
				p.Detail = fmt.Sprintf("same instructions re-loaded as id %d, recorded id %d", live.ID, exp.ID)
			} else {
				p.Detail = fmt.Sprintf("live id %d tag %s, recorded id %d tag %s", live.ID, live.Tag, exp.ID, exp.Tag)
			}
		default:
			p.ID, p.Type, p.Tag = live.ID, live.Type, live.Tag
			p.InsnSHA256 = exp.InsnSHA256.String()
			p.Problem, p.Detail = checkLinks(exp, links)
		}
		p.OK = p.Problem == ProblemNone
		out[name] = p
	}
	for name, live := range pins {
		if _, ok := expected[name]; ok {
			continue
		}
		p := Pinned{ID: live.ID, Type: live.Type, Tag: live.Tag, Problem: ProblemUnexpected}
		if live.Err != nil {
			p.Detail = live.Err.Error()
		}
		out[name] = p
	}
	return out
}

func checkLinks(exp Expectation, links map[string]LiveLink) (Problem, string) {
	names := append([]string(nil), exp.Links...)
	sort.Strings(names)
	for _, ln := range names {
		l, ok := links[ln]
		switch {
		case !ok:
			return ProblemDetached, fmt.Sprintf("link %s missing", ln)
		case l.Err != nil:
			return ProblemDetached, fmt.Sprintf("link %s: %v", ln, l.Err)
		case l.ProgramID != exp.ID:
			return ProblemDetached, fmt.Sprintf("link %s runs program %d", ln, l.ProgramID)
		case l.Detached:
			return ProblemDetached, fmt.Sprintf("link %s detached from its hook", ln)
		}
	}
	return ProblemNone, ""
}

// Unchecked describes live pins when no load records are available.
func Unchecked(pins map[string]LivePin) map[string]Pinned {
	out := make(map[string]Pinned, len(pins))
	for name, live := range pins {
		p := Pinned{ID: live.ID, Type: live.Type, Tag: live.Tag, OK: live.Err == nil}
		if live.Err != nil {
			p.Detail = live.Err.Error()
		}
		out[name] = p
	}
	return out
}

// Problems returns one *PinError per pinned entry with a problem, sorted by name.
func (s Snapshot) Problems() []*PinError {
	var out []*PinError
	for name, p := range s.Pinned {
		if p.Problem != ProblemNone {
			out = append(out, &PinError{Name: name, Problem: p.Problem, Detail: p.Detail})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Err joins the snapshot's problems; nil when every pin matches its record.
func (s Snapshot) Err() error {
	probs := s.Problems()
	if len(probs) == 0 {
		return nil
	}
	errs := make([]error, len(probs))
	for i, p := range probs {
		errs[i] = p
	}
	return errors.Join(errs...)
}

// Digests maps each pinned program that matches its record to its instruction
// digest (hex): the claim a pulse carries.
func (s Snapshot) Digests() map[string]string {
	out := map[string]string{}
	for name, p := range s.Pinned {
		if p.OK && p.InsnSHA256 != "" {
			out[name] = p.InsnSHA256
		}
	}
	return out
}

// Names returns the pinned names, sorted.
func (s Snapshot) Names() []string {
	names := make([]string, 0, len(s.Pinned))
	for n := range s.Pinned {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// ProgramByID returns the loaded program with the given ID.
func (s Snapshot) ProgramByID(id uint32) (Program, bool) {
	i := sort.Search(len(s.Programs), func(i int) bool { return s.Programs[i].ID >= id })
	if i < len(s.Programs) && s.Programs[i].ID == id {
		return s.Programs[i], true
	}
	return Program{}, false
}

// SortPrograms orders programs by ID (the order [Snapshot.ProgramByID] needs).
func SortPrograms(ps []Program) {
	sort.Slice(ps, func(i, j int) bool { return ps[i].ID < ps[j].ID })
}

// String is a one-line summary for logs.
func (s Snapshot) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d programs loaded, %d pinned under %s", len(s.Programs), len(s.Pinned), s.PinDir)
	if probs := s.Problems(); len(probs) > 0 {
		fmt.Fprintf(&b, ", %d problems", len(probs))
	}
	return b.String()
}
