package alert

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
)

var update = flag.Bool("update", false, "rewrite docs/alerts.md's reason table from ReasonAlerts")

// wantAlert is the alert a reason must raise; raise false means none.
type wantAlert struct {
	raise bool
	kind  Kind
	sev   int
}

func none() wantAlert                { return wantAlert{} }
func want(k Kind, sev int) wantAlert { return wantAlert{true, k, sev} }

// TestReasonAlertsCoverEveryReason: every pulsev1.Reason has a row here and
// in ReasonAlerts, with the kind and severity the verifier ships. A new
// enum value without a row fails.
func TestReasonAlertsCoverEveryReason(t *testing.T) {
	cases := map[pulsev1.Reason]wantAlert{
		pulsev1.Reason_REASON_UNSPECIFIED:                  none(),
		pulsev1.Reason_REASON_OK:                           none(),
		pulsev1.Reason_REASON_IDENTITY_MISMATCH:            want(KindUntrusted, 1),
		pulsev1.Reason_REASON_MALFORMED_PAYLOAD:            want(KindUntrusted, 1),
		pulsev1.Reason_REASON_LEAF_KEY_MISMATCH:            want(KindUntrusted, 1),
		pulsev1.Reason_REASON_BAD_SIGNATURE:                want(KindUntrusted, 1),
		pulsev1.Reason_REASON_NONCE_UNKNOWN:                want(KindUntrusted, 2),
		pulsev1.Reason_REASON_NONCE_EXPIRED:                none(),
		pulsev1.Reason_REASON_NONCE_REPLAYED:               want(KindUntrusted, 2),
		pulsev1.Reason_REASON_NONCE_WRONG_AGENT:            want(KindUntrusted, 2),
		pulsev1.Reason_REASON_SEQUENCE_REGRESSION:          want(KindUntrusted, 1),
		pulsev1.Reason_REASON_CLOCK_DESYNC:                 want(KindClockDesync, 3),
		pulsev1.Reason_REASON_CLOCK_DESYNC_PERSISTENT:      want(KindClockDesync, 2),
		pulsev1.Reason_REASON_NOT_ENROLLED:                 want(KindUntrusted, 1),
		pulsev1.Reason_REASON_AK_UNKNOWN:                   want(KindUntrusted, 1),
		pulsev1.Reason_REASON_QUOTE_MALFORMED:              want(KindUntrusted, 1),
		pulsev1.Reason_REASON_QUOTE_SIGNATURE:              want(KindUntrusted, 1),
		pulsev1.Reason_REASON_QUOTE_NOT_TPM_GENERATED:      want(KindUntrusted, 1),
		pulsev1.Reason_REASON_QUALIFYING_DATA:              want(KindUntrusted, 1),
		pulsev1.Reason_REASON_PCR_DIGEST:                   want(KindUntrusted, 1),
		pulsev1.Reason_REASON_PCR_SELECTION:                want(KindUntrusted, 1),
		pulsev1.Reason_REASON_TPM_DOWNGRADE:                want(KindTPMDowngrade, 1),
		pulsev1.Reason_REASON_TPM_REQUIRED:                 want(KindUntrusted, 1),
		pulsev1.Reason_REASON_REBOOTED:                     none(),
		pulsev1.Reason_REASON_TPM_CLOCK_ROLLBACK:           want(KindUntrusted, 1),
		pulsev1.Reason_REASON_RUNTIME_PCR_MISMATCH:         want(KindUntrusted, 1),
		pulsev1.Reason_REASON_PCR_BANK_NOT_ALLOWED:         want(KindUntrusted, 1),
		pulsev1.Reason_REASON_AK_NOT_OWNER_PRIMARY:         want(KindUntrusted, 1),
		pulsev1.Reason_REASON_FIRMWARE_LOG_MISSING:         none(),
		pulsev1.Reason_REASON_FIRMWARE_LOG_MALFORMED:       want(KindUntrusted, 1),
		pulsev1.Reason_REASON_FIRMWARE_LOG_REPLAY:          want(KindUntrusted, 1),
		pulsev1.Reason_REASON_RUNTIME_LOG_MALFORMED:        want(KindUntrusted, 1),
		pulsev1.Reason_REASON_RUNTIME_LOG_REPLAY:           want(KindUntrusted, 1),
		pulsev1.Reason_REASON_RUNTIME_LOG_GAP:              want(KindUntrusted, 2),
		pulsev1.Reason_REASON_CLAIM_MISMATCH:               want(KindUntrusted, 1),
		pulsev1.Reason_REASON_AGENT_BINARY_MISMATCH:        want(KindUntrusted, 1),
		pulsev1.Reason_REASON_FIRMWARE_LOG_QUOTA:           want(KindUntrusted, 2),
		pulsev1.Reason_REASON_POLICY_DENIED:                want(KindUntrusted, 2),
		pulsev1.Reason_REASON_NO_POLICY:                    want(KindUntrusted, 1),
		pulsev1.Reason_REASON_BINARY_CHANGED:               want(KindBinaryChanged, 1),
		pulsev1.Reason_REASON_BPF_PROGRAM_MISSING:          want(KindBPFProgramMissing, 1),
		pulsev1.Reason_REASON_BPF_PROGRAM_CHANGED:          want(KindBPFProgramChanged, 1),
		pulsev1.Reason_REASON_FORTRESS_INACTIVE:            want(KindFortressInactive, 1),
		pulsev1.Reason_REASON_SILENT:                       want(KindCompromised, 1),
		pulsev1.Reason_REASON_BPF_FOREIGN_PROGRAM:          want(KindBPFForeignProgram, 1),
		pulsev1.Reason_REASON_BPF_MAP_FOREIGN:              want(KindBPFForeignProgram, 1),
		pulsev1.Reason_REASON_QUARANTINE_DIVERGED:          want(KindQuarantineDiverged, 2),
		pulsev1.Reason_REASON_SENTINEL_TAMPERED:            want(KindSentinelTampered, 1),
		pulsev1.Reason_REASON_AGENT_SIGNALLED:              want(KindAgentSignalled, 1),
		pulsev1.Reason_REASON_FOREIGN_BPF_LOAD:             want(KindForeignBPFLoad, 2),
		pulsev1.Reason_REASON_KERNEL_EVIDENCE_MISSING:      want(KindUntrusted, 2),
		pulsev1.Reason_REASON_TPM_LOCKOUT:                  want(KindTPMLockout, 2),
		pulsev1.Reason_REASON_AGENT_STOPPED:                want(KindAgentStopped, 2),
		pulsev1.Reason_REASON_EK_UNTRUSTED:                 want(KindUntrusted, 1),
		pulsev1.Reason_REASON_EK_MISMATCH:                  want(KindIdentityTakeover, 1),
		pulsev1.Reason_REASON_CREDENTIAL_ACTIVATION_FAILED: want(KindUntrusted, 1),
		pulsev1.Reason_REASON_ENROLLMENT_EXPIRED:           want(KindUntrusted, 1),
		pulsev1.Reason_REASON_PARTITION_MISMATCH:           want(KindPartitionMismatch, 2),
		pulsev1.Reason_REASON_EK_IN_USE:                    want(KindIdentityTakeover, 1),
		pulsev1.Reason_REASON_AK_CHANGED:                   want(KindAKChanged, 2),
		pulsev1.Reason_REASON_ENROLL_RATE_LIMITED:          want(KindUntrusted, 1),
		pulsev1.Reason_REASON_INTERNAL:                     none(),
	}
	for n, name := range pulsev1.Reason_name {
		reason := pulsev1.Reason(n)
		t.Run(name, func(t *testing.T) {
			w, listed := cases[reason]
			if !listed {
				t.Fatalf("%s: no row in this test: decide its alert and add it here and to ReasonAlerts", name)
			}
			row, known := Lookup(reason)
			if !known {
				t.Fatalf("%s: no row in ReasonAlerts", name)
			}
			k, sev, ok := ForVerdict(reason, nil)
			if ok != w.raise || k != w.kind || sev != w.sev {
				t.Errorf("ForVerdict(%s) = %q, %d, %v; want %q, %d, %v", name, k, sev, ok, w.kind, w.sev, w.raise)
			}
			if kk, kok := KindForReason(reason); kok != w.raise || kk != w.kind {
				t.Errorf("KindForReason(%s) = %q, %v", name, kk, kok)
			}
			switch {
			case row.Raises && (!row.Kind.Valid() || row.Severity < SeverityCritical || row.Severity > SeverityLow):
				t.Errorf("%s: row %+v: invalid kind or severity", name, row)
			case !row.Raises && (row.Kind != "" || row.Severity != 0 || row.Why == ""):
				t.Errorf("%s: row %+v: a reason that raises nothing has no kind or severity and says why", name, row)
			case row.PolicySeverity && reason != pulsev1.Reason_REASON_POLICY_DENIED:
				t.Errorf("%s: only a policy denial takes the policy's severity", name)
			}
			if strings.HasPrefix(name, "REASON_CLOCK_DESYNC") && (!ok || k != KindClockDesync) {
				t.Errorf("%s raises %q: a bad clock is only ever %s", name, k, KindClockDesync)
			}
			if k == KindCompromised && reason != pulsev1.Reason_REASON_SILENT {
				t.Errorf("%s raises compromised", name)
			}
		})
	}
	for reason := range cases {
		if _, ok := pulsev1.Reason_name[int32(reason)]; !ok {
			t.Errorf("test row for %d, which is not a pulsev1.Reason", reason)
		}
	}
	for reason := range ReasonAlerts {
		if _, ok := pulsev1.Reason_name[int32(reason)]; !ok {
			t.Errorf("ReasonAlerts row for %d, which is not a pulsev1.Reason", reason)
		}
	}
}

