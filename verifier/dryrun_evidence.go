package verifier

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pulse-attest/pulse/policy"
	"github.com/pulse-attest/pulse/verifier/store"
)

// What a committed pulse leaves in the store to explain the agent's state
// (store.Explanation): the findings of its verdict, each with what the
// rule expects and what the evidence showed, and the evidence of the pulse
// when it verified some (quote, logs), so that the dashboard can show it
// and a candidate policy can be evaluated against it (dryrun.go). Both are
// bounded together by store.MaxExplanationBytes: findings at most
// maxFindingsBytes, the evidence the rest, gzip'd; evidence that does not
// fit loses its boot events' notes first, then its boot events (marked
// incomplete: a dry-run says so for the agent).

const (
	// maxFindingsBytes bounds the encoded findings.
	maxFindingsBytes = 3 << 10
	// maxFindingText bounds each finding's message, expected and seen.
	maxFindingText = 400
	// evidenceFormat is the version of the stored evidence encoding.
	evidenceFormat = 1
)

// StoredFinding is one finding as the store keeps it.
type StoredFinding struct {
	Rule     string `json:"rule"`
	File     string `json:"file,omitempty"`
	Line     int    `json:"line,omitempty"`
	Enforce  bool   `json:"enforce"`
	Severity int    `json:"severity"`
	Message  string `json:"message"`
	// Expected is what the rule accepts, from the policy in force;
	// Seen what the verified evidence showed. Empty when the rule has no
	// single value to show (the message says it).
	Expected string `json:"expected,omitempty"`
	Seen     string `json:"seen,omitempty"`
}

// StoredEvidence is the stored evidence of an agent's last verified pulse.
type StoredEvidence struct {
	Format int `json:"format"`
	// Complete is false when the boot events were left out to fit the
	// bound; Dropped says what was.
	Complete bool            `json:"complete"`
	Dropped  string          `json:"dropped,omitempty"`
	Evidence policy.Evidence `json:"evidence"`
}

// ErrEvidenceEncoding is returned for stored evidence that does not decode.
var ErrEvidenceEncoding = errors.New("stored evidence does not decode")

// maxEvidenceJSON bounds the decompressed size of stored evidence (a
// corrupt or hostile row cannot make a reader inflate without bound).
const maxEvidenceJSON = 1 << 20

var gzipWriters = sync.Pool{New: func() any {
	w, _ := gzip.NewWriterLevel(io.Discard, gzip.BestSpeed)
	return w
}}

