package verifier_test

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/pulse-attest/pulse/bpf"
	"github.com/pulse-attest/pulse/internal/directivesig"
	"github.com/pulse-attest/pulse/internal/kernelev"
	"github.com/pulse-attest/pulse/internal/sentinelrec"
	"github.com/pulse-attest/pulse/internal/testutil"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/simulator/simtest"
	"github.com/pulse-attest/pulse/tpm/cel"
	"github.com/pulse-attest/pulse/verifier"
	"github.com/pulse-attest/pulse/verifier/config"
)

// TestAttack20ForgedKernelRecords: white-box attacks on kernel evidence
// (issue 20) by root on an enrolled device running the real, measured
// agent: root cannot make the agent report anything but what the kernel
// runs, but it can extend the runtime PCR with records of its own (the
// runtime log is root-writable and the PCR extendable by anyone). Each
// attack first forges records, then bypasses Shield (a foreign TCX_PASS
// program at the head of its chains, or a foreign XDP program); each is
// refused with its own reason, and a fresh agent load after it is TRUSTED
// again (the honest side).
func TestAttack20ForgedKernelRecords(t *testing.T) {
	requireKernelBPF(t, "ip")
	e := newEnvCfg(t, "rhel8-uefi", fleetPolicy(t, "  measured_boot {\n    secure_boot {}\n  }\n  sentinel {\n    allow_lost = true\n  }\n"))
	if e == nil {
		return
	}
	ifname, ifindex := vethPair(t)
	k := newKernelAgent(t, e, "edge-attack20", "pulse-x20-", []string{ifname})
	a, pinDir, load := k.Client, k.pinDir, k.load
	pulse := func() *pulsev1.PulseResponse { return k.pulse(t, nil, nil) }
	honest := func(t *testing.T) {
		t.Helper()
		wantVerdict(t, pulse(), trusted, pulsev1.Reason_REASON_OK)
	}
	honest(t)
	headOfTCX := func(t *testing.T, idx int) (*ebpf.Program, func()) {
		t.Helper()
		foreign := passProgram(t, ebpf.SchedCLS)
		var links []link.Link
		for _, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
			l, err := link.AttachTCX(link.TCXOptions{Program: foreign, Interface: idx, Attach: at, Anchor: link.Head()})
			if err != nil {
				t.Fatalf("attach foreign tcx program: %v", err)
			}
			links = append(links, l)
		}
		return foreign, func() {
			for _, l := range links {
				l.Close()
			}
			foreign.Close() // unloaded: undone entirely
		}
	}

	t.Run("maps record without Shield's maps forged after the load clears every enforced hook", func(t *testing.T) {
		// A "new load" that measures no program: the verifier would
		// forget every hook the real load measured, and the agent's own
		// maps would no longer be compared with anything.
		a.Measure(&cel.Generic{Name: kernelev.MapsRecordName})
		_, detach := headOfTCX(t, ifindex)
		wantVerdict(t, pulse(), untrusted, pulsev1.Reason_REASON_BPF_MAP_FOREIGN)
		detach()
		load(t)
		honest(t)
	})

	t.Run("program records forged for the foreign program on Shield's hooks", func(t *testing.T) {
		// Records naming the foreign program at Shield's attach points
		// make it "the program measured there" (tags are public); Shield
		// itself is then the foreign one, so root swaps it out of the
		// chain for XDP, where it is not attached: a foreign XDP program
		// measured by root's own record.
		foreign := passProgram(t, ebpf.XDP)
		info, err := foreign.Info()
		if err != nil {
			t.Fatal(err)
		}
		var tag [8]byte
		if err := decodeTag(info.Tag, &tag); err != nil {
			t.Fatal(err)
		}
		a.Measure(&cel.EBPFProgram{Name: "foreign_pass", ProgramType: "XDP", AttachPoint: "xdp:" + ifname, Tag: tag})
		l, err := link.AttachXDP(link.XDPOptions{Program: foreign, Interface: ifindex})
		if err != nil {
			t.Fatalf("attach foreign XDP program: %v", err)
		}
		wantVerdict(t, pulse(), untrusted, pulsev1.Reason_REASON_BPF_FOREIGN_PROGRAM)
		l.Close()
		foreign.Close()
		load(t)
		honest(t)
	})

	t.Run("interfaces record forged for a decoy given the guarded name", func(t *testing.T) {
		// The guarded device is renamed and keeps Shield, with a foreign
		// program ahead of it; a decoy under the guarded name carries
		// Shield's own programs; a forged interfaces record names the
		// decoy's ifindex. The agent must report the device Shield
		// guards, not the decoy.
		renamed := ifname + "r"
		ipLink(t, "set", ifname, "down")
		ipLink(t, "set", ifname, "name", renamed)
		t.Cleanup(func() { exec.Command("ip", "link", "del", renamed).Run() }) //nolint:errcheck // best effort
		ipLink(t, "set", renamed, "up")
		decoy, peer := ifname, "pkx"+ifname[3:]
		ipLink(t, "add", decoy, "type", "veth", "peer", "name", peer)
		t.Cleanup(func() { exec.Command("ip", "link", "del", peer).Run() }) //nolint:errcheck // best effort
		ipLink(t, "set", decoy, "up")
		nif, err := net.InterfaceByName(decoy)
		if err != nil {
			t.Fatal(err)
		}
		var links []link.Link
		for _, x := range []struct {
			prog string
			at   ebpf.AttachType
		}{{"shield_ingress", ebpf.AttachTCXIngress}, {"shield_egress", ebpf.AttachTCXEgress}} {
			p, err := ebpf.LoadPinnedProgram(filepath.Join(pinDir, x.prog), nil)
			if err != nil {
				t.Fatal(err)
			}
			l, err := link.AttachTCX(link.TCXOptions{Program: p, Interface: nif.Index, Attach: x.at})
			p.Close()
			if err != nil {
				t.Fatalf("attach %s to the decoy: %v", x.prog, err)
			}
			links = append(links, l)
		}
		data, err := kernelev.EncodeMaps(map[string]uint32{ifname: uint32(nif.Index)})
		if err != nil {
			t.Fatal(err)
		}
		a.Measure(&cel.Generic{Name: kernelev.InterfacesRecordName, Data: data})
		_, detach := headOfTCX(t, ifindex)
		wantVerdict(t, pulse(), untrusted, pulsev1.Reason_REASON_KERNEL_EVIDENCE_MISSING)
		detach()
		for _, l := range links {
			l.Close()
		}
		ipLink(t, "del", decoy)
		ipLink(t, "set", renamed, "down")
		ipLink(t, "set", renamed, "name", ifname)
		ipLink(t, "set", ifname, "up")
		load(t)
		honest(t)
	})

	t.Run("guarded device moved to another netns, a decoy of its name and ifindex in its place", func(t *testing.T) {
		// No record forged: the decoy has the guarded device's name and
		// ifindex and Shield's own programs on Shield's maps; the guarded
		// device, Shield's links still on it, is in a namespace the agent
		// does not look at, where root runs what it likes ahead of Shield.
		ns := "x20-" + randHex(t, 3)
		if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
			t.Skipf("ip netns add: %s %v", out, err)
		}
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() }) //nolint:errcheck // best effort
		ipLink(t, "set", ifname, "netns", ns)
		decoy, peer := ifname, "pky"+ifname[3:]
		ipLink(t, "add", decoy, "index", fmt.Sprint(ifindex), "type", "veth", "peer", "name", peer)
		t.Cleanup(func() { exec.Command("ip", "link", "del", peer).Run() }) //nolint:errcheck // best effort
		ipLink(t, "set", decoy, "up")
		var links []link.Link
		for _, x := range []struct {
			prog string
			at   ebpf.AttachType
		}{{"shield_ingress", ebpf.AttachTCXIngress}, {"shield_egress", ebpf.AttachTCXEgress}} {
			p, err := ebpf.LoadPinnedProgram(filepath.Join(pinDir, x.prog), nil)
			if err != nil {
				t.Fatal(err)
			}
			l, err := link.AttachTCX(link.TCXOptions{Program: p, Interface: ifindex, Attach: x.at})
			p.Close()
			if err != nil {
				t.Fatalf("attach %s to the decoy: %v", x.prog, err)
			}
			links = append(links, l)
		}
		resp := pulse()
		if resp.GetVerdict() == trusted {
			t.Fatalf("TRUSTED (%s): the agent reports the decoy's chain, not the guarded device's", resp.GetMessage())
		}
		wantVerdict(t, resp, untrusted, pulsev1.Reason_REASON_KERNEL_EVIDENCE_MISSING)
		for _, l := range links {
			l.Close()
		}
		ipLink(t, "del", decoy)
		if out, err := exec.Command("ip", "-n", ns, "link", "set", ifname, "netns", "1").CombinedOutput(); err != nil {
			t.Fatalf("move %s back: %s %v", ifname, out, err)
		}
		ipLink(t, "set", ifname, "up")
		load(t)
		honest(t)
	})
}

