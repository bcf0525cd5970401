package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/verifier/audit"
)

// writeAudit writes n records with the real audit writer and closes it.
func writeAudit(t *testing.T, path string, n int) {
	t.Helper()
	w, err := audit.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if _, err := w.Append(context.Background(), audit.Record{Time: time.Unix(int64(i), 0), Kind: "test", AgentID: fmt.Sprintf("edge-%d", i), Severity: 3}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestCopyAuditLog: a copy taken while a record is half written ends at
// the last complete record and verifies; a copy whose records were edited
// or dropped is refused with the audit package's typed errors.
func TestCopyAuditLog(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "audit.log")
	writeAudit(t, src, 5)
	f, err := os.OpenFile(src, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"seq":6,"time":"half a rec`) // a writer mid-append
	f.Close()
	dst := filepath.Join(dir, "backup.audit.log")
	n, head, err := copyAuditLog(src, dst, false)
	if err != nil || n != 5 || len(head) != 64 {
		t.Fatalf("copy: %d records, head %q, %v", n, head, err)
	}
	if _, _, err := copyAuditLog(src, dst, false); err == nil {
		t.Fatal("copy over an existing file without overwrite")
	}
	good, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.SplitAfter(good, []byte("\n"))
	for name, body := range map[string][]byte{
		"edited":  bytes.Replace(good, []byte(`"edge-2"`), []byte(`"edge-9"`), 1),
		"dropped": bytes.Join(append(append([][]byte{}, lines[:2]...), lines[3:]...), nil),
	} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(dir, name+".audit.log")
			if err := os.WriteFile(p, body, 0o600); err != nil {
				t.Fatal(err)
			}
			if _, _, err := verifyAuditChain(p); !errors.Is(err, audit.ErrBroken) {
				t.Fatalf("verify %s copy: %v, want audit.ErrBroken", name, err)
			}
		})
	}
}

// TestEnsureUnlocked: a restore is refused while a writer holds the log.
func TestEnsureUnlocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	if err := ensureUnlocked(path); err != nil {
		t.Fatalf("missing log: %v", err)
	}
	w, err := audit.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ensureUnlocked(path); !errors.Is(err, errVerifierRunning) {
		t.Fatalf("held log: %v, want errVerifierRunning", err)
	}
	w.Close()
	if err := ensureUnlocked(path); err != nil {
		t.Fatalf("released log: %v", err)
	}
}
