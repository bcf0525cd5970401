package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/internal/testutil"
	"github.com/pulse-attest/pulse/policy"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/verifier"
	"github.com/pulse-attest/pulse/verifier/config"
	"github.com/pulse-attest/pulse/verifier/store"
	"github.com/pulse-attest/pulse/verifier/verifiertest"
)

// BenchmarkDashboardRender10k: the explorer's overview and a filtered
// agent list page in headless Chromium, from navigation to the page's data
// on screen (the overview's counts and chart, the list's 100 rows), served
// by a verifier over a store of 10,000 agents each with its committed
// pulse and stored evidence.
func BenchmarkDashboardRender10k(b *testing.B) {
	tools := testutil.RequireTools(b, "chromium")
	chromiumBin := tools["chromium"]
	if chromiumBin == "" {
		return
	}
	dir := b.TempDir()
	seedStore(b, filepath.Join(dir, "state.db"), 10000)
	tp := verifiertest.WritePKI(b, dir, "bench CA", 24*time.Hour)
	if err := os.WriteFile(filepath.Join(dir, "policy.hcl"), []byte(fleetPolicy), 0o644); err != nil {
		b.Fatal(err)
	}
	const token = "bench-render-token-0123456789abcdef"
	if err := os.WriteFile(filepath.Join(dir, "admin-tokens"), []byte("bench:"+token+"\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	cfg := &config.Config{
		Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0", AdminTokenFile: filepath.Join(dir, "admin-tokens"),
		TLS:        config.TLS{Cert: tp.CertFile, Key: tp.KeyFile, AgentCA: tp.CAFile},
		Store:      config.Store{Engine: "sqlite", DSN: filepath.Join(dir, "state.db")},
		Policy:     []string{filepath.Join(dir, "policy.hcl")},
		Enrollment: config.Enrollment{Timeout: time.Minute, DefaultPartition: "fleet"},
		NonceTTL:   time.Minute, ClockSkew: 30 * time.Second,
	}
	ctx, cancel := context.WithCancel(context.Background())
	d, err := verifier.Start(ctx, cfg, nil)
	if err != nil {
		cancel()
		b.Fatal(err)
	}
	b.Cleanup(func() { d.Stop(); cancel() })
	base := "https://" + d.AdminAddr()
	br := startBrowser(b, chromiumBin, b.TempDir(), serverSPKI(b, tp.CertFile))
	br.navigate(base + "/?token=" + token)
	pages := []struct{ name, path, loaded string }{
		{"overview", "/fleet", `document.body.getAttribute("data-loaded") === "overview" && document.querySelector("#series-chart canvas") !== null`},
		{"untrusted-list", "/fleet/agents?verdict=UNTRUSTED", `document.body.getAttribute("data-loaded") === "agents" && document.querySelectorAll("#agent-list-rows tr").length === 100`},
	}
	lat := map[string][]time.Duration{}
	for i := 0; b.Loop(); i++ {
		p := pages[i%len(pages)]
		start := time.Now()
		br.navigate(base + p.path)
		br.waitTrue(p.name, p.loaded, 30*time.Second)
		lat[p.name] = append(lat[p.name], time.Since(start))
	}
	for name, ds := range lat {
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		b.ReportMetric(float64(ds[len(ds)/2].Milliseconds()), name+"-p50-ms")
		b.ReportMetric(float64(ds[len(ds)-1].Milliseconds()), name+"-max-ms")
	}
}

// seedStore writes n agents (1 in 100 UNTRUSTED) with a committed pulse,
// a recorded verdict and stored evidence into the SQLite store at path.
func seedStore(b *testing.B, path string, n int) {
	b.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, store.EngineSQLite, path)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	on := true
	boot := &policy.BootEvidence{Bank: "sha256", PCRs: map[int]string{}, SecureBoot: &on}
	for p := 0; p < 10; p++ {
		boot.PCRs[p] = fmt.Sprintf("%064x", p+1)
	}
	for e := 0; e < 60; e++ {
		boot.Events = append(boot.Events, policy.BootEvent{Seq: e, PCR: e % 10, Type: "EV_EFI_BOOT_SERVICES_APPLICATION",
			Digest: fmt.Sprintf("%064x", e*7), Note: fmt.Sprintf(`\EFI\BOOT\file%02d.efi`, e)})
	}
	ev := policy.Evidence{TPM: true, Boot: boot, Runtime: &policy.RuntimeEvidence{AgentBinarySHA256: fmt.Sprintf("%064x", 42), BPFPrograms: map[string]string{}}}
	enc, err := verifier.EncodeEvidence(ev, store.MaxExplanationBytes)
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			id := fmt.Sprintf("edge-%05d", i)
			at := time.Now().Add(-time.Duration(i%3600) * time.Second)
			if err := st.EnrollAgent(ctx, &store.Agent{ID: id, Partition: "fleet", TPM: true, EnrolledAt: at}); err != nil {
				errs <- err
				return
			}
			v, r := pulsev1.Verdict_VERDICT_TRUSTED, pulsev1.Reason_REASON_OK
			if i%100 == 7 {
				v, r = pulsev1.Verdict_VERDICT_UNTRUSTED, pulsev1.Reason_REASON_POLICY_DENIED
			}
			if err := st.AppendHistory(ctx, id, store.HistoryEntry{At: at, Verdict: int32(v), Reason: int32(r), Message: "seeded"}); err != nil {
				errs <- err
				return
			}
			x := &store.Explanation{At: at, Verdict: int32(v), Reason: int32(r), Policy: "fleet", Findings: []byte(`[]`), Evidence: enc}
			u := store.PulseUpdate{At: at, Verdict: x.Verdict, Reason: x.Reason, Message: "seeded", Address: fmt.Sprintf("10.1.%d.%d", i/256, i%256),
				Evidence: true, Explanation: x}
			if s, err := st.CommitPulse(ctx, id, 0, u); err != nil || s != store.NonceOK {
				errs <- fmt.Errorf("%s: %v %v", id, s, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
}
