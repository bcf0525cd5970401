package bpf

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// ErrProtected is returned when asked to quarantine an address Shield must
// never drop: a configured protected address (the verifier), loopback,
// unspecified or multicast.
var ErrProtected = errors.New("address is protected from quarantine")

// ErrNotEthernet is returned when asked to attach Shield to an interface
// without an Ethernet header (tun, wireguard...): its parser reads one.
var ErrNotEthernet = errors.New("interface is not Ethernet-like")

// QuarantineEntry is one quarantined address.
type QuarantineEntry struct {
	Addr  netip.Addr `json:"addr"`
	Since time.Time  `json:"since"`
	Drops uint64     `json:"drops"`
}

// Shield drops traffic from (and in tcx mode to) quarantined addresses on the
// interfaces it is attached to. The quarantine map is pinned: it outlives the
// agent, and a restarted agent keeps enforcing it.
type Shield struct {
	m          *Manager
	quarantine *ebpf.Map
	mode       ShieldMode
	protected  []netip.Addr
}

func shieldProgramNames(mode ShieldMode) []string {
	if mode == ShieldXDP {
		return []string{"shield_xdp"}
	}
	return []string{"shield_egress", "shield_ingress"}
}

func newShield(m *Manager, coll *ebpf.Collection, mode ShieldMode, protected []netip.Addr) (*Shield, error) {
	q := coll.Maps["shield_quarantine"]
	if q == nil {
		return nil, errors.New("shield: object lacks its quarantine map")
	}
	ps := make([]netip.Addr, 0, len(protected))
	for _, p := range protected {
		ps = append(ps, normalizeAddr(p))
	}
	return &Shield{m: m, quarantine: q, mode: mode, protected: ps}, nil
}

// Mode returns how Shield attaches.
func (s *Shield) Mode() ShieldMode { return s.mode }

func normalizeAddr(a netip.Addr) netip.Addr { return a.WithZone("").Unmap() }

// checkQuarantinable rejects addresses Shield must not drop.
func checkQuarantinable(a netip.Addr, protected []netip.Addr) error {
	if !a.IsValid() {
		return errors.New("shield: invalid address")
	}
	switch {
	case a.IsUnspecified(), a.IsLoopback(), a.IsMulticast():
		return fmt.Errorf("shield: %s: %w", a, ErrProtected)
	case slices.Contains(protected, a):
		return fmt.Errorf("shield: %s is configured as protected: %w", a, ErrProtected)
	}
	return nil
}

func shieldKey(a netip.Addr) shieldShieldAddr { return shieldShieldAddr{Bytes: a.As16()} }

// Quarantine adds ip to the quarantine. Quarantining an address twice keeps
// the first entry (and its drop counter).
func (s *Shield) Quarantine(ip netip.Addr) error {
	ip = normalizeAddr(ip)
	if err := checkQuarantinable(ip, s.protected); err != nil {
		return err
	}
	v := shieldShieldEntry{AddedUnixNs: uint64(time.Now().UnixNano())}
	err := s.quarantine.Update(shieldKey(ip), &v, ebpf.UpdateNoExist)
	if err != nil && !errors.Is(err, ebpf.ErrKeyExist) {
		return fmt.Errorf("shield: quarantine %s: %w", ip, err)
	}
	if err == nil {
		s.m.log.Named("shield").Info("quarantined address", "addr", ip.String())
	}
	return nil
}

// Release removes ip from the quarantine; releasing an address that is not
// quarantined is not an error.
func (s *Shield) Release(ip netip.Addr) error {
	ip = normalizeAddr(ip)
	if !ip.IsValid() {
		return errors.New("shield: invalid address")
	}
	err := s.quarantine.Delete(shieldKey(ip))
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("shield: release %s: %w", ip, err)
	}
	if err == nil {
		s.m.log.Named("shield").Info("released address", "addr", ip.String())
	}
	return nil
}

// List returns the quarantined addresses, sorted.
func (s *Shield) List() ([]QuarantineEntry, error) {
	var (
		k   shieldShieldAddr
		v   shieldShieldEntry
		out []QuarantineEntry
	)
	it := s.quarantine.Iterate()
	for it.Next(&k, &v) {
		out = append(out, QuarantineEntry{
			Addr:  netip.AddrFrom16(k.Bytes).Unmap(),
			Since: time.Unix(0, int64(v.AddedUnixNs)).UTC(),
			Drops: v.Drops,
		})
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("shield: list: %w", err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Addr.Less(out[j].Addr) })
	return out, nil
}

