package agent

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pulse-attest/pulse/agent/config"
	"github.com/pulse-attest/pulse/internal/directivesig"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/simulator/simtest"
)

// useDirectiveKey writes a fresh directive public key for h's agent (set
// before the agent is built) and returns the private half.
func useDirectiveKey(t *testing.T, h *harness) ed25519.PrivateKey {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	h.cfg.DirectiveKey = writePublicKey(t, pub)
	return priv
}

func writePublicKey(t *testing.T, pub ed25519.PublicKey) string {
	t.Helper()
	raw, err := directivesig.MarshalPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "directive.pub")
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

var directiveSeq atomic.Uint64

// signFor signs d as the verifier does: a fresh id, issued now, for
// audience.
func signFor(t *testing.T, key ed25519.PrivateKey, d *pulsev1.Directive, audience string, issued time.Time) *pulsev1.Directive {
	t.Helper()
	out := proto.Clone(d).(*pulsev1.Directive)
	out.Id = fmt.Sprintf("d%d", directiveSeq.Add(1))
	out.Issued = timestamppb.New(issued)
	out.Audience = audience
	if err := directivesig.Sign(key, out); err != nil {
		t.Fatal(err)
	}
	return out
}

func quarantineOf(addrs ...string) *pulsev1.Directive {
	return &pulsev1.Directive{Kind: &pulsev1.Directive_Quarantine{Quarantine: &pulsev1.Quarantine{Addresses: addrs, Offender: "edge-bad"}}}
}

func releaseOf(addrs ...string) *pulsev1.Directive {
	return &pulsev1.Directive{Kind: &pulsev1.Directive_Release{Release: &pulsev1.Release{Addresses: addrs, Offender: "edge-bad"}}}
}

// TestDirectiveSignatures: a quarantine or release acts only when signed
// with the configured directive key for this agent, fresh and first seen;
// each attack is refused with its own typed error and changes nothing. A
// signed quarantine of a protected address changes nothing either.
func TestDirectiveSignatures(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	const me = "edge-1"
	replayed := signFor(t, priv, quarantineOf("10.0.0.20"), me, now)
	tampered := signFor(t, priv, quarantineOf("10.0.0.21"), me, now)
	inner := &pulsev1.Directive{}
	if err := proto.Unmarshal(tampered.Signed, inner); err != nil {
		t.Fatal(err)
	}
	inner.GetQuarantine().Addresses = []string{"10.0.0.99"}
	tampered.Signed, _ = proto.Marshal(inner)
	outerSwapped := signFor(t, priv, quarantineOf("10.0.0.22"), me, now)
	outerSwapped.Kind = &pulsev1.Directive_Quarantine{Quarantine: &pulsev1.Quarantine{Addresses: []string{"10.0.0.98"}}}
	kindSwapped := signFor(t, priv, releaseOf("10.0.0.23"), me, now)
	kindSwapped.Kind = quarantineOf("10.0.0.23").Kind

	tests := []struct {
		name    string
		noKey   bool
		d       *pulsev1.Directive
		want    error    // from openDirective; nil: accepted
		calls   []string // Shield calls it makes
		protect string
	}{
		{name: "signed quarantine", d: signFor(t, priv, quarantineOf("10.0.0.9"), me, now), calls: []string{"quarantine 10.0.0.9"}},
		{name: "signed release", d: signFor(t, priv, releaseOf("10.0.0.9"), me, now), calls: []string{"release 10.0.0.9"}},
		{name: "signed, no audience", d: signFor(t, priv, quarantineOf("10.0.0.10"), "", now), calls: []string{"quarantine 10.0.0.10"}},
		{name: "first of a replayed pair", d: replayed, calls: []string{"quarantine 10.0.0.20"}},
		{name: "replayed", d: replayed, want: directivesig.ErrReplayed},
		{name: "unsigned quarantine", d: quarantineOf("10.0.0.11"), want: directivesig.ErrUnsigned},
		{name: "unsigned release", d: releaseOf("10.0.0.9"), want: directivesig.ErrUnsigned},
		{name: "forged: another key", d: signFor(t, other, quarantineOf("10.0.0.12"), me, now), want: directivesig.ErrBadSignature},
		{name: "signed copy changed", d: tampered, want: directivesig.ErrBadSignature},
		{name: "wrong audience", d: signFor(t, priv, quarantineOf("10.0.0.13"), "edge-2", now), want: directivesig.ErrAudience},
		{name: "stale", d: signFor(t, priv, quarantineOf("10.0.0.14"), me, now.Add(-time.Hour)), want: directivesig.ErrStale},
		{name: "from the future", d: signFor(t, priv, quarantineOf("10.0.0.15"), me, now.Add(time.Hour)), want: directivesig.ErrStale},
		{name: "kind swapped outside the signature", d: kindSwapped, want: directivesig.ErrMalformed},
		{name: "no key configured", noKey: true, d: signFor(t, priv, quarantineOf("10.0.0.16"), me, now), want: ErrNoDirectiveKey},
		// The outer fields are never acted on: only the signed copy.
		{name: "outer addresses changed", d: outerSwapped, calls: []string{"quarantine 10.0.0.22"}},
		{name: "protected address", protect: "10.0.0.0/24", d: signFor(t, priv, quarantineOf("10.0.0.17", "192.0.2.5"), me, now), calls: []string{"quarantine 192.0.2.5"}},
	}
	auth := &directiveAuth{pub: pub, now: func() time.Time { return now }}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fb := &fakeBPF{}
			da := auth
			if tc.noKey {
				da = &directiveAuth{now: auth.now}
			}
			da.protected = nil
			if tc.protect != "" {
				da.protected = []netip.Prefix{netip.MustParsePrefix(tc.protect)}
			}
			a := &Agent{bpf: fb, log: simtest.Logger(t), dauth: da}
			// Judge a copy: handleDirective below sees the directive first.
			probe := &directiveAuth{pub: da.pub, now: da.now}
			probe.win = directivesig.Window{}
			if tc.name == "replayed" {
				_, _ = probe.open(tc.d, me)
			}
			if _, err := probe.open(tc.d, me); !errors.Is(err, tc.want) {
				t.Fatalf("open: %v, want %v", err, tc.want)
			}
			before := da.refused
			a.handleDirective(tc.d, me)
			fb.mu.Lock()
			calls := slices.Clone(fb.calls)
			fb.mu.Unlock()
			if !slices.Equal(calls, tc.calls) {
				t.Fatalf("shield calls %v, want %v", calls, tc.calls)
			}
			if refused := da.refused - before; (tc.want != nil) != (refused == 1) {
				t.Fatalf("%d refusals counted", refused)
			}
		})
	}
}

