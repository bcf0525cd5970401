package verifier

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/pulse-attest/pulse/internal/pulsesig"
	"github.com/pulse-attest/pulse/policy"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/tpm/eventlog"
	"github.com/pulse-attest/pulse/tpm/quote"
	"github.com/pulse-attest/pulse/verifier/config"
	"github.com/pulse-attest/pulse/verifier/nonce"
	"github.com/pulse-attest/pulse/verifier/store"
)

// MaxPayloadBytes bounds a pulse payload; MaxFirmwareLogBytes a firmware log.
const (
	MaxPayloadBytes     = 1 << 20
	MaxFirmwareLogBytes = 4 << 20
)

// Peer is what the TLS channel proved about the caller.
type Peer struct {
	AgentID string
	// Key is the public key of the client certificate the handshake verified.
	Key crypto.PublicKey
	// KeySHA256 is SHA-256 of that certificate's SubjectPublicKeyInfo.
	KeySHA256 [32]byte
	// Addr is the caller's IP address (for isolation directives).
	Addr string
	// CertSubject and CertNotAfter are that certificate's subject and
	// expiry (stored with the pulse's explanation, explain_identity.go).
	CertSubject  string
	CertNotAfter time.Time
}

// Outcome is a pulse's verdict and what it changes.
type Outcome struct {
	Verdict  pulsev1.Verdict
	Reason   pulsev1.Reason
	Message  string
	Findings []*pulsev1.Finding
	Notes    []pulsev1.Reason
	Policy   string
	Digest   string
	Isolate  bool
	// TPM is true when the pulse carried a verified quote.
	TPM bool

	payload *pulsev1.PulsePayload
	// agent is the row read for the pulse's nonce epoch (epoch), before the
	// pulse's commit spends it.
	agent           *store.Agent
	epoch           uint64
	update          store.PulseUpdate
	sendFirmwareLog bool
	interval        time.Duration
	evidence        *policy.Evidence
	// pol is the policy selected for the agent (nil when none).
	pol *policy.Policy
	// sentinel is what the pulse brought from Sentinel, recorded after
	// the commit (sentinel.go).
	sentinel *sentinelOutcome
	// host is what the host program list was judged to be (hostprogs.go).
	host *hostOutcome
	// fwBoot is the verified firmware log the pulse's boot evidence was
	// copied from (its key for the stored evidence, explanationOf).
	fwBoot *verifiedLog
	// sentState is the agent's stored Sentinel state the pulse was judged
	// against (read once per pulse, Verifier.sentinelState).
	sentState *store.SentinelState
	// lockoutAlert is the tpm_lockout alert of a quoted pulse from a TPM
	// in lockout (lockout.go), raised after the commit.
	lockoutAlert *store.Alert
	// clockOff is set when the payload's time is outside the skew; the
	// verdict becomes CLOCK_DESYNC only if everything else is accepted.
	clockOff bool
	clockMsg string
	// boot names the boot the quote was made in ("<reset>.<restart>"
	// counts); the last-known-good's accepted prefix belongs to one boot.
	boot string
	// lkgAlert is the last-known-good alert to raise after the commit;
	// streakAlert the transient-streak one.
	lkgAlert    *store.Alert
	streakAlert *store.Alert
	// stopAlert is a planned stop's agent_stopped alert and stopShelter
	// how long it keeps the agent OFFLINE (stop.go).
	stopAlert   *store.Alert
	stopShelter time.Duration
	// desync is set when the clock decided the verdict (CLOCK_DESYNC or
	// its persistent escalation): the commit counts it in the streak.
	desync bool
	// decisions counts how often the verdict was decided: exactly once
	// for a pulse that commits (Verifier.commit refuses any other count).
	decisions int
	// peer, req and now are what the pulse was verified from: a commit
	// that finds the agent's row changed under it verifies them again.
	peer Peer
	req  *pulsev1.PulseRequest
	now  time.Time
}

// Failure is a typed verification failure.
type Failure struct {
	Reason pulsev1.Reason
	Err    error
}

func (f *Failure) Error() string { return fmt.Sprintf("%s: %v", f.Reason, f.Err) }
func (f *Failure) Unwrap() error { return f.Err }

// fail decides the pulse's verdict. Every verdict goes through it once:
// the first failure returns up the pipeline, and an accepted pulse is
// decided by accept, after the last-known-good and the clock.
func (o *Outcome) fail(v pulsev1.Verdict, r pulsev1.Reason, format string, args ...any) *Outcome {
	o.Verdict, o.Reason, o.Message = v, r, fmt.Sprintf(format, args...)
	o.decisions++
	return o
}

func (o *Outcome) untrusted(r pulsev1.Reason, format string, args ...any) *Outcome {
	return o.fail(pulsev1.Verdict_VERDICT_UNTRUSTED, r, format, args...)
}

// Err returns the outcome as a *Failure when the pulse was not accepted.
func (o *Outcome) Err() error {
	if o.Verdict == pulsev1.Verdict_VERDICT_TRUSTED || o.Verdict == pulsev1.Verdict_VERDICT_DEGRADED {
		return nil
	}
	return &Failure{Reason: o.Reason, Err: errors.New(o.Message)}
}

// quotedPCRs are the PCRs every pulse must quote: the firmware's 0-9 plus
// the runtime PCR.
var firmwarePCRs = []uint32{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}

