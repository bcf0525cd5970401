package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pulse-attest/pulse/bpf"
	"github.com/pulse-attest/pulse/internal/testutil"
	"github.com/pulse-attest/pulse/simulator"
	"github.com/pulse-attest/pulse/verifier"
	"github.com/pulse-attest/pulse/verifier/store"
)

// Test hosts of the proxy test: the site (verifier, guard) and a router
// whose L4 proxy fronts the verifier, joined by a veth pair.
const (
	proxySiteAddr   = "192.0.2.1"
	proxyRouterAddr = "192.0.2.2"
)

// TestIsolationBehindL4Proxy: two agents reach the verifier only through an
// L4 TCP proxy (written here) on a router, so the verifier sees both from
// the router's address. One of them is compromised (its binary replaced):
// isolating it by address would cut its neighbour — and anything else
// behind the proxy — off. The verifier refuses (isolation_refused: the
// address is shared), the quarantine table stays empty, the guard's Shield
// drops nothing, and the neighbour keeps attesting TRUSTED through the
// proxy. (The honest case, an offender on its own address isolated by the
// guard's Shield, is TestIsolationAcrossReplicas.)
func TestIsolationBehindL4Proxy(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireTools(t, "ip", "ping")
	suffix := make([]byte, 3)
	rand.Read(suffix) //nolint:errcheck
	id := hex.EncodeToString(suffix)
	site, router, siteIf, rtIf := "pulse-psite-"+id, "pulse-prt-"+id, "pps"+id, "ppr"+id
	for _, ns := range []string{site, router} {
		sh(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		sh(t, "ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
	}
	sh(t, "ip", "link", "add", siteIf, "netns", site, "type", "veth", "peer", "name", rtIf, "netns", router)
	sh(t, "ip", "netns", "exec", site, "ip", "addr", "add", proxySiteAddr+"/24", "dev", siteIf)
	sh(t, "ip", "netns", "exec", site, "ip", "link", "set", siteIf, "up")
	sh(t, "ip", "netns", "exec", router, "ip", "addr", "add", proxyRouterAddr+"/24", "dev", rtIf)
	sh(t, "ip", "netns", "exec", router, "ip", "link", "set", rtIf, "up")
	reachable := func() bool {
		return exec.Command("ip", "netns", "exec", router, "ping", "-c", "1", "-W", "1", proxySiteAddr).Run() == nil
	}
	waitFor(t, "the router to reach the site", reachable)

	guardTPM, neighTPM, badTPM := startTPM(t, "rhel8-uefi", false), startTPM(t, "rhel8-uefi", false), startTPM(t, "rhel8-uefi", false)
	if guardTPM == nil || neighTPM == nil || badTPM == nil {
		return
	}
	f := newFleet(t, replicaPolicy, guardTPM)
	f.netns = site
	f.verifier.stop(syscall.SIGTERM)
	vAddr := fmt.Sprintf("%s:%d", proxySiteAddr, f.port)
	replaceInFile(t, f.vcfg, fmt.Sprintf(`listen = "127.0.0.1:%d"`, f.port), fmt.Sprintf(`listen = %q`, vAddr))
	f.startVerifierAt(vAddr)

	// The guard: on the site, Shield on the site's side of the veth.
	pinDir := "/sys/fs/bpf/pulse-e2e-proxy-" + id
	t.Cleanup(func() { bpf.RemoveAll(pinDir) })
	gcfg := f.agentConfig("guard", guardTPM, "")
	replaceInFile(t, gcfg, `verifier     = "`+f.addr()+`"`, `verifier     = "`+vAddr+`"`)
	replaceInFile(t, gcfg, "bpf {\n  enabled = false\n}", fmt.Sprintf("bpf {\n  enabled    = true\n  pin_dir    = %q\n  interfaces = [%q]\n}", pinDir, siteIf))
	f.launchAgent("guard", gcfg, bin("pulse-agent"))

	// The proxy on the router; both agents behind it attest through it.
	via := proxyInNetns(t, router, vAddr)
	behind := func(name string, sw *simulator.Swtpm, binary string) {
		t.Helper()
		cfg := f.agentConfig(name, sw, "")
		replaceInFile(t, cfg, `verifier     = "`+f.addr()+`"`, `verifier     = "`+via+`"`)
		p := f.start("ip", "agent-"+name+".log", "netns", "exec", router, binary, "launch", "--config", cfg, "--", "run", "--config", cfg)
		f.mu.Lock()
		f.agents[name] = p
		f.mu.Unlock()
	}
	offBin := filepath.Join(f.dir, "offender-agent")
	copyBinary(t, bin("pulse-agent"), offBin, nil)
	behind("neighbour", neighTPM, bin("pulse-agent"))
	behind("offender", badTPM, offBin)
	for _, a := range []string{"guard", "neighbour", "offender"} {
		f.waitVerdict(a, trusted, "REASON_OK", 45*time.Second)
	}

	// The offender is compromised: UNTRUSTED, and the policy isolates.
	copyBinary(t, bin("pulse-agent"), offBin, []byte("\x00implant"))
	f.waitVerdict("offender", untrusted, "REASON_AGENT_BINARY_MISMATCH", 20*time.Second)
	waitFor(t, "an isolation_refused alert for the offender", func() bool { return f.alerts("offender", verifier.AlertIsolationRefused) > 0 })
	st := f.store()
	for _, al := range mustAlerts(t, f, "offender", verifier.AlertIsolationRefused) {
		if !strings.Contains(al, proxyRouterAddr) || !strings.Contains(al, "neighbour") {
			t.Fatalf("isolation_refused %q does not name the shared address and its other user", al)
		}
	}
	if qs, err := st.ListQuarantine(context.Background()); err != nil || len(qs) != 0 {
		t.Fatalf("quarantine %+v %v: the proxy's address was isolated", qs, err)
	}

	// The fleet behind the proxy is not cut off: the neighbour keeps
	// attesting, TRUSTED, and the router still reaches the site.
	before, err := st.GetAgent(context.Background(), "neighbour")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "two more accepted pulses of the neighbour", func() bool {
		a, err := st.GetAgent(context.Background(), "neighbour")
		return err == nil && a.LastSeq >= before.LastSeq+2
	})
	f.waitVerdict("neighbour", trusted, "REASON_OK", 10*time.Second)
	if !reachable() {
		t.Fatal("the router no longer reaches the site")
	}
	if q, ok := f.showQuarantined("guard"); !ok || strings.Contains(q, proxyRouterAddr) {
		t.Fatalf("the guard's Shield holds %q", q)
	}
}

func mustAlerts(t *testing.T, f *fleet, agent, kind string) []string {
	t.Helper()
	all, err := f.store().ListAlerts(context.Background(), store.AlertFilter{AgentID: agent})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range all {
		if a.Kind == kind {
			out = append(out, a.Message)
		}
	}
	return out
}

// proxyInNetns runs an L4 TCP proxy inside network namespace ns: it
// listens on the namespace's loopback and forwards every connection to
// target from the namespace's own address. It returns the listen address.
// The proxy's goroutine is locked to a thread that joined ns; that thread
// ends with it (never returned to the Go scheduler's pool).
func proxyInNetns(t *testing.T, ns, target string) string {
	t.Helper()
	nsf, err := os.Open(filepath.Join("/var/run/netns", ns))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nsf.Close() })
	type started struct {
		l   net.Listener
		err error
	}
	ready := make(chan started, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := unix.Setns(int(nsf.Fd()), unix.CLONE_NEWNET); err != nil {
			ready <- started{err: fmt.Errorf("setns %s: %w", ns, err)}
			return
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		ready <- started{l, err}
		if err != nil {
			return
		}
		d := net.Dialer{Timeout: 5 * time.Second}
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			// Dialled here, on the thread inside ns.
			u, err := d.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			go splice(c, u)
		}
	}()
	s := <-ready
	if s.err != nil {
		t.Fatal(s.err)
	}
	t.Cleanup(func() { s.l.Close() })
	return s.l.Addr().String()
}

