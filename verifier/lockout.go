package verifier

import (
	"fmt"
	"time"

	"github.com/google/go-tpm/tpm2"

	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/verifier/alert"
	"github.com/pulse-attest/pulse/verifier/store"
)

// unquoted judges a pulse without a quote from an agent enrolled with a
// TPM. It is a downgrade, unless the agent says its TPM refused to quote in
// dictionary-attack lockout and its enrolled AK could be refused so (no
// noDA): then it is TPM_LOCKOUT, recorded and alerted as such rather than
// as silence. Either way nothing about the device is verified and the
// pulse is never accepted: it does not move the silence deadline, so a
// lockout that outlasts it ends BLINDED like any silence. Pulse's AK has
// noDA, which a TPM in lockout still lets quote: from such an agent the
// lockout story is a downgrade (docs/agent.md, "TPM lockout").
func unquoted(o *Outcome, a *store.Agent, p *pulsev1.PulsePayload) *Outcome {
	th := p.GetHealth().GetTpm()
	if !p.GetTpm() || !th.GetInLockout() {
		return o.untrusted(pulsev1.Reason_REASON_TPM_DOWNGRADE, "agent enrolled with a TPM sent a pulse without a quote")
	}
	if noDA, err := akNoDA(a.AKPublic); err != nil || noDA {
		return o.untrusted(pulsev1.Reason_REASON_TPM_DOWNGRADE,
			"agent enrolled with a TPM sent a pulse without a quote, saying its TPM is in dictionary-attack lockout; its enrolled attestation key has noDA, which a TPM in lockout still lets quote")
	}
	return o.untrusted(pulsev1.Reason_REASON_TPM_LOCKOUT,
		"the agent says its TPM is in dictionary-attack lockout (%s) and refuses its attestation key, which lacks noDA: nothing about the device is verified; clear the lockout with the TPM's lockout authorisation or wait for it to decay",
		lockoutFacts(th))
}

// noteLockout notes a quoted pulse whose agent says the TPM is in
// dictionary-attack lockout: Pulse's noDA AK still quotes, so the verdict
// stands on the quote, but something on the device failed authorisations
// of DA-protected TPM objects (password guessing, or another application's
// keys after power cuts) and every other user of the TPM is refused. One
// tpm_lockout alert per agent and hour, raised after the commit. The state
// is the agent's claim: root can hide a lockout or invent one (which only
// raises this alert).
func noteLockout(o *Outcome, p *pulsev1.PulsePayload, now time.Time) {
	th := p.GetHealth().GetTpm()
	if !th.GetInLockout() {
		return
	}
	o.Notes = append(o.Notes, pulsev1.Reason_REASON_TPM_LOCKOUT)
	o.lockoutAlert = &store.Alert{
		DedupKey: fmt.Sprintf("tpm_lockout:%s:%d", o.agent.ID, dedupBucket(now)),
		AgentID:  o.agent.ID, Kind: string(alert.KindTPMLockout), Severity: alert.SeverityMedium,
		Reason: pulsev1.Reason_REASON_TPM_LOCKOUT.String(),
		Message: fmt.Sprintf("the agent says its TPM is in dictionary-attack lockout (%s): something failed authorisations of DA-protected TPM objects; Pulse's attestation key has noDA and keeps quoting, other TPM users are refused",
			lockoutFacts(th)),
	}
}

// lockoutFacts prints the reported lockout state.
func lockoutFacts(th *pulsev1.TPMHealth) string {
	return fmt.Sprintf("%d of %d authorisation failures, one forgiven every %s", th.GetLockoutCounter(), th.GetMaxAuthFail(),
		th.GetLockoutInterval().AsDuration())
}

// akNoDA reports whether an enrolled AK (a marshalled TPMT_PUBLIC) has noDA.
func akNoDA(akPublic []byte) (bool, error) {
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](akPublic)
	if err != nil {
		return false, fmt.Errorf("enrolled ak: %w", err)
	}
	return pub.ObjectAttributes.NoDA, nil
}
