package bpf

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/pulse-attest/pulse/internal/kernelev"
	"github.com/pulse-attest/pulse/internal/quarset"
)

// measureMaps hands the identity of every map this load's programs use to
// the MapMeasurer, before anything is attached.
func (m *Manager) measureMaps(ctx context.Context) error {
	var ids []namedID
	m.mu.Lock()
	for _, c := range m.colls {
		for name, mp := range c.Maps {
			info, err := mp.Info()
			if err != nil {
				m.mu.Unlock()
				return fmt.Errorf("ebpf: map %s: info: %w", name, err)
			}
			id, _ := info.ID()
			ids = append(ids, namedID{name, uint32(id)})
		}
	}
	m.mu.Unlock()
	mm, err := mapMeasurement(ids)
	if err != nil {
		return fmt.Errorf("ebpf: %w", err)
	}
	m.mapIDs = mm
	if m.mapMeas == nil {
		m.log.Warn("no map measurer: the maps of this load are not measured")
		return nil
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("ebpf: measure maps: %w", err)
	}
	if err := m.mapMeas.MeasureMaps(ctx, mm); err != nil {
		return fmt.Errorf("ebpf: measure maps before attaching: %w", err)
	}
	m.log.Info("measured maps", "maps", len(mm))
	return nil
}

// measureInterfaces hands the interfaces of the planned attachments, with
// their ifindex, to the InterfaceMeasurer before any of their programs is
// measured. Nothing to measure without Shield interfaces.
func (m *Manager) measureInterfaces(ctx context.Context, plan []attachment) error {
	im := interfaceMeasurement(plan)
	if len(im) == 0 {
		return nil
	}
	m.mu.Lock()
	if m.ifIndex == nil {
		m.ifIndex = map[string]uint32{}
	}
	maps.Copy(m.ifIndex, im)
	m.mu.Unlock()
	if m.ifMeas == nil {
		m.log.Warn("no interface measurer: Shield's interfaces are bound by name only")
		return nil
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("ebpf: measure interfaces: %w", err)
	}
	if err := m.ifMeas.MeasureInterfaces(ctx, im); err != nil {
		return fmt.Errorf("ebpf: measure interfaces before attaching: %w", err)
	}
	m.log.Info("measured interfaces", "interfaces", len(im))
	return nil
}

// pinFreshMaps pins the maps this load created under their names,
// replacing (rename over) whatever was pinned there.
func (m *Manager) pinFreshMaps() error {
	names := make([]string, 0, len(m.fresh))
	for n := range m.fresh {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		mp := m.fresh[name]
		path := filepath.Join(m.mapsDir, name)
		tmp := path + "_new" // bpffs refuses names with a dot
		_ = os.Remove(tmp)
		if err := mp.Pin(tmp); err != nil {
			return fmt.Errorf("pin map %s: %w", name, err)
		}
		if err := os.Rename(tmp, path); err != nil {
			_ = mp.Unpin()
			return fmt.Errorf("pin map %s: %w", name, err)
		}
	}
	return nil
}

// MapIDs returns the maps this load measured: name to kernel ID.
func (m *Manager) MapIDs() MapMeasurement {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(MapMeasurement, len(m.mapIDs))
	for k, v := range m.mapIDs {
		out[k] = v
	}
	return out
}

// KernelEvidence reads, now, the chains of the hooks Pulse enforces on
// every Shield interface (in the calling thread's network namespace), the
// identity of the agent's maps and the digest of Shield's quarantine map.
// A hook the kernel cannot be asked about is reported with its error.
func (m *Manager) KernelEvidence(ctx context.Context) KernelEvidence {
	var ev KernelEvidence
	for _, ifname := range m.shield.Interfaces() {
		if ctx.Err() != nil {
			break
		}
		iface, err := net.InterfaceByName(ifname)
		if err != nil {
			for _, h := range shieldHooks(ifname, 0) {
				h.Err = fmt.Sprintf("interface %s: %v", ifname, err)
				ev.Hooks = append(ev.Hooks, h)
			}
			continue
		}
		m.mu.Lock()
		attached, known := m.ifIndex[ifname]
		m.mu.Unlock()
		if known && attached != uint32(iface.Index) {
			// The name now names another device than the one Shield was
			// attached to (renamed, replaced): reported as such, since a
			// record in the root-extendable runtime log could name the
			// new device's ifindex.
			for _, h := range shieldHooks(ifname, uint32(iface.Index)) {
				h.Err = fmt.Sprintf("interface %s is ifindex %d; Shield was attached at ifindex %d", ifname, iface.Index, attached)
				ev.Hooks = append(ev.Hooks, h)
			}
			continue
		}
		for _, h := range shieldHooks(ifname, uint32(iface.Index)) {
			ev.Hooks = append(ev.Hooks, m.ownLinkListed(QueryHook(h)))
		}
	}
	ev.Hooks = append(ev.Hooks, m.tracepointHooks()...)
	m.mu.Lock()
	maps := make(map[string]*ebpf.Map)
	for _, c := range m.colls {
		for name, mp := range c.Maps {
			if _, ok := maps[name]; !ok {
				maps[name] = mp
			}
		}
	}
	m.mu.Unlock()
	names := make([]string, 0, len(maps))
	for n := range maps {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		ev.Maps = append(ev.Maps, mapIdentity(n, maps[n]))
	}
	ev.QuarantineSHA256, ev.QuarantineCount, ev.QuarantineErr = m.shield.kernelDigest()
	return ev
}