// splice copies both ways until both directions end.
func splice(a, b net.Conn) {
	defer a.Close()
	defer b.Close()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		io.Copy(dst, src) //nolint:errcheck
		if tc, ok := dst.(*net.TCPConn); ok {
			tc.CloseWrite() //nolint:errcheck
		}
		done <- struct{}{}
	}
	go pipe(a, b)
	go pipe(b, a)
	<-done
	<-done
}

// TestQuarantineReconciledWithShield: real agents with Shield on the real
// kernel report the digest of their Shield map every pulse. An address
// enters the quarantine table without any directive (as if an agent missed
// it): the agent with the verifier's directive key is sent the missing
// address, signed, applies it and stays TRUSTED; the agent without a key
// refuses the unsigned-to-it order (it cannot verify any), keeps diverging,
// and is UNTRUSTED with REASON_QUARANTINE_DIVERGED once the grace is over.
func TestQuarantineReconciledWithShield(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireTools(t, "ip")
	suffix := make([]byte, 3)
	rand.Read(suffix) //nolint:errcheck
	id := hex.EncodeToString(suffix)
	ns := "pulse-rq-" + id
	sh(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	sh(t, "ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
	ifs := map[string]string{"keyed": "prk" + id, "keyless": "prn" + id}
	// One veth pair inside the namespace: each agent's Shield on one end.
	sh(t, "ip", "netns", "exec", ns, "ip", "link", "add", ifs["keyed"], "type", "veth", "peer", "name", ifs["keyless"])
	for _, ifName := range ifs {
		sh(t, "ip", "netns", "exec", ns, "ip", "link", "set", ifName, "up")
	}
	tpms := map[string]*simulator.Swtpm{}
	for name := range ifs {
		if tpms[name] = startTPM(t, "rhel8-uefi", false); tpms[name] == nil {
			return
		}
	}
	f := newFleet(t, replicaPolicy, tpms["keyed"])
	f.netns = ns
	f.verifier.stop(syscall.SIGTERM)
	f.startVerifier()
	for name, ifName := range ifs {
		pinDir := "/sys/fs/bpf/pulse-e2e-rq-" + name + "-" + id
		t.Cleanup(func() { bpf.RemoveAll(pinDir) })
		cfg := f.agentConfig(name, tpms[name], "")
		replaceInFile(t, cfg, "bpf {\n  enabled = false\n}", fmt.Sprintf("bpf {\n  enabled    = true\n  pin_dir    = %q\n  interfaces = [%q]\n}", pinDir, ifName))
		if name == "keyless" {
			replaceInFile(t, cfg, fmt.Sprintf("directive_key = %q\n", filepath.Join(f.dir, "directive.pub")), "")
		}
		f.launchAgent(name, cfg, bin("pulse-agent"))
	}
	for name := range ifs {
		f.waitVerdict(name, trusted, "REASON_OK", 45*time.Second)
	}

	const missed = "203.0.113.9"
	if _, err := f.store().AddQuarantine(context.Background(), store.Quarantine{Address: missed, Offender: "someone-else",
		Reason: "REASON_AGENT_BINARY_MISMATCH", Since: time.Now().Add(-time.Hour)}); err != nil {
		t.Fatal(err)
	}
	f.waitVerdict("keyless", untrusted, "REASON_QUARANTINE_DIVERGED", 30*time.Second)
	waitLog(t, filepath.Join(f.dir, "agent-keyless.log"), "directive refused", 5*time.Second)
	if f.alerts("keyless", "quarantine_diverged") == 0 {
		t.Fatal("no quarantine_diverged alert for the agent that diverges")
	}
	waitFor(t, "the keyed agent's Shield to hold the missed address", func() bool {
		q, ok := f.showQuarantined("keyed")
		return ok && strings.Contains(q, missed)
	})
	// It keeps agreeing: TRUSTED over several more pulses.
	time.Sleep(6 * time.Second)
	f.waitVerdict("keyed", trusted, "REASON_OK", time.Second)
	if n := f.alerts("keyed", "quarantine_diverged"); n != 0 {
		t.Fatalf("%d quarantine_diverged alerts for the agent that applied the correction", n)
	}
}

// takeoverPolicy is replicaPolicy with a silence that outlasts the
// takeover below (30 missed pulses of 2 s): the neighbour is away, not
// BLINDED, while its address is used by the offender.
const takeoverPolicy = `
policy "fleet" {
  match {
    agents = ["*"]
  }
  tpm = "required"
  heartbeat {
    interval = "2s"
    missed   = 30
    grace    = "2s"
  }
  on_failure {
    isolate = true
  }
  measured_boot {
    secure_boot {}
  }
}
`

// TestIsolationNeighbourTakeover: test hosts on one bridge. The offender,
// accepted from its own address, takes over its neighbour's address while
// the neighbour is away and fails from it (its build replaced). Only the
// offender's own address is isolated — the guard's Shield drops it — and
// the neighbour's is refused (isolation_refused naming the neighbour);
// back on its address, the neighbour is TRUSTED and reaches the site.
func TestIsolationNeighbourTakeover(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireTools(t, "ip", "ping")
	suffix := make([]byte, 3)
	rand.Read(suffix) //nolint:errcheck
	id := hex.EncodeToString(suffix)
	const (
		siteAddr  = "192.0.2.1"
		offAddr   = "192.0.2.2"
		neighAddr = "192.0.2.3"
	)
	site, offNS, neighNS := "pulse-tsite-"+id, "pulse-toff-"+id, "pulse-tnb-"+id
	br, sOff, sNeigh, offIf, neighIf := "ptb"+id, "pto"+id, "ptn"+id, "pho"+id, "phn"+id
	for _, ns := range []string{site, offNS, neighNS} {
		sh(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		sh(t, "ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
	}
	inNS := func(ns string, args ...string) { sh(t, "ip", append([]string{"netns", "exec", ns}, args...)...) }
	inNS(site, "ip", "link", "add", br, "type", "bridge")
	inNS(site, "ip", "addr", "add", siteAddr+"/24", "dev", br)
	inNS(site, "ip", "link", "set", br, "up")
	for _, h := range []struct{ ns, port, ifName, addr string }{{offNS, sOff, offIf, offAddr}, {neighNS, sNeigh, neighIf, neighAddr}} {
		sh(t, "ip", "link", "add", h.port, "netns", site, "type", "veth", "peer", "name", h.ifName, "netns", h.ns)
		inNS(site, "ip", "link", "set", h.port, "master", br)
		inNS(site, "ip", "link", "set", h.port, "up")
		inNS(h.ns, "ip", "addr", "add", h.addr+"/24", "dev", h.ifName)
		inNS(h.ns, "ip", "link", "set", h.ifName, "up")
	}
	reaches := func(ns string) bool {
		return exec.Command("ip", "netns", "exec", ns, "ping", "-c", "1", "-W", "1", siteAddr).Run() == nil
	}
	waitFor(t, "both test hosts to reach the site", func() bool { return reaches(offNS) && reaches(neighNS) })

	guardTPM, neighTPM, badTPM := startTPM(t, "rhel8-uefi", false), startTPM(t, "rhel8-uefi", false), startTPM(t, "rhel8-uefi", false)
	if guardTPM == nil || neighTPM == nil || badTPM == nil {
		return
	}
	f := newFleet(t, takeoverPolicy, guardTPM)
	f.netns = site
	f.verifier.stop(syscall.SIGTERM)
	vAddr := fmt.Sprintf("%s:%d", siteAddr, f.port)
	replaceInFile(t, f.vcfg, fmt.Sprintf(`listen = "127.0.0.1:%d"`, f.port), fmt.Sprintf(`listen = %q`, vAddr))
	f.startVerifierAt(vAddr)

	pinDir := "/sys/fs/bpf/pulse-e2e-takeover-" + id
	t.Cleanup(func() { bpf.RemoveAll(pinDir) })
	gcfg := f.agentConfig("guard", guardTPM, "")
	replaceInFile(t, gcfg, `verifier     = "`+f.addr()+`"`, `verifier     = "`+vAddr+`"`)
	replaceInFile(t, gcfg, "bpf {\n  enabled = false\n}", fmt.Sprintf("bpf {\n  enabled    = true\n  pin_dir    = %q\n  interfaces = [%q, %q]\n}", pinDir, sOff, sNeigh))
	f.launchAgent("guard", gcfg, bin("pulse-agent"))

	hostAgent := func(name, ns, cfg, binary string) *proc {
		t.Helper()
		p := f.start("ip", "agent-"+name+".log", "netns", "exec", ns, binary, "launch", "--config", cfg, "--", "run", "--config", cfg)
		f.mu.Lock()
		f.agents[name] = p
		f.mu.Unlock()
		return p
	}
	ncfg := f.agentConfig("neighbour", neighTPM, "")
	replaceInFile(t, ncfg, `verifier     = "`+f.addr()+`"`, `verifier     = "`+vAddr+`"`)
	ocfg := f.agentConfig("offender", badTPM, "")
	replaceInFile(t, ocfg, `verifier     = "`+f.addr()+`"`, `verifier     = "`+vAddr+`"`)
	offBin := filepath.Join(f.dir, "offender-agent")
	copyBinary(t, bin("pulse-agent"), offBin, nil)
	neigh := hostAgent("neighbour", neighNS, ncfg, bin("pulse-agent"))
	off := hostAgent("offender", offNS, ocfg, offBin)
	for _, a := range []string{"guard", "neighbour", "offender"} {
		f.waitVerdict(a, trusted, "REASON_OK", 45*time.Second)
	}

	// The neighbour goes away; the offender takes its address over (as
	// its source), replaces its build and attests again: UNTRUSTED.
	neigh.stop(syscall.SIGKILL)
	off.stop(syscall.SIGKILL)
	inNS(neighNS, "ip", "link", "set", neighIf, "down")
	inNS(offNS, "ip", "addr", "add", neighAddr+"/24", "dev", offIf)
	inNS(offNS, "ip", "route", "replace", "192.0.2.0/24", "dev", offIf, "src", neighAddr)
	inNS(site, "ip", "neigh", "flush", "dev", br)
	copyBinary(t, bin("pulse-agent"), offBin, []byte("\x00implant"))
	off = hostAgent("offender", offNS, ocfg, offBin)
	f.waitVerdict("offender", untrusted, "", 30*time.Second)
	waitFor(t, "the neighbour's address refused for the offender", func() bool {
		for _, m := range mustAlerts(t, f, "offender", verifier.AlertIsolationRefused) {
			if strings.Contains(m, "address "+neighAddr+" ") && strings.Contains(m, "neighbour") {
				return true
			}
		}
		return false
	})
	st := f.store()
	qs, err := st.ListQuarantine(context.Background())
	if err != nil || len(qs) != 1 || qs[0].Address != offAddr || qs[0].Offender != "offender" {
		t.Fatalf("quarantine %+v %v, want only the offender's own %s", qs, err, offAddr)
	}
	waitFor(t, "the guard's Shield to drop the offender's own address", func() bool {
		q, ok := f.showQuarantined("guard")
		return ok && strings.Contains(q, offAddr) && !strings.Contains(q, neighAddr)
	})

	// The neighbour comes back on its address: TRUSTED, and it reaches the
	// site through the guard's Shield; the offender's own address does not.
	off.stop(syscall.SIGKILL)
	inNS(offNS, "ip", "route", "replace", "192.0.2.0/24", "dev", offIf, "src", offAddr)
	inNS(offNS, "ip", "addr", "del", neighAddr+"/24", "dev", offIf)
	inNS(neighNS, "ip", "link", "set", neighIf, "up")
	inNS(site, "ip", "neigh", "flush", "dev", br)
	hostAgent("neighbour", neighNS, ncfg, bin("pulse-agent"))
	waitFor(t, "the neighbour to reach the site", func() bool { return reaches(neighNS) })
	before, err := st.GetAgent(context.Background(), "neighbour")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "an accepted pulse of the returned neighbour", func() bool {
		a, err := st.GetAgent(context.Background(), "neighbour")
		return err == nil && a.LastSeq > before.LastSeq
	})
	f.waitVerdict("neighbour", trusted, "REASON_OK", 10*time.Second)
	if reaches(offNS) {
		t.Fatal("the offender's own address still reaches the site")
	}
}