func gzipJSON(v any) ([]byte, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	w := gzipWriters.Get().(*gzip.Writer)
	defer gzipWriters.Put(w)
	w.Reset(&buf)
	if _, err := w.Write(raw); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// encodeEvidence encodes ev within budget bytes.
func encodeEvidence(ev policy.Evidence, budget int) ([]byte, error) {
	se := StoredEvidence{Format: evidenceFormat, Complete: true, Evidence: ev}
	b, err := gzipJSON(se)
	if err != nil {
		return nil, fmt.Errorf("encode evidence: %w", err)
	}
	if len(b) <= budget || ev.Boot == nil {
		if len(b) > budget {
			return nil, fmt.Errorf("encode evidence: %d bytes without boot events, budget %d", len(b), budget)
		}
		return b, nil
	}
	// Notes first (not evidence: rules never read them).
	boot := *ev.Boot
	boot.Events = make([]policy.BootEvent, len(ev.Boot.Events))
	copy(boot.Events, ev.Boot.Events)
	for i := range boot.Events {
		boot.Events[i].Note = ""
	}
	se.Evidence.Boot = &boot
	se.Dropped = "boot event notes"
	if b, err = gzipJSON(se); err == nil && len(b) <= budget {
		return b, nil
	}
	boot.Events = nil
	se.Complete, se.Dropped = false, fmt.Sprintf("%d boot events", len(ev.Boot.Events))
	if b, err = gzipJSON(se); err != nil {
		return nil, fmt.Errorf("encode evidence: %w", err)
	}
	if len(b) > budget {
		return nil, fmt.Errorf("encode evidence: %d bytes without boot events, budget %d", len(b), budget)
	}
	return b, nil
}

// encodedCache holds recent encodings by the SHA-256 of their JSON: the
// agents of a fleet booted the same way with the same build share one
// (the stored evidence names no agent: identity and partition are the
// row's), so most pulses pay the JSON and a hash, not the compression.
var encodedCache struct {
	sync.Mutex
	m map[[32]byte][]byte
}

// maxEncodedCache bounds encodedCache (entries are ≤ 8 KiB).
const maxEncodedCache = 512

// evidenceKey names ev's stored encoding within budget (without the
// agent's identity). fw, when not nil, is the verified firmware log ev.Boot
// was copied from (verifiedLog.sharesBoot): the key then names the boot
// evidence by its digest, computed once per verified log, and its runtime
// PCR history, so a steady-state pulse encodes only the small rest of its
// evidence as JSON. coarse leaves the clock's error figures out (they
// move every pulse on a synchronised host; Verifier.explain).
func evidenceKey(ev policy.Evidence, budget int, fw *verifiedLog, coarse bool) ([32]byte, error) {
	var key [32]byte
	ev.AgentID, ev.Partition = "", ""
	h := sha256.New()
	if coarse && ev.Clock != nil {
		c := *ev.Clock
		c.MaxErrorUs, c.EstErrorUs = 0, 0
		ev.Clock = &c
		h.Write([]byte("coarse\x00"))
	}
	if fw != nil && fw.sharesBoot(ev.Boot) {
		sum, err := fw.bootDigest()
		if err != nil {
			return key, fmt.Errorf("encode evidence: %w", err)
		}
		hist := ev.Boot.RuntimePCRHistory
		ev.Boot = nil
		h.Write([]byte("boot\x00"))
		h.Write(sum[:])
		if hist != nil {
			fmt.Fprintf(h, "history %d\x00", len(hist))
			for _, e := range hist {
				fmt.Fprintf(h, "%d\x00%s", len(e), e)
			}
		}
		h.Write([]byte("rest\x00"))
	}
	raw, err := json.Marshal(StoredEvidence{Format: evidenceFormat, Complete: true, Evidence: ev})
	if err != nil {
		return key, fmt.Errorf("encode evidence: %w", err)
	}
	h.Write(raw)
	fmt.Fprintf(h, "/%d", budget)
	h.Sum(key[:0])
	return key, nil
}

// encodeEvidenceCached is encodeEvidence without the agent's identity,
// through encodedCache (keyed by evidenceKey, fw as there).
func encodeEvidenceCached(ev policy.Evidence, budget int, fw *verifiedLog) ([]byte, error) {
	ev.AgentID, ev.Partition = "", ""
	key, err := evidenceKey(ev, budget, fw, false)
	if err != nil {
		return nil, err
	}
	encodedCache.Lock()
	b, ok := encodedCache.m[key]
	encodedCache.Unlock()
	if ok {
		return b, nil
	}
	if b, err = encodeEvidence(ev, budget); err != nil {
		return nil, err
	}
	encodedCache.Lock()
	if encodedCache.m == nil || len(encodedCache.m) >= maxEncodedCache {
		encodedCache.m = make(map[[32]byte][]byte, maxEncodedCache)
	}
	encodedCache.m[key] = b
	encodedCache.Unlock()
	return b, nil
}

// DecodeEvidence reads stored evidence.
func DecodeEvidence(b []byte) (*StoredEvidence, error) {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrEvidenceEncoding, err)
	}
	raw, err := io.ReadAll(io.LimitReader(zr, maxEvidenceJSON+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrEvidenceEncoding, err)
	}
	if len(raw) > maxEvidenceJSON {
		return nil, fmt.Errorf("%w: more than %d bytes", ErrEvidenceEncoding, maxEvidenceJSON)
	}
	var se StoredEvidence
	if err := json.Unmarshal(raw, &se); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrEvidenceEncoding, err)
	}
	if se.Format != evidenceFormat {
		return nil, fmt.Errorf("%w: format %d", ErrEvidenceEncoding, se.Format)
	}
	return &se, nil
}

// DecodeFindings reads stored findings.
func DecodeFindings(b []byte) ([]StoredFinding, error) {
	if len(b) == 0 {
		return nil, nil
	}
	var fs []StoredFinding
	if err := json.Unmarshal(b, &fs); err != nil {
		return nil, fmt.Errorf("decode findings: %w", err)
	}
	return fs, nil
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// Cut on a rune boundary.
	for n > 0 && n < len(s) && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n] + "…"
}

// encodeFindings encodes fs within maxFindingsBytes, dropping the last
// findings (the verdict's own, first enforced, comes first) when needed.
func encodeFindings(fs []StoredFinding) ([]byte, error) {
	for i := range fs {
		fs[i].Message = clip(fs[i].Message, maxFindingText)
		fs[i].Expected = clip(fs[i].Expected, maxFindingText)
		fs[i].Seen = clip(fs[i].Seen, maxFindingText)
	}
	for n := len(fs); n >= 0; n-- {
		b, err := json.Marshal(fs[:n])
		if err != nil {
			return nil, fmt.Errorf("encode findings: %w", err)
		}
		if len(b) <= maxFindingsBytes {
			return b, nil
		}
	}
	return []byte(`[]`), nil
}