// ownLinkListed sets h's error when the agent holds a Shield tcx link for
// h's hook and interface that the chain the kernel lists there does not
// hold: the device under that name and ifindex is not the one Shield was
// attached to (the guarded device moved to another network namespace and a
// decoy of its name and ifindex put in its place, with Shield's programs
// on new links). XDP links are not told apart this way (the kernel lists no
// link per XDP program).
func (m *Manager) ownLinkListed(h HookChain) HookChain {
	if h.Err != "" {
		return h
	}
	var prog string
	switch h.Hook {
	case kernelev.HookTCXIngress:
		prog = "shield_ingress"
	case kernelev.HookTCXEgress:
		prog = "shield_egress"
	default:
		return h
	}
	m.mu.Lock()
	l, ok := m.links[prog+"@"+h.Target]
	m.mu.Unlock()
	if !ok {
		return h
	}
	info, err := l.Info()
	if err != nil {
		h.Err, h.Programs = fmt.Sprintf("Shield's link for %s on %s: info: %v", h.Hook, h.Target, err), nil
		return h
	}
	for _, p := range h.Programs {
		if p.LinkID == uint32(info.ID) {
			return h
		}
	}
	h.Err, h.Programs = fmt.Sprintf("Shield's link %d is not in the %s chain of %s (ifindex %d): the device there is not the one Shield was attached to",
		info.ID, h.Hook, h.Target, h.Ifindex), nil
	return h
}

// tracepointHooks reports the programs the agent's own tracepoint links
// run, as the kernel's link info names them (a tracepoint has no chain the
// kernel lists: other programs there run independently of Pulse's): one
// chain per tracepoint, its links in name order.
func (m *Manager) tracepointHooks() []HookChain {
	byTarget := map[string][]tpLink{}
	m.mu.Lock()
	seen := map[string]bool{}
	for _, pm := range m.measured {
		h, ok := kernelev.ParseAttachPoint(pm.AttachPoint)
		p := m.progs[pm.Name]
		if !ok || h.Kind != kernelev.HookTracepoint || p == nil {
			continue
		}
		for _, name := range p.links {
			if l := m.links[name]; l != nil && !seen[name] {
				seen[name] = true
				byTarget[h.Target] = append(byTarget[h.Target], tpLink{name, l})
			}
		}
	}
	m.mu.Unlock()
	targets := make([]string, 0, len(byTarget))
	for t := range byTarget {
		targets = append(targets, t)
	}
	sort.Strings(targets)
	out := make([]HookChain, 0, len(targets))
	for _, target := range targets {
		links := byTarget[target]
		sort.Slice(links, func(i, j int) bool { return links[i].name < links[j].name })
		out = append(out, tracepointChain(target, links))
	}
	return out
}

// tpLink is one of the agent's links, by its pin name.
type tpLink struct {
	name string
	l    link.Link
}

// tracepointChain describes the programs of the given links on one
// tracepoint; the first failure is the chain's error.
func tracepointChain(target string, links []tpLink) HookChain {
	h := HookChain{Hook: kernelev.HookTracepoint, Target: target}
	for _, tl := range links {
		name := tl.name
		info, err := tl.l.Info()
		if err != nil {
			return HookChain{Hook: h.Hook, Target: target, Err: fmt.Sprintf("link %s: info: %v", name, err)}
		}
		p, err := chainProgram(uint32(info.Program))
		if err != nil {
			return HookChain{Hook: h.Hook, Target: target, Err: fmt.Sprintf("link %s: %v", name, err)}
		}
		p.LinkID = uint32(info.ID)
		h.Programs = append(h.Programs, p)
	}
	return h
}

// QueryHook fills h (hook kind, target and ifindex set) with the programs
// the kernel runs there, or with the error that kept it from saying.
func QueryHook(h HookChain) HookChain {
	ids, links, err := hookPrograms(h)
	if err != nil {
		h.Err = err.Error()
		return h
	}
	for i, id := range ids {
		p, err := chainProgram(id)
		if errors.Is(err, os.ErrNotExist) {
			continue // detached and unloaded between the two calls
		}
		if err != nil {
			h.Err = err.Error()
			h.Programs = nil
			return h
		}
		p.LinkID = links[i]
		h.Programs = append(h.Programs, p)
	}
	return h
}

