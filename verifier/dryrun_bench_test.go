package verifier_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/policy"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/verifier"
	"github.com/pulse-attest/pulse/verifier/admin"
	"github.com/pulse-attest/pulse/verifier/config"
	"github.com/pulse-attest/pulse/verifier/store"
	"github.com/pulse-attest/pulse/verifier/verifiertest"
)

// The dashboard's goals with 10,000 agents in the store (docs/performance.md,
// "Fleet dashboard"): /api/v1/agents p95 per page, a policy dry-run over
// every agent's evidence, stored explanation bytes per agent, the live
// poller's read.

const benchFleet = 10000

// benchEvidence is evidence shaped like a UEFI machine's: 10 quoted PCRs,
// 80 replayed boot events with notes, an agent binary and 4 eBPF programs.
func benchEvidence(i int) policy.Evidence {
	on := true
	b := &policy.BootEvidence{Bank: "sha256", PCRs: map[int]string{}, SecureBoot: &on, RuntimePCRHistory: []string{"MokList", "MokListX"}}
	for p := 0; p < 10; p++ {
		b.PCRs[p] = fmt.Sprintf("%064x", p*7919+1)
	}
	types := []string{"EV_EFI_VARIABLE_DRIVER_CONFIG", "EV_SEPARATOR", "EV_EFI_BOOT_SERVICES_APPLICATION", "EV_EFI_ACTION", "EV_EFI_VARIABLE_AUTHORITY", "EV_IPL"}
	for e := 0; e < 80; e++ {
		b.Events = append(b.Events, policy.BootEvent{Seq: e, PCR: e % 10, Type: types[e%len(types)], Digest: fmt.Sprintf("%064x", e*104729+3),
			Note: fmt.Sprintf(`\EFI\redhat\file-%02d.efi`, e)})
	}
	rt := &policy.RuntimeEvidence{AgentBinarySHA256: fmt.Sprintf("%064x", 0xa9e47+i%3), BPFPrograms: map[string]string{}}
	for _, n := range []string{"shield_ingress", "shield_egress", "sentinel_signal", "sentinel_bpf"} {
		rt.BPFPrograms[n] = fmt.Sprintf("%064x", len(n)*31337)
	}
	rt.AgentBinaries = []policy.AgentBinaryRecord{{SHA256: rt.AgentBinarySHA256}}
	return policy.Evidence{AgentID: fmt.Sprintf("edge-%05d", i), Partition: "fleet", TPM: true, Boot: b, Runtime: rt}
}

func benchPolicySrc(allow ...string) string {
	q := make([]string, len(allow))
	for i, a := range allow {
		q[i] = fmt.Sprintf("%q", a)
	}
	return "policy \"fleet\" {\n  match {\n    agents = [\"*\"]\n  }\n  tpm = \"required\"\n  measured_boot {\n    secure_boot {}\n  }\n  agent_binary {\n    allow = [" +
		strings.Join(q, ", ") + "]\n  }\n}\n"
}

var (
	benchOnce sync.Once
	benchDir  string
	benchErr  error
)

