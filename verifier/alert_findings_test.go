package verifier_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/pulse-attest/pulse/internal/tlsconfig"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/tpm/cel"
	"github.com/pulse-attest/pulse/verifier"
	"github.com/pulse-attest/pulse/verifier/verifiertest"
)

// mildSevereEnv: a fleet policy with a severity-1 agent_binary allow list
// and a severity-4 fortress rule (the docs' "kernels with lockdown refuse
// BPF-LSM; the agent reports that honestly" finding operators learn to
// tolerate). on_failure is left at its documented default (no isolation).
func mildSevereEnv(t *testing.T, id string) (*env, *verifiertest.Client) {
	t.Helper()
	build := sha256.Sum256([]byte("pulse-agent build for " + id)) // the client's default
	e := newEnvCfg(t, "rhel8-uefi", fleetPolicy(t, fmt.Sprintf(`  measured_boot {
    secure_boot {}
  }
  agent_binary {
    severity = 1
    allow = [%q]
  }
  fortress {
    severity = 4
  }
`, hexOf(build[:]))))
	if e == nil {
		return nil, nil
	}
	a := e.agent(id, e.openTPM(e.sw))
	if a.Binary != build {
		t.Fatal("the client's default build changed")
	}
	if res := a.Enroll(); !res.GetEnrolled() {
		t.Fatal(res.GetMessage())
	}
	a.MeasureBinary()
	// Fortress's program measured at load; whether it is in force is what
	// the kernel reports in each pulse (setFortress).
	a.Measure(&cel.EBPFProgram{Name: "fortress_task_kill", ProgramType: "lsm", AttachPoint: "lsm/task_kill", Tag: fortressTestTag, KernelRelease: "test"})
	setFortress(a, true)
	a.Challenge()
	wantVerdict(t, a.Pulse(nil), trusted, pulsev1.Reason_REASON_OK)
	return e, a
}

func untrustedAlerts(t *testing.T, e *env, id string) []string {
	t.Helper()
	st := openStore(t, e)
	var out []string
	// A denial with an enforced agent_binary finding is binary_changed
	// (alert.ReasonAlerts), the others untrusted.
	for _, kind := range []string{verifier.AlertUntrusted, verifier.AlertBinaryChanged} {
		for _, al := range alertsOf(t, st, id, kind) {
			out = append(out, fmt.Sprintf("sev%d %s", al.Severity, al.Message))
		}
	}
	return out
}

func implant(t *testing.T, a *verifiertest.Client, e *env) *pulsev1.PulseResponse {
	t.Helper()
	a.Binary = sha256.Sum256([]byte("implant"))
	a.MeasureBinary()
	resp := a.Pulse(func(p *parts) { p.Payload.Time = timestampNow(e) })
	wantVerdict(t, resp, untrusted, pulsev1.Reason_REASON_POLICY_DENIED)
	sev1 := false
	for _, f := range resp.GetFindings() {
		if f.GetRule() == "agent_binary" && f.GetEnforce() && f.GetSeverity() == 1 {
			sev1 = true
		}
	}
	if !sev1 {
		t.Fatalf("the implant is not a severity-1 agent_binary finding: %v", resp.GetFindings())
	}
	return resp
}

// TestDenialAlertsPerFindingSet: a device shows a tolerated severity-4
// denial (Fortress off), recovers, then runs an implant (a severity-1
// agent_binary denial) within the same hour. Each set of enforced findings
// alerts on its own, at its own severity.
func TestDenialAlertsPerFindingSet(t *testing.T) {
	e, a := mildSevereEnv(t, "edge-dedup")
	if e == nil {
		return
	}
	setFortress(a, false)
	wantVerdict(t, a.Pulse(nil), untrusted, pulsev1.Reason_REASON_POLICY_DENIED)
	setFortress(a, true)
	wantVerdict(t, a.Pulse(nil), trusted, pulsev1.Reason_REASON_OK)
	implant(t, a, e)
	got := untrustedAlerts(t, e, "edge-dedup")
	if len(got) != 2 || !containsAlert(got, "sev4", "Fortress") || !containsAlert(got, "sev1", "agent binary") {
		t.Fatalf("alerts %q, want the severity-4 Fortress denial and the severity-1 implant", got)
	}
	if n := len(alertsOf(t, openStore(t, e), "edge-dedup", verifier.AlertBinaryChanged)); n != 1 {
		t.Fatalf("%d binary_changed alerts, want the implant's", n)
	}
	// The same implant keeps running: one more alert per hour, no flood.
	a.Challenge()
	implant(t, a, e)
	if got := untrustedAlerts(t, e, "edge-dedup"); len(got) != 2 {
		t.Fatalf("alerts %q after a repeat within the hour", got)
	}
}

