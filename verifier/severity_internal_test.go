package verifier

import (
	"testing"

	"github.com/pulse-attest/pulse/policy"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/verifier/alert"
)

// TestSeverityOfIsTheReasonTable: the verifier's verdict alerts are
// alert.ReasonAlerts, for every reason; a policy denial takes its most
// severe enforced finding's severity, the policy's default when none.
func TestSeverityOfIsTheReasonTable(t *testing.T) {
	if policy.DefaultSeverity != alert.SeverityHigh || alert.ReasonAlerts[pulsev1.Reason_REASON_POLICY_DENIED].Severity != policy.DefaultSeverity {
		t.Fatalf("policy.DefaultSeverity %d, the denial row's default %d", policy.DefaultSeverity, alert.ReasonAlerts[pulsev1.Reason_REASON_POLICY_DENIED].Severity)
	}
	for n, name := range pulsev1.Reason_name {
		o := &Outcome{Verdict: pulsev1.Verdict_VERDICT_UNTRUSTED, Reason: pulsev1.Reason(n)}
		kind, sev := severityOf(o)
		row, known := alert.Lookup(o.Reason)
		switch {
		case !known:
			t.Errorf("%s: no row in alert.ReasonAlerts", name)
		case !row.Raises && (kind != "" || sev != 0):
			t.Errorf("severityOf(%s) = %q, %d; it raises nothing (%s)", name, kind, sev, row.Why)
		case row.Raises && (kind != string(row.Kind) || sev != row.Severity):
			t.Errorf("severityOf(%s) = %q, %d; want %s, %d", name, kind, sev, row.Kind, row.Severity)
		}
	}
	finding := func(enforce bool, sev uint32) *pulsev1.Finding {
		return &pulsev1.Finding{Rule: "r", Enforce: enforce, Severity: sev}
	}
	cases := []struct {
		name     string
		findings []*pulsev1.Finding
		sev      int
	}{
		{"none", nil, policy.DefaultSeverity},
		{"worst enforced", []*pulsev1.Finding{finding(true, 3), finding(true, 1)}, 1},
		{"audit-only ignored", []*pulsev1.Finding{finding(false, 1), finding(true, 4)}, 4},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			kind, sev := severityOf(&Outcome{Verdict: pulsev1.Verdict_VERDICT_UNTRUSTED, Reason: pulsev1.Reason_REASON_POLICY_DENIED, Findings: c.findings})
			if kind != AlertUntrusted || sev != c.sev {
				t.Errorf("severityOf = %q, %d; want %s, %d", kind, sev, AlertUntrusted, c.sev)
			}
		})
	}
}