// verify runs the pipeline of docs/threat-model.md ("What a verdict proves") in order; the first
// failure decides.
func (v *Verifier) verify(ctx context.Context, peer Peer, req *pulsev1.PulseRequest, now time.Time) *Outcome {
	o := &Outcome{update: store.PulseUpdate{At: now, Address: peer.Addr}, peer: peer, req: req, now: now}

	// 1. Identity: the payload names the TLS peer and its key.
	if len(req.GetPayload()) == 0 || len(req.GetPayload()) > MaxPayloadBytes {
		return o.untrusted(pulsev1.Reason_REASON_MALFORMED_PAYLOAD, "payload size %d out of range", len(req.GetPayload()))
	}
	p := &pulsev1.PulsePayload{}
	if err := proto.Unmarshal(req.GetPayload(), p); err != nil {
		return o.untrusted(pulsev1.Reason_REASON_MALFORMED_PAYLOAD, "payload does not parse: %v", err)
	}
	o.payload = p
	ql, err := quarantinedList(p.GetQuarantined())
	if err != nil {
		return o.untrusted(pulsev1.Reason_REASON_MALFORMED_PAYLOAD, "quarantined addresses: %v", err)
	}
	o.update.Quarantined = ql
	if p.GetAgentId() != peer.AgentID {
		return o.untrusted(pulsev1.Reason_REASON_IDENTITY_MISMATCH, "payload names agent %q but the TLS certificate is %q", p.GetAgentId(), peer.AgentID)
	}
	if subtle.ConstantTimeCompare(p.GetLeafKeySha256(), peer.KeySHA256[:]) != 1 {
		return o.untrusted(pulsev1.Reason_REASON_LEAF_KEY_MISMATCH, "payload binds another certificate key than the TLS channel proved")
	}

	// 2. Signature with the TLS certificate's key.
	if err := pulsesig.Verify(peer.Key, req.GetPayload(), req.GetSignature()); err != nil {
		return o.untrusted(pulsev1.Reason_REASON_BAD_SIGNATURE, "pulse signature: %v", err)
	}

	// 3. Nonce: issued to this agent, unexpired, for the epoch the store
	// holds. Pulse spends it with the pulse's record, in one conditional
	// write (commit): of concurrent pulses for one epoch, one wins.
	agent, out := v.checkNonce(ctx, o, peer.AgentID, p.GetVerifierNonce(), now)
	if out != nil {
		return out
	}
	o.agent = agent
	pol := v.selectPolicy(agent.ID)
	o.pol = pol
	if pol != nil {
		o.Policy, o.Digest = pol.Name, pol.Digest()
		o.interval = pol.Heartbeat.Interval
	}
	o.update.PolicyDigest = o.Digest

	// 4. Clock: noted here, decided last (settle). Every check on quoted
	// evidence runs whatever the payload's clock says, and a compromise
	// finding wins over CLOCK_DESYNC: a wrong clock is never a shelter.
	skew := v.cfg.ClockSkew
	if pol != nil && pol.ClockSkew > 0 {
		skew = pol.ClockSkew
	}
	claimed := p.GetTime().AsTime()
	if p.GetTime() == nil || absDuration(now.Sub(claimed)) > skew {
		o.clockOff = true
		o.clockMsg = fmt.Sprintf("agent clock is %s off (tolerance %s)", now.Sub(claimed).Round(time.Second), skew)
		if p.GetTime() == nil {
			o.clockMsg = "pulse carries no time"
		}
		o.clockMsg += clockSyncNote(p.GetClockSync())
	}

	// 5. Quote.
	q := req.GetQuote()
	if q == nil {
		if agent.TPM {
			return unquoted(o, agent, p)
		}
		return v.evaluate(ctx, o, pol, p, nil, nil, now)
	}
	if !agent.TPM || len(agent.AKPublic) == 0 {
		return o.untrusted(pulsev1.Reason_REASON_AK_UNKNOWN, "agent has no enrolled attestation key")
	}
	payloadSum := sha256.Sum256(req.GetPayload())
	// The bank is the policy's (SHA-256 unless a policy for named legacy
	// devices says sha1), never the agent's choice.
	bank := eventlog.HashAlg(q.GetPcrBank())
	if want := requiredBank(pol); bank != want {
		return o.untrusted(pulsev1.Reason_REASON_PCR_BANK_NOT_ALLOWED, "quote names the %s bank; %s", bank, bankRule(pol, want))
	}
	pcrs := make(map[uint32][]byte, len(q.GetPcrs()))
	for _, pv := range q.GetPcrs() {
		pcrs[pv.GetIndex()] = pv.GetDigest()
	}
	ak, err := v.parsedAK(agent.AKPublic)
	if err != nil {
		return o.untrusted(quoteReason(err), "enrolled AK: %v", err)
	}
	res, err := ak.Verify(q.GetAttest(), q.GetSignature(), payloadSum[:], pcrs)
	if err != nil {
		return o.untrusted(quoteReason(err), "quote: %v", err)
	}
	// The signer must be an owner-hierarchy primary (Pulse's AK): only
	// then are the reset and restart counts obfuscated per key and the key
	// replaced by TPM2_Clear, so the counts name a boot that cannot be
	// made to repeat (an endorsement-hierarchy key reports real counts,
	// which TPM2_Clear sets back to 0).
	if qn, err := quote.OwnerPrimaryQualifiedName(agent.AKName); err != nil || !bytes.Equal(res.QualifiedSigner, qn) {
		return o.untrusted(pulsev1.Reason_REASON_AK_NOT_OWNER_PRIMARY, "the quote's signer is not a primary key of the owner hierarchy (qualified name %x)", short(res.QualifiedSigner))
	}
	if len(res.Selection) != 1 || eventlog.HashAlg(res.Selection[0].Alg) != bank {
		return o.untrusted(pulsev1.Reason_REASON_PCR_BANK_NOT_ALLOWED, "the quote's PCR selection is not exactly the %s bank the pulse names", bank)
	}
	// The runtime PCR is the one recorded at enrollment from the verifier's
	// configuration, never the payload's choice.
	runtimePCR := agent.RuntimePCR
	if runtimePCR == 0 {
		runtimePCR = store.DefaultRuntimePCR
	}
	if p.GetRuntimePcr() != runtimePCR {
		return o.untrusted(pulsev1.Reason_REASON_RUNTIME_PCR_MISMATCH, "payload names runtime PCR %d; this agent's runtime PCR is %d", p.GetRuntimePcr(), runtimePCR)
	}
	if missing := missingPCRs(res, append(firmwarePCRs[:len(firmwarePCRs):len(firmwarePCRs)], runtimePCR)); len(missing) > 0 {
		return o.untrusted(pulsev1.Reason_REASON_PCR_SELECTION, "quote does not cover PCRs %v", missing)
	}
	o.TPM = true
	// The quoted boot, set before any later step can refuse the pulse:
	// Sentinel records a refused but committed pulse carried are kept
	// under it (sentinelWrite). A TPM Restart (Shutdown(STATE) before a
	// reboot) keeps the reset count but resets the PCRs: the restart
	// count tells it apart. An S3 resume moves it too, and cannot be told
	// from a Restart.
	o.boot = fmt.Sprintf("%d.%d", res.Clock.ResetCount, res.Clock.RestartCount)
	noteLockout(o, p, now)
	// Evidence fields are written only after a verified pulse. The reset
	// baseline belongs to the enrolled AK: a re-enrollment with another AK
	// drops it (store.EnrollAgent), so a new AK is never a reboot.
	hasEvidence := len(agent.FirmwareLogSHA256) > 0
	if hasEvidence {
		if res.Clock.ResetCount != agent.ResetCount {
			o.Notes = append(o.Notes, pulsev1.Reason_REASON_REBOOTED)
		} else if res.Clock.Clock+1000 < agent.TPMClock && res.Clock.Safe {
			return o.untrusted(pulsev1.Reason_REASON_TPM_CLOCK_ROLLBACK, "TPM clock went back from %d ms to %d ms within one boot", agent.TPMClock, res.Clock.Clock)
		}
	}
	if o.clockOff {
		o.clockMsg += tpmClockHint(agent, res, now)
	}

	// 6. Firmware log and runtime log, replayed against the quoted PCRs.
	fw, out := v.verifyFirmware(ctx, o, req, p, bank, res.PCRs, runtimePCR)
	if out != nil {
		return out
	}
	history, err := checkRuntimeHistory(fw.log, runtimePCR)
	if err != nil {
		return o.untrusted(pulsev1.Reason_REASON_FIRMWARE_LOG_MALFORMED, "firmware log: %v", err)
	}
	initial := make([]byte, bank.Hash().Size())
	if fw.runtimeInitial != nil {
		initial = fw.runtimeInitial
	}
	var stored []byte
	var storedCount uint64
	if hasEvidence && res.Clock.ResetCount == agent.ResetCount {
		stored, storedCount = agent.RuntimeRecords, agent.RuntimeCount
	}
	rt, reason, err := v.agents.runtimeEvidence(agent.ID, stored, storedCount, p.GetRuntimeFirstRecord(), p.GetRuntimeRecords(), runtimePCR, initial, res.PCRs[runtimePCR])
	if err != nil {
		return o.untrusted(reason, "runtime log: %v", err)
	}
	if out := v.judgeHostList(ctx, o, p, rt); out != nil {
		return out
	}
	if out := checkClaims(o, p, rt); out != nil {
		return out
	}
	if out := checkKernel(o, p, rt); out != nil {
		return out
	}
	if out := v.checkQuarantine(ctx, o, p); out != nil {
		return out
	}
	o.update.Evidence = true
	o.update.Seq = p.GetSequence()
	o.update.ResetCount = res.Clock.ResetCount
	o.update.RestartCount = res.Clock.RestartCount
	o.update.TPMClock = res.Clock.Clock
	o.update.FirmwareLogSHA256 = p.GetFirmwareLogSha256()
	o.update.AgentVersion = ReportedVersion(p.GetAgentVersion())
	o.update.RuntimeRecords = rt.records
	o.update.RuntimeCount = rt.count
	o.update.RuntimeUnchanged = rt.count == storedCount && len(p.GetRuntimeRecords()) == 0 && len(stored) > 0 && p.GetRuntimeFirstRecord() == storedCount

	// 7-8. Policy over the verified evidence, then state.
	// The boot evidence is shared by every agent booted this way; this
	// pulse's copy adds the runtime PCR's pre-OS history (its runtime PCR).
	boot := *fw.verified.boot
	o.fwBoot = fw.verified
	if out := v.checkSentinel(ctx, o, p, rt); out != nil {
		return out
	}
	boot.RuntimePCRHistory = history
	if out := o.hostVerdict(); out != nil {
		return out
	}
	return v.evaluate(ctx, o, pol, p, &boot, rt, now)
}

