package bpf

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/pulse-attest/pulse/internal/testutil"
)

func run(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// inNetns runs fn on an OS thread switched into the named network namespace.
// Sockets, interface lookups and attachments made by fn belong to it.
func inNetns(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		target, err := os.Open("/run/netns/" + ns)
		if err != nil {
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		ferr := fn()
		// Only a thread back in its own namespace returns to the pool; a
		// thread that cannot go back dies with this goroutine.
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err == nil {
			runtime.UnlockOSThread()
		}
		errc <- ferr
	}()
	return <-errc
}

// vethPair is two network namespaces joined by a veth pair, with two
// addresses per family on side A and one on side B, all from documentation
// ranges that never leave the namespaces.
type vethPair struct {
	nsA, nsB     string
	ifA, ifB     string
	a1, a2, b    netip.Addr // IPv4
	a16, a26, b6 netip.Addr // IPv6
}

func newVethPair(t *testing.T) vethPair {
	t.Helper()
	testutil.RequireTools(t, "ip")
	sfx := randomSuffix(t)[:6]
	p := vethPair{
		nsA: "pulse-a-" + sfx, nsB: "pulse-b-" + sfx,
		ifA: "pa" + sfx, ifB: "pb" + sfx,
		a1: netip.MustParseAddr("192.0.2.1"), a2: netip.MustParseAddr("192.0.2.3"), b: netip.MustParseAddr("192.0.2.2"),
		a16: netip.MustParseAddr("2001:db8:5e::1"), a26: netip.MustParseAddr("2001:db8:5e::3"), b6: netip.MustParseAddr("2001:db8:5e::2"),
	}
	run(t, "ip", "netns", "add", p.nsA)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", p.nsA).Run() })
	run(t, "ip", "netns", "add", p.nsB)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", p.nsB).Run() })
	run(t, "ip", "link", "add", p.ifA, "netns", p.nsA, "type", "veth", "peer", "name", p.ifB, "netns", p.nsB)
	for _, c := range [][]string{
		{"-n", p.nsA, "addr", "add", p.a1.String() + "/24", "dev", p.ifA},
		{"-n", p.nsA, "addr", "add", p.a2.String() + "/24", "dev", p.ifA},
		{"-n", p.nsA, "addr", "add", p.a16.String() + "/64", "dev", p.ifA, "nodad"},
		{"-n", p.nsA, "addr", "add", p.a26.String() + "/64", "dev", p.ifA, "nodad"},
		{"-n", p.nsB, "addr", "add", p.b.String() + "/24", "dev", p.ifB},
		{"-n", p.nsB, "addr", "add", p.b6.String() + "/64", "dev", p.ifB, "nodad"},
		{"-n", p.nsA, "link", "set", p.ifA, "up"},
		{"-n", p.nsB, "link", "set", p.ifB, "up"},
		{"-n", p.nsA, "link", "set", "lo", "up"},
		{"-n", p.nsB, "link", "set", "lo", "up"},
	} {
		run(t, append([]string{"ip"}, c...)...)
	}
	return p
}

// listen starts a TCP accept-and-close server in ns on addr.
func listen(t *testing.T, ns string, addr netip.Addr) netip.AddrPort {
	t.Helper()
	var ln net.Listener
	err := inNetns(ns, func() error {
		var err error
		ln, err = net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
		return err
	})
	if err != nil {
		t.Fatalf("listen in %s: %v", ns, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}

// dial connects from src in ns to dst. It returns nil on success, and the
// error otherwise; dropped SYNs show up as a timeout.
func dial(ns string, src netip.Addr, dst netip.AddrPort, timeout time.Duration) error {
	return inNetns(ns, func() error {
		d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0)), Timeout: timeout}
		c, err := d.Dial("tcp", dst.String())
		if err != nil {
			return err
		}
		return c.Close()
	})
}

func expectPass(t *testing.T, ns string, src netip.Addr, dst netip.AddrPort) {
	t.Helper()
	// Neighbour discovery on a fresh link can take a moment: retry briefly.
	var err error
	for i := 0; i < 3; i++ {
		if err = dial(ns, src, dst, 2*time.Second); err == nil {
			return
		}
	}
	t.Errorf("%s -> %s blocked: %v", src, dst, err)
}