// explanation is what a committed pulse leaves to explain the agent's
// state (store.Explanation) before its evidence is encoded, with what
// decides whether it is written.
type explanation struct {
	x *store.Explanation
	// ev is the evidence to encode (nil: the pulse verified none) within
	// budget.
	ev     *policy.Evidence
	budget int
	// coarse names the explanation but for the clock's error figures.
	coarse [32]byte
	// kernelKey names the payload's kernel report (kernelInputKey).
	kernelKey [32]byte
}

// explanationOf builds the pulse's explanation but its evidence (encoded
// by withEvidence); prev is what this process last wrote for the agent's
// row (nil: nothing known).
func (v *Verifier) explanationOf(o *Outcome, prev *explained) *explanation {
	x := &store.Explanation{At: o.now, Verdict: int32(o.Verdict), Reason: int32(o.Reason)}
	if o.pol != nil {
		x.Policy = clip(o.pol.Name, 200)
	}
	fs := make([]StoredFinding, 0, len(o.Findings))
	for _, f := range o.Findings {
		sf := StoredFinding{Rule: f.GetRule(), File: f.GetFile(), Line: int(f.GetLine()), Enforce: f.GetEnforce(),
			Severity: int(f.GetSeverity()), Message: f.GetMessage()}
		sf.Expected, sf.Seen = expectedSeen(o.pol, o.evidence, sf.Rule)
		fs = append(fs, sf)
	}
	// Enforced findings first: they decide the verdict.
	sort.SliceStable(fs, func(i, j int) bool { return fs[i].Enforce && !fs[j].Enforce })
	findings, err := encodeFindings(fs)
	if err != nil {
		v.log.Warn("findings not stored", "agent_id", o.agent.ID, "error", err)
		findings = nil
	}
	x.Findings = findings
	e := &explanation{x: x, kernelKey: v.explainIdentity(o, x, prev)}
	h := sha256.New()
	h.Write(x.Digest())
	if o.evidence != nil {
		// Without its time: evidence unchanged since the last pulse
		// encodes the same and is not written again (EvidenceAt then says
		// since when it has been the same).
		ev := *o.evidence
		ev.RecordedAt = time.Time{}
		e.ev = &ev
		e.budget = store.MaxExplanationBytes - len(x.Findings) - len(x.Policy) - len(x.CertSubject) - len(x.Kernel)
		k, err := evidenceKey(ev, e.budget, o.fwBoot, true)
		if err != nil {
			v.log.Warn("evidence not stored", "agent_id", o.agent.ID, "error", err)
			e.ev = nil
		}
		h.Write([]byte("evidence\x00"))
		h.Write(k[:])
	}
	h.Sum(e.coarse[:0])
	return e
}

// withEvidence encodes the explanation's evidence.
func (v *Verifier) withEvidence(o *Outcome, e *explanation) *store.Explanation {
	if e.ev != nil && e.x.Evidence == nil {
		if b, err := encodeEvidenceCached(*e.ev, e.budget, o.fwBoot); err != nil {
			v.log.Warn("evidence not stored", "agent_id", o.agent.ID, "error", err)
		} else {
			e.x.Evidence = b
		}
	}
	return e.x
}

func shortDigest(s string) string {
	if len(s) > 16 {
		return s[:16] + "…"
	}
	return s
}

func joinList(ss []string, f func(string) string) string {
	out := make([]string, 0, len(ss))
	for _, s := range ss {
		out = append(out, f(s))
	}
	if len(out) == 0 {
		return "(none)"
	}
	return strings.Join(out, ", ")
}

func same(s string) string { return s }