func hookPrograms(h HookChain) ([]uint32, []uint32, error) {
	switch h.Hook {
	case kernelev.HookTCXIngress, kernelev.HookTCXEgress:
		at := ebpf.AttachTCXIngress
		if h.Hook == kernelev.HookTCXEgress {
			at = ebpf.AttachTCXEgress
		}
		res, err := link.QueryPrograms(link.QueryOptions{Target: int(h.Ifindex), Attach: at})
		if err != nil {
			return nil, nil, fmt.Errorf("query %s on %s: %w", h.Hook, h.Target, err)
		}
		ids := make([]uint32, 0, len(res.Programs))
		links := make([]uint32, 0, len(res.Programs))
		for _, p := range res.Programs {
			lid, _ := p.LinkID()
			ids = append(ids, uint32(p.ID))
			links = append(links, uint32(lid))
		}
		return ids, links, nil
	case kernelev.HookXDP:
		ids, err := xdpQuery(h.Ifindex)
		if err != nil {
			return nil, nil, fmt.Errorf("query xdp on %s: %w", h.Target, err)
		}
		byProg, err := xdpLinks(h.Ifindex)
		if err != nil {
			return nil, nil, fmt.Errorf("xdp links on %s: %w", h.Target, err)
		}
		links := make([]uint32, len(ids))
		for i, id := range ids {
			links[i] = byProg[id]
		}
		return ids, links, nil
	}
	return nil, nil, fmt.Errorf("hook kind %q cannot be queried", h.Hook)
}

// chainProgram describes a loaded program by ID: os.ErrNotExist when it is
// gone.
func chainProgram(id uint32) (ChainProgram, error) {
	p, err := ebpf.NewProgramFromID(ebpf.ProgramID(id))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return ChainProgram{}, os.ErrNotExist
		}
		return ChainProgram{}, fmt.Errorf("program %d: %w", id, err)
	}
	defer p.Close()
	info, err := p.Info()
	if err != nil {
		return ChainProgram{}, fmt.Errorf("program %d: info: %w", id, err)
	}
	mids, _ := info.MapIDs()
	ms := make([]uint32, 0, len(mids))
	for _, x := range mids {
		ms = append(ms, uint32(x))
	}
	return ChainProgram{ID: id, Tag: info.Tag, Name: info.Name, Type: typeName(info.Type), MapIDs: sortedMapIDs(ms)}, nil
}

func mapIdentity(name string, mp *ebpf.Map) MapIdentity {
	mi := MapIdentity{Name: name, Type: mp.Type().String(), KeySize: mp.KeySize(), ValueSize: mp.ValueSize(),
		MaxEntries: mp.MaxEntries(), Flags: mp.Flags()}
	if info, err := mp.Info(); err == nil {
		id, _ := info.ID()
		mi.ID = uint32(id)
	}
	return mi
}

// xdpQuery asks the kernel (rtnetlink, the calling thread's network
// namespace) which XDP programs run on ifindex.
func xdpQuery(ifindex uint32) ([]uint32, error) {
	rib, err := syscall.NetlinkRIB(syscall.RTM_GETLINK, syscall.AF_UNSPEC)
	if err != nil {
		return nil, fmt.Errorf("rtnetlink dump: %w", err)
	}
	msgs, err := syscall.ParseNetlinkMessage(rib)
	if err != nil {
		return nil, fmt.Errorf("rtnetlink dump: %w", err)
	}
	for i := range msgs {
		msg := &msgs[i]
		if msg.Header.Type != syscall.RTM_NEWLINK || len(msg.Data) < syscall.SizeofIfInfomsg {
			continue
		}
		ifi := (*syscall.IfInfomsg)(unsafe.Pointer(&msg.Data[0]))
		if uint32(ifi.Index) != ifindex {
			continue
		}
		attrs, err := syscall.ParseNetlinkRouteAttr(msg)
		if err != nil {
			return nil, fmt.Errorf("rtnetlink attributes: %w", err)
		}
		for _, a := range attrs {
			if a.Attr.Type&^0xc000 == iflaXDP {
				return xdpProgramIDs(a.Value)
			}
		}
		return nil, nil
	}
	return nil, fmt.Errorf("interface %d: %w", ifindex, os.ErrNotExist)
}

const iflaXDP = 0x2b // IFLA_XDP

// xdpLinks maps program ID to link ID for the XDP links on ifindex.
func xdpLinks(ifindex uint32) (map[uint32]uint32, error) {
	out := map[uint32]uint32{}
	var it link.Iterator
	defer it.Close()
	for it.Next() {
		info, err := it.Link.Info()
		if err != nil || info.Type != link.XDPType {
			continue
		}
		if x := info.XDP(); x != nil && x.Ifindex == ifindex {
			out[uint32(info.Program)] = uint32(info.ID)
		}
	}
	return out, it.Err()
}

// kernelDigest digests the addresses in Shield's quarantine map as the
// kernel holds them.
func (s *Shield) kernelDigest() ([32]byte, int, error) {
	var (
		k    shieldShieldAddr
		v    shieldShieldEntry
		strs []string
	)
	it := s.quarantine.Iterate()
	for it.Next(&k, &v) {
		strs = append(strs, netip.AddrFrom16(k.Bytes).Unmap().String())
	}
	if err := it.Err(); err != nil {
		return [32]byte{}, 0, fmt.Errorf("shield: read quarantine map: %w", err)
	}
	return quarset.Digest(strs)
}