// TestPersistentMildDenialDoesNotMaskImplant: a device keeps a tolerated
// severity-4 denial and, hours later, runs an implant: POLICY_DENIED to
// POLICY_DENIED, but another set of findings, so it alerts at severity 1.
func TestPersistentMildDenialDoesNotMaskImplant(t *testing.T) {
	e, a := mildSevereEnv(t, "edge-mask")
	if e == nil {
		return
	}
	setFortress(a, false)
	wantVerdict(t, a.Pulse(nil), untrusted, pulsev1.Reason_REASON_POLICY_DENIED)
	e.clock.Advance(3 * time.Hour)
	a.Challenge()
	implant(t, a, e)
	if got := untrustedAlerts(t, e, "edge-mask"); !containsAlert(got, "sev1", "agent binary") {
		t.Fatalf("alerts %q: the implant raised no severity-1 alert", got)
	}
}

var fortressTestTag = [8]byte{0xf0, 0x57, 1, 2, 3, 4, 5, 6}

// setFortress makes the device report Fortress as the kernel lists it: an
// attached link running the measured program, or refused by the kernel.
func setFortress(a *verifiertest.Client, active bool) {
	st := &pulsev1.FortressStatus{Reason: "kernel refused to load the BPF-LSM program: operation not permitted (EPERM); kernel lockdown=integrity"}
	if active {
		st = &pulsev1.FortressStatus{Active: true, LsmListed: true, Loaded: true, Attached: true, ProgramId: 700, LinkId: 701, Tag: fortressTestTag[:]}
	}
	a.PayloadHook = func(p *pulsev1.PulsePayload) { p.Fortress = st }
}

func containsAlert(alerts []string, prefix, text string) bool {
	for _, a := range alerts {
		if strings.HasPrefix(a, prefix+" ") && strings.Contains(a, text) {
			return true
		}
	}
	return false
}

// TestSilenceIsolatesLastAcceptedAddress: a device pulses TRUSTED from its
// address, sends one failing pulse (transient: it isolates nothing) over
// another route, and goes dark. Only accepted pulses record where the
// device is, so its silence isolates its own address, not the other route.
func TestSilenceIsolatesLastAcceptedAddress(t *testing.T) {
	e := newEnvCfg(t, "rhel8-uefi", fastHeartbeat("1s", 2, "0s"))
	if e == nil {
		return
	}
	st := openStore(t, e)
	a := e.enrolled("edge-route")
	if ag, _ := st.GetAgent(ctx(t), "edge-route"); ag.Address != "127.0.0.1" {
		t.Fatalf("address %q", ag.Address)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "a.pem"), filepath.Join(dir, "a-key.pem")
	if err := a.Cert.WriteFiles(certFile, keyFile, false); err != nil {
		t.Fatal(err)
	}
	tc, _, err := tlsconfig.ClientConfig(tlsconfig.ClientOptions{CertFile: certFile, KeyFile: keyFile, ServerCAFile: e.caFile, ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	conn, err := grpc.NewClient(e.daemon.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(tc)),
		grpc.WithContextDialer(func(c context.Context, addr string) (net.Conn, error) { return d.DialContext(c, "tcp", addr) }))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	a.Cl = pulsev1.NewAttestationClient(conn)
	bogus := sha256.Sum256([]byte("a firmware log the verifier never sees"))
	wantVerdict(t, a.Pulse(func(p *parts) { p.SendLog = false; p.Payload.FirmwareLogSha256 = bogus[:] }),
		untrusted, pulsev1.Reason_REASON_FIRMWARE_LOG_MISSING)
	// Dark from now on.
	waitFor(t, "the silent device isolated", func() bool { return len(quarantined(t, st)) == 1 })
	qs := quarantined(t, st)
	if qs[0].Offender != "edge-route" || qs[0].Address != "127.0.0.1" {
		t.Fatalf("quarantine %+v, want the device's last accepted address 127.0.0.1", qs)
	}
}