// seedFleet writes benchFleet agents, each with a committed pulse and its
// explanation (findings and evidence, as the pulse commit writes them),
// into one SQLite store, once per test binary.
func seedFleet(b *testing.B) string {
	benchOnce.Do(func() {
		benchDir, benchErr = os.MkdirTemp("", "pulse-bench-fleet-")
		if benchErr != nil {
			return
		}
		ctx := context.Background()
		st, err := store.Open(ctx, store.EngineSQLite, filepath.Join(benchDir, "state.db"))
		if err != nil {
			benchErr = err
			return
		}
		defer st.Close()
		var wg sync.WaitGroup
		errs := make(chan error, benchFleet)
		sem := make(chan struct{}, 64)
		for i := 0; i < benchFleet; i++ {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				ev := benchEvidence(i)
				if err := st.EnrollAgent(ctx, &store.Agent{ID: ev.AgentID, Partition: []string{"fleet", "lab", "store"}[i%3], TPM: i%10 != 0, EnrolledAt: time.Now()}); err != nil {
					errs <- err
					return
				}
				enc, err := verifier.EncodeEvidence(ev, store.MaxExplanationBytes-600)
				if err != nil {
					errs <- err
					return
				}
				verdict, reason := pulsev1.Verdict_VERDICT_TRUSTED, pulsev1.Reason_REASON_OK
				findings := []byte(`[]`)
				if i%100 == 7 {
					verdict, reason = pulsev1.Verdict_VERDICT_UNTRUSTED, pulsev1.Reason_REASON_POLICY_DENIED
					findings = []byte(`[{"rule":"agent_binary","file":"/etc/pulse/policy.d/fleet.hcl","line":12,"enforce":true,"severity":2,"message":"agent binary 00000000000000000000000000000000000000000000000000000000000a9e48 is not an approved build","expected":"agent binary one of 00000000000a9e47…","seen":"agent binary 00000000000a9e48… (measured by the launcher)"}]`)
				}
				x := &store.Explanation{At: time.Now(), Verdict: int32(verdict), Reason: int32(reason), Policy: "fleet", Findings: findings, Evidence: enc}
				u := store.PulseUpdate{At: time.Now(), Verdict: x.Verdict, Reason: x.Reason, Message: "quote, logs and policy verified",
					Address: fmt.Sprintf("10.%d.%d.%d", i/65536, (i/256)%256, i%256), Evidence: true, AgentVersion: []string{"1.4.0", "1.5.0"}[i%2], Explanation: x}
				if s, err := st.CommitPulse(ctx, ev.AgentID, 0, u); err != nil || s != store.NonceOK {
					errs <- fmt.Errorf("commit %s: %v %v", ev.AgentID, s, err)
				}
			}()
		}
		wg.Wait()
		close(errs)
		benchErr = <-errs
	})
	if benchErr != nil {
		b.Fatal(benchErr)
	}
	return benchDir
}

