package bpf

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cilium/ebpf"
)

func mapID(t *testing.T, m *ebpf.Map) uint32 {
	t.Helper()
	info, err := m.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := info.ID()
	return uint32(id)
}

// TestPlantedQuarantineMapNotAdopted: root pins a compatible
// maps/shield_quarantine before the agent loads. The agent creates its own
// map (Shield's programs are bound to it and it is what is pinned now),
// carries the planted entries over except an address Shield must never
// drop, and never binds a program to the planted map.
func TestPlantedQuarantineMapNotAdopted(t *testing.T) {
	requireKernel(t)
	dir := tempPinDir(t)
	verifier := netip.MustParseAddr("198.51.100.9")
	planted := netip.MustParseAddr("192.0.2.50")

	spec, err := loadShield()
	if err != nil {
		t.Fatal(err)
	}
	ms := spec.Maps["shield_quarantine"].Copy()
	ms.Pinning = ebpf.PinNone
	evil, err := ebpf.NewMap(ms)
	if err != nil {
		t.Fatal(err)
	}
	defer evil.Close()
	for _, a := range []netip.Addr{planted, verifier} {
		if err := evil.Put(shieldKey(a), shieldShieldEntry{AddedUnixNs: 1}); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "maps"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := evil.Pin(filepath.Join(dir, "maps", "shield_quarantine")); err != nil {
		t.Fatal(err)
	}
	evilID := mapID(t, evil)

	m, _ := loadTestManager(t, Options{PinDir: dir, Protected: []netip.Addr{verifier}})
	pinned, err := ebpf.LoadPinnedMap(filepath.Join(dir, "maps", "shield_quarantine"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pinned.Close()
	ownID := mapID(t, pinned)
	if ownID == evilID {
		t.Fatalf("the agent adopted the planted quarantine map (id %d)", evilID)
	}
	for _, name := range shieldProgramNames(ShieldTCX) {
		p, err := ebpf.LoadPinnedProgram(filepath.Join(dir, name), nil)
		if err != nil {
			t.Fatal(err)
		}
		info, err := p.Info()
		p.Close()
		if err != nil {
			t.Fatal(err)
		}
		ids, _ := info.MapIDs()
		if slices.Contains(ids, ebpf.MapID(evilID)) || !slices.Contains(ids, ebpf.MapID(ownID)) {
			t.Errorf("%s is bound to maps %v; want the agent's %d, not the planted %d", name, ids, ownID, evilID)
		}
	}
	list, err := m.Shield().List()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Addr != planted {
		t.Errorf("quarantine after load: %+v, want only %s carried over", list, planted)
	}
}
