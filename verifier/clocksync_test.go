package verifier_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pulse-attest/pulse/agent"
	agentconfig "github.com/pulse-attest/pulse/agent/config"
	"github.com/pulse-attest/pulse/internal/pki"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/simulator/simtest"
	"github.com/pulse-attest/pulse/tpm"
	"github.com/pulse-attest/pulse/verifier/store"
)

var clockDesync = pulsev1.Verdict_VERDICT_CLOCK_DESYNC

// kernelClockSync is what this machine's kernel reports (adjtimex), as the
// agent puts it in a pulse.
func kernelClockSync(t *testing.T) *pulsev1.ClockSync {
	t.Helper()
	tx, state, err := agent.AdjtimexReader()
	if err != nil {
		t.Fatal(err)
	}
	return agent.ClockSyncOf(tx, state, nil)
}

// unsyncNote is what a CLOCK_DESYNC message says of this kernel's clock.
func unsyncNote(t *testing.T) string {
	t.Helper()
	if cs := kernelClockSync(t); cs.GetSynchronized() {
		return "reports its clock synchronised"
	}
	return "reports its clock unsynchronised"
}

// TestClockDesyncSaysSyncState: a pulse outside the skew is CLOCK_DESYNC,
// and its message says what the agent's kernel reports about its clock:
// this machine's real adjtimex state (unsynchronised: TIME_ERROR), a
// synchronised one, none, or the agent's failure to read it. A clock
// within the skew is TRUSTED whatever its sync state (no clock rule).
func TestClockDesyncSaysSyncState(t *testing.T) {
	e := newEnv(t, "rhel8-uefi")
	if e == nil {
		return
	}
	a := e.enrolled("edge-clock")
	real := kernelClockSync(t)
	t.Logf("this kernel: synchronised %t, adjtimex state %d, maximum error %d us", real.GetSynchronized(), real.GetState(), real.GetMaxErrorUs())
	synced := &pulsev1.ClockSync{Synchronized: true, MaxErrorUs: 4_000, EstErrorUs: 200, State: unix.TIME_OK}
	for _, c := range []struct {
		name    string
		off     time.Duration
		cs      *pulsev1.ClockSync
		verdict pulsev1.Verdict
		reason  pulsev1.Reason
		want    string
	}{
		{"this kernel, within the skew", 0, real, trusted, pulsev1.Reason_REASON_OK, ""},
		{"this kernel, an hour ahead", time.Hour, real, clockDesync, pulsev1.Reason_REASON_CLOCK_DESYNC, unsyncNote(t)},
		{"synchronised, an hour behind", -time.Hour, synced, clockDesync, pulsev1.Reason_REASON_CLOCK_DESYNC, "reports its clock synchronised (maximum error 4ms): its time source itself is off"},
		{"unsynchronised (TIME_ERROR)", 10 * time.Minute, &pulsev1.ClockSync{MaxErrorUs: 16_000_000, State: unix.TIME_ERROR, Status: unix.STA_UNSYNC},
			clockDesync, pulsev1.Reason_REASON_CLOCK_DESYNC, "reports its clock unsynchronised (adjtimex TIME_ERROR, maximum error 16s)"},
		{"no report", time.Hour, nil, clockDesync, pulsev1.Reason_REASON_CLOCK_DESYNC, "reports nothing about its clock's sync state"},
		{"read failed", time.Hour, &pulsev1.ClockSync{Error: "adjtimex: " + strings.Repeat("x", 500)}, clockDesync, pulsev1.Reason_REASON_CLOCK_DESYNC,
			`could not read its clock's sync state: "adjtimex: xxx`},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp := a.Pulse(func(p *parts) {
				p.SendLog = false
				p.Payload.Time = timestamppb.New(time.Now().Add(c.off))
				p.Payload.ClockSync = c.cs
			})
			wantVerdict(t, resp, c.verdict, c.reason)
			if !strings.Contains(resp.GetMessage(), c.want) {
				t.Fatalf("message %q lacks %q", resp.GetMessage(), c.want)
			}
			if len(resp.GetMessage()) > 1000 {
				t.Fatalf("message of %d bytes: the agent's text is not clipped", len(resp.GetMessage()))
			}
		})
	}
}

