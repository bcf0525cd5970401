package verifier

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/pulse-attest/pulse/internal/tlsconfig"
	"github.com/pulse-attest/pulse/verifier/store"
)

// AlertProbe is the alert kind of a burst of refused handshakes from one
// address (docs/operations.md, "Probes").
const AlertProbe = "probe"

// Probe accounting (docs/operations.md, "Probes").
const (
	// AgentListener is the listener label of the agent port's refusals
	// in pulse_refused_total.
	AgentListener = "agent"
	// ProbeLogBurst is how many refusals of one cause are logged at warn
	// per ProbeWindow; the rest of the window's are logged at debug.
	ProbeLogBurst = 5
	// ProbeWindow is the window of the log rate limit and of the per
	// address count that raises a probe alert.
	ProbeWindow = time.Minute
	// maxProbeAddrs bounds the addresses counted at once; beyond it new
	// addresses are counted in the metrics and logs, not per address.
	maxProbeAddrs = 4096
)

// probes counts, logs and alerts on the agent port's refusals: every
// refused handshake (through probeCreds) and undecodable request (through
// the service's decode guard).
type probes struct {
	v          *Verifier
	log        hclog.Logger
	alertAfter int

	mu    sync.Mutex
	logs  map[tlsconfig.Cause]*probeWindow
	addrs map[string]*probeWindow
}

// probeWindow counts events in a fixed window that starts with its first.
type probeWindow struct {
	start      time.Time
	n          int
	suppressed int            // logged at debug in the window (logs)
	causes     map[string]int // per cause (addrs)
	alerted    bool           // this window raised its alert (addrs)
}

func newProbes(v *Verifier, alertAfter int, log hclog.Logger) *probes {
	v.metrics.InitRefused(AgentListener, causeLabels()...)
	return &probes{v: v, log: log, alertAfter: alertAfter,
		logs: map[tlsconfig.Cause]*probeWindow{}, addrs: map[string]*probeWindow{}}
}

func causeLabels() []string {
	cs := tlsconfig.Causes()
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = string(c)
	}
	return out
}

// refused counts, logs and, for a burst from one address, alerts on one
// refusal.
func (p *probes) refused(ctx context.Context, r tlsconfig.Refusal) {
	p.v.metrics.Refused(AgentListener, string(r.Cause))
	host := r.Remote
	if h, _, err := net.SplitHostPort(r.Remote); err == nil {
		host = h
	}
	now := p.v.now()
	p.mu.Lock()
	warn, suppressed := p.rateLimit(r.Cause, now)
	var burst map[string]int
	if r.Cause.Probe() {
		burst = p.count(host, r.Cause, now)
	}
	p.mu.Unlock()

	args := []any{"cause", string(r.Cause), "remote_addr", r.Remote}
	if r.Subject != "" {
		args = append(args, "peer_subject", r.Subject, "peer_serial", r.Serial)
	}
	if r.Err != nil {
		args = append(args, "error", r.Err.Error())
	}
	if suppressed > 0 {
		args = append(args, "suppressed_last_window", suppressed)
	}
	if warn {
		p.log.Warn("refused agent connection", args...)
	} else {
		p.log.Debug("refused agent connection", args...)
	}
	if burst != nil {
		p.v.raiseProbe(ctx, host, burst, now)
	}
}

// rateLimit says whether this refusal of cause is logged at warn and how
// many the previous window logged at debug. Causes that are not probes
// (handshake_failed: port checks) are always logged at debug.
func (p *probes) rateLimit(cause tlsconfig.Cause, now time.Time) (warn bool, suppressed int) {
	if !cause.Probe() && cause != tlsconfig.CauseMalformedRequest {
		return false, 0
	}
	w := p.logs[cause]
	if w == nil || now.Sub(w.start) >= ProbeWindow || now.Before(w.start) {
		if w != nil {
			suppressed = w.suppressed
		}
		w = &probeWindow{start: now}
		p.logs[cause] = w
	}
	w.n++
	if w.n > ProbeLogBurst {
		w.suppressed++
		return false, 0
	}
	return true, suppressed
}

// count adds a refused handshake from host and returns its window's
// counts by cause when this one reaches the alert threshold.
func (p *probes) count(host string, cause tlsconfig.Cause, now time.Time) map[string]int {
	w := p.addrs[host]
	if w != nil && (now.Sub(w.start) >= ProbeWindow || now.Before(w.start)) {
		w = nil
	}
	if w == nil {
		if _, known := p.addrs[host]; !known && len(p.addrs) >= maxProbeAddrs {
			for h, o := range p.addrs {
				if now.Sub(o.start) >= ProbeWindow || now.Before(o.start) {
					delete(p.addrs, h)
				}
			}
			if len(p.addrs) >= maxProbeAddrs {
				return nil
			}
		}
		w = &probeWindow{start: now, causes: map[string]int{}}
		p.addrs[host] = w
	}
	w.n++
	w.causes[string(cause)]++
	if w.alerted || w.n < p.alertAfter {
		return nil
	}
	w.alerted = true
	out := make(map[string]int, len(w.causes))
	for c, n := range w.causes {
		out[c] = n
	}
	return out
}

// malformed reports a request on the agent port that did not decode.
func (p *probes) malformed(ctx context.Context, err error) {
	r := tlsconfig.Refusal{Cause: tlsconfig.CauseMalformedRequest, Err: err}
	if pr, ok := peer.FromContext(ctx); ok {
		if pr.Addr != nil {
			r.Remote = pr.Addr.String()
		}
		if ti, ok := pr.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.PeerCertificates) > 0 {
			leaf := ti.State.PeerCertificates[0]
			r.Subject, r.Serial = leaf.Subject.String(), leaf.SerialNumber.String()
		}
	}
	p.refused(ctx, r)
}

// raiseProbe raises a probe alert for host, once per host and
// AlertDedupWindow whichever replica sees the burst first.
func (v *Verifier) raiseProbe(ctx context.Context, host string, causes map[string]int, now time.Time) {
	names := make([]string, 0, len(causes))
	total := 0
	for c, n := range causes {
		names = append(names, fmt.Sprintf("%s %d", c, n))
		total += n
	}
	sort.Strings(names)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	v.raise(ctx, &store.Alert{
		DedupKey: fmt.Sprintf("%s:%s:%d", AlertProbe, host, dedupBucket(now)),
		Kind:     AlertProbe, Severity: 3,
		Message: fmt.Sprintf("%d TLS handshakes from %s refused on the agent port within %s (%s)",
			total, host, ProbeWindow, strings.Join(names, ", ")),
	})
}

// probeCreds are the agent port's TLS credentials: every handshake runs on
// an observed connection so a refused one is classified and reported.
type probeCreds struct {
	credentials.TransportCredentials
	probes *probes
}

func (c probeCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	oc := tlsconfig.Observe(raw)
	conn, info, err := c.TransportCredentials.ServerHandshake(oc)
	if err != nil {
		c.probes.refused(context.Background(), oc.Refusal(err))
		return nil, nil, err
	}
	return conn, info, nil
}

func (c probeCreds) Clone() credentials.TransportCredentials {
	return probeCreds{TransportCredentials: c.TransportCredentials.Clone(), probes: c.probes}
}
