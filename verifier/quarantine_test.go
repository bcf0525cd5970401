package verifier_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/internal/directivesig"
	"github.com/pulse-attest/pulse/internal/quarset"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/tpm"
	"github.com/pulse-attest/pulse/verifier"
	"github.com/pulse-attest/pulse/verifier/config"
	"github.com/pulse-attest/pulse/verifier/store"
	"github.com/pulse-attest/pulse/verifier/verifiertest"
)

// directiveKeyFile writes a fresh directive key (0600) and returns the
// configuration change that uses it and its public half.
func directiveKeyFile(t *testing.T) (func(*config.Config), ed25519.PublicKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pemKey, err := directivesig.MarshalPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "directive-key.pem")
	if err := os.WriteFile(path, pemKey, 0o600); err != nil {
		t.Fatal(err)
	}
	return func(c *config.Config) { c.DirectiveKey = path }, pub
}

// both applies every configuration change in order.
func both(muts ...func(*config.Config)) func(*config.Config) {
	return func(c *config.Config) {
		for _, m := range muts {
			if m != nil {
				m(c)
			}
		}
	}
}

// agentFrom is agent with its connection from source address src.
func (e *env) agentFrom(id string, dev *tpm.TPM, src string) *verifiertest.Client {
	return e.agent(id, dev).From(e.daemon.Addr(), e.caFile, src)
}

// sharing is another agent ID on a's TPM: same runtime log and build.
func (e *env) sharing(a *verifiertest.Client, id, src string) *verifiertest.Client {
	e.t.Helper()
	b := e.agentFrom(id, a.Dev, src)
	b.Records, b.SentUpTo, b.Binary = a.Records, 0, a.Binary
	if res := b.Enroll(); !res.GetEnrolled() {
		e.t.Fatalf("enroll %s: %s", id, res.GetMessage())
	}
	b.Challenge()
	return b
}

// directives collects what a's directive stream receives.
type directives struct {
	mu  sync.Mutex
	got []*pulsev1.Directive
}

func openDirectives(t *testing.T, a *verifiertest.Client) *directives {
	t.Helper()
	stream, err := a.Cl.Directives(ctx(t), &pulsev1.DirectivesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	d := &directives{}
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				return
			}
			d.mu.Lock()
			d.got = append(d.got, m)
			d.mu.Unlock()
		}
	}()
	time.Sleep(300 * time.Millisecond) // the stream is registered
	return d
}

// quarantined returns every quarantine address received so far, after
// checking each directive's signature for audience with pub.
func (d *directives) quarantined(t *testing.T, pub ed25519.PublicKey, audience string) []string {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for _, m := range d.got {
		if m.GetQuarantine() == nil && len(m.GetSigned()) == 0 {
			continue
		}
		s, err := directivesig.Open(pub, m, audience)
		if err != nil {
			t.Fatalf("directive to %s not signed for it: %v", audience, err)
		}
		out = append(out, s.GetQuarantine().GetAddresses()...)
	}
	return out
}

func quarantineAddrs(qs []store.Quarantine) []string {
	var out []string
	for _, q := range qs {
		out = append(out, q.Address+"@"+q.Offender)
	}
	slices.Sort(out)
	return out
}

func refusedMentioning(t *testing.T, st *store.Store, agent, addr string) bool {
	for _, a := range alertsOf(t, st, agent, verifier.AlertIsolationRefused) {
		if strings.Contains(a.Message, "address "+addr+" ") {
			return true
		}
	}
	return false
}

