package verifier_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/verifier"
	"github.com/pulse-attest/pulse/verifier/audit"
	"github.com/pulse-attest/pulse/verifier/config"
	"github.com/pulse-attest/pulse/verifier/store"
)

// auditedAlerts counts the alert records in the env's audit log by kind
// for one agent, and reports whether alertID is among them.
func auditedAlerts(t *testing.T, e *env, agent, kind, alertID string) (n int, found bool) {
	t.Helper()
	f, err := os.Open(filepath.Join(e.dir, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := audit.Scan(f, func(r audit.Record) error {
		if r.AgentID == agent && r.Kind == kind {
			n++
		}
		if alertID != "" && r.Data["alert_id"] == alertID {
			found = true
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n, found
}

// TestAlertTakeoverBounded: over real mTLS and swtpm, an enrolled TPM
// agent's ID retrying without a TPM, and an agent shopping for partitions,
// are refused every time but raise (and audit) one alert per agent, EK and
// AlertDedupWindow (the next window: TestAlertTakeoverKeys; the agent
// certificates here do not outlive a window).
func TestAlertTakeoverBounded(t *testing.T) {
	e := newEnvCfg(t, "rhel8-uefi", func(c *config.Config) { c.Enrollment.RatePerMinute = 1000 })
	if e == nil {
		return
	}
	st := openStore(t, e)
	dev := e.openTPM(e.sw)
	wantEnrolled(t, e.agent("edge-a", dev).Enroll(), pulsev1.Reason_REASON_OK)
	const tries = 25
	for range tries {
		wantRefused(t, e.agent("edge-a", nil).Enroll(), pulsev1.Reason_REASON_TPM_DOWNGRADE)
	}
	wantAlert(t, st, "edge-a", "tpm_downgrade", 1, 1, pulsev1.Reason_REASON_TPM_DOWNGRADE)
	shopper := e.agent("edge-p", nil)
	for i := range tries {
		shopper.Partition = fmt.Sprintf("shop-%d", i)
		wantRefused(t, shopper.Enroll(), pulsev1.Reason_REASON_PARTITION_MISMATCH)
	}
	wantAlert(t, st, "edge-p", "partition_mismatch", 1, 2, pulsev1.Reason_REASON_PARTITION_MISMATCH)
	// Dispatch at raise is synchronous: the audit log holds one of each.
	if n, _ := auditedAlerts(t, e, "edge-a", "tpm_downgrade", ""); n != 1 {
		t.Fatalf("%d tpm_downgrade audit records, want 1", n)
	}
	if n, _ := auditedAlerts(t, e, "edge-p", "partition_mismatch", ""); n != 1 {
		t.Fatalf("%d partition_mismatch audit records, want 1", n)
	}

	for _, a := range alertsOf(t, st, "edge-a", "identity_takeover") {
		if a.DispatchedAt.IsZero() {
			t.Fatalf("alert %s raised and dispatched but not marked", a.ID)
		}
	}
}

// TestAlertOutboxDaemon: an alert stored but never dispatched (written
// straight into the store, as by a replica that crashed before dispatching)
// reaches the running daemon's audit log once, through the outbox loop.
func TestAlertOutboxDaemon(t *testing.T) {
	e := newEnv(t, "rhel8-uefi")
	if e == nil {
		return
	}
	st := openStore(t, e)
	a := &store.Alert{DedupKey: "crashed-replica", AgentID: "edge-c", Kind: verifier.AlertCompromised, Severity: 1,
		Replica: "gone", Message: "raised by a replica that crashed", CreatedAt: e.clock.Now().Add(-time.Minute)}
	if raised, err := st.RaiseAlert(context.Background(), a); err != nil || !raised {
		t.Fatalf("store alert: %v %v", raised, err)
	}
	waitFor(t, "the outbox to dispatch the stored alert", func() bool {
		_, found := auditedAlerts(t, e, "edge-c", verifier.AlertCompromised, a.ID)
		return found
	})
	waitFor(t, "the alert to be marked dispatched", func() bool {
		for _, got := range alertsOf(t, st, "edge-c", verifier.AlertCompromised) {
			if got.ID == a.ID && !got.DispatchedAt.IsZero() {
				return true
			}
		}
		return false
	})
	// Marked: no later pass may claim it, so the audit log keeps one.
	if n, _ := auditedAlerts(t, e, "edge-c", verifier.AlertCompromised, ""); n != 1 {
		t.Fatalf("%d audit records of the alert, want 1", n)
	}
}