func expectDrop(t *testing.T, ns string, src netip.Addr, dst netip.AddrPort) {
	t.Helper()
	err := dial(ns, src, dst, 700*time.Millisecond)
	var ne net.Error
	switch {
	case err == nil:
		t.Errorf("%s -> %s passed, want dropped", src, dst)
	case !errors.As(err, &ne) || !ne.Timeout():
		// A refusal means the SYN got through and was answered.
		t.Errorf("%s -> %s failed with %v, want a silent drop (timeout)", src, dst, err)
	}
}

func drops(t *testing.T, s *Shield, a netip.Addr) uint64 {
	t.Helper()
	list, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range list {
		if e.Addr == a {
			return e.Drops
		}
	}
	t.Fatalf("%s not in quarantine list %v", a, list)
	return 0
}

func TestShieldNetns(t *testing.T) {
	requireKernel(t)
	for _, mode := range []ShieldMode{ShieldTCX, ShieldXDP} {
		t.Run(string(mode), func(t *testing.T) {
			p := newVethPair(t)
			m, rm := loadTestManager(t, Options{ShieldMode: mode})
			shield := m.Shield()
			if err := inNetns(p.nsB, func() error { return shield.Attach(context.Background(), p.ifB) }); err != nil {
				t.Fatalf("attach to %s in %s: %v", p.ifB, p.nsB, err)
			}
			recs, viol := rm.snapshot()
			for _, v := range viol {
				t.Error(v)
			}
			point := "tcx/ingress:" + p.ifB
			if mode == ShieldXDP {
				point = "xdp:" + p.ifB
			}
			if !containsPoint(recs, point) {
				t.Errorf("attach to %s not measured; records %+v", point, recs)
			}
			if got := shield.Interfaces(); len(got) != 1 || got[0] != p.ifB {
				t.Errorf("Interfaces() = %v", got)
			}
			if snap, err := m.Snapshot(context.Background()); err != nil || snap.Err() != nil {
				t.Fatalf("snapshot after attach: %v %v", err, snap.Err())
			}

			srv4, srv6 := listen(t, p.nsB, p.b), listen(t, p.nsB, p.b6)
			expectPass(t, p.nsA, p.a1, srv4)
			expectPass(t, p.nsA, p.a2, srv4)
			expectPass(t, p.nsA, p.a16, srv6)
			expectPass(t, p.nsA, p.a26, srv6)

			for _, a := range []netip.Addr{p.a1, p.a16} {
				if err := shield.Quarantine(a); err != nil {
					t.Fatal(err)
				}
			}
			expectDrop(t, p.nsA, p.a1, srv4)
			expectPass(t, p.nsA, p.a2, srv4)
			expectDrop(t, p.nsA, p.a16, srv6)
			expectPass(t, p.nsA, p.a26, srv6)
			if n := drops(t, shield, p.a1); n == 0 {
				t.Errorf("no drops counted for %s", p.a1)
			}
			if n := drops(t, shield, p.a16); n == 0 {
				t.Errorf("no drops counted for %s", p.a16)
			}

			if mode == ShieldTCX {
				// Egress: B may not open connections to the quarantined host either.
				srvA := listen(t, p.nsA, p.a1)
				srvA2 := listen(t, p.nsA, p.a2)
				expectDrop(t, p.nsB, p.b, srvA)
				expectPass(t, p.nsB, p.b, srvA2)
			}

			// The agent stops: the pinned links and quarantine keep dropping.
			before := pinnedLinks(t, m.PinDir())
			if err := m.Close(); err != nil {
				t.Fatal(err)
			}
			expectDrop(t, p.nsA, p.a1, srv4)
			expectPass(t, p.nsA, p.a2, srv4)

			// It restarts with the interface configured (in B's namespace):
			// the pinned links get the new programs in place.
			rm2 := &recordingMeasurer{pinDir: m.PinDir()}
			var m2 *Manager
			err := inNetns(p.nsB, func() error {
				var err error
				m2, err = Load(context.Background(), Options{
					PinDir: m.PinDir(), Measurer: rm2, Logger: testLogger(t),
					ShieldMode: mode, Interfaces: []string{p.ifB},
				})
				return err
			})
			if err != nil {
				t.Fatalf("restart: %v", err)
			}
			t.Cleanup(func() { m2.Close() })
			after := pinnedLinks(t, m.PinDir())
			exp := m2.Expectations()
			checked := 0
			for name, l := range after {
				prog, _, _ := cutAt(name)
				if !strings.HasPrefix(prog, "shield_") {
					continue
				}
				checked++
				if before[name].linkID != l.linkID {
					t.Errorf("%s: link %d replaced by %d instead of updated", name, before[name].linkID, l.linkID)
				}
				if l.progID != exp[prog].ID || l.progID == before[name].progID {
					t.Errorf("%s: runs program %d, want the new %d", name, l.progID, exp[prog].ID)
				}
			}
			if want := len(shieldProgramNames(mode)); checked != want {
				t.Errorf("%d shield links pinned after restart, want %d", checked, want)
			}
			if _, viol := rm2.snapshot(); len(viol) > 0 {
				t.Errorf("restart measured after attach: %v", viol)
			}
			if snap, err := m2.Snapshot(context.Background()); err != nil || snap.Err() != nil {
				t.Fatalf("snapshot after restart: %v %v", err, snap.Err())
			}
			shield = m2.Shield()
			expectDrop(t, p.nsA, p.a1, srv4)
			expectPass(t, p.nsA, p.a2, srv4)

			for _, a := range []netip.Addr{p.a1, p.a16} {
				if err := shield.Release(a); err != nil {
					t.Fatal(err)
				}
			}
			expectPass(t, p.nsA, p.a1, srv4)
			expectPass(t, p.nsA, p.a16, srv6)

			if err := shield.Detach(p.ifB); err != nil {
				t.Fatal(err)
			}
			if got := shield.Interfaces(); len(got) != 0 {
				t.Errorf("Interfaces() after detach = %v", got)
			}
		})
	}
}