func TestReasonAlertUnknownReasonFailsClosed(t *testing.T) {
	r := pulsev1.Reason(9999)
	if k, sev, ok := ForVerdict(r, nil); !ok || k != KindUntrusted || sev != SeverityCritical {
		t.Errorf("ForVerdict(unknown) = %q, %d, %v; want untrusted, 1", k, sev, ok)
	}
	if _, known := Lookup(r); known {
		t.Error("Lookup(unknown) known")
	}
	if _, ok := KindForReason(r); ok {
		t.Error("KindForReason(unknown number) raised a kind")
	}
}

// TestReasonAlertPolicyDeniedSeverity: a policy denial alerts at its most
// severe enforced finding's severity; the policy never changes the kind.
func TestReasonAlertPolicyDeniedSeverity(t *testing.T) {
	f := func(enforce bool, sev uint32) *pulsev1.Finding {
		return &pulsev1.Finding{Rule: fmt.Sprint("r", sev), Enforce: enforce, Severity: sev}
	}
	cases := []struct {
		name     string
		reason   pulsev1.Reason
		findings []*pulsev1.Finding
		kind     Kind
		sev      int
	}{
		{"no findings: default", pulsev1.Reason_REASON_POLICY_DENIED, nil, KindUntrusted, SeverityHigh},
		{"one enforced low", pulsev1.Reason_REASON_POLICY_DENIED, []*pulsev1.Finding{f(true, 4)}, KindUntrusted, 4},
		{"worst enforced wins", pulsev1.Reason_REASON_POLICY_DENIED, []*pulsev1.Finding{f(true, 3), f(true, 1), f(true, 4)}, KindUntrusted, 1},
		{"audit-only findings do not count", pulsev1.Reason_REASON_POLICY_DENIED, []*pulsev1.Finding{f(false, 1), f(true, 3)}, KindUntrusted, 3},
		{"only audit-only: default", pulsev1.Reason_REASON_POLICY_DENIED, []*pulsev1.Finding{f(false, 1)}, KindUntrusted, SeverityHigh},
		{"out-of-range severities ignored", pulsev1.Reason_REASON_POLICY_DENIED, []*pulsev1.Finding{f(true, 0), f(true, 9), f(true, 3)}, KindUntrusted, 3},
		{"nil finding", pulsev1.Reason_REASON_POLICY_DENIED, []*pulsev1.Finding{nil, f(true, 4)}, KindUntrusted, 4},
		{"other reasons ignore findings", pulsev1.Reason_REASON_CLOCK_DESYNC, []*pulsev1.Finding{f(true, 1)}, KindClockDesync, SeverityMedium},
		{"binary change keeps its kind", pulsev1.Reason_REASON_BINARY_CHANGED, []*pulsev1.Finding{f(true, 4)}, KindBinaryChanged, SeverityCritical},
		{"allow-list refuses the agent binary: binary_changed", pulsev1.Reason_REASON_POLICY_DENIED,
			[]*pulsev1.Finding{f(true, 3), {Rule: RuleAgentBinary, Enforce: true, Severity: 1}}, KindBinaryChanged, 1},
		{"agent binary finding at the policy's severity", pulsev1.Reason_REASON_POLICY_DENIED,
			[]*pulsev1.Finding{{Rule: RuleAgentBinary, Enforce: true, Severity: 3}}, KindBinaryChanged, 3},
		{"audit-only agent binary finding keeps untrusted", pulsev1.Reason_REASON_POLICY_DENIED,
			[]*pulsev1.Finding{{Rule: RuleAgentBinary, Enforce: false, Severity: 1}, f(true, 4)}, KindUntrusted, 4},
		{"agent_binary rule on another reason changes nothing", pulsev1.Reason_REASON_RUNTIME_LOG_REPLAY,
			[]*pulsev1.Finding{{Rule: RuleAgentBinary, Enforce: true, Severity: 4}}, KindUntrusted, SeverityCritical},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			k, sev, ok := ForVerdict(c.reason, c.findings)
			if !ok || k != c.kind || sev != c.sev {
				t.Errorf("ForVerdict = %q, %d, %v; want %q, %d", k, sev, ok, c.kind, c.sev)
			}
		})
	}
}