// TestPolicyClockRule: the policy's clock rule judges the reported clock
// discipline through the whole pipeline, enforce and warn.
func TestPolicyClockRule(t *testing.T) {
	for _, mode := range []string{"enforce", "warn"} {
		t.Run(mode, func(t *testing.T) {
			e := newEnvCfg(t, "rhel8-uefi", fleetPolicy(t, "  clock {\n    require_synchronized = true\n    max_error = \"500ms\"\n    mode = \""+mode+"\"\n  }\n"))
			if e == nil {
				return
			}
			a := e.enroll("edge-ntp")
			denied := untrusted
			deniedReason := pulsev1.Reason_REASON_POLICY_DENIED
			if mode == "warn" {
				denied, deniedReason = trusted, pulsev1.Reason_REASON_OK
			}
			kern := kernelClockSync(t)
			for _, c := range []struct {
				name string
				cs   *pulsev1.ClockSync
				ok   bool // the clock passes the rule
			}{
				{"synchronised", &pulsev1.ClockSync{Synchronized: true, MaxErrorUs: 20_000}, true},
				{"this kernel", kern, kern.GetSynchronized() && kern.GetMaxErrorUs() <= 500_000},
				{"unsynchronised", &pulsev1.ClockSync{MaxErrorUs: 16_000_000, State: unix.TIME_ERROR}, false},
				{"synchronised, too loose", &pulsev1.ClockSync{Synchronized: true, MaxErrorUs: 900_000}, false},
				{"not reported", nil, false},
			} {
				resp := a.Pulse(func(p *parts) { p.Payload.ClockSync = c.cs })
				verdict, reason := trusted, pulsev1.Reason_REASON_OK
				if !c.ok {
					verdict, reason = denied, deniedReason
				}
				if resp.GetVerdict() != verdict || resp.GetReason() != reason {
					t.Fatalf("%s: verdict %s/%s (%s), want %s/%s", c.name, resp.GetVerdict(), resp.GetReason(), resp.GetMessage(), verdict, reason)
				}
				found := false
				for _, f := range resp.GetFindings() {
					found = found || f.GetRule() == "clock"
				}
				if found == c.ok {
					t.Fatalf("%s: clock finding %t, want %t (%v)", c.name, found, !c.ok, resp.GetFindings())
				}
			}
		})
	}
}

