package verifier_test

import (
	"context"
	"path/filepath"
	"testing"

	ebpfagent "github.com/pulse-attest/pulse/agent/ebpf"
	"github.com/pulse-attest/pulse/bpf"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/simulator/simtest"
	"github.com/pulse-attest/pulse/tpm/cel"
	"github.com/pulse-attest/pulse/verifier/verifiertest"
)

// kernelAgent is a test agent on e's swtpm whose eBPF (Shield on ifaces,
// Sentinel, Fortress) runs in the real kernel through the agent's adapter,
// every program and map measured into its runtime PCR.
type kernelAgent struct {
	*verifiertest.Client
	pinDir string
	ifaces []string
	// ad is the adapter loaded last (nil before the first load).
	ad *ebpfagent.Adapter
}

// enrolledKernelAgent enrolls agent id, measures its binary and gives it a
// pin directory of its own (named after prefix, removed after the test);
// its eBPF is not loaded yet (load).
func enrolledKernelAgent(t *testing.T, e *env, id, prefix string, ifaces []string) *kernelAgent {
	t.Helper()
	k := &kernelAgent{Client: e.agent(id, e.openTPM(e.sw)), ifaces: ifaces}
	if res := k.Enroll(); !res.GetEnrolled() {
		t.Fatalf("enroll: %s", res.GetMessage())
	}
	k.MeasureBinary()
	k.pinDir = filepath.Join(bpf.BPFFSPath, prefix+randHex(t, 4))
	t.Cleanup(func() { bpf.RemoveAll(k.pinDir) }) //nolint:errcheck // best effort
	t.Cleanup(func() {
		if k.ad != nil {
			k.ad.Close()
		}
	})
	return k
}

// newKernelAgent is enrolledKernelAgent with its eBPF loaded and its first
// nonce asked for.
func newKernelAgent(t *testing.T, e *env, id, prefix string, ifaces []string) *kernelAgent {
	t.Helper()
	k := enrolledKernelAgent(t, e, id, prefix, ifaces)
	k.load(t)
	k.Challenge()
	return k
}

// measure extends the agent's runtime log with c (the adapter's measurer).
func (k *kernelAgent) measure(_ context.Context, c cel.Content) error {
	k.Measure(c)
	return nil
}

// load is a fresh load of the agent's eBPF (an agent restart): the last
// adapter closed, new Shield maps, a new maps record, every program
// measured again.
func (k *kernelAgent) load(t *testing.T) {
	t.Helper()
	if k.ad != nil {
		k.ad.Close()
	}
	var err error
	if k.ad, err = ebpfagent.New(context.Background(), k.pinDir, k.ifaces, k.measure, simtest.Logger(t)); err != nil {
		t.Fatalf("load eBPF: %v", err)
	}
}

// pulse sends what the adapter reads from the kernel now, as the agent
// does: the snapshot (changed by snapLie, a lying agent, when given),
// Sentinel's report and records (acknowledged once the verifier committed
// the pulse) and Fortress; payLie, when given, changes the payload after
// that.
func (k *kernelAgent) pulse(t *testing.T, snapLie func(*pulsev1.BPFSnapshot), payLie func(*pulsev1.PulsePayload)) *pulsev1.PulseResponse {
	t.Helper()
	bg := context.Background()
	snap, err := k.ad.Snapshot(bg)
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	if snapLie != nil {
		snapLie(snap)
	}
	sent, err := k.ad.SentinelRead(bg, 256)
	if err != nil {
		t.Fatalf("sentinel: %v", err)
	}
	fortress, err := k.ad.Fortress(bg)
	if err != nil {
		t.Fatalf("fortress: %v", err)
	}
	resp := k.Pulse(func(p *parts) {
		p.Payload.Bpf, p.Payload.Fortress = snap, fortress
		p.Payload.Sentinel, p.Payload.SentinelEvents = sent.Report, sent.Events
		if payLie != nil {
			payLie(p.Payload)
		}
	})
	if resp.GetVerdict() != pulsev1.Verdict_VERDICT_UNSPECIFIED {
		if err := k.ad.SentinelAck(sent.Through); err != nil {
			t.Fatalf("sentinel ack: %v", err)
		}
	}
	return resp
}
