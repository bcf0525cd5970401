package bpf

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/pulse-attest/pulse/bpf/snapshot"
	"github.com/pulse-attest/pulse/internal/testutil"
)

type bpftoolProg struct {
	ID   uint32 `json:"id"`
	Type string `json:"type"`
	Name string `json:"name"`
	Tag  string `json:"tag"`
}

func bpftoolPrograms(t *testing.T) map[uint32]bpftoolProg {
	t.Helper()
	out, err := exec.Command("bpftool", "prog", "show", "-j").Output()
	if err != nil {
		t.Fatalf("bpftool prog show -j: %v", err)
	}
	var progs []bpftoolProg
	if err := json.Unmarshal(out, &progs); err != nil {
		t.Fatalf("parse bpftool output: %v", err)
	}
	byID := map[uint32]bpftoolProg{}
	for _, p := range progs {
		byID[p.ID] = p
	}
	return byID
}

// trivialProgram loads a two-instruction socket filter returning ret.
func trivialProgram(t testing.TB, name string, ret int32) *ebpf.Program {
	t.Helper()
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         name,
		Type:         ebpf.SocketFilter,
		License:      "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, ret), asm.Return()},
	})
	if err != nil {
		t.Fatalf("load trivial program: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func TestSnapshotMatchesBpftool(t *testing.T) {
	requireKernel(t)
	testutil.RequireTools(t, "bpftool")
	m, _ := loadTestManager(t, Options{})
	extra := trivialProgram(t, "pulse_snap_t", 1)
	extraInfo, _ := extra.Info()
	extraID, _ := extraInfo.ID()

	snap, err := m.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	tool := bpftoolPrograms(t)
	if !snap.Checked {
		t.Error("manager snapshot not checked against load records")
	}
	if err := snap.Err(); err != nil {
		t.Errorf("fresh load has problems: %v", err)
	}
	compared := 0
	for _, p := range snap.Programs {
		b, ok := tool[p.ID]
		if !ok {
			continue // unloaded between the two listings
		}
		compared++
		if p.Tag != b.Tag || p.Type != b.Type || p.Name != b.Name {
			t.Errorf("program %d: snapshot %+v, bpftool %+v", p.ID, p, b)
		}
	}
	if compared == 0 {
		t.Fatal("no program in both listings")
	}
	want := append(append([]string{}, sentinelProgNames...), tcxShieldNames...)
	for _, name := range want {
		pin, ok := snap.Pinned[name]
		if !ok || !pin.OK {
			t.Errorf("%s: pinned entry %+v", name, pin)
			continue
		}
		b, ok := tool[pin.ID]
		if !ok {
			t.Errorf("%s: id %d not listed by bpftool", name, pin.ID)
			continue
		}
		if pin.Tag != b.Tag {
			t.Errorf("%s: snapshot tag %s, bpftool %s", name, pin.Tag, b.Tag)
		}
		if _, ok := snap.ProgramByID(pin.ID); !ok {
			t.Errorf("%s: pinned id %d missing from the programs list", name, pin.ID)
		}
		if pin.InsnSHA256 == "" {
			t.Errorf("%s: no instruction digest", name)
		}
	}
	if p, ok := snap.ProgramByID(uint32(extraID)); !ok || p.Name != "pulse_snap_t" || p.Type != "socket_filter" {
		t.Errorf("extra program: %+v %v", p, ok)
	}
	if _, ok := snap.Pinned["pulse_snap_t"]; ok {
		t.Error("unpinned program listed as pinned")
	}
}

func TestSnapshotDetectsUnpin(t *testing.T) {
	requireKernel(t)
	m, _ := loadTestManager(t, Options{})
	if err := os.Remove(filepath.Join(m.PinDir(), "sentinel_bpf")); err != nil {
		t.Fatal(err)
	}
	snap, err := m.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	err = snap.Err()
	if !errors.Is(err, snapshot.ErrPinMissing) {
		t.Fatalf("Err() = %v, want ErrPinMissing", err)
	}
	if errors.Is(err, snapshot.ErrPinReplaced) {
		t.Errorf("unpin also reported as replaced: %v", err)
	}
	if p := snap.Pinned["sentinel_bpf"]; p.OK || p.Problem != snapshot.ProblemPinMissing {
		t.Errorf("sentinel_bpf = %+v", p)
	}
	if p := snap.Pinned["sentinel_signal"]; !p.OK {
		t.Errorf("untouched pin reported: %+v", p)
	}
}

func TestSnapshotDetectsReplacedPin(t *testing.T) {
	requireKernel(t)
	m, _ := loadTestManager(t, Options{})
	path := filepath.Join(m.PinDir(), "sentinel_exit")

	t.Run("different program", func(t *testing.T) {
		other := trivialProgram(t, "sentinel_exit", 0)
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		if err := other.Pin(path); err != nil {
			t.Fatal(err)
		}
		snap, err := m.Snapshot(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if err := snap.Err(); !errors.Is(err, snapshot.ErrPinReplaced) || errors.Is(err, snapshot.ErrPinMissing) {
			t.Fatalf("Err() = %v, want only ErrPinReplaced", err)
		}
		if p := snap.Pinned["sentinel_exit"]; p.Problem != snapshot.ProblemReplaced || p.InsnSHA256 != "" {
			t.Errorf("sentinel_exit = %+v", p)
		}
		if _, ok := snap.Digests()["sentinel_exit"]; ok {
			t.Error("replaced program still claimed in digests")
		}
	})

	t.Run("same instructions re-loaded", func(t *testing.T) {
		// Load the genuine object again, with private maps, and pin its
		// sentinel_exit under the agent's name: same tag, other program.
		spec, err := loadSentinel()
		if err != nil {
			t.Fatal(err)
		}
		for _, ms := range spec.Maps {
			ms.Pinning = ebpf.PinNone
		}
		coll, err := ebpf.NewCollection(spec)
		if err != nil {
			t.Fatal(err)
		}
		defer coll.Close()
		twin := coll.Programs["sentinel_exit"]
		_ = os.Remove(path)
		if err := twin.Pin(path); err != nil {
			t.Fatal(err)
		}
		snap, err := m.Snapshot(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		p := snap.Pinned["sentinel_exit"]
		if !errors.Is(snap.Err(), snapshot.ErrPinReplaced) || p.Problem != snapshot.ProblemReplaced {
			t.Fatalf("re-pinned twin: %+v, err %v", p, snap.Err())
		}
		if p.Tag != m.Expectations()["sentinel_exit"].Tag {
			t.Errorf("twin tag %s differs from the original's", p.Tag)
		}
	})
}

func TestSnapshotDetectsDetachAndIntruder(t *testing.T) {
	requireKernel(t)
	m, _ := loadTestManager(t, Options{})
	if err := os.Remove(filepath.Join(m.PinDir(), "links", "sentinel_signal")); err != nil {
		t.Fatal(err)
	}
	intruder := trivialProgram(t, "intruder", 0)
	if err := intruder.Pin(filepath.Join(m.PinDir(), "intruder")); err != nil {
		t.Fatal(err)
	}
	snap, err := m.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	err = snap.Err()
	if !errors.Is(err, snapshot.ErrDetached) || !errors.Is(err, snapshot.ErrUnexpectedPin) {
		t.Fatalf("Err() = %v, want ErrDetached and ErrUnexpectedPin", err)
	}
	if p := snap.Pinned["sentinel_signal"]; p.Problem != snapshot.ProblemDetached {
		t.Errorf("sentinel_signal = %+v", p)
	}
	if p := snap.Pinned["intruder"]; p.Problem != snapshot.ProblemUnexpected {
		t.Errorf("intruder = %+v", p)
	}
}

// TestTakeSnapshotFromManifest is the operator's view (pulse-agent snapshot):
// another process checks the pins against the manifest the agent pinned.
func TestTakeSnapshotFromManifest(t *testing.T) {
	requireKernel(t)
	m, _ := loadTestManager(t, Options{})
	snap, err := TakeSnapshot(context.Background(), m.PinDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !snap.Checked {
		t.Fatal("manifest not used")
	}
	if err := snap.Err(); err != nil {
		t.Fatalf("problems: %v", err)
	}
	for name, e := range m.Expectations() {
		if p := snap.Pinned[name]; p.ID != e.ID || p.InsnSHA256 != e.InsnSHA256.String() {
			t.Errorf("%s: %+v, agent recorded %+v", name, p, e)
		}
	}
	if err := os.Remove(filepath.Join(m.PinDir(), "shield_ingress")); err != nil {
		t.Fatal(err)
	}
	snap, err = TakeSnapshot(context.Background(), m.PinDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(snap.Err(), snapshot.ErrPinMissing) {
		t.Errorf("manifest snapshot missed the unpin: %v", snap.Err())
	}

	empty := tempPinDir(t)
	snap, err = TakeSnapshot(context.Background(), empty, nil)
	if err != nil {
		t.Fatal(err)
	}
	if snap.Checked || len(snap.Pinned) != 0 || len(snap.Programs) == 0 {
		t.Errorf("snapshot of an empty directory: checked=%v pinned=%d programs=%d", snap.Checked, len(snap.Pinned), len(snap.Programs))
	}
}
