package verifier_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/verifier"
	"github.com/pulse-attest/pulse/verifier/audit"
	"github.com/pulse-attest/pulse/verifier/config"
	"github.com/pulse-attest/pulse/verifier/verifiertest"
)

// TestAuditLogDamageDoesNotStopVerifier: a verifier whose audit log ends in
// a torn record starts and serves, keeps the damaged file as it was,
// resumes the chain in audit.log.1 anchored to the last good record, and
// raises one audit_chain_broken alert (severity 1) that is itself audited.
// Stopped, it releases the log at once: an immediate restart starts cleanly
// and raises nothing new.
func TestAuditLogDamageDoesNotStopVerifier(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "audit.log")
	w, err := audit.Open(logPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, agent := range []string{"edge-1", "edge-2"} {
		if _, err := w.Append(context.Background(), audit.Record{Kind: "isolated", AgentID: agent, Severity: 4}); err != nil {
			t.Fatal(err)
		}
	}
	w.Close()
	raw, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	damaged := raw[:len(raw)-7]
	if err := os.WriteFile(logPath, damaged, 0o600); err != nil {
		t.Fatal(err)
	}

	caFile := verifiertest.WritePKI(t, dir, "pulse test CA", 24*time.Hour).CAFile
	if err := os.WriteFile(filepath.Join(dir, "policy.hcl"), []byte(testPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{
		Listen:       "127.0.0.1:0",
		Replica:      "r1",
		TLS:          config.TLS{Cert: filepath.Join(dir, "v.pem"), Key: filepath.Join(dir, "v-key.pem"), AgentCA: caFile},
		Store:        config.Store{Engine: "sqlite", DSN: filepath.Join(dir, "state.db")},
		Policy:       []string{filepath.Join(dir, "policy.hcl")},
		Enrollment:   config.Enrollment{Timeout: time.Minute, DefaultPartition: "fleet"},
		NonceTTL:     time.Minute,
		ClockSkew:    30 * time.Second,
		AllowTPMless: true,
		Alerts:       config.Alerts{AuditLog: logPath},
	}

	d, err := verifier.Start(context.Background(), cfg, nil)
	if err != nil {
		t.Fatalf("verifier refused to start on a damaged audit log: %v", err)
	}
	alerts := policyAlerts(t, d.Store, verifier.AlertAuditChainBroken)
	if len(alerts) != 1 || alerts[0].Severity != 1 || !strings.Contains(alerts[0].Message, "audit.log.1 at seq 2") ||
		!strings.Contains(alerts[0].Message, "from line 2") {
		d.Stop()
		t.Fatalf("audit_chain_broken alerts: %+v", alerts)
	}
	d.Stop()

	// Restarted at once: the lock is free, nothing new is raised.
	d, err = verifier.Start(context.Background(), cfg, nil)
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	n := len(policyAlerts(t, d.Store, verifier.AlertAuditChainBroken))
	d.Stop()
	if n != 1 {
		t.Errorf("%d audit_chain_broken alerts after the restart, want 1", n)
	}

	if after, _ := os.ReadFile(logPath); !bytes.Equal(after, damaged) {
		t.Error("the damaged audit log was changed")
	}
	var kinds []string
	res, err := audit.VerifySegments(logPath, func(seg int, r audit.Record) error {
		if seg == 1 {
			kinds = append(kinds, r.Kind)
		}
		return nil
	})
	if err != nil || len(res) != 2 || res[0].Broken == nil || res[0].Summary.LastSeq != 1 || res[1].Broken != nil || res[1].Anchor != nil {
		t.Fatalf("segments %+v, %v", res, err)
	}
	if len(kinds) != 2 || kinds[0] != audit.KindChainResumed || kinds[1] != verifier.AlertAuditChainBroken {
		t.Errorf("segment 1 kinds %v", kinds)
	}
}