// carryOver copies the entries of the quarantine map pinned at path (a
// previous agent's, or anybody's) into this load's fresh map, keeping when
// each was added; addresses Shield must never drop are left out. No pin
// is not an error; a pin of another layout is.
func (s *Shield) carryOver(path string) (int, error) {
	old, err := ebpf.LoadPinnedMap(path, nil)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("shield: open previous quarantine: %w", err)
	}
	defer old.Close()
	if old.Type() != s.quarantine.Type() || old.KeySize() != s.quarantine.KeySize() || old.ValueSize() != s.quarantine.ValueSize() {
		return 0, fmt.Errorf("shield: previous quarantine %s has another layout", path)
	}
	var (
		k shieldShieldAddr
		v shieldShieldEntry
		n int
	)
	it := old.Iterate()
	for it.Next(&k, &v) && n < int(s.quarantine.MaxEntries()) {
		a := netip.AddrFrom16(k.Bytes).Unmap()
		if checkQuarantinable(a, s.protected) != nil {
			s.m.log.Warn("previous quarantine held an address Shield must not drop; not carried over", "addr", a.String())
			continue
		}
		if err := s.quarantine.Update(shieldKey(a), &v, ebpf.UpdateNoExist); err != nil && !errors.Is(err, ebpf.ErrKeyExist) {
			return n, fmt.Errorf("shield: carry %s over: %w", a, err)
		}
		n++
	}
	if err := it.Err(); err != nil {
		return n, fmt.Errorf("shield: read previous quarantine: %w", err)
	}
	return n, nil
}

// attachments plans Shield's attachments to the named interface of the
// calling thread's network namespace.
func (s *Shield) attachments(ifname string) ([]attachment, error) {
	iface, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("interface %s: %w", ifname, err)
	}
	if len(iface.HardwareAddr) != 6 {
		return nil, fmt.Errorf("interface %s: %w", ifname, ErrNotEthernet)
	}
	idx := iface.Index
	if s.mode == ShieldXDP {
		return []attachment{{
			program:   "shield_xdp",
			point:     "xdp:" + ifname,
			linkName:  "shield_xdp@" + ifname,
			updatable: true,
			ifname:    ifname,
			ifindex:   uint32(idx),
			attach: func(p *ebpf.Program) (link.Link, error) {
				return link.AttachXDP(link.XDPOptions{Program: p, Interface: idx})
			},
		}}, nil
	}
	tcx := func(prog, dir string, at ebpf.AttachType) attachment {
		return attachment{
			program:   prog,
			point:     "tcx/" + dir + ":" + ifname,
			linkName:  prog + "@" + ifname,
			updatable: true,
			ifname:    ifname,
			ifindex:   uint32(idx),
			attach: func(p *ebpf.Program) (link.Link, error) {
				return link.AttachTCX(link.TCXOptions{Program: p, Interface: idx, Attach: at})
			},
		}
	}
	return []attachment{
		tcx("shield_ingress", "ingress", ebpf.AttachTCXIngress),
		tcx("shield_egress", "egress", ebpf.AttachTCXEgress),
	}, nil
}

// Attach measures and attaches Shield to an interface of the calling
// thread's network namespace. Each attachment is measured before it happens.
func (s *Shield) Attach(ctx context.Context, ifname string) error {
	as, err := s.attachments(ifname)
	if err != nil {
		return fmt.Errorf("shield: %w", err)
	}
	s.m.mu.Lock()
	progs := make([]*program, len(as))
	for i, a := range as {
		progs[i] = s.m.progs[a.program]
	}
	s.m.mu.Unlock()
	for i, a := range as {
		if progs[i] == nil {
			return fmt.Errorf("shield: program %s not loaded", a.program)
		}
	}
	if err := s.m.measureInterfaces(ctx, as); err != nil {
		return err
	}
	for i, a := range as {
		if err := s.m.measure(ctx, progs[i], a.point); err != nil {
			return err
		}
	}
	for i, a := range as {
		if err := s.m.attach(progs[i], a); err != nil {
			return fmt.Errorf("shield: %w", err)
		}
	}
	return s.m.writeManifest()
}

// Detach removes Shield from an interface.
func (s *Shield) Detach(ifname string) error {
	var errs []error
	for _, prog := range shieldProgramNames(s.mode) {
		name := prog + "@" + ifname
		s.m.mu.Lock()
		l, ok := s.m.links[name]
		delete(s.m.links, name)
		if p := s.m.progs[prog]; p != nil {
			p.links = slices.DeleteFunc(p.links, func(n string) bool { return n == name })
		}
		s.m.mu.Unlock()
		if err := os.Remove(filepath.Join(s.m.linksDir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
		if ok {
			errs = append(errs, l.Close())
		}
	}
	if err := s.m.writeManifest(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("shield: detach %s: %w", ifname, err)
	}
	return nil
}

// Interfaces returns the interfaces Shield is attached to.
func (s *Shield) Interfaces() []string {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	var out []string
	for _, prog := range shieldProgramNames(s.mode) {
		if p := s.m.progs[prog]; p != nil {
			for _, ln := range p.links {
				if _, ifname, ok := cutAt(ln); ok && !slices.Contains(out, ifname) {
					out = append(out, ifname)
				}
			}
		}
	}
	sort.Strings(out)
	return out
}

func cutAt(s string) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == '@' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}
