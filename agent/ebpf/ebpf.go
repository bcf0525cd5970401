// Package ebpf adapts the agent's eBPF programs (package bpf: Shield,
// Sentinel, Fortress and the snapshot) to the agent's BPF interface. Every
// program is measured into the runtime log — record appended, runtime PCR
// extended — synchronously before it is attached, through the measure
// function the agent hands to New.
package ebpf

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"sort"

	"github.com/hashicorp/go-hclog"

	"github.com/pulse-attest/pulse/agent"
	"github.com/pulse-attest/pulse/bpf"
	"github.com/pulse-attest/pulse/bpf/snapshot"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/tpm/cel"
)

// Adapter is the agent's BPF backed by the kernel.
type Adapter struct {
	m   *bpf.Manager
	log hclog.Logger
}

var _ agent.BPF = (*Adapter)(nil)

// Factory returns an agent.BPFFactory loading the programs pinned under
// pinDir, Shield attached to the given interfaces, never dropping the
// protected addresses (agent.ProtectedAddresses: the verifier's and the
// configured ones).
func Factory(pinDir string, interfaces []string, logger hclog.Logger, protected ...netip.Addr) agent.BPFFactory {
	return func(ctx context.Context, measure agent.MeasureFunc) (agent.BPF, error) {
		return New(ctx, pinDir, interfaces, measure, logger, protected...)
	}
}

// New mounts bpffs if needed and loads the agent's programs. measure is
// called for each program after it loaded (so its kernel tag is known) and
// before it is attached; an error aborts the load.
func New(ctx context.Context, pinDir string, interfaces []string, measure agent.MeasureFunc, logger hclog.Logger, protected ...netip.Addr) (*Adapter, error) {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	log := logger.Named("ebpf")
	if err := bpf.EnsureFilesystems(log); err != nil {
		return nil, fmt.Errorf("ebpf: %w", err)
	}
	m, err := bpf.Load(ctx, bpf.Options{
		PinDir:     pinDir,
		Logger:     log,
		Interfaces: interfaces,
		Protected:  protected,
		Measurer: bpf.MeasurerFunc(func(ctx context.Context, pm bpf.ProgramMeasurement) error {
			return measure(ctx, toCEL(pm))
		}),
		MapMeasurer: bpf.MapMeasurerFunc(func(ctx context.Context, mm bpf.MapMeasurement) error {
			rec, err := mapsRecord(mm)
			if err != nil {
				return err
			}
			return measure(ctx, rec)
		}),
		InterfaceMeasurer: bpf.InterfaceMeasurerFunc(func(ctx context.Context, im bpf.InterfaceMeasurement) error {
			rec, err := interfacesRecord(im)
			if err != nil {
				return err
			}
			return measure(ctx, rec)
		}),
	})
	if err != nil {
		return nil, fmt.Errorf("ebpf: %w", err)
	}
	if err := measureSentinel(ctx, m, measure); err != nil {
		m.Close()
		return nil, fmt.Errorf("ebpf: %w", err)
	}
	st := m.Fortress().Status()
	log.Info("eBPF programs loaded", "pin_dir", m.PinDir(), "programs", len(m.Measurements()), "fortress_active", st.Active, "fortress_reason", st.Reason)
	return &Adapter{m: m, log: log}, nil
}

func toCEL(pm bpf.ProgramMeasurement) *cel.EBPFProgram {
	c := &cel.EBPFProgram{Name: pm.Name, ProgramType: pm.Type, AttachPoint: pm.AttachPoint, InsnSHA256: pm.InsnSHA256,
		ObjectSHA256: append([]byte(nil), pm.ObjectSHA256[:]...), KernelRelease: pm.KernelRelease}
	if tag, err := hex.DecodeString(pm.KernelTag); err == nil && len(tag) == 8 {
		copy(c.Tag[:], tag)
	}
	return c
}