// TestIsolationNeighbourAddress: a device accepted from its own address
// fails from a neighbour's (a taken-over or secondary address). Only its
// own address is isolated; the neighbour's is refused (isolation_refused)
// and never reaches any agent, and the neighbour is never told to drop
// anything of its own. Failing again from a throwaway address isolates
// nothing new and keeps its real address isolated.
func TestIsolationNeighbourAddress(t *testing.T) {
	withKey, pub := directiveKeyFile(t)
	e := newEnvCfg(t, "rhel8-uefi", both(ekBacks(4), withKey))
	if e == nil {
		return
	}
	st := openStore(t, e)
	watch := e.agentFrom("edge-watch", e.openTPM(e.sw), "127.0.0.2")
	if res := watch.Enroll(); !res.GetEnrolled() {
		t.Fatal(res.GetMessage())
	}
	watch.MeasureBinary()
	watch.Challenge()
	wantVerdict(t, watch.Pulse(nil), trusted, pulsev1.Reason_REASON_OK)
	neigh := e.sharing(watch, "edge-neigh", "127.0.0.4")
	wantVerdict(t, neigh.Pulse(nil), trusted, pulsev1.Reason_REASON_OK)
	bad := e.sharing(watch, "edge-bad", "127.0.0.5")
	wantVerdict(t, bad.Pulse(nil), trusted, pulsev1.Reason_REASON_OK)
	watchDirs, neighDirs := openDirectives(t, watch), openDirectives(t, neigh)

	// The attack: the device fails from its neighbour's address.
	bad.From(e.daemon.Addr(), e.caFile, "127.0.0.4")
	bad.Challenge()
	wantVerdict(t, bad.Pulse(func(p *parts) { p.Payload.AgentBinaryDiskSha256 = make([]byte, 32) }), untrusted, pulsev1.Reason_REASON_AGENT_BINARY_MISMATCH)
	if got := quarantineAddrs(quarantined(t, st)); !slices.Equal(got, []string{"127.0.0.5@edge-bad"}) {
		t.Fatalf("quarantine %v, want only the offender's own address", got)
	}
	if !refusedMentioning(t, st, "edge-bad", "127.0.0.4") {
		t.Fatalf("no isolation_refused alert names the neighbour's address: %+v", alertsOf(t, st, "edge-bad", verifier.AlertIsolationRefused))
	}
	waitFor(t, "the watcher and the neighbour to get the offender's address", func() bool {
		return slices.Contains(watchDirs.quarantined(t, pub, "edge-watch"), "127.0.0.5") &&
			slices.Contains(neighDirs.quarantined(t, pub, "edge-neigh"), "127.0.0.5")
	})

	// Again from a throwaway address nobody was accepted from.
	bad.From(e.daemon.Addr(), e.caFile, "127.0.0.7")
	bad.Challenge()
	wantVerdict(t, bad.Pulse(func(p *parts) { p.Payload.AgentBinaryDiskSha256 = make([]byte, 32) }), untrusted, pulsev1.Reason_REASON_AGENT_BINARY_MISMATCH)
	if got := quarantineAddrs(quarantined(t, st)); !slices.Equal(got, []string{"127.0.0.5@edge-bad"}) {
		t.Fatalf("quarantine %v after a failure from a throwaway address", got)
	}
	if !refusedMentioning(t, st, "edge-bad", "127.0.0.7") {
		t.Fatal("no isolation_refused alert names the throwaway address")
	}
	time.Sleep(3 * verifier.DirectivePollInterval)
	for who, d := range map[string]*directives{"edge-watch": watchDirs, "edge-neigh": neighDirs} {
		for _, a := range d.quarantined(t, pub, who) {
			if a != "127.0.0.5" {
				t.Errorf("%s was told to drop %s", who, a)
			}
		}
	}

	// The offender's address moves to another device (a new lease): it is
	// accepted from it and opens its stream. The replay of the table gives
	// it every other address but never its own.
	if _, err := st.AddQuarantine(context.Background(), store.Quarantine{Address: "192.0.2.50", Offender: "edge-old", Reason: "REASON_TEST", Since: e.clock.Now()}); err != nil {
		t.Fatal(err)
	}
	fresh := e.sharing(watch, "edge-fresh", "127.0.0.5")
	wantVerdict(t, fresh.Pulse(nil), trusted, pulsev1.Reason_REASON_OK)
	freshDirs := openDirectives(t, fresh)
	waitFor(t, "the replay to the new device", func() bool { return slices.Contains(freshDirs.quarantined(t, pub, "edge-fresh"), "192.0.2.50") })
	if got := freshDirs.quarantined(t, pub, "edge-fresh"); slices.Contains(got, "127.0.0.5") {
		t.Fatalf("the new device was told to drop its own address: %v", got)
	}
	// Accepted from it, the new device took the first offender's entry
	// down (an address another agent uses is never isolated:
	// TestAttack20PoolAddressPoisoning). It fails in turn: the address,
	// shared with the first offender, is refused for the second.
	fresh.Challenge()
	wantVerdict(t, fresh.Pulse(func(p *parts) { p.Payload.AgentBinaryDiskSha256 = make([]byte, 32) }), untrusted, pulsev1.Reason_REASON_AGENT_BINARY_MISMATCH)
	if got := quarantineAddrs(quarantined(t, st)); !slices.Equal(got, []string{"192.0.2.50@edge-old"}) {
		t.Fatalf("quarantine %v after the new device failed", got)
	}
	if !refusedMentioning(t, st, "edge-fresh", "127.0.0.5") {
		t.Fatal("no isolation_refused alert for the new device's shared address")
	}
}