// requiredBank is the PCR bank a pulse must quote: the policy's
// measured_boot bank when it names one, else SHA-256.
func requiredBank(pol *policy.Policy) eventlog.HashAlg {
	if pol != nil && pol.MeasuredBoot != nil && strings.EqualFold(pol.MeasuredBoot.Bank, "sha1") {
		return eventlog.AlgSHA1
	}
	return eventlog.AlgSHA256
}

func bankRule(pol *policy.Policy, want eventlog.HashAlg) string {
	if pol == nil {
		return fmt.Sprintf("without a policy only %s is accepted", want)
	}
	return fmt.Sprintf("policy %q requires %s", pol.Name, want)
}

// checkNonce authenticates the payload's verifier nonce and reads the agent,
// whose current epoch the nonce must name. The epoch is spent only when the
// pulse commits (Verifier.commit).
func (v *Verifier) checkNonce(ctx context.Context, o *Outcome, agentID string, raw []byte, now time.Time) (*store.Agent, *Outcome) {
	n, err := v.nonces.Check(agentID, raw, now)
	switch {
	case errors.Is(err, nonce.ErrUnknown):
		return nil, o.untrusted(pulsev1.Reason_REASON_NONCE_UNKNOWN, "nonce was never issued")
	case errors.Is(err, nonce.ErrWrongAgent):
		return nil, o.untrusted(pulsev1.Reason_REASON_NONCE_WRONG_AGENT, "nonce was issued to another agent")
	case errors.Is(err, nonce.ErrExpired):
		// A spent nonce is a replay however old it is.
		if a, err := v.store.GetAgent(ctx, agentID); err == nil && a.NonceEpoch > n.Epoch {
			return nil, o.untrusted(pulsev1.Reason_REASON_NONCE_REPLAYED, "nonce already spent: replayed pulse")
		}
		return nil, o.untrusted(pulsev1.Reason_REASON_NONCE_EXPIRED, "nonce expired at %s", n.Expires.Format(time.RFC3339))
	case err != nil:
		return nil, o.fail(pulsev1.Verdict_VERDICT_UNSPECIFIED, pulsev1.Reason_REASON_INTERNAL, "nonce: %v", err)
	}
	// The steady state reads nothing: the row this process last wrote, if
	// it is at the nonce's epoch (agentcache.go; the commit checks it is
	// still the row). Anything else is read from the store.
	agent := v.agents.get(agentID)
	if agent == nil || agent.NonceEpoch != n.Epoch {
		agent, err = v.store.GetAgent(ctx, agentID)
		if err == nil {
			v.agents.put(agent)
		} else {
			v.agents.drop(agentID)
		}
	}
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, o.untrusted(pulsev1.Reason_REASON_NOT_ENROLLED, "agent is not enrolled")
	case err != nil:
		return nil, o.fail(pulsev1.Verdict_VERDICT_UNSPECIFIED, pulsev1.Reason_REASON_INTERNAL, "nonce store: %v", err)
	case agent.NonceEpoch > n.Epoch:
		return nil, o.untrusted(pulsev1.Reason_REASON_NONCE_REPLAYED, "nonce already spent: replayed pulse")
	case agent.NonceEpoch < n.Epoch:
		return nil, o.untrusted(pulsev1.Reason_REASON_NONCE_UNKNOWN, "nonce names epoch %d, which was never issued", n.Epoch)
	}
	o.epoch = n.Epoch
	return agent, nil
}

