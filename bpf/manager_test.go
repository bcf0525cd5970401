package bpf

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

var (
	sentinelProgNames = []string{"sentinel_bpf", "sentinel_exit", "sentinel_newtask", "sentinel_signal"}
	tcxShieldNames    = []string{"shield_egress", "shield_ingress"}
)

func TestLoadMeasuresBeforeAttach(t *testing.T) {
	requireKernel(t)
	m, rm := loadTestManager(t, Options{})
	recs, viol := rm.snapshot()
	for _, v := range viol {
		t.Error(v)
	}
	rel, err := kernelRelease()
	if err != nil {
		t.Fatal(err)
	}
	objects := map[string][32]byte{
		"shield":   sha256.Sum256(_ShieldBytes),
		"sentinel": sha256.Sum256(_SentinelBytes),
	}
	wantPoints := map[string]string{
		"shield_egress":    "",
		"shield_ingress":   "",
		"sentinel_bpf":     "tracepoint/syscalls/sys_enter_bpf",
		"sentinel_exit":    "tracepoint/sched/sched_process_exit",
		"sentinel_newtask": "tracepoint/task/task_newtask",
		"sentinel_signal":  "tracepoint/signal/signal_generate",
	}
	seen := map[string]bool{}
	for _, r := range recs {
		want, ok := wantPoints[r.Name]
		if !ok {
			t.Errorf("unexpected measurement %+v", r)
			continue
		}
		seen[r.Name] = true
		if r.AttachPoint != want {
			t.Errorf("%s measured at %q, want %q", r.Name, r.AttachPoint, want)
		}
		obj := "sentinel"
		if r.Type == "sched_cls" {
			obj = "shield"
		}
		if r.ObjectSHA256 != objects[obj] {
			t.Errorf("%s: object digest %x, want %x", r.Name, r.ObjectSHA256, objects[obj])
		}
		if r.KernelRelease != rel {
			t.Errorf("%s: kernel release %q, want %q", r.Name, r.KernelRelease, rel)
		}
		// The digest is what the kernel hashed: its tag is the digest's
		// prefix (SHA-256 kernels) or the SHA-1 variant.
		p, err := ebpf.NewProgramFromID(ebpf.ProgramID(r.ProgramID))
		if err != nil {
			t.Fatalf("%s: program %d: %v", r.Name, r.ProgramID, err)
		}
		info, _ := p.Info()
		p.Close()
		if info.Tag != r.KernelTag {
			t.Errorf("%s: measured tag %s, kernel says %s", r.Name, r.KernelTag, info.Tag)
		}
		if info.Tag != hex.EncodeToString(r.InsnSHA256[:8]) {
			t.Logf("%s: tag %s is not the SHA-256 prefix (pre-6.18 kernel uses SHA-1)", r.Name, info.Tag)
		}
	}
	for name := range wantPoints {
		if !seen[name] {
			t.Errorf("%s never measured", name)
		}
	}
	if got := m.Measurements(); len(got) != len(recs) {
		t.Errorf("Manager.Measurements has %d records, measurer %d", len(got), len(recs))
	}
	st := m.Fortress().Status()
	if !st.Loaded && slices.ContainsFunc(recs, func(r ProgramMeasurement) bool { return r.Name == "fortress_task_kill" }) {
		t.Error("fortress measured although the kernel refused it")
	}
}

func TestNoMeasurerRefused(t *testing.T) {
	_, err := Load(context.Background(), Options{PinDir: "/nonexistent"})
	if !errors.Is(err, ErrNoMeasurer) {
		t.Fatalf("Load without measurer: %v", err)
	}
}

func TestMeasurerErrorAbortsAttach(t *testing.T) {
	requireKernel(t)
	dir := tempPinDir(t)
	rm := &recordingMeasurer{pinDir: dir, failOn: "sentinel_signal"}
	_, err := Load(context.Background(), Options{PinDir: dir, Measurer: rm, Logger: testLogger(t)})
	if !errors.Is(err, errMeasureRefused) {
		t.Fatalf("Load = %v, want the measurer's error", err)
	}
	recs, _ := rm.snapshot()
	ids, err := linkedProgramIDs()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if ids[r.ProgramID] {
			t.Errorf("%s (id %d) attached although a measurement failed", r.Name, r.ProgramID)
		}
	}
	cfgMap, err := ebpf.LoadPinnedMap(filepath.Join(dir, "maps", "sentinel_cfg"), nil)
	if err != nil {
		t.Fatal(err)
	}
	var cfg sentinelSentinelConfig
	if err := cfgMap.Lookup(uint32(0), &cfg); err != nil {
		t.Fatal(err)
	}
	cfgMap.Close()
	if cfg.AgentTgid != 0 {
		t.Errorf("sentinel config pointed at pid %d although a measurement failed", cfg.AgentTgid)
	}
	for _, sub := range []string{"", "links"} {
		entries, _ := os.ReadDir(filepath.Join(dir, sub))
		for _, e := range entries {
			if !e.IsDir() {
				t.Errorf("%s pinned although a measurement failed", filepath.Join(sub, e.Name()))
			}
		}
	}
}

// TestRestartReplacesPrograms loads twice into one directory, as an agent
// restart does: the second load pins new programs and links, reuses the
// pinned maps and leaves the first load's programs unattached.
func TestRestartReplacesPrograms(t *testing.T) {
	requireKernel(t)
	dir := tempPinDir(t)
	m1, _ := loadTestManager(t, Options{PinDir: dir})
	first := m1.Expectations()
	mapID := func() ebpf.MapID {
		mp, err := ebpf.LoadPinnedMap(filepath.Join(dir, "maps", "sentinel_events"), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer mp.Close()
		info, _ := mp.Info()
		id, _ := info.ID()
		return id
	}
	eventsMap := mapID()
	if err := m1.Close(); err != nil {
		t.Fatal(err)
	}

	m2, _ := loadTestManager(t, Options{PinDir: dir})
	second := m2.Expectations()
	if mapID() != eventsMap {
		t.Error("sentinel ring was recreated instead of reused")
	}
	ids, err := linkedProgramIDs()
	if err != nil {
		t.Fatal(err)
	}
	for name, e1 := range first {
		e2 := second[name]
		if e2.ID == e1.ID {
			t.Errorf("%s: same program id %d after reload", name, e1.ID)
		}
		if e2.Tag != e1.Tag || e2.InsnSHA256 != e1.InsnSHA256 {
			t.Errorf("%s: digest changed across reload", name)
		}
		if ids[e1.ID] {
			t.Errorf("%s: the first load's program %d is still attached", name, e1.ID)
		}
		for _, ln := range e2.Links {
			l, err := link.LoadPinnedLink(filepath.Join(dir, "links", ln), nil)
			if err != nil {
				t.Errorf("link %s: %v", ln, err)
				continue
			}
			info, _ := l.Info()
			l.Close()
			if uint32(info.Program) != e2.ID {
				t.Errorf("link %s runs %d, want %d", ln, info.Program, e2.ID)
			}
		}
	}
	snap, err := m2.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := snap.Err(); err != nil {
		t.Errorf("snapshot after restart: %v", err)
	}
}
