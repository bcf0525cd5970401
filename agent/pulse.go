package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/pulse-attest/pulse/agent/runtimelog"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/tpm"
	"github.com/pulse-attest/pulse/tpm/cel"
	"github.com/pulse-attest/pulse/tpm/quote"
)

// errNeedEnroll is returned by pulse when the verifier no longer knows the
// agent's enrollment (its store was reset, or the AK changed).
var errNeedEnroll = errors.New("verifier asks for enrollment")

// maxPendingEvents bounds the Sentinel events kept while the verifier is away.
const maxPendingEvents = 1024

// quoteAttempts bounds the re-reads when a PCR changes between reading the
// values and quoting them.
const quoteAttempts = 3

// pulse sends one pulse on s, retrying once at once when the verifier
// refused it for a reason a fresh attempt fixes (nonce spent or expired, a
// PCR extended between read and quote).
func (a *Agent) pulse(ctx context.Context, s *session) error {
	resp, err := a.pulseAttempt(ctx, s)
	if err != nil {
		return err
	}
	if retryable(resp.GetReason()) {
		a.log.Named("pulse").Info("verifier refused the pulse for a transient reason; retrying once",
			"reason", resp.GetReason().String(), "message", resp.GetMessage())
		if resp, err = a.pulseAttempt(ctx, s); err != nil {
			return err
		}
	}
	switch resp.GetReason() {
	case pulsev1.Reason_REASON_NOT_ENROLLED, pulsev1.Reason_REASON_AK_UNKNOWN:
		return fmt.Errorf("%w: %s: %s", errNeedEnroll, resp.GetReason(), resp.GetMessage())
	}
	return nil
}

func retryable(r pulsev1.Reason) bool {
	switch r {
	case pulsev1.Reason_REASON_PCR_DIGEST, pulsev1.Reason_REASON_NONCE_EXPIRED,
		pulsev1.Reason_REASON_NONCE_UNKNOWN, pulsev1.Reason_REASON_NONCE_REPLAYED:
		return true
	}
	return false
}

// pulseAttempt builds, signs, quotes and sends one pulse and records what
// the verifier answered.
func (a *Agent) pulseAttempt(ctx context.Context, s *session) (*pulsev1.PulseResponse, error) {
	nonce, vstate, err := a.takeNonce(ctx, s)
	if err != nil {
		return nil, err
	}
	in, events, err := a.collect(ctx, s)
	if err != nil {
		return nil, err
	}
	in.VerifierNonce = nonce.GetValue()
	in.PlannedStop = a.plannedStop(in.SentinelEvents)
	if vstate != nil && in.BPF != nil && bytes.Equal(vstate.GetHostProgramsSha256(), in.BPF.GetHostProgramsSha256()) {
		// The verifier holds this host program list already.
		in.BPF.HostPrograms = nil
	}

	req, logStarted, err := a.buildRequest(in, s, vstate)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	start := time.Now()
	resp, err := s.client.Pulse(cctx, req)
	if err != nil {
		return nil, fmt.Errorf("send pulse: %w", err)
	}
	a.counters.pulsesSent.Add(1)
	a.ackEvents(events)
	a.ackSentinel(resp)
	if resp.GetVerdict() == pulsev1.Verdict_VERDICT_TRUSTED || resp.GetVerdict() == pulsev1.Verdict_VERDICT_DEGRADED {
		a.mu.Lock()
		a.logStarted = logStarted
		a.mu.Unlock()
	}
	if len(req.GetFirmwareLog()) > 0 {
		a.mu.Lock()
		a.sendFirmware = false
		a.mu.Unlock()
	}
	a.noteNonce(resp.GetNextNonce(), resp.GetState())
	a.noteVerdict(resp, in.Sequence, time.Since(start))
	return resp, nil
}