// TestDirectiveKeyConfig: a configured key that is not an Ed25519 public
// key stops the agent from starting; the verifier's address is protected
// from quarantine whatever the directive says.
func TestDirectiveKeyConfig(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.pub")
	if err := os.WriteFile(bad, []byte("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := newDirectiveAuth(&config.Config{DirectiveKey: bad}, nil); !errors.Is(err, directivesig.ErrKey) {
		t.Fatalf("unusable key: %v, want ErrKey", err)
	}
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	d, err := newDirectiveAuth(&config.Config{DirectiveKey: writePublicKey(t, pub), Verifier: "192.0.2.10:7443,[2001:db8::7]:7443",
		ProtectedAddresses: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		addr string
		want bool
	}{{"192.0.2.10", true}, {"2001:db8::7", true}, {"::ffff:192.0.2.10", true}, {"198.51.100.77", true}, {"192.0.2.11", false}, {"203.0.113.1", false}} {
		if got := d.isProtected(netip.MustParseAddr(tc.addr)); got != tc.want {
			t.Errorf("protected(%s) = %t, want %t", tc.addr, got, tc.want)
		}
	}
	got := ProtectedAddresses(t.Context(), &config.Config{Verifier: "192.0.2.10:7443", ProtectedAddresses: []netip.Prefix{
		netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("203.0.113.9/32")}}, nil)
	if want := []netip.Addr{netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("203.0.113.9")}; !slices.Equal(got, want) {
		t.Fatalf("Shield's protected addresses %v, want %v", got, want)
	}
}

// TestSignedDirectivesOverStream: through the real directives stream (mTLS
// gRPC), a directive signed for this agent changes Shield; an unsigned one,
// one signed with another key, one for another agent and a replay of the
// accepted one change nothing.
func TestSignedDirectivesOverStream(t *testing.T) {
	fb := &fakeBPF{}
	h := newHarness(t, harnessOpts{tpm: true, interval: time.Hour, bpf: fb})
	priv := useDirectiveKey(t, h)
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	h.start(nil)
	requireAccepted(t, h.fv.waitPulses(t, 1, 60*time.Second))
	for deadline := time.Now().Add(30 * time.Second); ; {
		if _, _, streams := h.fv.counts(); streams > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no directives stream")
		}
		time.Sleep(50 * time.Millisecond)
	}
	send := func(d *pulsev1.Directive) { h.fv.directives <- d }
	good := signFor(t, priv, quarantineOf("10.0.0.9"), testAgentID, time.Now())
	send(quarantineOf("10.0.0.30"))
	send(signFor(t, other, quarantineOf("10.0.0.31"), testAgentID, time.Now()))
	send(signFor(t, priv, quarantineOf("10.0.0.32"), "someone-else", time.Now()))
	send(good)
	send(good)
	send(signFor(t, priv, releaseOf("10.0.0.9"), testAgentID, time.Now()))
	send(releaseOf("10.0.0.30"))
	send(signFor(t, priv, quarantineOf("10.0.0.33"), testAgentID, time.Now()))
	waitCalls := func() []string {
		deadline := time.Now().Add(20 * time.Second)
		for {
			fb.mu.Lock()
			calls := slices.Clone(fb.calls)
			fb.mu.Unlock()
			if slices.Contains(calls, "quarantine 10.0.0.33") || time.Now().After(deadline) {
				return calls
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if got, want := waitCalls(), []string{"quarantine 10.0.0.9", "release 10.0.0.9", "quarantine 10.0.0.33"}; !slices.Equal(got, want) {
		t.Fatalf("shield calls %v, want %v", got, want)
	}
	h.agent.dauth.mu.Lock()
	refused := h.agent.dauth.refused
	h.agent.dauth.mu.Unlock()
	if refused != 5 {
		t.Fatalf("%d directives refused, want 5", refused)
	}
}