// commit spends the pulse's nonce epoch and records its outcome: the
// pulse's only write, of a verdict decided before it (exactly once: an
// outcome decided any other number of times is a bug, refused as
// INTERNAL). A pulse that loses the epoch to a concurrent one becomes a
// replay and writes nothing. It reports false when the pulse is no longer
// the agent's (replayed, or the agent is gone) or the store failed:
// then nothing was written, and nothing may follow (alerts, history,
// isolation: afterPulse runs only after a commit that won).
//
// The commit is conditional on the agent's row being the one the pulse was
// judged against (its version): a pulse judged against a row that changed
// meanwhile (a re-enrolment, an approved update, another replica's pulse,
// a cached row gone stale) writes nothing and is verified again, from its
// request, against the row as it is (up to maxStaleCommits times).
func (v *Verifier) commit(ctx context.Context, o *Outcome) bool {
	for attempt := 1; ; attempt++ {
		won, stale := v.commitOnce(ctx, o)
		if !stale {
			return won
		}
		v.agents.drop(o.agent.ID)
		if attempt == maxStaleCommits || o.req == nil {
			o.fail(pulsev1.Verdict_VERDICT_UNSPECIFIED, pulsev1.Reason_REASON_INTERNAL, "agent %s's record changed under %d verifications in a row; not recorded", o.agent.ID, attempt)
			return false
		}
		fresh := v.verify(ctx, o.peer, o.req, o.now)
		if fresh.agent == nil || fresh.Reason == pulsev1.Reason_REASON_INTERNAL {
			*o = *fresh
			return false
		}
		v.settle(ctx, fresh)
		*o = *fresh
	}
}

// ExplanationRefresh bounds how long the stored explanation may go
// without the clock's error figures of the agent's latest pulse, when they
// are all that changed (docs/decisions.md, "Explanations written when
// they change").
var ExplanationRefresh = 5 * time.Minute

// explain decides the explanation the pulse's commit writes
// (o.update.Explanation) and returns what the store holds after a commit
// that wins. The explanation is written only when it differs from what
// this process's last commit for the agent's current row left (the steady
// state: the commit is then the row's one statement, not a transaction),
// and an explanation that differs only in the clock's error figures (which
// move every pulse on a synchronised host) at most every
// ExplanationRefresh: then its evidence is not even encoded.
func (v *Verifier) explain(o *Outcome) explained {
	last, ok := v.agents.explainedAt(o.agent.ID, o.agent.RowVersion)
	var prev *explained
	if ok {
		prev = &last
	}
	e := v.explanationOf(o, prev)
	if ok && last.coarse == e.coarse && o.now.Sub(last.at) < ExplanationRefresh && !o.now.Before(last.at) {
		o.update.Explanation = nil
		return last
	}
	x := v.withEvidence(o, e)
	digest := x.Digest()
	if ok && bytes.Equal(last.digest, digest) {
		o.update.Explanation = nil
		last.coarse, last.kernelKey, last.kernel = e.coarse, e.kernelKey, x.Kernel
		return last
	}
	o.update.Explanation = x
	return explained{digest: digest, coarse: e.coarse, at: o.now, kernelKey: e.kernelKey, kernel: x.Kernel}
}