// decodeTag parses a kernel tag (16 hex digits).
func decodeTag(s string, out *[8]byte) error {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(out) {
		return fmt.Errorf("kernel tag %q: %v", s, err)
	}
	copy(out[:], b)
	return nil
}

// released returns every release address received so far, after checking
// each directive's signature for audience with pub.
func (d *directives) released(t *testing.T, pub ed25519.PublicKey, audience string) []string {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for _, m := range d.got {
		if m.GetRelease() == nil {
			continue
		}
		s, err := directivesig.Open(pub, m, audience)
		if err != nil {
			t.Fatalf("release to %s not signed for it: %v", audience, err)
		}
		out = append(out, s.GetRelease().GetAddresses()...)
	}
	return out
}

// TestAttack20PoolAddressPoisoning: root on an enrolled device pulses
// TRUSTED from free addresses of its network's pool (a secondary address
// is one `ip addr add` away), then fails. Every address it was accepted
// from within the TTL is registered to it alone, so isolation hits them
// all, and the entries stay until an operator releases them: the next
// device leased one of them is dropped by every other agent's Shield. An
// isolated address another agent is then accepted from has changed hands
// or is shared, which isolation never hits: it is released at once
// (fleet-wide, signed) and the operator told; the offender's own address
// stays isolated, and failing again from the new holder's address
// isolates nothing.
func TestAttack20PoolAddressPoisoning(t *testing.T) {
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
	bad := e.sharing(watch, "edge-bad", "127.0.0.5")
	wantVerdict(t, bad.Pulse(nil), trusted, pulsev1.Reason_REASON_OK)
	watchDirs := openDirectives(t, watch)

	// Accepted once from a free address of the pool, then failing from
	// its own.
	bad.From(e.daemon.Addr(), e.caFile, "127.0.0.6")
	bad.Challenge()
	wantVerdict(t, bad.Pulse(nil), trusted, pulsev1.Reason_REASON_OK)
	bad.From(e.daemon.Addr(), e.caFile, "127.0.0.5")
	bad.Challenge()
	wantVerdict(t, bad.Pulse(func(p *parts) { p.Payload.AgentBinaryDiskSha256 = make([]byte, 32) }), untrusted, pulsev1.Reason_REASON_AGENT_BINARY_MISMATCH)
	if got := quarantineAddrs(quarantined(t, st)); !slices.Equal(got, []string{"127.0.0.5@edge-bad", "127.0.0.6@edge-bad"}) {
		t.Fatalf("quarantine %v, want both addresses the offender was accepted from", got)
	}
	waitFor(t, "the watcher to drop both", func() bool {
		got := watchDirs.quarantined(t, pub, "edge-watch")
		return slices.Contains(got, "127.0.0.5") && slices.Contains(got, "127.0.0.6")
	})

	// An innocent device is leased the free address and accepted from it.
	lease := e.sharing(watch, "edge-lease", "127.0.0.6")
	wantVerdict(t, lease.Pulse(nil), trusted, pulsev1.Reason_REASON_OK)
	if got := quarantineAddrs(quarantined(t, st)); !slices.Equal(got, []string{"127.0.0.5@edge-bad"}) {
		t.Fatalf("quarantine %v after edge-lease was accepted from 127.0.0.6: every other agent still drops the innocent device", got)
	}
	if !refusedMentioning(t, st, "edge-bad", "127.0.0.6") {
		t.Fatalf("no isolation_refused alert tells the operator 127.0.0.6 was released: %+v", alertsOf(t, st, "edge-bad", verifier.AlertIsolationRefused))
	}
	waitFor(t, "the watcher to release 127.0.0.6", func() bool {
		return slices.Contains(watchDirs.released(t, pub, "edge-watch"), "127.0.0.6")
	})
	if got := watchDirs.released(t, pub, "edge-watch"); slices.Contains(got, "127.0.0.5") {
		t.Fatalf("the offender's own address was released: %v", got)
	}

	// The offender fails again from the new holder's address: shared,
	// refused.
	bad.From(e.daemon.Addr(), e.caFile, "127.0.0.6")
	bad.Challenge()
	wantVerdict(t, bad.Pulse(func(p *parts) { p.Payload.AgentBinaryDiskSha256 = make([]byte, 32) }), untrusted, pulsev1.Reason_REASON_AGENT_BINARY_MISMATCH)
	if got := quarantineAddrs(quarantined(t, st)); !slices.Equal(got, []string{"127.0.0.5@edge-bad"}) {
		t.Fatalf("quarantine %v after the offender failed from the new holder's address", got)
	}
}

