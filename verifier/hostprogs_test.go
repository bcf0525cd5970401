package verifier_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/pulse-attest/pulse/bpf"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
)

// TestHostProgramsRealKernel: the agent's eBPF adapter (Shield, Sentinel)
// in the real kernel, its runtime log in a real swtpm, the real verifier
// over mTLS. The host program list the adapter reads from the kernel is
// judged against Sentinel's load records: a program bpftool loads while
// Sentinel watches is TRUSTED; one loaded while Sentinel was blinded (root
// wrote the loader's pid into sentinel_cfg as the agent's, then put the
// agent's back) is SENTINEL_TAMPERED for as long as it stays loaded; a
// lying agent that drops the load record is refused the same way; a list
// that does not match its count or digest is KERNEL_EVIDENCE_MISSING.
func TestHostProgramsRealKernel(t *testing.T) {
	requireKernelBPF(t, "ip", "sh", "bpftool", "clang")
	e := newEnvCfg(t, "rhel8-uefi", fleetPolicy(t, "  measured_boot {\n    secure_boot {}\n  }\n  sentinel {\n    bpf_loaders = [\"bpftool\"]\n  }\n"))
	if e == nil {
		return
	}
	ifname, _ := vethPair(t)
	k := newKernelAgent(t, e, "edge-hostprogs", "pulse-hp-", []string{ifname})
	pinDir := k.pinDir

	// held is the host list digest the verifier last said it holds: the
	// agent then leaves the list out, as agent.pulseAttempt does.
	var held []byte
	omitted := 0
	// pulse sends what the adapter reads from the kernel, as the agent
	// does, after lie (a lying agent) changed the payload.
	pulse := func(lie func(*pulsev1.PulsePayload)) *pulsev1.PulseResponse {
		t.Helper()
		resp := k.pulse(t, func(snap *pulsev1.BPFSnapshot) {
			if len(held) > 0 && bytes.Equal(held, snap.GetHostProgramsSha256()) {
				snap.HostPrograms = nil
				omitted++
			}
		}, lie)
		held = resp.GetState().GetHostProgramsSha256()
		return resp
	}
	honest := func(t *testing.T) {
		t.Helper()
		wantVerdict(t, pulse(nil), trusted, pulsev1.Reason_REASON_OK)
	}
	refusedByHostList := func(t *testing.T, resp *pulsev1.PulseResponse, r pulsev1.Reason, says string) {
		t.Helper()
		wantVerdict(t, resp, untrusted, r)
		if !strings.Contains(resp.GetMessage(), "host programs: ") || !strings.Contains(resp.GetMessage(), says) {
			t.Fatalf("message %q is not the host list's (%q)", resp.GetMessage(), says)
		}
	}
	// The first list of the boot is accepted whole; the next one is left
	// out (the verifier holds it) and judged from what the verifier holds.
	honest(t)
	if len(held) == 0 {
		t.Fatal("the verifier does not say it holds the host program list")
	}
	honest(t)
	if omitted == 0 {
		t.Fatal("an unchanged host program list was sent again")
	}

	// A one-instruction socket filter (built here with clang) that a
	// shell's bpftool loads and pins; removing the pin unloads it.
	dir := t.TempDir()
	src, obj := filepath.Join(dir, "pass.c"), filepath.Join(dir, "pass.o")
	if err := os.WriteFile(src, []byte("__attribute__((section(\"socket\"), used)) int hl_pass(void *ctx) { return 0; }\nchar _license[] __attribute__((section(\"license\"), used)) = \"GPL\";\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("clang", "-O2", "-target", "bpf", "-c", src, "-o", obj).CombinedOutput(); err != nil {
		t.Fatalf("clang: %s %v", out, err)
	}
	// armed starts a shell waiting for a line on stdin before it execs
	// bpftool (its pid is known before it loads).
	armed := func(t *testing.T) (pid uint32, pin string, fire func()) {
		t.Helper()
		pin = filepath.Join(bpf.BPFFSPath, "pulse-hpl-"+randHex(t, 4))
		t.Cleanup(func() { os.Remove(pin) }) //nolint:errcheck // best effort
		cmd := exec.Command("sh", "-c", "read go; exec bpftool prog load "+obj+" "+pin)
		in, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return uint32(cmd.Process.Pid), pin, func() {
			fmt.Fprintln(in, "go")
			in.Close()
			if err := cmd.Wait(); err != nil {
				t.Fatalf("bpftool: %v", err)
			}
		}
	}
	unload := func(t *testing.T, pin string) {
		t.Helper()
		if err := os.Remove(pin); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("a load Sentinel recorded", func(t *testing.T) {
		_, pin, fire := armed(t)
		fire()
		honest(t)
		honest(t)
		unload(t, pin)
		honest(t)
	})

	t.Run("a list that does not hash to its digest", func(t *testing.T) {
		_, pin, fire := armed(t)
		fire()
		// The agent drops the new program from the list, keeping the
		// count right and the kernel's digest.
		drop := func(p *pulsev1.PulsePayload) {
			s := p.GetBpf()
			if len(s.GetHostPrograms()) == 0 {
				t.Fatal("no host program list to lie about")
			}
			s.HostPrograms = s.HostPrograms[:len(s.HostPrograms)-1]
			s.HostProgramCount--
		}
		refusedByHostList(t, pulse(drop), pulsev1.Reason_REASON_KERNEL_EVIDENCE_MISSING, "not to its digest")
		truncate := func(p *pulsev1.PulsePayload) {
			s := p.GetBpf()
			s.HostPrograms = s.HostPrograms[:len(s.HostPrograms)-1]
		}
		refusedByHostList(t, pulse(truncate), pulsev1.Reason_REASON_KERNEL_EVIDENCE_MISSING, "truncated")
		// The records of the refused pulses were committed: the honest
		// list is explained by them.
		honest(t)
		unload(t, pin)
		honest(t)
	})

	t.Run("a load while Sentinel was blinded", func(t *testing.T) {
		cfg, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, "maps", "sentinel_cfg"), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer cfg.Close()
		var orig []byte
		if err := cfg.Lookup(uint32(0), &orig); err != nil {
			t.Fatal(err)
		}
		pid, pin, fire := armed(t)
		// Root names its loader as the agent: Sentinel ignores its load.
		blinded := bytes.Clone(orig)
		binary.LittleEndian.PutUint32(blinded, pid)
		if err := cfg.Update(uint32(0), blinded, ebpf.UpdateExist); err != nil {
			t.Fatal(err)
		}
		fire()
		if err := cfg.Update(uint32(0), orig, ebpf.UpdateExist); err != nil {
			t.Fatal(err)
		}
		refusedByHostList(t, pulse(nil), pulsev1.Reason_REASON_SENTINEL_TAMPERED, "hl_pass")
		// Still loaded: still refused (the list is left out now, the
		// verifier holds it with the program unexplained).
		refusedByHostList(t, pulse(nil), pulsev1.Reason_REASON_SENTINEL_TAMPERED, "hl_pass")
		unload(t, pin)
		honest(t)
	})

	t.Run("a lying agent drops the load record", func(t *testing.T) {
		_, pin, fire := armed(t)
		fire()
		// The record goes; the ones after it are renumbered and the
		// counter lowered, so Sentinel's own sequence checks see nothing.
		hide := func(p *pulsev1.PulsePayload) {
			var keep []*pulsev1.SentinelEvent
			dropped := uint64(0)
			for _, ev := range p.GetSentinelEvents() {
				if ev.GetKind() == pulsev1.SentinelEvent_KIND_BPF_LOAD {
					dropped++
					continue
				}
				ev.Seq -= dropped
				keep = append(keep, ev)
			}
			if dropped == 0 {
				t.Fatal("no load record to drop")
			}
			p.SentinelEvents = keep
			p.Sentinel.NextSeq -= dropped
		}
		refusedByHostList(t, pulse(hide), pulsev1.Reason_REASON_SENTINEL_TAMPERED, "hl_pass")
		unload(t, pin)
	})
}