// explained is what the store holds of an agent's explanation after a
// commit: its digest, the coarse name of its content (explanation.coarse)
// and when this process last wrote it.
type explained struct {
	digest []byte
	coarse [32]byte
	at     time.Time
	// kernel is the stored kernel summary and kernelKey the payload's
	// kernel report it was made from (kernelInputKey).
	kernelKey [32]byte
	kernel    []byte
}

// maxStaleCommits bounds how often one pulse is verified again because
// the agent's row changed under it.
const maxStaleCommits = 3

// commitOnce is one conditional commit: won, or stale when the row changed
// since the pulse read it (nothing written either way unless won).
func (v *Verifier) commitOnce(ctx context.Context, o *Outcome) (won, stale bool) {
	if o.decisions != 1 {
		o.fail(pulsev1.Verdict_VERDICT_UNSPECIFIED, pulsev1.Reason_REASON_INTERNAL, "verdict decided %d times (last %s/%s); not recorded", o.decisions, o.Verdict, o.Reason)
		return false, false
	}
	o.update.Verdict, o.update.Reason, o.update.Message = int32(o.Verdict), int32(o.Reason), o.Message
	o.update.RowVersion, o.update.NextRowVersion = o.agent.RowVersion, store.NewRowVersion()
	ex := v.explain(o)
	o.update.Sentinel = v.sentinelWrite(ctx, o)
	st, err := v.store.CommitPulse(ctx, o.agent.ID, o.epoch, o.update)
	if err != nil || st != store.NonceOK {
		v.agents.drop(o.agent.ID)
	}
	switch {
	case errors.Is(err, store.ErrFirmwareLogGone):
		// The log was collected between the pulse's check and its commit
		// (the pulse had only a parse): nothing written; ask for it.
		claimed := o.update.FirmwareLog.SHA256
		o.lost(pulsev1.Reason_REASON_FIRMWARE_LOG_MISSING, fmt.Sprintf("verifier no longer holds firmware log %x; asked the agent to send it", claimed[:8]))
		o.sendFirmwareLog = true
	case errors.Is(err, store.ErrNotFound):
		o.lost(pulsev1.Reason_REASON_NOT_ENROLLED, "agent is not enrolled")
	case err != nil:
		o.fail(pulsev1.Verdict_VERDICT_UNSPECIFIED, pulsev1.Reason_REASON_INTERNAL, "nonce store: %v", err)
	case st == store.NonceOK:
		// What the commit wrote is the row as it is now: the next pulse
		// reads it from the cache.
		next := o.agent.AfterCommit(o.update)
		v.agents.put(&next)
		v.agents.putExplained(o.agent.ID, next.RowVersion, ex)
		v.rememberSentinel(o, next.RowVersion)
		// The response's next nonce names the epoch after the spend (o.agent
		// is this pulse's own read of the row).
		o.agent.NonceEpoch = o.epoch + 1
		return true, false
	case st == store.NonceStale:
		return false, true
	case st == store.NonceReplayed:
		o.lost(pulsev1.Reason_REASON_NONCE_REPLAYED, "nonce already spent: replayed pulse")
	default:
		o.lost(pulsev1.Reason_REASON_NONCE_UNKNOWN, fmt.Sprintf("nonce names epoch %d, which the store no longer holds", o.epoch))
	}
	return false, false
}

// lost turns a pulse whose commit wrote nothing into a rejection that
// carries none of its evidence.
func (o *Outcome) lost(r pulsev1.Reason, msg string) {
	o.untrusted(r, "%s", msg)
	o.agent = nil
	o.Findings, o.Notes, o.Isolate = nil, nil, false
	o.lkgAlert, o.streakAlert, o.update.LKG, o.update.FirmwareLog = nil, nil, nil, nil
	o.update.Evidence, o.sendFirmwareLog = false, false
}

// MaxQuarantined bounds the addresses an agent may report dropping.
const MaxQuarantined = 4096

// quarantinedList validates the agent's reported Shield list: every entry
// is parsed as an IP address (operators see it in the CLI and dashboard, so
// nothing else may pass) and stored in canonical form.
func quarantinedList(in []string) (string, error) {
	if len(in) > MaxQuarantined {
		return "", fmt.Errorf("%d addresses exceed the limit of %d", len(in), MaxQuarantined)
	}
	out := make([]string, 0, len(in))
	for i, s := range in {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return "", fmt.Errorf("entry %d is not an IP address", i)
		}
		out = append(out, a.String())
	}
	return strings.Join(out, ","), nil
}

