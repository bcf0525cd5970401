package ebpf

import (
	"encoding/hex"
	"fmt"

	"github.com/pulse-attest/pulse/bpf"
	"github.com/pulse-attest/pulse/internal/kernelev"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/tpm/cel"
)

// mapsRecord is the runtime-log record of the maps one load created
// (kernelev.MapsRecordName, canonical "name id" lines).
func mapsRecord(mm bpf.MapMeasurement) (*cel.Generic, error) {
	data, err := kernelev.EncodeMaps(mm)
	if err != nil {
		return nil, fmt.Errorf("ebpf: maps record: %w", err)
	}
	return &cel.Generic{Name: kernelev.MapsRecordName, Data: data}, nil
}

// interfacesRecord is the runtime-log record of the interfaces Shield is
// about to attach to (kernelev.InterfacesRecordName, "name ifindex" lines).
func interfacesRecord(im bpf.InterfaceMeasurement) (*cel.Generic, error) {
	data, err := kernelev.EncodeMaps(im)
	if err != nil {
		return nil, fmt.Errorf("ebpf: interfaces record: %w", err)
	}
	return &cel.Generic{Name: kernelev.InterfacesRecordName, Data: data}, nil
}

// hookChains converts the kernel's hook chains to the protocol's.
func hookChains(hs []bpf.HookChain) []*pulsev1.HookChain {
	out := make([]*pulsev1.HookChain, 0, len(hs))
	for _, h := range hs {
		pc := &pulsev1.HookChain{Hook: h.Hook, Target: h.Target, Ifindex: h.Ifindex, Error: h.Err}
		for _, p := range h.Programs {
			pc.Programs = append(pc.Programs, &pulsev1.ChainProgram{Id: p.ID, Tag: tagBytes(p.Tag), Name: p.Name, Type: p.Type,
				MapIds: append([]uint32(nil), p.MapIDs...), LinkId: p.LinkID})
		}
		out = append(out, pc)
	}
	return out
}

// mapIdentities converts the agent's map identities to the protocol's.
func mapIdentities(ms []bpf.MapIdentity) []*pulsev1.MapIdentity {
	out := make([]*pulsev1.MapIdentity, 0, len(ms))
	for _, m := range ms {
		out = append(out, &pulsev1.MapIdentity{Name: m.Name, Id: m.ID, Type: m.Type, KeySize: m.KeySize,
			ValueSize: m.ValueSize, MaxEntries: m.MaxEntries, Flags: m.Flags})
	}
	return out
}

// tagBytes decodes a kernel tag (16 hex digits); anything else is nil, so
// a verifier sees no tag rather than a wrong one.
func tagBytes(tag string) []byte {
	b, err := hex.DecodeString(tag)
	if err != nil || len(b) != 8 {
		return nil
	}
	return b
}

// fillKernelEvidence sets the kernel-evidence fields of out from ev.
func fillKernelEvidence(out *pulsev1.BPFSnapshot, ev bpf.KernelEvidence) {
	out.Hooks = hookChains(ev.Hooks)
	out.Maps = mapIdentities(ev.Maps)
	if ev.QuarantineErr == nil {
		out.QuarantineSha256 = append([]byte(nil), ev.QuarantineSHA256[:]...)
		out.QuarantineCount = uint32(ev.QuarantineCount)
	}
}