type linkState struct{ linkID, progID uint32 }

// pinnedLinks maps each link pinned under dir/links to its ID and program.
func pinnedLinks(t *testing.T, dir string) map[string]linkState {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dir, "links"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]linkState{}
	for _, e := range entries {
		l, err := link.LoadPinnedLink(filepath.Join(dir, "links", e.Name()), nil)
		if err != nil {
			t.Fatalf("link %s: %v", e.Name(), err)
		}
		info, err := l.Info()
		l.Close()
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = linkState{uint32(info.ID), uint32(info.Program)}
	}
	return out
}

func containsPoint(recs []ProgramMeasurement, point string) bool {
	for _, r := range recs {
		if r.AttachPoint == point {
			return true
		}
	}
	return false
}

// TestShieldQuarantineMap exercises the pinned quarantine map alone.
func TestShieldQuarantineMap(t *testing.T) {
	requireKernel(t)
	verifier := netip.MustParseAddr("198.51.100.9")
	dir := tempPinDir(t)
	m, _ := loadTestManager(t, Options{PinDir: dir, Protected: []netip.Addr{verifier}})
	s := m.Shield()
	a4, a6 := netip.MustParseAddr("192.0.2.77"), netip.MustParseAddr("2001:db8::77")
	for _, a := range []netip.Addr{a4, a6, a4} {
		if err := s.Quarantine(a); err != nil {
			t.Fatalf("Quarantine(%s): %v", a, err)
		}
	}
	if err := s.Quarantine(verifier); !errors.Is(err, ErrProtected) {
		t.Errorf("protected verifier address: %v", err)
	}
	if err := s.Quarantine(netip.MustParseAddr("127.0.0.1")); !errors.Is(err, ErrProtected) {
		t.Errorf("loopback: %v", err)
	}
	list, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Addr != a4 || list[1].Addr != a6 {
		t.Fatalf("List() = %+v", list)
	}
	if time.Since(list[0].Since) > time.Minute || list[0].Drops != 0 {
		t.Errorf("entry %+v", list[0])
	}

	// The quarantine outlives the agent: a restarted agent sees it.
	m.Close()
	m2, _ := loadTestManager(t, Options{PinDir: dir})
	list, err = m2.Shield().List()
	if err != nil || len(list) != 2 {
		t.Fatalf("after restart: %+v %v", list, err)
	}
	if err := m2.Shield().Release(a4); err != nil {
		t.Fatal(err)
	}
	if err := m2.Shield().Release(a4); err != nil {
		t.Errorf("second release: %v", err)
	}
	list, _ = m2.Shield().List()
	if len(list) != 1 || list[0].Addr != a6 {
		t.Errorf("after release: %+v", list)
	}
	if err := m2.Shield().Attach(context.Background(), "lo"); !errors.Is(err, ErrNotEthernet) {
		t.Errorf("attach to loopback: %v", err)
	}
}
