package ebpf

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/pulse-attest/pulse/bpf"
	"github.com/pulse-attest/pulse/internal/sentinelrec"
	"github.com/pulse-attest/pulse/internal/testutil"
	"github.com/pulse-attest/pulse/simulator/simtest"
	"github.com/pulse-attest/pulse/tpm/cel"
)

// TestAdapterSentinelOnKernel: the adapter on the real kernel measures
// Sentinel's configuration (this process, the service manager, the
// sentinel_cfg map's kernel ID) into the runtime log, reports a clean
// Sentinel, reports agent_tgid zeroed behind it as an error with the map's
// value, and reports Fortress as the kernel allows it (with IDs only when
// attached).
func TestAdapterSentinelOnKernel(t *testing.T) {
	testutil.RequireRoot(t)
	var b [4]byte
	rand.Read(b[:]) //nolint:errcheck
	pinDir := filepath.Join(bpf.BPFFSPath, "pulse-adapter-"+hex.EncodeToString(b[:]))
	t.Cleanup(func() { bpf.RemoveAll(pinDir) })
	var mu sync.Mutex
	var recs []cel.Content
	measure := func(_ context.Context, c cel.Content) error {
		mu.Lock()
		defer mu.Unlock()
		recs = append(recs, c)
		return nil
	}
	a, err := New(context.Background(), pinDir, nil, measure, simtest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()

	var conf *sentinelrec.Config
	for _, r := range recs {
		if g, ok := r.(*cel.Generic); ok && g.Name == sentinelrec.RecordName {
			c, err := sentinelrec.Decode(g.Data)
			if err != nil {
				t.Fatal(err)
			}
			conf = &c
		}
	}
	if conf == nil || conf.AgentTGID != uint32(os.Getpid()) || conf.ManagerTGID != 1 || conf.MapID == 0 {
		t.Fatalf("measured sentinel configuration %+v", conf)
	}
	cfgMap, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, "maps", "sentinel_cfg"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cfgMap.Close()
	info, _ := cfgMap.Info()
	if id, _ := info.ID(); uint32(id) != conf.MapID {
		t.Fatalf("measured map %d, pinned sentinel_cfg is %d", conf.MapID, id)
	}

	ctx := context.Background()
	batch, err := a.SentinelRead(ctx, 0)
	if err != nil || batch.Report.GetError() != "" || batch.Report.GetCfgAgentTgid() != uint32(os.Getpid()) || batch.Report.GetAgentTgid() != uint32(os.Getpid()) {
		t.Fatalf("clean report %v, %v", batch.Report, err)
	}
	if err := a.SentinelAck(batch.Through); err != nil {
		t.Fatal(err)
	}

	// Root zeroes agent_tgid in the pinned map.
	zero := make([]byte, cfgMap.ValueSize())
	if err := cfgMap.Update(uint32(0), zero, ebpf.UpdateAny); err != nil {
		t.Fatal(err)
	}
	batch, err = a.SentinelRead(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if batch.Report.GetError() == "" || batch.Report.GetCfgAgentTgid() != 0 {
		t.Fatalf("tampered report %v", batch.Report)
	}
	// The acknowledgement after the committed pulse restores it.
	if err := a.SentinelAck(batch.Through); err != nil {
		t.Fatal(err)
	}
	if batch, _ = a.SentinelRead(ctx, 0); batch.Report.GetError() != "" {
		t.Fatalf("after the acknowledgement: %v", batch.Report)
	}

	fs, err := a.Fortress(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if fs.GetActive() != (fs.GetProgramId() != 0 && fs.GetLinkId() != 0 && len(fs.GetTag()) == 8) {
		t.Fatalf("fortress %v: active must come with the kernel's IDs and tag", fs)
	}
	if !fs.GetActive() && fs.GetReason() == "" {
		t.Fatalf("inactive fortress without a reason: %v", fs)
	}
}