// TestMissetAgentClock runs the real agent against the verifier with its
// wall clock misset through Options.Now (time namespaces do not move
// CLOCK_REALTIME) and the kernel's real clock discipline: an hour ahead or
// behind is CLOCK_DESYNC, and the TPM-clock cross-check says the host's
// clock is misset (the TPM's clock advanced as the verifier's did) and the
// message what the kernel reports. A pulse that really is stale (the
// verifier's clock moved an hour, the TPM's did not) is told apart.
func TestMissetAgentClock(t *testing.T) {
	e := newEnvCfg(t, "rhel8-uefi", fleetPolicy(t, "  measured_boot {\n    secure_boot {}\n  }\n"))
	if e == nil {
		return
	}
	dev := e.openTPM(e.sw)
	dir := t.TempDir()
	is, err := pki.Issue(e.ca, pki.Request{Role: pki.RoleAgent, ID: "edge-misset"})
	if err != nil {
		t.Fatal(err)
	}
	cert, key := filepath.Join(dir, "agent.pem"), filepath.Join(dir, "agent-key.pem")
	if err := is.WriteFiles(cert, key, true); err != nil {
		t.Fatal(err)
	}
	cfg := &agentconfig.Config{
		Verifier:    e.daemon.Addr(),
		TLS:         agentconfig.TLS{Cert: cert, Key: key, CA: e.caFile, ServerName: "localhost"},
		TPM:         "auto",
		AKHandle:    tpm.DefaultAKHandle,
		RuntimePCR:  runtimePCR,
		RuntimeLog:  filepath.Join(dir, "run", "runtime.cel"),
		FirmwareLog: e.sw.BootLogPath(),
		StateDir:    filepath.Join(dir, "state"),
		Interval:    time.Minute,
		Partition:   "fleet",
		LogLevel:    "debug",
	}
	st := openStore(t, e)
	var last time.Time
	// run starts the agent with the given wall clock and clock reader and
	// returns the verdict of its first pulse.
	run := func(now func() time.Time, clock agent.ClockReader) *store.Agent {
		t.Helper()
		ag, err := agent.New(agent.Options{Config: cfg, Logger: simtest.Logger(t), TPM: dev, Now: now, Clock: clock})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- ag.Run(ctx) }()
		defer func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("agent: %v", err)
			}
			ag.Close()
		}()
		deadline := time.Now().Add(30 * time.Second)
		for {
			got, err := st.GetAgent(context.Background(), "edge-misset")
			if err == nil && got.LastVerdict != 0 && got.LastPulseAt.After(last) {
				last = got.LastPulseAt
				return got
			}
			if time.Now().After(deadline) {
				t.Fatal("no pulse from the agent")
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	got := run(nil, nil)
	if pulsev1.Verdict(got.LastVerdict) != trusted {
		t.Fatalf("honest clock: %s (%s)", pulsev1.Verdict(got.LastVerdict), got.LastMessage)
	}
	synced := func() (unix.Timex, int, error) {
		return unix.Timex{Status: unix.STA_PLL, Maxerror: 3000, Esterror: 100}, unix.TIME_OK, nil
	}
	for _, c := range []struct {
		name  string
		off   time.Duration
		clock agent.ClockReader
		want  []string
	}{
		{"an hour ahead, this kernel", time.Hour, nil, []string{"agent clock is -1h0m0s off", unsyncNote(t), "host's wall clock is misset (not a stale pulse)"}},
		{"an hour behind, this kernel", -time.Hour, nil, []string{"agent clock is 1h0m0s off", unsyncNote(t), "host's wall clock is misset (not a stale pulse)"}},
		{"an hour ahead, synchronised", time.Hour, synced, []string{"reports its clock synchronised (maximum error 3ms): its time source itself is off", "host's wall clock is misset"}},
	} {
		off := c.off
		got := run(func() time.Time { return time.Now().Add(off) }, c.clock)
		msg := got.LastMessage
		t.Logf("%s: %s: %s", c.name, pulsev1.Verdict(got.LastVerdict), msg)
		if pulsev1.Verdict(got.LastVerdict) != clockDesync || pulsev1.Reason(got.LastReason) != pulsev1.Reason_REASON_CLOCK_DESYNC {
			t.Fatalf("%s: %s/%s, want CLOCK_DESYNC", c.name, pulsev1.Verdict(got.LastVerdict), pulsev1.Reason(got.LastReason))
		}
		for _, w := range c.want {
			if !strings.Contains(msg, w) {
				t.Fatalf("%s: message %q lacks %q", c.name, msg, w)
			}
		}
	}
	// A stale pulse: the verifier's clock moved an hour, the TPM's did not.
	e.clock.Advance(time.Hour)
	got = run(nil, nil)
	t.Logf("stale: %s: %s", pulsev1.Verdict(got.LastVerdict), got.LastMessage)
	if pulsev1.Verdict(got.LastVerdict) != clockDesync || strings.Contains(got.LastMessage, "misset") ||
		!strings.Contains(got.LastMessage, "while the verifier's advanced 1h") {
		t.Fatalf("stale pulse: %s (%s), want CLOCK_DESYNC telling the TPM clock did not advance as the verifier's", pulsev1.Verdict(got.LastVerdict), got.LastMessage)
	}
}