func absDuration(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

// tpmClockHint uses the TPM's clock (which the agent cannot set) to say
// whether the agent's wall clock is wrong: when the TPM's elapsed time since
// the last pulse agrees with the verifier's, the host clock is misset rather
// than the pulse being old.
func tpmClockHint(a *store.Agent, res *quote.Result, now time.Time) string {
	if a.LastPulseAt.IsZero() || res.Clock.ResetCount != a.ResetCount || res.Clock.Clock < a.TPMClock {
		return ""
	}
	tpmElapsed := time.Duration(res.Clock.Clock-a.TPMClock) * time.Millisecond
	wallElapsed := now.Sub(a.LastPulseAt)
	if absDuration(tpmElapsed-wallElapsed) < 5*time.Second {
		return "; the TPM clock advanced as the verifier's did, so the host's wall clock is misset (not a stale pulse)"
	}
	return fmt.Sprintf("; the TPM clock advanced %s while the verifier's advanced %s", tpmElapsed.Round(time.Second), wallElapsed.Round(time.Second))
}

func missingPCRs(res *quote.Result, want []uint32) []uint32 {
	var missing []uint32
	for _, i := range want {
		if _, ok := res.PCRs[i]; !ok {
			missing = append(missing, i)
		}
	}
	return missing
}

func quoteReason(err error) pulsev1.Reason {
	switch {
	case errors.Is(err, quote.ErrSignature), errors.Is(err, quote.ErrMalformedSignature):
		return pulsev1.Reason_REASON_QUOTE_SIGNATURE
	case errors.Is(err, quote.ErrMagic), errors.Is(err, quote.ErrNotQuote):
		return pulsev1.Reason_REASON_QUOTE_NOT_TPM_GENERATED
	case errors.Is(err, quote.ErrQualifyingData):
		return pulsev1.Reason_REASON_QUALIFYING_DATA
	case errors.Is(err, quote.ErrPCRDigest):
		return pulsev1.Reason_REASON_PCR_DIGEST
	case errors.Is(err, quote.ErrPCRMissing):
		return pulsev1.Reason_REASON_PCR_SELECTION
	case errors.Is(err, quote.ErrMalformedAK), errors.Is(err, quote.ErrUnsupportedKey), errors.Is(err, quote.ErrAKNotRestricted):
		return pulsev1.Reason_REASON_AK_UNKNOWN
	}
	return pulsev1.Reason_REASON_QUOTE_MALFORMED
}

type firmwareResult struct {
	verified       *verifiedLog
	runtimeInitial []byte
	log            *eventlog.Log
}

func (v *Verifier) verifyFirmware(ctx context.Context, o *Outcome, req *pulsev1.PulseRequest, p *pulsev1.PulsePayload,
	bank eventlog.HashAlg, quoted map[uint32][]byte, runtimePCR uint32) (*firmwareResult, *Outcome) {
	claimed := p.GetFirmwareLogSha256()
	if len(claimed) != sha256.Size {
		return nil, o.untrusted(pulsev1.Reason_REASON_FIRMWARE_LOG_MISSING, "payload names no firmware log digest")
	}
	var key [32]byte
	copy(key[:], claimed)
	raw := req.GetFirmwareLog()
	if len(raw) > 0 {
		if len(raw) > MaxFirmwareLogBytes {
			return nil, o.untrusted(pulsev1.Reason_REASON_FIRMWARE_LOG_MALFORMED, "firmware log of %d bytes exceeds %d", len(raw), MaxFirmwareLogBytes)
		}
		if sum := sha256.Sum256(raw); sum != key {
			return nil, o.untrusted(pulsev1.Reason_REASON_FIRMWARE_LOG_MALFORMED, "firmware log sent does not match the signed digest")
		}
	}
	// The log is parsed, verified against the quote and replayed before
	// anything about it is kept: a log that does not verify is neither
	// stored nor cached.
	sent := len(raw) > 0
	if !sent {
		raw = nil
	}
	var err error
	e := v.fw.lookup(key)
	cached := e != nil
	if e == nil {
		if !sent {
			raw, err = v.store.GetFirmwareLog(ctx, claimed)
			if errors.Is(err, store.ErrNotFound) {
				o.sendFirmwareLog = true
				return nil, o.untrusted(pulsev1.Reason_REASON_FIRMWARE_LOG_MISSING, "verifier does not hold firmware log %x; asked the agent to send it", claimed[:8])
			}
			if err != nil {
				return nil, o.fail(pulsev1.Verdict_VERDICT_UNSPECIFIED, pulsev1.Reason_REASON_INTERNAL, "firmware log store: %v", err)
			}
		}
		if e, err = parseFirmwareLog(key, raw); err != nil {
			return nil, o.untrusted(pulsev1.Reason_REASON_FIRMWARE_LOG_MALFORMED, "firmware log: %v", err)
		}
	}
	fwPCRs := make(map[uint32][]byte, len(firmwarePCRs))
	for _, i := range firmwarePCRs {
		if i == runtimePCR {
			continue
		}
		if val, ok := quoted[i]; ok {
			fwPCRs[i] = val
		}
	}
	ver, err := v.fw.verify(e, bank, fwPCRs, firmwarePCRs)
	if err != nil {
		if errors.Is(err, eventlog.ErrReplayMismatch) || errors.Is(err, eventlog.ErrDataDigestMismatch) {
			return nil, o.untrusted(pulsev1.Reason_REASON_FIRMWARE_LOG_REPLAY, "firmware log: %v", err)
		}
		return nil, o.untrusted(pulsev1.Reason_REASON_FIRMWARE_LOG_MALFORMED, "firmware log: %v", err)
	}
	replayed, err := v.fw.replay(e, bank)
	if err != nil {
		return nil, o.untrusted(pulsev1.Reason_REASON_FIRMWARE_LOG_MALFORMED, "firmware log: %v", err)
	}
	// Verified: the log is recorded as the agent's (stored if no row holds
	// it, within the per-agent quota) when the agent did not boot with it at
	// its last verified pulse, or sent it to a replica that had no parse of
	// it (the row may be missing: that is when the agent is asked for it).
	// Checked here, written by the pulse's commit (store.CommitPulse): a
	// pulse that loses its epoch references nothing. The steady state
	// writes nothing.
	if !bytes.Equal(claimed, o.agent.FirmwareLogSHA256) || (sent && !cached) {
		q := firmwareLogQuota(v.cfg)
		err := v.store.CheckFirmwareLogReference(ctx, o.agent.ID, claimed, raw != nil, v.now(), q)
		switch {
		case errors.Is(err, store.ErrQuota):
			return nil, o.untrusted(pulsev1.Reason_REASON_FIRMWARE_LOG_QUOTA, "firmware log %x not kept: %v", claimed[:8], err)
		case errors.Is(err, store.ErrFirmwareLogGone):
			// Collected while this replica held its parse: ask for it.
			o.sendFirmwareLog = true
			return nil, o.untrusted(pulsev1.Reason_REASON_FIRMWARE_LOG_MISSING, "verifier no longer holds firmware log %x; asked the agent to send it", claimed[:8])
		case err != nil:
			return nil, o.fail(pulsev1.Verdict_VERDICT_UNSPECIFIED, pulsev1.Reason_REASON_INTERNAL, "firmware log store: %v", err)
		}
		o.update.FirmwareLog = &store.FirmwareLogWrite{SHA256: claimed, Log: raw, Quota: q}
	}
	v.fw.add(e)
	return &firmwareResult{verified: ver, runtimeInitial: replayed[runtimePCR], log: e.log}, nil
}

// checkClaims compares what the payload claims with the replayed runtime
// log: the running binary and every pinned eBPF program must be the latest
// measured ones.
func checkClaims(o *Outcome, p *pulsev1.PulsePayload, rt *runtimeEvidence) *Outcome {
	if rt.binary == nil {
		return o.untrusted(pulsev1.Reason_REASON_CLAIM_MISMATCH, "runtime log holds no agent binary measurement")
	}
	if !bytes.Equal(rt.binary.SHA256, p.GetAgentBinarySha256()) {
		return o.untrusted(pulsev1.Reason_REASON_CLAIM_MISMATCH, "running agent binary %x is not the measured one %x",
			short(p.GetAgentBinarySha256()), short(rt.binary.SHA256))
	}
	if d := p.GetAgentBinaryDiskSha256(); len(d) > 0 && !bytes.Equal(d, p.GetAgentBinarySha256()) {
		return o.untrusted(pulsev1.Reason_REASON_AGENT_BINARY_MISMATCH, "agent binary %q was replaced on disk (%x now, %x running)",
			p.GetAgentBinaryPath(), short(d), short(p.GetAgentBinarySha256()))
	}
	for _, pin := range p.GetBpf().GetPinned() {
		switch pin.GetProblemKind() {
		case pulsev1.PinProblem_PIN_PROBLEM_MISSING, pulsev1.PinProblem_PIN_PROBLEM_DETACHED:
			return o.untrusted(pulsev1.Reason_REASON_BPF_PROGRAM_MISSING, "eBPF program %q is no longer pinned: %q", pin.GetName(), pin.GetProblem())
		case pulsev1.PinProblem_PIN_PROBLEM_REPLACED, pulsev1.PinProblem_PIN_PROBLEM_UNEXPECTED:
			return o.untrusted(pulsev1.Reason_REASON_BPF_PROGRAM_CHANGED, "eBPF program %q was replaced: %q", pin.GetName(), pin.GetProblem())
		}
		m, ok := rt.bpf[pin.GetName()]
		if !ok {
			return o.untrusted(pulsev1.Reason_REASON_CLAIM_MISMATCH, "pinned eBPF program %q was never measured into the runtime log", pin.GetName())
		}
		if !bytes.Equal(m.insnSHA256, pin.GetInsnSha256()) || (len(m.tag) > 0 && !bytes.Equal(m.tag, pin.GetTag())) {
			return o.untrusted(pulsev1.Reason_REASON_BPF_PROGRAM_CHANGED, "pinned eBPF program %q differs from its measurement", pin.GetName())
		}
	}
	return nil
}

func short(b []byte) []byte {
	if len(b) > 8 {
		return b[:8]
	}
	return b
}

// evaluate applies the selected policy to the verified evidence (fw and rt
// are nil for mTLS-only pulses) and sets the final verdict.
func (v *Verifier) evaluate(ctx context.Context, o *Outcome, pol *policy.Policy, p *pulsev1.PulsePayload, boot *policy.BootEvidence, rt *runtimeEvidence, now time.Time) *Outcome {
	if pol == nil {
		return o.untrusted(pulsev1.Reason_REASON_NO_POLICY, "no policy selects agent %q in partition %q (Pulse fails closed)", o.agent.ID, v.partitionOf(o.agent.ID))
	}
	ev := buildEvidence(o.agent, v.partitionOf(o.agent.ID), o.TPM, p, boot, rt)
	ev.Clock = clockEvidence(p.GetClockSync())
	o.evidence = &ev
	res := pol.Evaluate(ev, now)
	for _, f := range res.Findings {
		o.Findings = append(o.Findings, &pulsev1.Finding{Rule: f.Rule, File: f.File, Line: uint32(f.Line),
			Enforce: f.Mode == policy.Enforce, Severity: uint32(f.Severity), Message: f.Message})
	}
	if !o.TPM && pol.TPM == policy.TPMRequired {
		return o.untrusted(pulsev1.Reason_REASON_TPM_REQUIRED, "policy %q requires a TPM quote (%s)", pol.Name, pol.TPMRule.Pos)
	}
	if res.Denied {
		o.Isolate = res.Isolate
		first := firstEnforced(res.Findings)
		return o.untrusted(pulsev1.Reason_REASON_POLICY_DENIED, "policy %q denied: %s", pol.Name, first)
	}
	if !o.TPM {
		o.update.Evidence = true
		o.update.Seq = p.GetSequence()
		return v.accept(ctx, o, pol, pulsev1.Verdict_VERDICT_DEGRADED, "accepted without a TPM (mTLS-only), as policy allows", now)
	}
	return v.accept(ctx, o, pol, pulsev1.Verdict_VERDICT_TRUSTED, "quote, logs and policy verified", now)
}

// accept decides the verdict of a pulse every check accepted, once: the
// last-known-good (a TRUSTED pulse's binaries and eBPF programs) may still
// make it UNTRUSTED, then the clock, decided last, CLOCK_DESYNC (or its
// persistent escalation). A compromise finding always wins over the clock:
// a wrong clock is never a shelter. What the pulse writes (the new
// last-known-good) is decided with it; the commit writes it.
func (v *Verifier) accept(ctx context.Context, o *Outcome, pol *policy.Policy, verdict pulsev1.Verdict, msg string, now time.Time) *Outcome {
	if verdict == pulsev1.Verdict_VERDICT_TRUSTED && o.evidence != nil && o.evidence.Runtime != nil {
		if out := v.checkLastKnownGood(ctx, o, pol, now); out != nil {
			return out
		}
	}
	if o.clockOff {
		// A pulse with the clock off does not move the last-known-good.
		o.update.LKG = nil
		o.desync = true
		streak := o.agent.DesyncStreak + 1
		if n := orDefault(v.cfg.Pulses.ClockDesyncEscalateAfter, config.DefaultClockDesyncEscalateAfter); int(streak) > n {
			return o.untrusted(pulsev1.Reason_REASON_CLOCK_DESYNC_PERSISTENT, "%d pulses in a row with the clock off (%d tolerated); last: %s", streak, n, o.clockMsg)
		}
		return o.fail(pulsev1.Verdict_VERDICT_CLOCK_DESYNC, pulsev1.Reason_REASON_CLOCK_DESYNC, "%s", o.clockMsg)
	}
	if out := v.plannedStop(ctx, o, now); out != nil {
		return out
	}
	return o.fail(verdict, pulsev1.Reason_REASON_OK, "%s", msg)
}

func firstEnforced(fs []policy.Finding) string {
	for _, f := range fs {
		if f.Mode == policy.Enforce {
			return f.String()
		}
	}
	return "denied"
}

// bootEvidence is the policy's view of a verified firmware log: replayed
// events only. Built once per verified log and shared (read-only).
func bootEvidence(fw *eventlog.Verified) *policy.BootEvidence {
	b := &policy.BootEvidence{Bank: fw.Bank.String(), PCRs: map[int]string{}}
	for i, val := range fw.PCRs {
		b.PCRs[int(i)] = hex.EncodeToString(val)
	}
	if fw.SecureBoot.Known {
		on := fw.SecureBoot.Enabled
		b.SecureBoot = &on
	}
	for _, e := range fw.Events {
		for _, d := range e.Digests {
			if d.Alg == fw.Bank {
				b.Events = append(b.Events, policy.BootEvent{Seq: e.Seq, PCR: int(e.PCR), Type: e.Type.String(), Digest: hex.EncodeToString(d.Value)})
			}
		}
	}
	return b
}

// buildEvidence turns what was verified into the policy's input. Only
// replayed firmware events and replayed runtime records go in; claims that
// were not checked against the quote never do.
func buildEvidence(a *store.Agent, partition string, quoted bool, p *pulsev1.PulsePayload, boot *policy.BootEvidence, rt *runtimeEvidence) policy.Evidence {
	ev := policy.Evidence{AgentID: a.ID, Partition: partition, TPM: quoted, Boot: boot}
	if rt != nil {
		r := &policy.RuntimeEvidence{BPFPrograms: map[string]string{}}
		if rt.binary != nil {
			r.AgentBinarySHA256 = hex.EncodeToString(rt.binary.SHA256)
		}
		for _, b := range rt.binaries {
			r.AgentBinaries = append(r.AgentBinaries, policy.AgentBinaryRecord{SHA256: hex.EncodeToString(b.SHA256), SelfMeasured: b.SelfMeasured})
		}
		// The last-known-good build, so agent_binary's update windows judge
		// a switch (the verifier's records: operator-approved history).
		r.PreviousAgentBinarySHA256 = a.LKG.BinarySHA256
		for _, pin := range p.GetBpf().GetPinned() {
			if m, ok := rt.bpf[pin.GetName()]; ok {
				r.BPFPrograms[pin.GetName()] = hex.EncodeToString(m.insnSHA256)
				if r.BPFObjects == nil {
					r.BPFObjects = map[string]string{}
				}
				r.BPFObjects[pin.GetName()] = hex.EncodeToString(m.objectSHA256)
			}
		}
		r.FortressActive = judgeFortress(p.GetFortress(), rt).active
		ev.Runtime = r
	}
	return ev
}

// parsedAK returns the parsed attestation key, cached by its public area:
// parsing a TPMT_PUBLIC is a reflection-heavy unmarshal worth doing once.
func (v *Verifier) parsedAK(akPublic []byte) (*quote.AK, error) {
	if ak, ok := v.aks.Load(string(akPublic)); ok {
		return ak.(*quote.AK), nil
	}
	ak, err := quote.ParseAK(akPublic)
	if err != nil {
		return nil, err
	}
	v.aks.Store(string(akPublic), ak)
	return ak, nil
}