const (
	docsPath     = "../../docs/alerts.md"
	tableBegin   = "<!-- reason-table:begin -->"
	tableEnd     = "<!-- reason-table:end -->"
	generatedMsg = "<!-- generated from verifier/alert.ReasonAlerts by `go test ./verifier/alert -update`; do not edit -->"
)

// renderReasonTable renders ReasonAlerts as Markdown, in enum order.
func renderReasonTable() string {
	reasons := make([]int32, 0, len(ReasonAlerts))
	for r := range ReasonAlerts {
		reasons = append(reasons, int32(r))
	}
	sort.Slice(reasons, func(i, j int) bool { return reasons[i] < reasons[j] })
	var b strings.Builder
	b.WriteString(generatedMsg + "\n\n")
	b.WriteString("| reason | kind | severity | notes |\n|---|---|---|---|\n")
	for _, n := range reasons {
		r := pulsev1.Reason(n)
		ra := ReasonAlerts[r]
		kind, sev := "none", "—"
		if ra.Raises {
			kind = "`" + string(ra.Kind) + "`"
			sev = fmt.Sprint(ra.Severity)
			if ra.PolicySeverity {
				sev = fmt.Sprintf("policy (default %d)", ra.Severity)
			}
		}
		why := ra.Why
		rules := make([]string, 0, len(ra.RuleKinds))
		for rule := range ra.RuleKinds {
			rules = append(rules, rule)
		}
		sort.Strings(rules)
		for _, rule := range rules {
			why += fmt.Sprintf("; `%s` when an enforced `%s` finding is among them", ra.RuleKinds[rule], rule)
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", r, kind, sev, strings.ReplaceAll(why, "|", `\|`))
	}
	return b.String()
}

// TestReasonTableInDocs: docs/alerts.md's reason table is ReasonAlerts.
// go test ./verifier/alert -update rewrites it.
func TestReasonTableInDocs(t *testing.T) {
	path := filepath.FromSlash(docsPath)
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	begin := bytes.Index(doc, []byte(tableBegin))
	end := bytes.Index(doc, []byte(tableEnd))
	if begin < 0 || end < begin || bytes.Count(doc, []byte(tableBegin)) != 1 || bytes.Count(doc, []byte(tableEnd)) != 1 {
		t.Fatalf("%s: want one %s followed by one %s", path, tableBegin, tableEnd)
	}
	start := begin + len(tableBegin)
	got := strings.TrimPrefix(string(doc[start:end]), "\n")
	wantTable := renderReasonTable()
	if got == wantTable {
		return
	}
	if !*update {
		t.Fatalf("%s: the reason table differs from ReasonAlerts; run go test ./verifier/alert -update\ngot:\n%s\nwant:\n%s", path, got, wantTable)
	}
	out := make([]byte, 0, len(doc)+len(wantTable))
	out = append(out, doc[:start]...)
	out = append(out, '\n')
	out = append(out, wantTable...)
	out = append(out, doc[end:]...)
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("rewrote %s", path)
}

// TestReasonKindDefaultsAgree: a kind whose reasons all raise it at one
// severity has that severity as its default, so docs/alerts.md's kind table
// and its reason table say the same. Kinds raised at several severities
// (untrusted, clock_desync) are left to their rows.
func TestReasonKindDefaultsAgree(t *testing.T) {
	sevs := map[Kind]map[int]bool{}
	for _, ra := range ReasonAlerts {
		if !ra.Raises || ra.PolicySeverity {
			continue
		}
		if sevs[ra.Kind] == nil {
			sevs[ra.Kind] = map[int]bool{}
		}
		sevs[ra.Kind][ra.Severity] = true
	}
	checked := 0
	for k, s := range sevs {
		if len(s) != 1 {
			continue
		}
		for sev := range s {
			checked++
			if k.DefaultSeverity() != sev {
				t.Errorf("kind %s: default severity %d, every reason raising it says %d", k, k.DefaultSeverity(), sev)
			}
		}
	}
	if checked < 10 {
		t.Fatalf("only %d kinds checked", checked)
	}
}
