package agent

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pulse-attest/pulse/agent/config"
	"github.com/pulse-attest/pulse/internal/directivesig"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
)

// Signed directives and protected addresses (docs/agent.md, "Directive
// key"; docs/operations.md, "Signed directives", "What isolation never
// hits").

// ErrNoDirectiveKey: the agent has no directive_key, so it cannot tell the
// verifier's quarantine and release directives from anyone else's and
// refuses them all.
var ErrNoDirectiveKey = errors.New("no directive_key configured: quarantine and release directives are refused")

// ErrProtectedAddress: a quarantine names an address this agent never
// drops (its verifier's, or one of protected_addresses).
var ErrProtectedAddress = errors.New("address is protected on this agent")

// directiveAuth verifies the directives that change Shield and knows the
// addresses Shield must never drop.
type directiveAuth struct {
	pub       ed25519.PublicKey // nil: no directive_key, refuse all
	now       func() time.Time
	protected []netip.Prefix

	mu      sync.Mutex
	win     directivesig.Window
	refused uint64
}

// newDirectiveAuth reads the configured directive key (an error when it is
// configured and unusable: the agent does not start) and the protected
// addresses: protected_addresses and every verifier address.
func newDirectiveAuth(cfg *config.Config, log hclog.Logger) (*directiveAuth, error) {
	d := &directiveAuth{now: time.Now}
	if cfg.DirectiveKey != "" {
		raw, err := os.ReadFile(cfg.DirectiveKey)
		if err != nil {
			return nil, fmt.Errorf("directive key: %w", err)
		}
		if d.pub, err = directivesig.ParsePublicKey(raw); err != nil {
			return nil, fmt.Errorf("directive key %s: %w", cfg.DirectiveKey, err)
		}
	} else if log != nil {
		log.Warn("no directive_key configured: this agent refuses every quarantine and release directive (isolation does not work through it)")
	}
	d.protected = slices.Clone(cfg.ProtectedAddresses)
	for _, a := range VerifierAddresses(context.Background(), cfg, log) {
		d.protected = append(d.protected, netip.PrefixFrom(a, a.BitLen()))
	}
	return d, nil
}

// ProtectedAddresses are the single addresses Shield must never drop for
// cfg: the verifier replicas' addresses (names resolved now) and every
// single-address entry of protected_addresses (wider prefixes are refused
// by the agent before Shield is asked). cmd/pulse-agent hands them to
// Shield.
func ProtectedAddresses(ctx context.Context, cfg *config.Config, log hclog.Logger) []netip.Addr {
	out := VerifierAddresses(ctx, cfg, log)
	for _, p := range cfg.ProtectedAddresses {
		if p.IsSingleIP() && !slices.Contains(out, p.Addr()) {
			out = append(out, p.Addr())
		}
	}
	return out
}

// VerifierAddresses resolves the hosts of the configured verifier
// addresses (literal addresses as they are; names through the resolver,
// five seconds at most each). A name that does not resolve is logged and
// skipped.
func VerifierAddresses(ctx context.Context, cfg *config.Config, log hclog.Logger) []netip.Addr {
	var out []netip.Addr
	add := func(a netip.Addr) {
		a = a.WithZone("").Unmap()
		if a.IsValid() && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	for _, hp := range cfg.VerifierAddrs() {
		host, _, err := net.SplitHostPort(hp)
		if err != nil {
			continue
		}
		if a, err := netip.ParseAddr(host); err == nil {
			add(a)
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		as, err := net.DefaultResolver.LookupNetIP(rctx, "ip", host)
		cancel()
		if err != nil {
			if log != nil {
				log.Warn("verifier name does not resolve; its address is not protected from quarantine until the agent restarts", "verifier", host, "error", err)
			}
			continue
		}
		for _, a := range as {
			add(a)
		}
	}
	return out
}

// isProtected reports whether addr must never be quarantined here.
func (d *directiveAuth) isProtected(addr netip.Addr) bool {
	addr = addr.WithZone("").Unmap()
	for _, p := range d.protected {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// open verifies a quarantine or release directive for audience (this
// agent's ID) and returns its signed copy. Every error matches
// ErrNoDirectiveKey or one of directivesig's typed errors.
func (d *directiveAuth) open(m *pulsev1.Directive, audience string) (*pulsev1.Directive, error) {
	if d == nil || len(d.pub) == 0 {
		return nil, ErrNoDirectiveKey
	}
	signed, err := directivesig.Open(d.pub, m, audience)
	if err != nil {
		return nil, err
	}
	if !needsSignature(signed) || directivesig.Kind(signed) != directivesig.Kind(m) {
		return nil, fmt.Errorf("%w: the signed copy is a %s directive, the outer one a %s", directivesig.ErrMalformed, directivesig.Kind(signed), directivesig.Kind(m))
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.win.Accept(signed, d.now()); err != nil {
		return nil, err
	}
	return signed, nil
}

// openDirective is directiveAuth.open for this agent.
func (a *Agent) openDirective(m *pulsev1.Directive, audience string) (*pulsev1.Directive, error) {
	return a.dauth.open(m, audience)
}

// noteRefused counts a refused directive.
func (a *Agent) noteRefused() {
	if a.dauth == nil {
		return
	}
	a.dauth.mu.Lock()
	a.dauth.refused++
	a.dauth.mu.Unlock()
}

// quarantineUnlessProtected asks Shield to drop addr unless it is one of
// this agent's protected addresses.
func (a *Agent) quarantineUnlessProtected(addr netip.Addr) error {
	if a.dauth != nil && a.dauth.isProtected(addr) {
		return fmt.Errorf("quarantine %s: %w", addr, ErrProtectedAddress)
	}
	return a.bpf.Quarantine(addr)
}

// needsSignature: the directives that change Shield.
func needsSignature(d *pulsev1.Directive) bool {
	return d.GetQuarantine() != nil || d.GetRelease() != nil
}