// proxy is an L4 TCP proxy on listen forwarding to target from source
// address from: behind it every client appears from one address.
func proxy(t *testing.T, listen, from, target string) string {
	t.Helper()
	l, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				u, err := d.Dial("tcp", target)
				if err != nil {
					return
				}
				defer u.Close()
				done := make(chan struct{}, 2)
				go func() { io.Copy(u, c); u.(*net.TCPConn).CloseWrite(); done <- struct{}{} }() //nolint:errcheck
				go func() { io.Copy(c, u); c.(*net.TCPConn).CloseWrite(); done <- struct{}{} }() //nolint:errcheck
				<-done
				<-done
			}()
		}
	}()
	return l.Addr().String()
}

// TestIsolationBehindProxy: every agent reaches the verifier through one
// L4 proxy, so all appear from the proxy's address. A compromised agent's
// isolation is refused (the address is shared: isolation_refused), never
// quarantined, and the rest of the fleet keeps attesting through the
// proxy. A lone agent behind a proxy the operator protects is refused too.
func TestIsolationBehindProxy(t *testing.T) {
	for _, tc := range []struct {
		name      string
		protected bool
		agents    int
		why       string
	}{
		{"shared by the fleet", false, 2, "other agents use it too"},
		{"protected proxy", true, 1, "protected address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			withKey, _ := directiveKeyFile(t)
			mut := both(ekBacks(3), withKey)
			if tc.protected {
				mut = both(mut, func(c *config.Config) {
					c.ProtectedAddresses = append(c.ProtectedAddresses, netip.MustParsePrefix("127.0.0.9/32"))
				})
			}
			e := newEnvCfg(t, "rhel8-uefi", mut)
			if e == nil {
				return
			}
			st := openStore(t, e)
			via := proxy(t, "127.0.0.8:0", "127.0.0.9", e.daemon.Addr())
			first := e.agent("edge-p0", e.openTPM(e.sw)).From(via, e.caFile, "127.0.0.2")
			if res := first.Enroll(); !res.GetEnrolled() {
				t.Fatal(res.GetMessage())
			}
			first.MeasureBinary()
			first.Challenge()
			wantVerdict(t, first.Pulse(nil), trusted, pulsev1.Reason_REASON_OK)
			bad := first
			if tc.agents > 1 {
				bad = e.agent("edge-p1", first.Dev).From(via, e.caFile, "127.0.0.3")
				bad.Records, bad.SentUpTo, bad.Binary = first.Records, 0, first.Binary
				if res := bad.Enroll(); !res.GetEnrolled() {
					t.Fatal(res.GetMessage())
				}
				bad.Challenge()
				wantVerdict(t, bad.Pulse(nil), trusted, pulsev1.Reason_REASON_OK)
			}
			bad.Challenge()
			wantVerdict(t, bad.Pulse(func(p *parts) { p.Payload.AgentBinaryDiskSha256 = make([]byte, 32) }), untrusted, pulsev1.Reason_REASON_AGENT_BINARY_MISMATCH)
			if qs := quarantined(t, st); len(qs) != 0 {
				t.Fatalf("the proxy's address was isolated: %+v", qs)
			}
			refused := alertsOf(t, st, bad.ID, verifier.AlertIsolationRefused)
			if len(refused) != 1 || !strings.Contains(refused[0].Message, "127.0.0.9") || !strings.Contains(refused[0].Message, tc.why) {
				t.Fatalf("isolation_refused alerts %+v, want one naming 127.0.0.9: %s", refused, tc.why)
			}
			if tc.agents > 1 {
				// The fleet behind the proxy is not cut off.
				first.Challenge()
				wantVerdict(t, first.Pulse(nil), trusted, pulsev1.Reason_REASON_OK)
			}
		})
	}
}

