package verifier

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/verifier/admin"
	"github.com/pulse-attest/pulse/verifier/store"
)

// What a committed pulse adds to its explanation beside the findings and
// evidence (dryrun_evidence.go): the agent's TLS certificate as the
// pulse's handshake verified it (every committed pulse), and the kernel
// summary of the pulse (only when its quote verified, explainIdentity): the eBPF
// snapshot (pinned programs vs. their live pins, the hook chains Pulse
// enforces), Fortress's status and Sentinel's counters, as the agent read
// them from its kernel. The kernel summary is a claim of the agent: signed
// with its certificate key and bound to the quote by the payload's digest,
// not measured by the TPM. It names programs by name and tag, never by
// kernel ID (IDs differ per host; the rest is shared by a fleet booted the
// same way), and is stored gzip'd, bounded by maxKernelBytes within
// store.MaxExplanationBytes.

const (
	// maxSubjectBytes bounds the stored certificate subject.
	maxSubjectBytes = 256
	// maxKernelBytes bounds the stored kernel summary (gzip'd JSON);
	// maxKernelJSON the JSON before compression.
	maxKernelBytes = 2 << 10
	maxKernelJSON  = 32 << 10
	// maxKernelText bounds each name, reason and problem in it.
	maxKernelText = 120
)

// ErrKernelEncoding is returned for a stored kernel summary that does not
// decode.
var ErrKernelEncoding = errors.New("stored kernel summary does not decode")

// cleanText escapes what is not printable (as \u{..}) and clips to n
// bytes: a certificate subject or a kernel name chosen by root on the
// device stays one line of plain text.
func cleanText(s string, n int) string {
	var b strings.Builder
	for len(s) > 0 && b.Len() <= n {
		r, w := utf8.DecodeRuneInString(s)
		switch {
		case r == utf8.RuneError && w == 1:
			fmt.Fprintf(&b, `\x%02x`, s[0])
		case unicode.IsPrint(r):
			b.WriteRune(r)
		default:
			b.WriteString(`\u{` + strconv.FormatInt(int64(r), 16) + `}`)
		}
		s = s[w:]
	}
	// Anything left over means b is past n: clip marks the cut.
	return clip(b.String(), n)
}

// certOf records the pulse's TLS certificate in x.
func certOf(p Peer, x *store.Explanation) {
	x.CertSubject = cleanText(p.CertSubject, maxSubjectBytes)
	x.CertNotAfter = p.CertNotAfter
}

func hexTag(b []byte) string {
	if len(b) > 8 {
		b = b[:8]
	}
	return hex.EncodeToString(b)
}

// kernelSummaryOf is the kernel summary of payload p.
func kernelSummaryOf(p *pulsev1.PulsePayload) admin.KernelSummary {
	k := admin.KernelSummary{Pinned: []admin.KernelPin{}, Hooks: []admin.KernelHook{}}
	bpf := p.GetBpf()
	for _, pin := range bpf.GetPinned() {
		kp := admin.KernelPin{Name: cleanText(pin.GetName(), maxKernelText), Tag: hexTag(pin.GetTag()),
			Problem: cleanText(pin.GetProblem(), maxKernelText)}
		if d := pin.GetInsnSha256(); len(d) > 0 {
			kp.InsnSHA256 = shortDigest(hex.EncodeToString(d))
		}
		if pin.GetProblemKind() != pulsev1.PinProblem_PIN_PROBLEM_UNSPECIFIED {
			kp.ProblemKind = strings.TrimPrefix(pin.GetProblemKind().String(), "PIN_PROBLEM_")
		}
		k.Pinned = append(k.Pinned, kp)
	}
	for _, h := range bpf.GetHooks() {
		kh := admin.KernelHook{Hook: cleanText(h.GetHook(), maxKernelText), Target: cleanText(h.GetTarget(), maxKernelText),
			Error: cleanText(h.GetError(), maxKernelText), Programs: []admin.KernelChain{}}
		for _, cp := range h.GetPrograms() {
			kh.Programs = append(kh.Programs, admin.KernelChain{Name: cleanText(cp.GetName(), maxKernelText), Tag: hexTag(cp.GetTag()),
				Type: cleanText(cp.GetType(), maxKernelText), Link: cp.GetLinkId() != 0})
		}
		k.Hooks = append(k.Hooks, kh)
	}
	k.HostPrograms, k.QuarantineCount = bpf.GetHostProgramCount(), bpf.GetQuarantineCount()
	if f := p.GetFortress(); f != nil {
		k.Fortress = &admin.KernelFortress{Active: f.GetActive(), LSMListed: f.GetLsmListed(), Loaded: f.GetLoaded(),
			Attached: f.GetAttached(), Reason: cleanText(f.GetReason(), maxKernelText)}
		if len(f.GetTag()) > 0 {
			k.Fortress.Tag = hexTag(f.GetTag())
		}
	}
	if s := p.GetSentinel(); s != nil {
		k.Sentinel = &admin.KernelSentinel{Lost: s.GetLost(),
			ConfigMatches: s.GetCfgAgentTgid() != 0 && s.GetCfgAgentTgid() == s.GetAgentTgid(),
			Truncated:     s.GetTruncated(), Error: cleanText(s.GetError(), maxKernelText), Events: len(p.GetSentinelEvents())}
	}
	return k
}