// collect gathers the claims of one pulse (everything but the runtime log,
// which is read under the log's lock together with the quote).
func (a *Agent) collect(ctx context.Context, s *session) (*PayloadInput, int, error) {
	exe, err := a.exe.Digest()
	if err != nil {
		return nil, 0, fmt.Errorf("hash running binary: %w", err)
	}
	disk, err := a.disk.Digest()
	if err != nil {
		return nil, 0, fmt.Errorf("hash agent binary on disk: %w", err)
	}
	snap, err := a.bpf.Snapshot(ctx)
	if err != nil {
		a.log.Warn("bpf snapshot failed", "error", err)
		snap = &pulsev1.BPFSnapshot{}
	}
	fortress, err := a.bpf.Fortress(ctx)
	if err != nil {
		a.log.Warn("fortress status failed", "error", err)
		fortress = &pulsev1.FortressStatus{Reason: "status unavailable: " + err.Error()}
	}
	if err := a.measureRuntime(ctx, exe, fortress); err != nil {
		return nil, 0, err
	}
	events := a.takeEvents(ctx)
	var quarantined []string
	for _, addr := range a.bpf.Quarantined() {
		quarantined = append(quarantined, addr.String())
	}
	seq, err := a.state.NextSequence()
	if err != nil {
		return nil, 0, err
	}
	return &PayloadInput{
		AgentID:               s.agentID,
		Partition:             a.cfg.Partition,
		Version:               Version,
		Time:                  a.now(),
		Sequence:              seq,
		LeafKeySHA256:         s.leafKey[:],
		AgentBinarySHA256:     exe,
		AgentBinaryPath:       a.exePath,
		AgentBinaryDiskSHA256: disk,
		TPM:                   a.tpm != nil,
		RuntimePCR:            a.cfg.RuntimePCR,
		RuntimeBank:           tpm.AlgSHA256,
		FirmwareLogSHA256:     a.fwDigest,
		BPF:                   snap,
		Fortress:              fortress,
		Sentinel:              a.sentinelReport(),
		SentinelEvents:        events,
		Quarantined:           quarantined,
		Health:                a.health(),
		ClockSync:             a.clockSync(),
	}, len(events), nil
}

// measureRuntime keeps the runtime log's latest records equal to what the
// pulse claims: the running binary (self-measured again if the log lost it,
// e.g. a fresh log after a TPM reset under the running agent), each of the
// agent's eBPF programs and the Fortress state, appending a record whenever
// one differs from the latest of this boot.
func (a *Agent) measureRuntime(ctx context.Context, exe []byte, fortress *pulsev1.FortressStatus) error {
	sum, err := a.rtlog.Latest()
	if err != nil {
		return err
	}
	if sum.Agent == nil || !bytes.Equal(sum.Agent.SHA256[:], exe) {
		if err := a.selfMeasure(exe); err != nil {
			return err
		}
	}
	progs, err := a.bpf.Measured(ctx)
	if err != nil {
		a.log.Warn("bpf measured programs unavailable", "error", err)
		progs = nil
	}
	if _, isDisabled := a.bpf.(DisabledBPF); isDisabled && len(progs) == 0 {
		return nil
	}
	for _, p := range progs {
		if p == nil {
			continue
		}
		if old, ok := sum.Programs[p.Name]; ok && sameProgram(old, p) {
			continue
		}
		rec, err := a.rtlog.Append(p)
		if err != nil {
			return fmt.Errorf("measure ebpf program %s: %w", p.Name, err)
		}
		a.log.Info("measured ebpf program into the runtime log", "program", p.Name, "insn_sha256", hex.EncodeToString(p.InsnSHA256[:]), "record", rec)
	}
	if sum.Fortress == nil || sum.Fortress.Active != fortress.GetActive() {
		f := &cel.FortressState{Active: fortress.GetActive(), Mechanism: FortressMechanism, Reason: fortress.GetReason()}
		rec, err := a.rtlog.Append(f)
		if err != nil {
			return fmt.Errorf("measure fortress state: %w", err)
		}
		a.log.Info("measured fortress state into the runtime log", "active", f.Active, "reason", f.Reason, "record", rec)
	}
	return nil
}

// FortressMechanism names how Fortress supervises the agent, in its
// runtime-log records.
const FortressMechanism = "bpf-lsm"