// TestQuarantineReconciliation: the quarantine an agent reports from its
// Shield map (digest and list) is held to the table on every pulse. The
// table minus the agent's own entries passes; a difference is corrected
// at once (signed directives) and is REASON_QUARANTINE_DIVERGED only once
// it outlasts the grace; an address isolated within the grace may be
// missing (its directive is in flight); a digest that is not its list's
// is a divergence; agreeing again clears it.
func TestQuarantineReconciliation(t *testing.T) {
	withKey, pub := directiveKeyFile(t)
	protect := func(c *config.Config) {
		c.ProtectedAddresses = append(c.ProtectedAddresses, netip.MustParsePrefix("198.18.0.0/15"))
	}
	e := newEnvCfg(t, "rhel8-uefi", both(withKey, protect, fleetPolicy(t, "  heartbeat {\n    interval = \"10s\"\n  }\n")))
	if e == nil {
		return
	}
	st := openStore(t, e)
	a := e.enrolled("edge-q")
	dirs := openDirectives(t, a)
	grace := 10 * time.Second
	add := func(addr, offender string, since time.Time) {
		t.Helper()
		if _, err := st.AddQuarantine(context.Background(), store.Quarantine{Address: addr, Offender: offender, Reason: "REASON_TEST", Since: since}); err != nil {
			t.Fatal(err)
		}
	}
	add("192.0.2.7", "edge-x", e.clock.Now().Add(-time.Hour))
	add("192.0.2.8", "edge-q", e.clock.Now().Add(-time.Hour)) // its own: it may hold it or not
	// Isolated before the operator protected it: no agent is sent it, and
	// none is expected to hold it.
	add("198.18.0.1", "edge-z", e.clock.Now().Add(-time.Hour))

	digest := func(set ...string) []byte {
		d, _, err := quarset.Digest(set)
		if err != nil {
			t.Fatal(err)
		}
		return d[:]
	}
	report := func(sum []byte, list ...string) func(*parts) {
		return func(p *parts) {
			p.Payload.Time = timestampNow(e)
			p.Payload.Bpf = &pulsev1.BPFSnapshot{QuarantineSha256: sum, QuarantineCount: uint32(len(list))}
			p.Payload.Quarantined = list
		}
	}
	steps := []struct {
		name    string
		advance time.Duration
		young   string // isolated now, before the pulse
		pulse   func(*parts)
		want    pulsev1.Reason
	}{
		{"matching", 0, "", report(digest("192.0.2.7"), "192.0.2.7"), pulsev1.Reason_REASON_OK},
		{"matching with its own address held", 0, "", report(digest("192.0.2.7", "192.0.2.8"), "192.0.2.7", "192.0.2.8"), pulsev1.Reason_REASON_OK},
		{"missing, first seen: corrected, not yet a finding", 0, "", report(digest()), pulsev1.Reason_REASON_OK},
		{"missing past the grace", grace + time.Second, "", report(digest()), pulsev1.Reason_REASON_QUARANTINE_DIVERGED},
		{"agreeing again", 0, "", report(digest("192.0.2.7"), "192.0.2.7"), pulsev1.Reason_REASON_OK},
		{"young address missing", 0, "198.51.100.3", report(digest("192.0.2.7"), "192.0.2.7"), pulsev1.Reason_REASON_OK},
		{"young address held", 0, "", report(digest("192.0.2.7", "198.51.100.3"), "192.0.2.7", "198.51.100.3"), pulsev1.Reason_REASON_OK},
		{"extra address, first seen", 0, "", report(digest("192.0.2.7", "198.51.100.3", "203.0.113.1"), "192.0.2.7", "198.51.100.3", "203.0.113.1"), pulsev1.Reason_REASON_OK},
		{"extra address past the grace", grace + time.Second, "", report(digest("192.0.2.7", "198.51.100.3", "203.0.113.1"), "192.0.2.7", "198.51.100.3", "203.0.113.1"), pulsev1.Reason_REASON_QUARANTINE_DIVERGED},
		{"agreeing", 0, "", report(digest("192.0.2.7", "198.51.100.3"), "192.0.2.7", "198.51.100.3"), pulsev1.Reason_REASON_OK},
		{"expected digest beside another list, first seen", 0, "", report(digest("192.0.2.7", "198.51.100.3"), "192.0.2.7"), pulsev1.Reason_REASON_OK},
		{"expected digest beside another list past the grace", grace + time.Second, "", report(digest("192.0.2.7", "198.51.100.3"), "192.0.2.7"), pulsev1.Reason_REASON_QUARANTINE_DIVERGED},
		{"agreeing once more", 0, "", report(digest("192.0.2.7", "198.51.100.3"), "192.0.2.7", "198.51.100.3"), pulsev1.Reason_REASON_OK},
		{"digest not its list's, first seen", 0, "", report(digest(), "192.0.2.7", "198.51.100.3"), pulsev1.Reason_REASON_OK},
		{"digest not its list's past the grace", grace + time.Second, "", report(digest(), "192.0.2.7", "198.51.100.3"), pulsev1.Reason_REASON_QUARANTINE_DIVERGED},
		{"no Shield digest: not judged", 0, "", func(p *parts) { p.Payload.Time = timestampNow(e) }, pulsev1.Reason_REASON_OK},
	}
	for _, s := range steps {
		e.clock.Advance(s.advance)
		if s.young != "" {
			add(s.young, "edge-y", e.clock.Now())
		}
		a.Challenge()
		resp := a.Pulse(s.pulse)
		if resp.GetReason() != s.want {
			t.Fatalf("%s: %s/%s (%s), want %s", s.name, resp.GetVerdict(), resp.GetReason(), resp.GetMessage(), s.want)
		}
		if s.want == pulsev1.Reason_REASON_OK && resp.GetVerdict() != trusted {
			t.Fatalf("%s: verdict %s", s.name, resp.GetVerdict())
		}
	}
	if n := len(alertsOf(t, st, "edge-q", "quarantine_diverged")); n == 0 {
		t.Error("no quarantine_diverged alert")
	}
	// The correction went out signed for the agent: the missing address.
	waitFor(t, "the correcting quarantine directive", func() bool {
		return slices.Contains(dirs.quarantined(t, pub, "edge-q"), "192.0.2.7")
	})
	if got := dirs.quarantined(t, pub, "edge-q"); slices.Contains(got, "192.0.2.8") || slices.Contains(got, "198.18.0.1") {
		t.Errorf("the agent was told to drop its own isolated address or a protected one: %v", got)
	}
}