// Snapshot resolves every pin to its live program and lists the host's
// programs (the agent drops the host list when the verifier holds it).
func (a *Adapter) Snapshot(ctx context.Context) (*pulsev1.BPFSnapshot, error) {
	s, err := a.m.Snapshot(ctx)
	if err != nil {
		return nil, err
	}
	out := &pulsev1.BPFSnapshot{HostProgramCount: uint32(len(s.Programs))}
	names := make([]string, 0, len(s.Pinned))
	for n := range s.Pinned {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		p := s.Pinned[n]
		tag, _ := hex.DecodeString(p.Tag)
		insn, _ := hex.DecodeString(p.InsnSHA256)
		out.Pinned = append(out.Pinned, &pulsev1.PinnedProgram{Name: n, Id: p.ID, Tag: tag, InsnSha256: insn,
			Problem: p.Detail, ProblemKind: problemKind(p.Problem)})
	}
	h := sha256.New()
	var hosts []*pulsev1.HostProgram
	for _, p := range s.Programs {
		tag, _ := hex.DecodeString(p.Tag)
		fmt.Fprintf(h, "%d\x00%s\x00%s\x00%x\n", p.ID, p.Name, p.Type, tag)
		hosts = append(hosts, &pulsev1.HostProgram{Id: p.ID, Name: p.Name, Type: p.Type, Tag: tag})
	}
	out.HostProgramsSha256 = h.Sum(nil)
	// The list always goes with its digest; the agent leaves it out only
	// when the verifier says it holds that digest (VerifierState), so a
	// list in a pulse the verifier never judged is sent again.
	out.HostPrograms = hosts
	ev := a.m.KernelEvidence(ctx)
	if ev.QuarantineErr != nil {
		a.log.Warn("reading the quarantine map failed", "error", ev.QuarantineErr)
	}
	fillKernelEvidence(out, ev)
	return out, nil
}

func problemKind(p snapshot.Problem) pulsev1.PinProblem {
	switch p {
	case snapshot.ProblemPinMissing:
		return pulsev1.PinProblem_PIN_PROBLEM_MISSING
	case snapshot.ProblemReplaced:
		return pulsev1.PinProblem_PIN_PROBLEM_REPLACED
	case snapshot.ProblemDetached:
		return pulsev1.PinProblem_PIN_PROBLEM_DETACHED
	case snapshot.ProblemUnexpected:
		return pulsev1.PinProblem_PIN_PROBLEM_UNEXPECTED
	}
	return pulsev1.PinProblem_PIN_PROBLEM_UNSPECIFIED
}

// Measured returns the measurements made at load.
func (a *Adapter) Measured(context.Context) ([]*cel.EBPFProgram, error) {
	ms := a.m.Measurements()
	out := make([]*cel.EBPFProgram, 0, len(ms))
	for _, pm := range ms {
		out = append(out, toCEL(pm))
	}
	return out, nil
}

// Fortress reports what the kernel allowed, with the IDs and tag the
// kernel gives for Fortress's link and program (what Active is derived from).
func (a *Adapter) Fortress(context.Context) (*pulsev1.FortressStatus, error) {
	return fortressStatus(a.m.Fortress().Status()), nil
}

// SentinelEvents reads the records after the last acknowledgement without
// acknowledging them (SentinelAck does, once a pulse carrying them was
// committed by the verifier).
func (a *Adapter) SentinelEvents(ctx context.Context) ([]*pulsev1.SentinelEvent, error) {
	b, err := a.SentinelRead(ctx, 0)
	return b.Events, err
}

// Quarantine adds an address to Shield's drop list.
func (a *Adapter) Quarantine(addr netip.Addr) error { return a.m.Shield().Quarantine(addr) }

// Release removes an address from Shield's drop list.
func (a *Adapter) Release(addr netip.Addr) error { return a.m.Shield().Release(addr) }

// Quarantined lists Shield's drop list.
func (a *Adapter) Quarantined() []netip.Addr {
	es, err := a.m.Shield().List()
	if err != nil {
		a.log.Warn("listing quarantine failed", "error", err)
		return nil
	}
	out := make([]netip.Addr, 0, len(es))
	for _, e := range es {
		out = append(out, e.Addr)
	}
	return out
}

// Close releases the loader's handles; pinned programs and maps stay.
func (a *Adapter) Close() error { return a.m.Close() }