// startBenchVerifier runs a verifier (admin listener with a token) on a
// copy of the seeded store.
func startBenchVerifier(b *testing.B) (*verifier.Daemon, *admin.Client, string) {
	seed := seedFleet(b)
	dir := b.TempDir()
	for _, f := range []string{"state.db", "state.db-wal", "state.db-shm"} {
		if raw, err := os.ReadFile(filepath.Join(seed, f)); err == nil {
			if err := os.WriteFile(filepath.Join(dir, f), raw, 0o600); err != nil {
				b.Fatal(err)
			}
		}
	}
	tp := verifiertest.WritePKI(b, dir, "bench CA", 24*time.Hour)
	if err := os.WriteFile(filepath.Join(dir, "policy.hcl"), []byte(benchPolicySrc(fmt.Sprintf("%064x", 0xa9e47), fmt.Sprintf("%064x", 0xa9e48))), 0o644); err != nil {
		b.Fatal(err)
	}
	const token = "bench-admin-token-0123456789abcdef"
	if err := os.WriteFile(filepath.Join(dir, "admin-token"), []byte("bench:"+token+"\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	cfg := &config.Config{
		Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0", AdminTokenFile: filepath.Join(dir, "admin-token"),
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
	cl, err := admin.NewClient(admin.ClientOptions{URL: "https://" + d.AdminAddr(), CAFile: tp.CAFile, ServerName: "localhost", Token: token})
	if err != nil {
		b.Fatal(err)
	}
	return d, cl, dir
}

func percentile(ds []time.Duration, p float64) time.Duration {
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[int(float64(len(ds)-1)*p)]
}

// BenchmarkAgentsPage: GET /api/v1/agents over HTTPS, pages of 100 of a
// 10,000-agent store: the first page, a filtered page, a searched page and
// a page deep in the cursor; p50/p95 reported.
func BenchmarkAgentsPage(b *testing.B) {
	_, cl, _ := startBenchVerifier(b)
	ctx := context.Background()
	first, err := cl.QueryAgents(ctx, admin.AgentQuery{Limit: 100, Sort: "last_pulse", Desc: true})
	if err != nil || first.Total != benchFleet {
		b.Fatalf("first page: %v, total %v", err, first)
	}
	deep := admin.AgentQuery{Limit: 100}
	for i := 0; i < 80; i++ {
		p, err := cl.QueryAgents(ctx, deep)
		if err != nil {
			b.Fatal(err)
		}
		deep.After = p.Next
	}
	queries := []admin.AgentQuery{
		{Limit: 100},
		{Limit: 100, Verdicts: []string{"UNTRUSTED"}},
		{Limit: 100, Partition: "lab", Trust: "tpm", Sort: "last_pulse", Desc: true},
		{Limit: 100, Search: "10.0.3"},
		deep,
	}
	var lat []time.Duration
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		start := time.Now()
		if _, err := cl.QueryAgents(ctx, queries[i%len(queries)]); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	b.ReportMetric(float64(percentile(lat, 0.50).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(percentile(lat, 0.95).Microseconds())/1000, "p95-ms")
}

// BenchmarkFleetCounts: GET /api/v1/fleet (one statement) on 10,000 agents.
func BenchmarkFleetCounts(b *testing.B) {
	_, cl, _ := startBenchVerifier(b)
	ctx := context.Background()
	for b.Loop() {
		c, err := cl.CountFleet(ctx)
		if err != nil || c.Total != benchFleet {
			b.Fatalf("counts %v %v", c, err)
		}
	}
}

// BenchmarkDryRun10k: a candidate that tightens agent_binary evaluated
// against 10,000 agents' stored evidence (and the set in force).
func BenchmarkDryRun10k(b *testing.B) {
	dir := seedFleet(b)
	ctx := context.Background()
	st, err := store.Open(ctx, store.EngineSQLite, filepath.Join(dir, "state.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	inForce, diags := policy.Parse("fleet.hcl", []byte(benchPolicySrc(fmt.Sprintf("%064x", 0xa9e47), fmt.Sprintf("%064x", 0xa9e48), fmt.Sprintf("%064x", 0xa9e49))))
	cand, diags2 := policy.Parse("fleet.hcl", []byte(benchPolicySrc(fmt.Sprintf("%064x", 0xa9e47))))
	if diags.HasErrors() || diags2.HasErrors() {
		b.Fatal(diags, diags2)
	}
	avg, mx, err := st.ExplanationBytes(ctx)
	if err != nil {
		b.Fatal(err)
	}
	var rep *verifier.DryRunReport
	for b.Loop() {
		if rep, err = verifier.DryRun(ctx, st, inForce, cand, time.Now()); err != nil {
			b.Fatal(err)
		}
	}
	if rep.Evaluated != benchFleet || len(rep.Changed) != benchFleet-(benchFleet+2)/3 {
		b.Fatalf("dry-run evaluated %d, changed %d", rep.Evaluated, len(rep.Changed))
	}
	b.ReportMetric(float64(len(rep.Changed)), "changed")
	b.ReportMetric(avg, "stored-B/agent")
	b.ReportMetric(float64(mx), "max-stored-B/agent")
}

// BenchmarkLivePoll10k: the live updates' one read per interval while a
// page listens (every agent's verdict and reason).
func BenchmarkLivePoll10k(b *testing.B) {
	dir := seedFleet(b)
	ctx := context.Background()
	st, err := store.Open(ctx, store.EngineSQLite, filepath.Join(dir, "state.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	for b.Loop() {
		vs, err := st.AgentVerdicts(ctx)
		if err != nil || len(vs) != benchFleet {
			b.Fatalf("%d verdicts: %v", len(vs), err)
		}
	}
}