// gzipKernel is k's stored form when its JSON fits maxKernelJSON (else
// nil, and the caller leaves something out).
func gzipKernel(k admin.KernelSummary) ([]byte, error) {
	raw, err := json.Marshal(k)
	if err != nil || len(raw) > maxKernelJSON {
		return nil, err
	}
	return gzipJSON(json.RawMessage(raw))
}

// encodeKernel encodes k within maxKernelBytes: hook chains' programs go
// first, then hooks, then pins (Clipped says what was left out).
func encodeKernel(k admin.KernelSummary) ([]byte, error) {
	b, err := gzipKernel(k)
	if err != nil {
		return nil, fmt.Errorf("encode kernel summary: %w", err)
	}
	for step := 0; b == nil || len(b) > maxKernelBytes; step++ {
		switch step {
		case 0:
			n := 0
			for i := range k.Hooks {
				n += len(k.Hooks[i].Programs)
				k.Hooks[i].Programs = []admin.KernelChain{}
			}
			k.Clipped = fmt.Sprintf("%d hook chain programs", n)
		case 1:
			k.Clipped = fmt.Sprintf("%d hooks", len(k.Hooks))
			k.Hooks = []admin.KernelHook{}
		case 2:
			keep := k.Pinned[:0]
			for _, p := range k.Pinned {
				if p.ProblemKind != "" {
					keep = append(keep, p)
				}
			}
			k.Clipped += fmt.Sprintf(", %d pins without a problem", len(k.Pinned)-len(keep))
			k.Pinned = keep
		default:
			return nil, fmt.Errorf("encode kernel summary: over its bound of %d bytes", maxKernelBytes)
		}
		if b, err = gzipKernel(k); err != nil {
			return nil, fmt.Errorf("encode kernel summary: %w", err)
		}
	}
	return b, nil
}

// kernelCache holds recent kernel summary encodings by the SHA-256 of
// their JSON: a fleet booted the same way reports the same summary (it
// holds no kernel IDs, PIDs or sequence numbers), so most pulses pay the
// JSON and a hash, not the compression.
var kernelCache struct {
	sync.Mutex
	m map[[32]byte][]byte
}

// encodeKernelCached is encodeKernel through kernelCache.
func encodeKernelCached(k admin.KernelSummary) ([]byte, error) {
	raw, err := json.Marshal(k)
	if err != nil {
		return nil, fmt.Errorf("encode kernel summary: %w", err)
	}
	key := sha256.Sum256(raw)
	kernelCache.Lock()
	b, ok := kernelCache.m[key]
	kernelCache.Unlock()
	if ok {
		return b, nil
	}
	if b, err = encodeKernel(k); err != nil {
		return nil, err
	}
	kernelCache.Lock()
	if kernelCache.m == nil || len(kernelCache.m) >= maxEncodedCache {
		kernelCache.m = make(map[[32]byte][]byte, maxEncodedCache)
	}
	kernelCache.m[key] = b
	kernelCache.Unlock()
	return b, nil
}

