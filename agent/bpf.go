package agent

import (
	"context"
	"errors"
	"net/netip"

	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/tpm/cel"
)

// BPF is the agent's seam to its eBPF programs (package bpf: Shield,
// Sentinel, Fortress and the program snapshot). The agent never imports the
// loaders itself: cmd/pulse-agent wires an implementation (an adapter over
// package bpf that converts its types to these proto messages) into
// Options.BPF, and the agent uses DisabledBPF when the configuration says
// bpf { enabled = false } or nothing is wired.
//
// Contract for implementations:
//   - Methods are called from several goroutines (the pulse loop and the
//     directives handler); they must be safe for concurrent use.
//   - Snapshot returns the programs pinned under the agent's bpffs
//     directory with the SHA-256 of the instructions handed to the kernel,
//     and the host's loaded programs with host_programs_sha256 over them.
//     The agent itself empties host_programs when the verifier already
//     holds that digest.
//   - Measured returns each program the agent loaded, as it must be
//     measured into the runtime log (a tpm/cel eBPF program record: name,
//     type, attach point, SHA-256 of the instructions handed to the kernel,
//     kernel tag, object digest, kernel release); the agent appends a
//     record whenever a program differs from the last one logged under its
//     name this boot, so the verifier can hold the pinned programs to them.
//   - Fortress reports what the kernel actually allows (BPF-LSM may be
//     refused): active only when loaded and attached.
//   - SentinelEvents drains the events recorded since the previous call; the
//     agent keeps them until a pulse carrying them was answered.
//   - Quarantine and Release change Shield's drop list; Quarantined lists it.
type BPF interface {
	Snapshot(ctx context.Context) (*pulsev1.BPFSnapshot, error)
	Measured(ctx context.Context) ([]*cel.EBPFProgram, error)
	Fortress(ctx context.Context) (*pulsev1.FortressStatus, error)
	SentinelEvents(ctx context.Context) ([]*pulsev1.SentinelEvent, error)
	Quarantine(addr netip.Addr) error
	Release(addr netip.Addr) error
	Quarantined() []netip.Addr
	Close() error
}

// MeasureFunc appends a measurement to the runtime log and extends the
// runtime PCR with it, synchronously.
type MeasureFunc func(ctx context.Context, c cel.Content) error

// BPFFactory builds the agent's BPF once the runtime log is open, so every
// program can be measured before it is attached.
type BPFFactory func(ctx context.Context, measure MeasureFunc) (BPF, error)

// ErrBPFDisabled is returned by DisabledBPF's Quarantine and Release.
var ErrBPFDisabled = errors.New("bpf is disabled on this agent")

// DisabledBPF is the BPF of an agent without eBPF: empty snapshot, Fortress
// inactive with the reason, no events, and quarantine orders refused with
// ErrBPFDisabled (reported, so the verifier knows isolation did not happen).
type DisabledBPF struct{}

var _ BPF = DisabledBPF{}

// Snapshot returns an empty snapshot.
func (DisabledBPF) Snapshot(context.Context) (*pulsev1.BPFSnapshot, error) {
	return &pulsev1.BPFSnapshot{}, nil
}

// Measured returns nothing.
func (DisabledBPF) Measured(context.Context) ([]*cel.EBPFProgram, error) { return nil, nil }

// Fortress reports Fortress inactive because bpf is disabled.
func (DisabledBPF) Fortress(context.Context) (*pulsev1.FortressStatus, error) {
	return &pulsev1.FortressStatus{Reason: "bpf disabled in the agent configuration"}, nil
}

// SentinelEvents returns none.
func (DisabledBPF) SentinelEvents(context.Context) ([]*pulsev1.SentinelEvent, error) {
	return nil, nil
}

// Quarantine refuses.
func (DisabledBPF) Quarantine(netip.Addr) error { return ErrBPFDisabled }

// Release refuses.
func (DisabledBPF) Release(netip.Addr) error { return ErrBPFDisabled }

// Quarantined returns none.
func (DisabledBPF) Quarantined() []netip.Addr { return nil }

// Close does nothing.
func (DisabledBPF) Close() error { return nil }