// TestAttack20ForgedSentinelRecords: the verifier takes the service
// manager's tgid (whose signals to the agent are allowed) from the latest
// Sentinel configuration record of the runtime log, and every agent tgid
// (whose eBPF loads are the agent's own) from all of them. Root appends
// records of its own after the real agent's load: one naming its shell as
// the service manager, and one naming its loader as an agent followed by
// one restoring the real agent's tgid (so the report still matches). The
// real agent's report stays honest; the shell's SIGSTOP and the loader's
// eBPF load must still be findings.
func TestAttack20ForgedSentinelRecords(t *testing.T) {
	requireKernelBPF(t, "ip", "sh", "bpftool", "clang")
	e := newEnvCfg(t, "rhel8-uefi", fleetPolicy(t, "  measured_boot {\n    secure_boot {}\n  }\n  sentinel {\n    allow_lost = true\n  }\n"))
	if e == nil {
		return
	}
	ifname, _ := vethPair(t)
	k := newKernelAgent(t, e, "edge-sentinel20", "pulse-s20-", []string{ifname})
	a, load := k.Client, k.load
	pulse := func() *pulsev1.PulseResponse { return k.pulse(t, nil, nil) }
	honest := func(t *testing.T) {
		t.Helper()
		wantVerdict(t, pulse(), trusted, pulsev1.Reason_REASON_OK)
	}
	honest(t)
	cfgMapID := func(t *testing.T) uint32 {
		t.Helper()
		snap, err := k.ad.Snapshot(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range snap.GetMaps() {
			if m.GetName() == "sentinel_cfg" {
				return m.GetId()
			}
		}
		t.Fatal("no sentinel_cfg map reported")
		return 0
	}
	self := uint32(os.Getpid())
	// armed starts a shell that waits for a line on its stdin, then runs
	// script (its pid is known before it acts: a record can name it).
	armed := func(t *testing.T, script string) (pid uint32, fire func()) {
		t.Helper()
		cmd := exec.Command("sh", "-c", "read go; "+script)
		in, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return uint32(cmd.Process.Pid), func() {
			fmt.Fprintln(in, "go")
			in.Close()
			if err := cmd.Wait(); err != nil {
				t.Fatalf("shell %q: %v", script, err)
			}
		}
	}
	forge := func(c sentinelrec.Config) {
		a.Measure(&cel.Generic{Name: sentinelrec.RecordName, Data: sentinelrec.Encode(c)})
	}
	stopCont := fmt.Sprintf("kill -STOP %d; kill -CONT %d", self, self)

	t.Run("SIGSTOP by a shell", func(t *testing.T) {
		_, fire := armed(t, stopCont)
		fire()
		wantVerdict(t, pulse(), untrusted, pulsev1.Reason_REASON_AGENT_SIGNALLED)
		honest(t)
	})

	t.Run("SIGSTOP by a shell a forged record names the service manager", func(t *testing.T) {
		pid, fire := armed(t, stopCont)
		forge(sentinelrec.Config{AgentTGID: self, ManagerTGID: pid, MapID: cfgMapID(t)})
		fire()
		resp := pulse()
		if resp.GetVerdict() == trusted {
			t.Fatalf("TRUSTED (%s): the shell's SIGSTOP is hidden by a record root appended", resp.GetMessage())
		}
		wantVerdict(t, resp, untrusted, pulsev1.Reason_REASON_SENTINEL_TAMPERED)
		load(t)
		honest(t)
	})

	// loader is a shell that execs bpftool to load a one-instruction
	// socket filter of its own (built here with clang).
	dir := t.TempDir()
	src, obj := filepath.Join(dir, "pass.c"), filepath.Join(dir, "pass.o")
	if err := os.WriteFile(src, []byte("__attribute__((section(\"socket\"), used)) int pass(void *ctx) { return 0; }\nchar _license[] __attribute__((section(\"license\"), used)) = \"GPL\";\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("clang", "-O2", "-target", "bpf", "-c", src, "-o", obj).CombinedOutput(); err != nil {
		t.Fatalf("clang: %s %v", out, err)
	}
	loader := func(t *testing.T) string {
		pin := filepath.Join(bpf.BPFFSPath, "pulse-s20l-"+randHex(t, 4))
		t.Cleanup(func() { os.Remove(pin) }) //nolint:errcheck // best effort
		return "exec bpftool prog load " + obj + " " + pin
	}
	t.Run("eBPF load by a loader", func(t *testing.T) {
		_, fire := armed(t, loader(t))
		fire()
		wantVerdict(t, pulse(), untrusted, pulsev1.Reason_REASON_FOREIGN_BPF_LOAD)
		honest(t)
	})

	t.Run("eBPF load by a loader forged records name an agent", func(t *testing.T) {
		pid, fire := armed(t, loader(t))
		id := cfgMapID(t)
		forge(sentinelrec.Config{AgentTGID: pid, ManagerTGID: 1, MapID: id})
		forge(sentinelrec.Config{AgentTGID: self, ManagerTGID: 1, MapID: id})
		fire()
		resp := pulse()
		if resp.GetVerdict() == trusted {
			t.Fatalf("TRUSTED (%s): the loader's eBPF load is hidden by records root appended", resp.GetMessage())
		}
		wantVerdict(t, resp, untrusted, pulsev1.Reason_REASON_SENTINEL_TAMPERED)
		load(t)
		honest(t)
	})
}

// TestAttack20LinkLocalIsolation: root on a device on the verifier's link
// dials the verifier's link-local address with its own identity (its
// certificate and key are on the device), giving itself the link-local
// address of the link's router (fe80::1 is a common one), so its pulses
// are accepted from fe80::1%IF; then it fails. A link-local address names
// a different device on every link, and Shield drops it without its zone:
// isolating it would make every agent drop its own router's link-local
// traffic (neighbour discovery, router advertisements). It is refused
// (isolation_refused) and sent to no agent; the offender's routable
// address is isolated as before.
func TestAttack20LinkLocalIsolation(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireTools(t, "ip", "sysctl")
	withKey, pub := directiveKeyFile(t)
	e := newEnvCfg(t, "rhel8-uefi", both(ekBacks(4), withKey, func(c *config.Config) { c.Listen = "[::]:0" }))
	if e == nil {
		return
	}
	ifname, _ := vethPair(t)
	if out, err := exec.Command("sysctl", "-qw", "net.ipv6.conf."+ifname+".disable_ipv6=0").CombinedOutput(); err != nil {
		t.Skipf("IPv6 on %s: %s %v", ifname, out, err)
	}
	ipLink(t, "set", ifname, "up")
	if out, err := exec.Command("ip", "-6", "addr", "add", "fe80::1/64", "dev", ifname, "nodad").CombinedOutput(); err != nil {
		t.Fatalf("ip -6 addr add: %s %v", out, err)
	}
	_, port, err := net.SplitHostPort(e.daemon.Addr())
	if err != nil {
		t.Fatal(err)
	}
	v4 := net.JoinHostPort("127.0.0.1", port)
	st := openStore(t, e)
	watch := e.agent("edge-watch", e.openTPM(e.sw)).From(v4, e.caFile, "127.0.0.2")
	if res := watch.Enroll(); !res.GetEnrolled() {
		t.Fatal(res.GetMessage())
	}
	watch.MeasureBinary()
	watch.Challenge()
	wantVerdict(t, watch.Pulse(nil), trusted, pulsev1.Reason_REASON_OK)
	watchDirs := openDirectives(t, watch)

	bad := e.agent("edge-ll", watch.Dev).From(v4, e.caFile, "127.0.0.5")
	bad.Records, bad.SentUpTo, bad.Binary = watch.Records, 0, watch.Binary
	if res := bad.Enroll(); !res.GetEnrolled() {
		t.Fatalf("enroll: %s", res.GetMessage())
	}
	bad.Challenge()
	wantVerdict(t, bad.Pulse(nil), trusted, pulsev1.Reason_REASON_OK)
	// Accepted over the link from the router's link-local address.
	// (gRPC targets are URLs: the zone's % is escaped.)
	bad.From("passthrough:///"+net.JoinHostPort("fe80::1%25"+ifname, port), e.caFile, "")
	bad.Challenge()
	wantVerdict(t, bad.Pulse(nil), trusted, pulsev1.Reason_REASON_OK)
	bad.Challenge()
	wantVerdict(t, bad.Pulse(func(p *parts) { p.Payload.AgentBinaryDiskSha256 = make([]byte, 32) }), untrusted, pulsev1.Reason_REASON_AGENT_BINARY_MISMATCH)

	if got := quarantineAddrs(quarantined(t, st)); !slices.Equal(got, []string{"127.0.0.5@edge-ll"}) {
		t.Fatalf("quarantine %v, want only the offender's routable address", got)
	}
	if !refusedMentioning(t, st, "edge-ll", "fe80::1%"+ifname) {
		t.Fatalf("no isolation_refused alert names the link-local address: %+v", alertsOf(t, st, "edge-ll", verifier.AlertIsolationRefused))
	}
	waitFor(t, "the watcher to drop the offender's address", func() bool {
		return slices.Contains(watchDirs.quarantined(t, pub, "edge-watch"), "127.0.0.5")
	})
	time.Sleep(3 * verifier.DirectivePollInterval)
	for _, a := range watchDirs.quarantined(t, pub, "edge-watch") {
		if a != "127.0.0.5" {
			t.Errorf("the watcher was told to drop %s", a)
		}
	}
}

// TestAttack20DeadAgentPID: Sentinel's judgement treats the eBPF loads of
// every agent tgid the boot's runtime log measured as the agent's own,
// including agents that have exited since. After an agent restart (a
// SIGTERM is not a finding by default), root gives its loader the old
// agent's pid (kernel.ns_last_pid) and loads what it likes: the load must
// still be FOREIGN_BPF_LOAD (an earlier agent's PID counts as the agent's
// own only before Sentinel recorded its exit: policy.SentinelContext).
func TestAttack20DeadAgentPID(t *testing.T) {
	requireKernelBPF(t, "sh", "sleep", "bpftool", "clang")
	e := newEnvCfg(t, "rhel8-uefi", fleetPolicy(t, "  measured_boot {\n    secure_boot {}\n  }\n  sentinel {\n    allow_lost = true\n  }\n"))
	if e == nil {
		return
	}
	k := enrolledKernelAgent(t, e, "edge-deadpid", "pulse-d20-", nil)
	a, pinDir, measure := k.Client, k.pinDir, k.measure

	// The first agent: a process that then exits. Its load is measured as
	// the agent's loader measures it (maps, programs, Sentinel's
	// configuration naming its tgid).
	old := exec.Command("sleep", "600")
	if err := old.Start(); err != nil {
		t.Fatal(err)
	}
	oldPID := old.Process.Pid
	m, err := bpf.Load(context.Background(), bpf.Options{PinDir: pinDir, Logger: simtest.Logger(t), AgentPID: oldPID,
		Measurer: bpf.MeasurerFunc(func(ctx context.Context, pm bpf.ProgramMeasurement) error {
			c := &cel.EBPFProgram{Name: pm.Name, ProgramType: pm.Type, AttachPoint: pm.AttachPoint, InsnSHA256: pm.InsnSHA256,
				ObjectSHA256: append([]byte(nil), pm.ObjectSHA256[:]...), KernelRelease: pm.KernelRelease}
			if err := decodeTag(pm.KernelTag, &c.Tag); err != nil {
				return err
			}
			return measure(ctx, c)
		}),
		MapMeasurer: bpf.MapMeasurerFunc(func(ctx context.Context, mm bpf.MapMeasurement) error {
			data, err := kernelev.EncodeMaps(mm)
			if err != nil {
				return err
			}
			return measure(ctx, &cel.Generic{Name: kernelev.MapsRecordName, Data: data})
		}),
	})
	if err != nil {
		t.Fatalf("first load: %v", err)
	}
	w := m.Sentinel().Wanted()
	a.Measure(&cel.Generic{Name: sentinelrec.RecordName, Data: sentinelrec.Encode(sentinelrec.Config{AgentTGID: w.AgentPID, ManagerTGID: w.ManagerPID, MapID: m.Sentinel().ConfigMapID()})})
	m.Close()
	// Stopped the way a service manager restarts it: SIGTERM (not a
	// finding by default).
	old.Process.Signal(syscall.SIGTERM) //nolint:errcheck // it exits either way
	old.Wait()                          //nolint:errcheck // terminated

	// The restarted agent (this process).
	k.load(t)
	a.Challenge()
	pulse := func() *pulsev1.PulseResponse { return k.pulse(t, nil, nil) }
	wantVerdict(t, pulse(), trusted, pulsev1.Reason_REASON_OK)

	dir := t.TempDir()
	src, obj := filepath.Join(dir, "pass.c"), filepath.Join(dir, "pass.o")
	if err := os.WriteFile(src, []byte("__attribute__((section(\"socket\"), used)) int pass(void *ctx) { return 0; }\nchar _license[] __attribute__((section(\"license\"), used)) = \"GPL\";\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("clang", "-O2", "-target", "bpf", "-c", src, "-o", obj).CombinedOutput(); err != nil {
		t.Fatalf("clang: %s %v", out, err)
	}
	pin := filepath.Join(bpf.BPFFSPath, "pulse-d20l-"+randHex(t, 4))
	t.Cleanup(func() { os.Remove(pin) }) //nolint:errcheck // best effort
	// The loader gets the dead agent's pid (retried: other processes on
	// the host take pids too).
	var loader *exec.Cmd
	for range 50 {
		if err := os.WriteFile("/proc/sys/kernel/ns_last_pid", []byte(fmt.Sprint(oldPID-1)), 0o644); err != nil {
			t.Skipf("ns_last_pid: %v", err)
		}
		c := exec.Command("sh", "-c", "read go; exec bpftool prog load "+obj+" "+pin)
		in, err := c.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		if c.Process.Pid == oldPID {
			fmt.Fprintln(in, "go")
			in.Close()
			loader = c
			break
		}
		in.Close()
		c.Wait() //nolint:errcheck // not the one
	}
	if loader == nil {
		t.Skip("could not get the dead agent's pid for the loader")
	}
	if err := loader.Wait(); err != nil {
		t.Fatalf("loader: %v", err)
	}
	resp := pulse()
	if resp.GetVerdict() == trusted {
		t.Fatalf("TRUSTED (%s): a load by a process given the exited agent's pid is the agent's own", resp.GetMessage())
	}
	wantVerdict(t, resp, untrusted, pulsev1.Reason_REASON_FOREIGN_BPF_LOAD)
}

// TestAttack20ThreadRemovedFromSentinel: Sentinel once told a signal aimed
// at the agent by the target's thread id: the agent's tgid, or a thread id
// in the pinned sentinel_threads map. Root deletes one of the agent's thread
// ids from that map, sends SIGSTOP (then SIGCONT) to that thread id (kill
// on a thread id signals the whole process), and puts the entry back: the
// stop must still be AGENT_SIGNALLED: sentinel_signal decides from the
// target's task_struct (its tgid), not from the map.
func TestAttack20ThreadRemovedFromSentinel(t *testing.T) {
	requireKernelBPF(t, "sh")
	e := newEnvCfg(t, "rhel8-uefi", fleetPolicy(t, "  measured_boot {\n    secure_boot {}\n  }\n  sentinel {\n    allow_lost = true\n  }\n"))
	if e == nil {
		return
	}
	k := newKernelAgent(t, e, "edge-thread20", "pulse-t20-", nil)
	pinDir := k.pinDir
	pulse := func() *pulsev1.PulseResponse { return k.pulse(t, nil, nil) }
	wantVerdict(t, pulse(), trusted, pulsev1.Reason_REASON_OK)

	self := os.Getpid()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	tid := 0
	for _, d := range tasks {
		if n, err := strconv.Atoi(d.Name()); err == nil && n != self {
			tid = n
			break
		}
	}
	if tid == 0 {
		t.Skip("no second thread")
	}
	threads, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, "maps", "sentinel_threads"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer threads.Close()
	stop := func(t *testing.T) {
		t.Helper()
		if out, err := exec.Command("sh", "-c", fmt.Sprintf("kill -STOP %d; kill -CONT %d", tid, tid)).CombinedOutput(); err != nil {
			t.Fatalf("kill: %s %v", out, err)
		}
	}
	// The honest side: a stop aimed at a thread Sentinel knows.
	stop(t)
	wantVerdict(t, pulse(), untrusted, pulsev1.Reason_REASON_AGENT_SIGNALLED)
	wantVerdict(t, pulse(), trusted, pulsev1.Reason_REASON_OK)
	// The attack: the thread is deleted from the map, stopped, put back.
	if err := threads.Delete(uint32(tid)); err != nil {
		t.Fatalf("delete thread %d: %v", tid, err)
	}
	stop(t)
	if err := threads.Put(uint32(tid), uint32(self)); err != nil {
		t.Fatal(err)
	}
	resp := pulse()
	if resp.GetVerdict() == trusted {
		t.Fatalf("TRUSTED (%s): SIGSTOP to thread %d after root deleted it from sentinel_threads", resp.GetMessage(), tid)
	}
	wantVerdict(t, resp, untrusted, pulsev1.Reason_REASON_AGENT_SIGNALLED)
}
