package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/pulse-attest/pulse/verifier/admin"
	"github.com/pulse-attest/pulse/verifier/audit"
)

func (b *cliBackend) ListUpdates(context.Context) ([]admin.UpdateApproval, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]admin.UpdateApproval(nil), b.approvals...), nil
}

func (b *cliBackend) RecordAction(context.Context, audit.Record) error { return nil }

func TestUpdatesCLIList(t *testing.T) {
	e := startAdminServer(t)
	digest := strings.Repeat("ab", 32)

	code, out, errOut := runCmd(t, "updates list", e.byToken()...)
	if code != 0 || strings.Count(strings.TrimSpace(out), "\n") != 0 || !strings.HasPrefix(out, "ID") {
		t.Fatalf("empty list = %d: %q %s", code, out, errOut)
	}

	code, out, errOut = runCmd(t, "agents approve-update", e.byCert("--digest", digest, "--agents", "edge-*", "--for", "2h")...)
	if code != 0 || !strings.Contains(out, "(by alice)") || !strings.Contains(out, "0 enrolled agents match") ||
		!strings.Contains(errOut, "note: no enrolled agent matches edge-*") {
		t.Fatalf("approve-update = %d: %q %q", code, out, errOut)
	}

	code, out, errOut = runCmd(t, "updates list", e.byToken()...)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 2 || !strings.Contains(lines[1], digest) || !strings.Contains(lines[1], "edge-*") ||
		!strings.Contains(lines[1], "open") || !strings.HasSuffix(lines[1], "alice") {
		t.Fatalf("updates list = %d:\n%s%s", code, out, errOut)
	}

	code, out, errOut = runCmd(t, "updates list", e.byToken("--json")...)
	var us []admin.UpdateApproval
	if code != 0 || json.Unmarshal([]byte(out), &us) != nil || len(us) != 1 || us[0].Digest != digest || us[0].By != "alice" || us[0].ID == "" {
		t.Fatalf("updates list --json = %d: %s %s", code, out, errOut)
	}

	if code, _, errOut = runCmd(t, "updates list", e.byToken("extra")...); code != 2 || !strings.Contains(errOut, "usage") {
		t.Fatalf("extra argument = %d: %s", code, errOut)
	}
	if code, _, _ = runCmd(t, "updates list", "--admin", e.url, "--ca", e.ca, "--token", "wrong-wrong-wrong-wrong"); code != 1 {
		t.Fatalf("bad token = %d", code)
	}
}
