package bpf

import (
	"bytes"
	"context"
	"crypto/sha1" //nolint:gosec // the kernel's program tag before Linux 6.18 is a truncated SHA-1; we only compare with it.
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
)

// ProgramMeasurement describes one program the agent is about to attach (or,
// for a program loaded without an attach point, pin). The loader hands it to
// the [Measurer] after the kernel has accepted the program, so the kernel tag
// is known, and before the program is attached or pinned.
type ProgramMeasurement struct {
	// Name is the program's name in its object and its pin name.
	Name string
	// Type is the kernel's program type as bpftool names it ("sched_cls").
	Type string
	// AttachPoint says where the program is about to be attached
	// ("tcx/ingress:eth0", "tracepoint/signal/signal_generate",
	// "lsm/task_kill"); empty when it is only pinned.
	AttachPoint string
	// InsnSHA256 is the SHA-256 of the exact instructions handed to the
	// kernel, in the kernel's wire encoding, with the immediates of map
	// references zeroed (they hold per-process file descriptors). It is the
	// value whose first 8 bytes the kernel reports as the tag since Linux 6.18.
	InsnSHA256 [32]byte
	// KernelTag is the kernel's tag for the program, hex as bpftool prints it.
	KernelTag string
	// ObjectSHA256 is the SHA-256 of the compiled ELF object the program came
	// from (the committed bpf2go output).
	ObjectSHA256 [32]byte
	// KernelRelease is uname -r of the running kernel.
	KernelRelease string
	// ProgramID is the kernel's ID for the program. It is host- and
	// boot-local: useful in logs, not part of what a record attests.
	ProgramID uint32
}

// Measurer records a program before it is attached. The agent implements it
// with the runtime log and a PCR extend. An error aborts the attach: nothing
// is attached or pinned without a measurement first.
type Measurer interface {
	MeasureProgram(ctx context.Context, m ProgramMeasurement) error
}

// MeasurerFunc adapts a function to the Measurer interface.
type MeasurerFunc func(ctx context.Context, m ProgramMeasurement) error

// MeasureProgram calls f.
func (f MeasurerFunc) MeasureProgram(ctx context.Context, m ProgramMeasurement) error {
	return f(ctx, m)
}

// ErrTagMismatch means the kernel's tag for a loaded program does not match
// the instructions the agent measured: the measurement would not describe
// what runs, so the program is not attached.
var ErrTagMismatch = errors.New("kernel tag does not match the measured instructions")

// Kernel encoding details mirrored from bpf_prog_calc_tag.
const (
	opLoadImm64     = 0x18 // BPF_LD | BPF_IMM | BPF_DW
	pseudoMapFD     = 1    // BPF_PSEUDO_MAP_FD
	pseudoMapValue  = 2    // BPF_PSEUDO_MAP_VALUE
	instructionSize = asm.InstructionSize
)

// canonicalInstructions encodes insns the way the kernel hashes them for the
// program tag: the wire encoding with both immediates of each map-reference
// load (BPF_PSEUDO_MAP_FD / BPF_PSEUDO_MAP_VALUE) zeroed, since they hold
// per-process file descriptors and value offsets.
func canonicalInstructions(insns asm.Instructions) ([]byte, error) {
	var buf bytes.Buffer
	if err := insns.Marshal(&buf, binary.LittleEndian); err != nil {
		return nil, fmt.Errorf("encode instructions: %w", err)
	}
	return zeroMapImmediates(buf.Bytes()), nil
}

// zeroMapImmediates zeroes, in place, the immediates of map-reference loads
// in raw kernel-encoded instructions and returns raw.
func zeroMapImmediates(raw []byte) []byte {
	for off := 0; off+2*instructionSize <= len(raw); off += instructionSize {
		if raw[off] != opLoadImm64 {
			continue
		}
		// Little-endian register byte: dst in the low nibble, src in the
		// high one (the objects are compiled for bpfel only).
		src := raw[off+1] >> 4
		if src != pseudoMapFD && src != pseudoMapValue {
			// A 64-bit immediate load occupies two slots; skip the second.
			off += instructionSize
			continue
		}
		clear(raw[off+4 : off+8])
		clear(raw[off+instructionSize+4 : off+instructionSize+8])
		off += instructionSize
	}
	return raw
}

// instructionDigest returns the SHA-256 of the canonical instructions.
func instructionDigest(insns asm.Instructions) ([32]byte, []byte, error) {
	raw, err := canonicalInstructions(insns)
	if err != nil {
		return [32]byte{}, nil, err
	}
	return sha256.Sum256(raw), raw, nil
}

// tagMatches reports whether the kernel tag is the one the kernel computes
// for the canonical instructions: the first 8 bytes of SHA-256 (Linux >= 6.18)
// or of SHA-1 (older kernels).
func tagMatches(tag string, canonical []byte) bool {
	s256 := sha256.Sum256(canonical)
	if tag == hex.EncodeToString(s256[:8]) {
		return true
	}
	s1 := sha1.Sum(canonical) //nolint:gosec // comparing with the kernel's legacy tag only
	return tag == hex.EncodeToString(s1[:8])
}

// applyCORE resolves the CO-RE relocations of insns against the kernel's BTF
// and returns instructions without relocation metadata, so the library hands
// them to the kernel unchanged and the digest covers what the kernel gets.
func applyCORE(insns asm.Instructions, kernel *btf.Spec) (asm.Instructions, error) {
	out := make(asm.Instructions, len(insns))
	copy(out, insns)
	var relos []*btf.CORERelocation
	var idx []int
	for i := range out {
		if r := btf.CORERelocationMetadata(&out[i]); r != nil {
			relos = append(relos, r)
			idx = append(idx, i)
		}
	}
	if len(relos) == 0 {
		return out, nil
	}
	if kernel == nil {
		return nil, errors.New("program needs CO-RE relocations but kernel BTF is unavailable")
	}
	localID := func(btf.Type) (btf.TypeID, error) {
		return 0, errors.New("local type ID relocations are not supported")
	}
	fixups, err := btf.CORERelocate(relos, []*btf.Spec{kernel}, binary.LittleEndian, localID)
	if err != nil {
		return nil, fmt.Errorf("co-re relocate: %w", err)
	}
	for n, f := range fixups {
		i := idx[n]
		if err := f.Apply(&out[i]); err != nil {
			return nil, fmt.Errorf("co-re fixup for instruction %d: %w", i, err)
		}
		out[i] = btf.WithCORERelocationMetadata(out[i], nil)
	}
	return out, nil
}

// prepareProgram applies CO-RE in place on spec and returns the digest and
// canonical bytes of the instructions that will be handed to the kernel.
func prepareProgram(spec *ebpf.ProgramSpec, kernel *btf.Spec) ([32]byte, []byte, error) {
	insns, err := applyCORE(spec.Instructions, kernel)
	if err != nil {
		return [32]byte{}, nil, fmt.Errorf("program %s: %w", spec.Name, err)
	}
	spec.Instructions = insns
	d, raw, err := instructionDigest(insns)
	if err != nil {
		return [32]byte{}, nil, fmt.Errorf("program %s: %w", spec.Name, err)
	}
	return d, raw, nil
}

// hasCORE reports whether a program spec carries CO-RE relocations.
func hasCORE(spec *ebpf.ProgramSpec) bool {
	for i := range spec.Instructions {
		if btf.CORERelocationMetadata(&spec.Instructions[i]) != nil {
			return true
		}
	}
	return false
}