// expectedSeen describes what rule expects in pol and what ev showed. Rules
// that judge a set (allow/forbid lists, Sentinel, clock) leave both empty:
// their message names what was seen.
func expectedSeen(pol *policy.Policy, ev *policy.Evidence, rule string) (expected, seen string) {
	if pol == nil {
		return "", ""
	}
	tpmSeen := func() string {
		if ev != nil && ev.TPM {
			return "verified TPM quote"
		}
		return "no TPM quote (mTLS only)"
	}
	var rt *policy.RuntimeEvidence
	var boot *policy.BootEvidence
	if ev != nil {
		rt, boot = ev.Runtime, ev.Boot
	}
	switch {
	case rule == pol.TPMRule.Name:
		return "a verified TPM quote (tpm = required)", tpmSeen()
	case pol.AgentBinary != nil && rule == pol.AgentBinary.Name:
		ab := pol.AgentBinary
		exp := "agent binary one of " + joinList(ab.Allow, shortDigest)
		for _, w := range ab.Windows {
			exp += fmt.Sprintf("; window %q %s–%s: %s", w.Name, w.Start.Format("2006-01-02T15:04Z07:00"), w.End.Format("2006-01-02T15:04Z07:00"), joinList(w.Allow, shortDigest))
		}
		if ab.RequireLauncher {
			exp += "; measured by the launcher"
		}
		if rt == nil {
			return exp, "no verified runtime evidence"
		}
		s := "agent binary " + shortDigest(rt.AgentBinarySHA256)
		if n := len(rt.AgentBinaries); n > 0 && rt.AgentBinaries[n-1].SelfMeasured {
			s += " (measured itself)"
		} else if n > 0 {
			s += " (measured by the launcher)"
		}
		if rt.PreviousAgentBinarySHA256 != "" && rt.PreviousAgentBinarySHA256 != rt.AgentBinarySHA256 {
			s += ", previously " + shortDigest(rt.PreviousAgentBinarySHA256)
		}
		return exp, s
	case pol.Fortress != nil && rule == pol.Fortress.Name:
		if rt == nil {
			return "Fortress active", "no verified runtime evidence"
		}
		if rt.FortressActive {
			return "Fortress active", "Fortress active"
		}
		return "Fortress active", "Fortress not active"
	}
	if pol.EBPF != nil {
		progs := func() string {
			if rt == nil {
				return "no verified runtime evidence"
			}
			names := make([]string, 0, len(rt.BPFPrograms))
			for n, d := range rt.BPFPrograms {
				names = append(names, n+"="+shortDigest(d))
			}
			sort.Strings(names)
			return "loaded: " + joinList(names, same)
		}
		for _, p := range append(append([]policy.Program{}, pol.EBPF.Required...), pol.EBPF.Allowed...) {
			if rule == p.Name || rule == p.Rule.Name {
				exp := fmt.Sprintf("eBPF program %q", p.Name)
				if len(p.Digests) > 0 {
					exp += " with digest one of " + joinList(p.Digests, shortDigest)
				}
				return exp, progs()
			}
		}
		if rule == pol.EBPF.Rule.Name {
			var names []string
			for _, p := range append(append([]policy.Program{}, pol.EBPF.Required...), pol.EBPF.Allowed...) {
				names = append(names, p.Name)
			}
			return "only listed eBPF programs: " + joinList(names, same), progs()
		}
	}
	if mb := pol.MeasuredBoot; mb != nil {
		if mb.SecureBoot != nil && rule == mb.SecureBoot.Name {
			switch {
			case boot == nil || boot.SecureBoot == nil:
				return "Secure Boot enabled", "Secure Boot state unknown"
			case *boot.SecureBoot:
				return "Secure Boot enabled", "Secure Boot enabled"
			}
			return "Secure Boot enabled", "Secure Boot disabled"
		}
		for _, r := range mb.PCRs {
			if rule == r.Name {
				exp := fmt.Sprintf("PCR %d one of %s", r.Index, joinList(r.Values, shortDigest))
				if boot == nil {
					return exp, "no verified firmware log"
				}
				if v, ok := boot.PCRs[r.Index]; ok {
					return exp, "PCR " + strconv.Itoa(r.Index) + " " + shortDigest(strings.ToLower(v))
				}
				return exp, fmt.Sprintf("PCR %d not verified", r.Index)
			}
		}
		if h := mb.RuntimePCRHistory; h != nil && rule == h.Name {
			if boot == nil || boot.RuntimePCRHistory == nil {
				return "runtime PCR history " + joinList(h.Names, same), "unknown"
			}
			return "runtime PCR history " + joinList(h.Names, same), joinList(boot.RuntimePCRHistory, same)
		}
		for _, c := range mb.Forbid {
			if rule == c.Name {
				return fmt.Sprintf("none of %d forbidden digests (%s)", len(c.Digests), c.Reason), ""
			}
		}
		for _, c := range mb.Allow {
			if rule == c.Name {
				return fmt.Sprintf("boot components among %d allowed digests", len(c.Digests)), ""
			}
		}
	}
	return "", ""
}