// sameProgram reports whether two measurements are of the same program.
func sameProgram(a, b *cel.EBPFProgram) bool {
	return a.Name == b.Name && a.ProgramType == b.ProgramType && a.AttachPoint == b.AttachPoint &&
		a.InsnSHA256 == b.InsnSHA256 && a.Tag == b.Tag && bytes.Equal(a.ObjectSHA256, b.ObjectSHA256) &&
		a.KernelRelease == b.KernelRelease
}

// takeEvents drains Sentinel and returns every event not yet delivered.
func (a *Agent) takeEvents(ctx context.Context) []*pulsev1.SentinelEvent {
	if src, ok := a.bpf.(SentinelSource); ok {
		return a.readSentinel(ctx, src)
	}
	ev, err := a.bpf.SentinelEvents(ctx)
	if err != nil {
		a.log.Warn("sentinel events unavailable", "error", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.pending = append(a.pending, ev...)
	if n := len(a.pending) - maxPendingEvents; n > 0 {
		a.log.Warn("dropping oldest sentinel events the verifier could not receive", "dropped", n)
		a.pending = slices.Delete(a.pending, 0, n)
	}
	return slices.Clone(a.pending)
}

// ackEvents forgets the first n pending events: a pulse carrying them was answered.
func (a *Agent) ackEvents(n int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if n > len(a.pending) {
		n = len(a.pending)
	}
	a.pending = slices.Delete(a.pending, 0, n)
}

// buildRequest reads the runtime log and, holding its lock so no record is
// appended in between, signs the payload and quotes the PCRs over it.
func (a *Agent) buildRequest(in *PayloadInput, s *session, vstate *pulsev1.VerifierState) (*pulsev1.PulseRequest, time.Time, error) {
	req := &pulsev1.PulseRequest{}
	var logStarted time.Time
	err := a.rtlog.View(func(v *runtimelog.View) error {
		from := a.recordsFrom(vstate, v.Count())
		a.mu.Lock()
		if !v.Started().Equal(a.logStarted) {
			// A new log began (the TPM was reset under the running agent):
			// whatever the verifier acknowledged was another log's.
			from = 0
		}
		a.mu.Unlock()
		logStarted = v.Started()
		recs, err := v.Records(from)
		if err != nil {
			return err
		}
		in.RuntimeFirstRecord, in.RuntimeRecords = from, recs
		signed, err := BuildSigned(in, s.signer)
		if err != nil {
			return err
		}
		req.Payload, req.Signature = signed.Payload, signed.Signature
		if a.tpm == nil {
			return nil
		}
		q, err := a.quote(signed.Payload)
		if a.unquotedInLockout(in, err) {
			return nil
		}
		if err != nil {
			return err
		}
		req.Quote = q
		return nil
	})
	if err != nil {
		return nil, logStarted, err
	}
	if a.wantsFirmwareLog(vstate) {
		req.FirmwareLog = a.fwLog
	}
	return req, logStarted, nil
}

// recordsFrom is the first runtime record to send: what the verifier has
// acknowledged for this boot, or everything when it holds another boot's
// log, more records than exist, or when there is no TPM to tell boots apart.
func (a *Agent) recordsFrom(vs *pulsev1.VerifierState, count uint64) uint64 {
	if vs == nil || a.tpm == nil {
		return 0
	}
	a.mu.Lock()
	reset, known := a.resetCount, a.resetKnown
	a.mu.Unlock()
	if !known || vs.GetBootResetCount() != reset || vs.GetRuntimeRecordsAcked() > count {
		return 0
	}
	return vs.GetRuntimeRecordsAcked()
}

// wantsFirmwareLog reports whether the pulse must carry the whole firmware
// log: the verifier lacks this exact log or asked for it.
func (a *Agent) wantsFirmwareLog(vs *pulsev1.VerifierState) bool {
	if len(a.fwLog) == 0 {
		return false
	}
	a.mu.Lock()
	asked := a.sendFirmware
	a.mu.Unlock()
	return asked || vs == nil || vs.GetSendFirmwareLog() || !bytes.Equal(vs.GetFirmwareLogSha256(), a.fwDigest)
}

// quotedPCRs are PCRs 0-9 and the runtime PCR.
func (a *Agent) quotedPCRs() []uint32 {
	return append(slices.Clone(quotedFirmwarePCRs), a.cfg.RuntimePCR)
}

// quote quotes the PCRs over SHA-256(payload) and sends the values read
// just before. The agent checks its own quote: when a PCR moved between
// the read and the quote (something extended it), it reads and quotes
// again, so the verifier gets values that match the quoted digest.
func (a *Agent) quote(payload []byte) (*pulsev1.Quote, error) {
	sum := sha256.Sum256(payload)
	return a.quoteData(sum[:], a.quotedPCRs())
}

// quoteData quotes pcrs (SHA-256 bank) over qualifying data, verifying the
// quote against the values read just before and retrying when they moved.
func (a *Agent) quoteData(data []byte, pcrs []uint32) (*pulsev1.Quote, error) {
	var lastErr error
	for attempt := 0; attempt < quoteAttempts; attempt++ {
		vals, err := a.tpm.ReadPCRs(tpm.AlgSHA256, pcrs)
		if err != nil {
			return nil, fmt.Errorf("read pcrs: %w", err)
		}
		attest, sig, err := a.tpm.Quote(a.ak, pcrs, data)
		if err != nil {
			return nil, err
		}
		res, err := quote.Verify(a.ak.Public(), attest, sig, data, vals)
		if errors.Is(err, quote.ErrPCRDigest) {
			lastErr = err
			a.log.Named("pulse").Debug("a pcr changed between read and quote; quoting again", "attempt", attempt+1)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("own quote does not verify: %w", err)
		}
		a.noteClock(res.Clock)
		q := &pulsev1.Quote{Attest: attest, Signature: sig, PcrBank: uint32(tpm.AlgSHA256)}
		for _, p := range pcrs {
			q.Pcrs = append(q.Pcrs, &pulsev1.PCRValue{Index: p, Digest: vals[p]})
		}
		return q, nil
	}
	return nil, fmt.Errorf("pcrs kept changing while quoting: %w", lastErr)
}

// noteClock remembers the TPM's reset count (the boot the runtime log
// belongs to) from a quote.
func (a *Agent) noteClock(c quote.ClockInfo) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.resetKnown && c.ResetCount != a.resetCount {
		a.log.Warn("tpm reset count changed under the running agent (tpm reset)", "reset_count", c.ResetCount, "previous", a.resetCount)
	}
	a.resetCount, a.resetKnown = c.ResetCount, true
}

// noteVerdict logs the verifier's answer: changes of verdict at info,
// every refusal at warn.
func (a *Agent) noteVerdict(resp *pulsev1.PulseResponse, seq uint64, rtt time.Duration) {
	log := a.log.Named("pulse")
	a.mu.Lock()
	prevV, prevR := a.lastVerdict, a.lastReason
	a.lastVerdict, a.lastReason = resp.GetVerdict(), resp.GetReason()
	a.mu.Unlock()
	args := []any{"verdict", resp.GetVerdict().String(), "reason", resp.GetReason().String(), "sequence", seq, "rtt_ms", rtt.Milliseconds()}
	for _, n := range resp.GetNotes() {
		args = append(args, "note", n.String())
	}
	switch resp.GetVerdict() {
	case pulsev1.Verdict_VERDICT_TRUSTED, pulsev1.Verdict_VERDICT_DEGRADED:
		if prevV != resp.GetVerdict() || prevR != resp.GetReason() {
			log.Info("pulse accepted", args...)
		} else {
			log.Debug("pulse accepted", args...)
		}
	case pulsev1.Verdict_VERDICT_OFFLINE:
		log.Info("verifier recorded the planned stop", append(args, "message", resp.GetMessage())...)
	default:
		args = append(args, "message", resp.GetMessage())
		log.Warn("pulse not trusted", args...)
	}
	for _, f := range resp.GetFindings() {
		log.Info("policy finding", "rule", f.GetRule(), "file", f.GetFile(), "line", f.GetLine(), "severity", f.GetSeverity(), "enforce", f.GetEnforce(), "message", f.GetMessage())
	}
}