// DecodeKernel reads a stored kernel summary.
func DecodeKernel(b []byte) (*admin.KernelSummary, error) {
	if len(b) > maxKernelBytes {
		return nil, fmt.Errorf("%w: %d bytes", ErrKernelEncoding, len(b))
	}
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKernelEncoding, err)
	}
	raw, err := io.ReadAll(io.LimitReader(zr, maxKernelJSON+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKernelEncoding, err)
	}
	if len(raw) > maxKernelJSON {
		return nil, fmt.Errorf("%w: more than %d bytes", ErrKernelEncoding, maxKernelJSON)
	}
	var k admin.KernelSummary
	if err := json.Unmarshal(raw, &k); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKernelEncoding, err)
	}
	return &k, nil
}

// explainIdentity adds the pulse's certificate and, when its quote
// verified (the payload is then bound to a fresh quote of the enrolled AK;
// its claims may still fail: a replaced pin is shown and judged) or an
// mTLS-only pulse's evidence was accepted for policy, its kernel summary
// to x.
//
// The kernel summary is taken from prev (what this process last wrote for
// the agent) when the payload's kernel report is the same as then, by the
// digest of its deterministic encoding (kernelInputKey); it returns that
// digest (zero when there is no summary).
func (v *Verifier) explainIdentity(o *Outcome, x *store.Explanation, prev *explained) [32]byte {
	certOf(o.peer, x)
	if !o.TPM && o.evidence == nil || o.payload == nil {
		return [32]byte{}
	}
	key, kerr := kernelInputKey(o.payload)
	if kerr == nil && prev != nil && prev.kernelKey == key && prev.kernel != nil {
		x.Kernel = prev.kernel
		return key
	}
	b, err := encodeKernelCached(kernelSummaryOf(o.payload))
	if err != nil {
		v.log.Warn("kernel summary not stored", "agent_id", o.agent.ID, "error", err)
		return [32]byte{}
	}
	x.Kernel = b
	if kerr != nil {
		return [32]byte{}
	}
	return key
}

// kernelInputKey is the SHA-256 of the deterministic encoding of what
// kernelSummaryOf reads from a payload.
func kernelInputKey(p *pulsev1.PulsePayload) ([32]byte, error) {
	var key [32]byte
	in := &pulsev1.PulsePayload{Bpf: p.GetBpf(), Fortress: p.GetFortress(), Sentinel: p.GetSentinel()}
	raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(in)
	if err != nil {
		return key, err
	}
	h := sha256.New()
	h.Write(raw)
	fmt.Fprintf(h, "/%d", len(p.GetSentinelEvents()))
	h.Sum(key[:0])
	return key, nil
}

// certificateOf is the stored certificate as the admin API shows it at now.
func certificateOf(x *store.Explanation, now time.Time) *admin.Certificate {
	if x.CertSubject == "" && x.CertNotAfter.IsZero() {
		return nil
	}
	return &admin.Certificate{Subject: x.CertSubject, NotAfter: x.CertNotAfter,
		ExpiresSoon: x.CertNotAfter.Sub(now) < admin.CertExpiryWarning, Expired: !now.Before(x.CertNotAfter)}
}

// agentWindows lists the update windows that apply to agent id at now:
// the operators' approvals not ended whose globs match it, then the
// agent_binary windows of the policy selecting it.
func (v *Verifier) agentWindows(ctx context.Context, id string, now time.Time) ([]admin.AgentWindow, error) {
	out := []admin.AgentWindow{}
	ws, err := v.store.UpdateWindowsNotEnded(ctx, now)
	if err != nil {
		return nil, fmt.Errorf("agent %s: update windows: %w", id, err)
	}
	for _, w := range ws {
		for _, g := range w.Agents {
			if ok, _ := path.Match(g, id); ok {
				out = append(out, admin.AgentWindow{Source: "operator", Name: w.ID, Digests: []string{w.Digest}, Start: w.Start, End: w.End,
					Open: !now.Before(w.Start) && now.Before(w.End), By: w.CreatedBy})
				break
			}
		}
	}
	if pol := v.selectPolicy(id); pol != nil && pol.AgentBinary != nil {
		for _, w := range pol.AgentBinary.Windows {
			out = append(out, admin.AgentWindow{Source: "policy", Name: pol.Name + "/" + w.Name, Where: w.Pos.String(),
				Digests: append([]string{}, w.Allow...), Start: w.Start, End: w.End, Open: w.Contains(now), EBPFObjects: len(w.EBPFObjects)})
		}
	}
	return out, nil
}
