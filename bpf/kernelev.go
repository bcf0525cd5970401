package bpf

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sort"

	"github.com/pulse-attest/pulse/internal/kernelev"
)

// The kernel's view of the hooks Pulse enforces and of the agent's maps
// (docs/kernel-evidence.md). The types and the pure helpers live here; the
// kernel queries are in kernelev_kernel.go.

// HookChain is one hook and the programs the kernel runs there, first
// runs first, as BPF_PROG_QUERY (tcx), netlink (XDP) or link info
// (tracepoints: the agent's own links only) lists them.
type HookChain struct {
	Hook     string         `json:"hook"`
	Target   string         `json:"target"`
	Ifindex  uint32         `json:"ifindex,omitempty"`
	Programs []ChainProgram `json:"programs"`
	// Err is why the kernel could not be queried; Programs is then empty.
	Err string `json:"error,omitempty"`
}

// ChainProgram is one attached program as the kernel describes it.
type ChainProgram struct {
	ID     uint32   `json:"id"`
	Tag    string   `json:"tag"`
	Name   string   `json:"name"`
	Type   string   `json:"type"`
	MapIDs []uint32 `json:"map_ids"`
	// LinkID is the link the program is attached by; 0 for a legacy
	// attachment (or a kernel that does not say).
	LinkID uint32 `json:"link_id,omitempty"`
}

// MapIdentity is one of the agent's maps as the kernel describes it.
type MapIdentity struct {
	Name       string `json:"name"`
	ID         uint32 `json:"id"`
	Type       string `json:"type"`
	KeySize    uint32 `json:"key_size"`
	ValueSize  uint32 `json:"value_size"`
	MaxEntries uint32 `json:"max_entries"`
	Flags      uint32 `json:"flags"`
}

// KernelEvidence is what the agent read from the kernel for one pulse.
type KernelEvidence struct {
	Hooks []HookChain
	Maps  []MapIdentity
	// QuarantineSHA256 and QuarantineCount digest the addresses in Shield's
	// quarantine map as read from the kernel (quarset.Digest).
	QuarantineSHA256 [32]byte
	QuarantineCount  int
	// QuarantineErr is why the map could not be read (digest unset).
	QuarantineErr error
}

// MapMeasurement is the maps an agent load created, measured (through
// MapMeasurer) before any program is attached: map name to kernel ID.
type MapMeasurement map[string]uint32

// MapMeasurer records the identity of the maps a load created, before any
// program is attached. An error aborts the load, as for programs.
type MapMeasurer interface {
	MeasureMaps(ctx context.Context, maps MapMeasurement) error
}

// InterfaceMeasurement is the interfaces Shield is about to attach to,
// measured (through InterfaceMeasurer) before their programs: interface
// name to ifindex, in the agent's network namespace.
type InterfaceMeasurement map[string]uint32

// InterfaceMeasurer records the ifindex of the interfaces Shield is about to
// attach to, before their programs are measured. An error aborts the load
// or the attach, as for programs.
type InterfaceMeasurer interface {
	MeasureInterfaces(ctx context.Context, ifaces InterfaceMeasurement) error
}

// InterfaceMeasurerFunc adapts a function to the InterfaceMeasurer interface.
type InterfaceMeasurerFunc func(ctx context.Context, ifaces InterfaceMeasurement) error

// MeasureInterfaces calls f.
func (f InterfaceMeasurerFunc) MeasureInterfaces(ctx context.Context, ifaces InterfaceMeasurement) error {
	return f(ctx, ifaces)
}

// interfaceMeasurement is the interfaces of the planned attachments (those
// with an interface): name to ifindex.
func interfaceMeasurement(plan []attachment) InterfaceMeasurement {
	out := InterfaceMeasurement{}
	for _, a := range plan {
		if a.ifname != "" {
			out[a.ifname] = a.ifindex
		}
	}
	return out
}

// shieldHooks returns the hooks Pulse enforces on one Shield interface, in
// report order: tcx ingress, tcx egress, XDP (whatever Shield's mode: a
// foreign XDP program runs before tc and could pass anything).
func shieldHooks(ifname string, ifindex uint32) []HookChain {
	return []HookChain{
		{Hook: kernelev.HookTCXIngress, Target: ifname, Ifindex: ifindex},
		{Hook: kernelev.HookTCXEgress, Target: ifname, Ifindex: ifindex},
		{Hook: kernelev.HookXDP, Target: ifname, Ifindex: ifindex},
	}
}

// mapMeasurement builds the record of a load's maps from their kernel IDs;
// a map seen twice (shared between objects by pin) must have one ID.
func mapMeasurement(ids []namedID) (MapMeasurement, error) {
	out := MapMeasurement{}
	for _, n := range ids {
		if n.id == 0 {
			return nil, fmt.Errorf("map %s: no kernel ID", n.name)
		}
		if prev, ok := out[n.name]; ok && prev != n.id {
			return nil, fmt.Errorf("map %s: two kernel IDs %d and %d", n.name, prev, n.id)
		}
		out[n.name] = n.id
	}
	return out, nil
}

type namedID struct {
	name string
	id   uint32
}

// xdpProgramIDs extracts the program IDs of a nested IFLA_XDP attribute
// (netlink route attributes: 2-byte length, 2-byte type, 4-byte aligned):
// the single-mode program and the per-mode ones, deduplicated, in the order
// the kernel runs them (hardware, driver, generic).
func xdpProgramIDs(nested []byte) ([]uint32, error) {
	const (
		attrProgID    = 4 // IFLA_XDP_PROG_ID
		attrDrvProgID = 5 // IFLA_XDP_DRV_PROG_ID
		attrSkbProgID = 6 // IFLA_XDP_SKB_PROG_ID
		attrHwProgID  = 7 // IFLA_XDP_HW_PROG_ID
	)
	byType := map[uint16]uint32{}
	for b := nested; len(b) > 0; {
		if len(b) < 4 {
			return nil, errors.New("truncated IFLA_XDP attribute")
		}
		l := int(binary.NativeEndian.Uint16(b[0:2]))
		typ := binary.NativeEndian.Uint16(b[2:4]) &^ 0xc000
		if l < 4 || l > len(b) {
			return nil, fmt.Errorf("IFLA_XDP attribute of length %d in %d bytes", l, len(b))
		}
		if l == 8 && typ >= attrProgID && typ <= attrHwProgID {
			byType[typ] = binary.NativeEndian.Uint32(b[4:8])
		}
		adv := (l + 3) &^ 3
		if adv > len(b) {
			adv = len(b)
		}
		b = b[adv:]
	}
	var ids []uint32
	for _, t := range []uint16{attrHwProgID, attrDrvProgID, attrSkbProgID, attrProgID} {
		if id := byType[t]; id != 0 && !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// sortedMapIDs returns ids sorted, for a canonical report.
func sortedMapIDs(ids []uint32) []uint32 {
	out := slices.Clone(ids)
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// MapMeasurerFunc adapts a function to the MapMeasurer interface.
type MapMeasurerFunc func(ctx context.Context, maps MapMeasurement) error

// MeasureMaps calls f.
func (f MapMeasurerFunc) MeasureMaps(ctx context.Context, maps MapMeasurement) error {
	return f(ctx, maps)
}
