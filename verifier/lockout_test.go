package verifier_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/pulse-attest/pulse/agent"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
)

// TestTPMLockoutReported: the client's swtpm is driven into
// dictionary-attack lockout (three failed authorisations of a DA-protected
// key). Pulse's noDA AK still quotes: the pulse reporting the lockout (its
// health read from the TPM) is TRUSTED with a TPM_LOCKOUT note and one
// tpm_lockout alert per hour, never silence. An unquoted pulse claiming
// the lockout from an agent whose enrolled AK has noDA is a downgrade.
func TestTPMLockoutReported(t *testing.T) {
	e := newEnv(t, "rhel8-uefi")
	if e == nil {
		return
	}
	a := e.enrolled("edge-da")
	st := openStore(t, e)
	health := func() *pulsev1.Health {
		return &pulsev1.Health{Tpm: agent.TPMHealthOf(a.Dev.Lockout())}
	}
	resp := a.Pulse(func(p *parts) { p.SendLog = false; p.Payload.Health = health() })
	wantVerdict(t, resp, trusted, pulsev1.Reason_REASON_OK)
	if slices.Contains(resp.GetNotes(), pulsev1.Reason_REASON_TPM_LOCKOUT) || len(alertsOf(t, st, "edge-da", "tpm_lockout")) != 0 {
		t.Fatalf("healthy TPM: notes %v", resp.GetNotes())
	}

	if err := e.sw.FailAuthorizations(3); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		h := health()
		if !h.GetTpm().GetInLockout() || h.GetTpm().GetLockoutCounter() != 3 {
			t.Fatalf("swtpm after three failures: %v", h.GetTpm())
		}
		resp = a.Pulse(func(p *parts) { p.SendLog = false; p.Payload.Health = h })
		wantVerdict(t, resp, trusted, pulsev1.Reason_REASON_OK)
		if !slices.Contains(resp.GetNotes(), pulsev1.Reason_REASON_TPM_LOCKOUT) {
			t.Fatalf("pulse %d in lockout: notes %v, want TPM_LOCKOUT", i, resp.GetNotes())
		}
	}
	al := alertsOf(t, st, "edge-da", "tpm_lockout")
	if len(al) != 1 || al[0].Severity != 3 || al[0].Reason != "REASON_TPM_LOCKOUT" || !strings.Contains(al[0].Message, "3 of 3 authorisation failures") {
		t.Fatalf("tpm_lockout alerts %+v, want one of severity 3", al)
	}

	resp = a.Pulse(func(p *parts) { p.SendLog = false; p.NoQuote = true; p.Payload.Health = health() })
	wantVerdict(t, resp, untrusted, pulsev1.Reason_REASON_TPM_DOWNGRADE)
	if !strings.Contains(resp.GetMessage(), "has noDA") {
		t.Fatalf("message %q does not say why the lockout story is refused", resp.GetMessage())
	}
	// The honest agent's next pulse is TRUSTED again.
	wantVerdict(t, a.Pulse(func(p *parts) { p.SendLog = false; p.Payload.Health = health() }), trusted, pulsev1.Reason_REASON_OK)
}
