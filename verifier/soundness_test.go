package verifier_test

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/simulator/simtest"
	"github.com/pulse-attest/pulse/tpm/cel"
	"github.com/pulse-attest/pulse/tpm/eventlog"
	"github.com/pulse-attest/pulse/verifier/store"
	"github.com/pulse-attest/pulse/verifier/verifiertest"
)

// Soundness tests: each is an attack a root user on an enrolled device
// can mount with its own TPM, mTLS key and agent code, next to the honest
// pulse of the same device. The honest pulse is TRUSTED; the attack is
// refused with its own reason.

// enroll returns an agent on the env's TPM, enrolled, with its binary
// measured and a nonce in hand.
func (e *env) enroll(id string) *verifiertest.Client {
	e.t.Helper()
	a := e.agent(id, e.openTPM(e.sw))
	if res := a.Enroll(); !res.GetEnrolled() {
		e.t.Fatalf("enroll %s: %s %s", id, res.GetReason(), res.GetMessage())
	}
	a.MeasureBinary()
	a.Challenge()
	return a
}

// enrolled is enroll, TRUSTED once.
func (e *env) enrolled(id string) *verifiertest.Client {
	e.t.Helper()
	a := e.enroll(id)
	wantVerdict(e.t, a.Pulse(nil), trusted, pulsev1.Reason_REASON_OK)
	return a
}

// requote replaces a request's quote with one over pcrs in bank alg (the
// agent's own TPM, over the same payload), claiming claimBank.
func requote(t *testing.T, a *verifiertest.Client, req *pulsev1.PulseRequest, alg eventlog.HashAlg, claimBank eventlog.HashAlg, pcrs []uint32) {
	t.Helper()
	sum := sha256.Sum256(req.GetPayload())
	vals, err := a.Dev.ReadPCRs(uint16(alg), pcrs)
	if err != nil {
		t.Fatal(err)
	}
	attest, sig, err := a.Dev.QuoteBank(a.AK, uint16(alg), pcrs, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	q := &pulsev1.Quote{Attest: attest, Signature: sig, PcrBank: uint32(claimBank)}
	for _, i := range pcrs {
		q.Pcrs = append(q.Pcrs, &pulsev1.PCRValue{Index: i, Digest: vals[i]})
	}
	req.Quote = q
}

// TestRuntimePCRFixedByVerifier: the launcher measured a backdoored agent
// into PCR 14; the agent moves its runtime log to PCR 15, extends it with
// one approved binary record and quotes 0-9 + 15. The verifier's runtime
// PCR is the one recorded at enrollment, so the pulse is refused.
func TestRuntimePCRFixedByVerifier(t *testing.T) {
	e := newEnv(t, "rhel8-uefi")
	if e == nil {
		return
	}
	a := e.enrolled("edge-pcr")
	// The honest pulse names PCR 14 and is TRUSTED (above). The attack:
	backdoor := sha256.Sum256([]byte("backdoored agent"))
	a.Binary = backdoor
	a.MeasureBinary() // the launcher's record, in PCR 14
	approved := sha256.Sum256([]byte("pulse test agent"))
	rec, err := cel.NewRecord(0, 15, &cel.AgentBinary{Path: "/usr/bin/pulse-agent", SHA256: approved, Size: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Dev.Extend(15, map[uint16][]byte{uint16(eventlog.AlgSHA256): rec.Digests[0].Value}); err != nil {
		t.Fatal(err)
	}
	raw, err := cel.Encode([]cel.Record{rec})
	if err != nil {
		t.Fatal(err)
	}
	resp := a.Pulse(func(p *parts) {
		p.Payload.RuntimePcr = 15
		p.Payload.RuntimeFirstRecord = 0
		p.Payload.RuntimeRecords = raw
		p.Payload.AgentBinarySha256 = approved[:]
		p.Payload.AgentBinaryDiskSha256 = approved[:]
		p.After = func(r *pulsev1.PulseRequest) {
			requote(t, a, r, eventlog.AlgSHA256, eventlog.AlgSHA256, []uint32{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 15})
		}
	})
	wantVerdict(t, resp, untrusted, pulsev1.Reason_REASON_RUNTIME_PCR_MISMATCH)
}

// TestEveryAgentBinaryRecordDecides: the launcher starts a backdoored
// build; the backdoor appends an agent-binary record of the approved build
// (as a self-measurement, or disguised as a launcher record) and claims it.
func TestEveryAgentBinaryRecordDecides(t *testing.T) {
	other := simtest.StartFresh(t, "rhel8-uefi")
	e := newEnv(t, "rhel8-uefi", other)
	if e == nil {
		return
	}
	st := openStore(t, e)
	a := e.enrolled("edge-bin") // last-known-good: the approved build
	approved := a.Binary
	backdoor := sha256.Sum256([]byte("backdoored agent"))

	// Honest: the approved build restarted through the launcher (a second
	// launcher record of the same build) stays TRUSTED.
	a.MeasureBinary()
	wantVerdict(t, a.Pulse(nil), trusted, pulsev1.Reason_REASON_OK)

	// Attack: the launcher measures the backdoor, which then measures the
	// approved digest "itself" and claims it.
	a.Binary = backdoor
	a.MeasureBinary()
	a.Binary = approved
	a.Measure(&cel.Generic{Name: cel.SelfMeasuredMarker, Data: approved[:]})
	a.MeasureBinary()
	resp := a.Pulse(nil)
	wantVerdict(t, resp, untrusted, pulsev1.Reason_REASON_BINARY_CHANGED)
	if !strings.Contains(resp.GetMessage(), hex.EncodeToString(backdoor[:8])) {
		t.Fatalf("message %q does not name the backdoor build", resp.GetMessage())
	}
	// It stays UNTRUSTED for the rest of the boot, with one alert.
	wantVerdict(t, a.Pulse(nil), untrusted, pulsev1.Reason_REASON_BINARY_CHANGED)
	if n := len(alertsOf(t, st, "edge-bin", "binary_changed")); n != 1 {
		t.Fatalf("%d binary_changed alerts, want 1", n)
	}

	// With a policy that lists the approved build, a fresh agent whose boot
	// measured the backdoor first is denied by agent_binary, whatever it
	// measures after.
	path := filepath.Join(e.dir, "policy.hcl")
	pol := strings.Replace(testPolicy, "  on_failure {", "  agent_binary {\n    allow = [\""+hex.EncodeToString(approved[:])+"\"]\n  }\n  on_failure {", 1)
	if err := os.WriteFile(path+".tmp", []byte(pol), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
	old := resp.GetPolicyDigest()
	waitFor(t, "the agent_binary policy", func() bool { return e.daemon.Watcher.Current().Digest() != old })
	b := e.agent("edge-bin2", e.openTPM(other))
	if res := b.Enroll(); !res.GetEnrolled() {
		t.Fatal(res.GetMessage())
	}
	b.Binary = backdoor
	b.MeasureBinary()
	b.Binary = approved
	b.Measure(&cel.Generic{Name: cel.SelfMeasuredMarker, Data: approved[:]})
	b.MeasureBinary()
	b.Challenge()
	resp = b.Pulse(nil)
	wantVerdict(t, resp, untrusted, pulsev1.Reason_REASON_POLICY_DENIED)
	if len(resp.GetFindings()) == 0 || resp.GetFindings()[0].GetRule() != "agent_binary" ||
		!strings.Contains(resp.GetFindings()[0].GetMessage(), "measured earlier in this boot") {
		t.Fatalf("findings %v", resp.GetFindings())
	}
}

// TestRuntimeLogAheadAlerts: records beyond what the verifier acknowledged
// are never honest. The pulse is refused at once with an alert, and it does
// not move the silence deadline.
func TestRuntimeLogAheadAlerts(t *testing.T) {
	e := newEnv(t, "rhel8-uefi")
	if e == nil {
		return
	}
	st := openStore(t, e)
	a := e.enrolled("edge-gap")
	before, err := st.GetAgentOps(context.Background(), "edge-gap")
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Second)
	resp := a.Pulse(func(p *parts) { p.Payload.RuntimeFirstRecord = 7; p.SendLog = false })
	wantVerdict(t, resp, untrusted, pulsev1.Reason_REASON_RUNTIME_LOG_GAP)
	al := alertsOf(t, st, "edge-gap", "untrusted")
	if len(al) != 1 || al[0].Reason != pulsev1.Reason_REASON_RUNTIME_LOG_GAP.String() {
		t.Fatalf("alerts %+v, want one untrusted RUNTIME_LOG_GAP", al)
	}
	after, err := st.GetAgentOps(context.Background(), "edge-gap")
	if err != nil {
		t.Fatal(err)
	}
	if !after.Deadline.Equal(before.Deadline) {
		t.Fatalf("a refused pulse moved the deadline from %s to %s", before.Deadline, after.Deadline)
	}

	// Honest: an agent that missed an acknowledgement resends from an
	// earlier record; the verifier builds on what it holds.
	a.MeasureBinary()
	wantVerdict(t, a.Pulse(nil), trusted, pulsev1.Reason_REASON_OK)
	a.MeasureBinary()
	wantVerdict(t, a.Pulse(func(p *parts) {
		var err error
		p.Payload.RuntimeFirstRecord = 1
		if p.Payload.RuntimeRecords, err = cel.Encode(a.Records[1:]); err != nil {
			t.Fatal(err)
		}
	}), trusted, pulsev1.Reason_REASON_OK)
}

// TestTransientStreakAlerts: a device that would be denied names a
// firmware log it never sends: every pulse is FIRMWARE_LOG_MISSING. The
// fifth in a row alerts, and none of them moves the silence deadline.
func TestTransientStreakAlerts(t *testing.T) {
	e := newEnv(t, "rhel8-uefi")
	if e == nil {
		return
	}
	st := openStore(t, e)
	a := e.enrolled("edge-transient")
	before, err := st.GetAgentOps(context.Background(), "edge-transient")
	if err != nil {
		t.Fatal(err)
	}
	bogus := sha256.Sum256([]byte("a firmware log the verifier never sees"))
	for i := 1; i <= 6; i++ {
		e.clock.Advance(time.Second)
		resp := a.Pulse(func(p *parts) { p.SendLog = false; p.Payload.FirmwareLogSha256 = bogus[:] })
		wantVerdict(t, resp, untrusted, pulsev1.Reason_REASON_FIRMWARE_LOG_MISSING)
		want := 0
		if i >= 5 {
			want = 1
		}
		if n := len(alertsOf(t, st, "edge-transient", "transient_streak")); n != want {
			t.Fatalf("after %d transient failures: %d transient_streak alerts, want %d", i, n, want)
		}
	}
	after, err := st.GetAgentOps(context.Background(), "edge-transient")
	if err != nil {
		t.Fatal(err)
	}
	if !after.Deadline.Equal(before.Deadline) {
		t.Fatalf("transient failures moved the deadline from %s to %s", before.Deadline, after.Deadline)
	}
	// An honest pulse ends the streak and moves the deadline.
	e.clock.Advance(time.Second)
	wantVerdict(t, a.Pulse(func(p *parts) { p.SendLog = false }), trusted, pulsev1.Reason_REASON_OK)
	if got, _ := st.GetAgent(context.Background(), "edge-transient"); got.TransientStreak != 0 {
		t.Fatalf("streak %d after an accepted pulse", got.TransientStreak)
	}
	if after2, _ := st.GetAgentOps(context.Background(), "edge-transient"); !after2.Deadline.After(before.Deadline) {
		t.Fatal("an accepted pulse did not move the deadline")
	}
}

// TestClockDesyncHidesNothing: a device booted with Secure Boot off sets
// its clock an hour off. Every check on quoted evidence still runs: the
// verdict is the policy denial, not CLOCK_DESYNC.
func TestClockDesyncHidesNothing(t *testing.T) {
	e := newEnv(t, "ubuntu-2104-no-secure-boot")
	if e == nil {
		return
	}
	a := e.enroll("edge-clock")
	wantVerdict(t, a.Pulse(nil), untrusted, pulsev1.Reason_REASON_POLICY_DENIED)
	for i := 0; i < 3; i++ {
		resp := a.Pulse(func(p *parts) { p.Payload.Time = timestamppb.New(time.Now().Add(time.Hour)) })
		wantVerdict(t, resp, untrusted, pulsev1.Reason_REASON_POLICY_DENIED)
	}
}

// TestClockDesyncEscalates: an honest device with a wrong clock is
// CLOCK_DESYNC, which does not move the silence deadline; after five in a
// row the sixth is UNTRUSTED (CLOCK_DESYNC_PERSISTENT).
func TestClockDesyncEscalates(t *testing.T) {
	e := newEnv(t, "rhel8-uefi")
	if e == nil {
		return
	}
	st := openStore(t, e)
	a := e.enrolled("edge-drift")
	before, err := st.GetAgentOps(context.Background(), "edge-drift")
	if err != nil {
		t.Fatal(err)
	}
	off := func(p *parts) { p.SendLog = false; p.Payload.Time = timestamppb.New(time.Now().Add(time.Hour)) }
	for i := 0; i < 5; i++ {
		e.clock.Advance(time.Second)
		wantVerdict(t, a.Pulse(off), pulsev1.Verdict_VERDICT_CLOCK_DESYNC, pulsev1.Reason_REASON_CLOCK_DESYNC)
	}
	if after, _ := st.GetAgentOps(context.Background(), "edge-drift"); !after.Deadline.Equal(before.Deadline) {
		t.Fatalf("CLOCK_DESYNC pulses moved the deadline from %s to %s", before.Deadline, after.Deadline)
	}
	wantVerdict(t, a.Pulse(off), untrusted, pulsev1.Reason_REASON_CLOCK_DESYNC_PERSISTENT)
	al := alertsOf(t, st, "edge-drift", "clock_desync")
	if len(al) != 2 || al[0].Severity+al[1].Severity != 5 {
		t.Fatalf("clock_desync alerts %+v, want the first desync and the escalation (severity 2)", al)
	}
	// The right time again: TRUSTED, streak cleared.
	wantVerdict(t, a.Pulse(func(p *parts) { p.SendLog = false }), trusted, pulsev1.Reason_REASON_OK)
	if got, _ := st.GetAgent(context.Background(), "edge-drift"); got.DesyncStreak != 0 {
		t.Fatalf("desync streak %d after an accepted pulse", got.DesyncStreak)
	}
}

// TestBankPinned: the policy's bank (SHA-256 here) is the only one
// accepted; the agent cannot choose SHA-1, nor claim one bank and quote
// another.
func TestBankPinned(t *testing.T) {
	e := newEnv(t, "rhel8-uefi")
	if e == nil {
		return
	}
	a := e.enrolled("edge-bank")
	all := []uint32{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 14}
	resp := a.Pulse(func(p *parts) {
		p.After = func(r *pulsev1.PulseRequest) { requote(t, a, r, eventlog.AlgSHA1, eventlog.AlgSHA1, all) }
	})
	wantVerdict(t, resp, untrusted, pulsev1.Reason_REASON_PCR_BANK_NOT_ALLOWED)
	resp = a.Pulse(func(p *parts) {
		p.After = func(r *pulsev1.PulseRequest) { requote(t, a, r, eventlog.AlgSHA1, eventlog.AlgSHA256, all) }
	})
	wantVerdict(t, resp, untrusted, pulsev1.Reason_REASON_PCR_BANK_NOT_ALLOWED)
	wantVerdict(t, a.Pulse(nil), trusted, pulsev1.Reason_REASON_OK)
}

// TestQuarantinedListValidated: the Shield list an agent reports reaches
// operators' screens; anything but IP addresses is refused.
func TestQuarantinedListValidated(t *testing.T) {
	e := newEnv(t, "rhel8-uefi")
	if e == nil {
		return
	}
	st := openStore(t, e)
	a := e.enrolled("edge-q")
	wantVerdict(t, a.Pulse(func(p *parts) { p.Payload.Quarantined = []string{"192.0.2.7", "2001:db8::1"} }), trusted, pulsev1.Reason_REASON_OK)
	got, err := st.GetAgent(context.Background(), "edge-q")
	if err != nil || got.Quarantined != "192.0.2.7,2001:db8::1" {
		t.Fatalf("stored quarantined %q %v", got.Quarantined, err)
	}
	for _, bad := range []string{"\x1b[2J192.0.2.7", "192.0.2.7,10.0.0.1", "fe80::1%eth0", "not an address", ""} {
		wantVerdict(t, a.Pulse(func(p *parts) { p.Payload.Quarantined = []string{bad} }), untrusted, pulsev1.Reason_REASON_MALFORMED_PAYLOAD)
	}
	if got, _ := st.GetAgent(context.Background(), "edge-q"); got.Quarantined != "192.0.2.7,2001:db8::1" {
		t.Fatalf("a refused pulse changed the stored list to %q", got.Quarantined)
	}
}

// specIDLog is a firmware log whose Spec ID header lists n algorithms, then
// padded with filler to size bytes: the shape that cost the verifier ~24 s
// of CPU per 4 MiB log before the parser's limits.
func specIDLog(n, size int) []byte {
	var ev []byte
	ev = append(ev, "Spec ID Event03\x00"...)
	ev = binary.LittleEndian.AppendUint32(ev, 0)         // platform class
	ev = append(ev, 0, 2, 0, 2)                          // spec version 2.0, errata 0, uintn 8 bytes
	ev = binary.LittleEndian.AppendUint32(ev, uint32(n)) // number of algorithms
	for i := 0; i < n; i++ {
		ev = binary.LittleEndian.AppendUint16(ev, uint16(0x1000+i))
		ev = binary.LittleEndian.AppendUint16(ev, 32)
	}
	ev = append(ev, 0) // vendor info size
	var out []byte
	out = binary.LittleEndian.AppendUint32(out, 0) // PCR 0
	out = binary.LittleEndian.AppendUint32(out, 3) // EV_NO_ACTION
	out = append(out, make([]byte, 20)...)
	out = binary.LittleEndian.AppendUint32(out, uint32(len(ev)))
	out = append(out, ev...)
	for len(out) < size {
		out = append(out, 0xA5)
	}
	return out
}

// TestHostileFirmwareLogRefusedCheaply: an enrolled device sends a 4 MiB
// firmware log whose Spec ID header lists 65,000 algorithms (signed, with a
// valid quote). It is refused as malformed, nothing is stored, and the
// device's next honest pulse is TRUSTED.
func TestHostileFirmwareLogRefusedCheaply(t *testing.T) {
	e := newEnv(t, "rhel8-uefi")
	if e == nil {
		return
	}
	st := openStore(t, e)
	a := e.enrolled("edge-hostile")
	hostile := specIDLog(65000, 4<<20-1024)
	sum := sha256.Sum256(hostile)
	start := time.Now()
	resp := a.Pulse(func(p *parts) { p.FwLog = hostile; p.Payload.FirmwareLogSha256 = sum[:] })
	wantVerdict(t, resp, untrusted, pulsev1.Reason_REASON_FIRMWARE_LOG_MALFORMED)
	t.Logf("refused in %s: %s", time.Since(start).Round(time.Millisecond), resp.GetMessage())
	if _, err := st.GetFirmwareLog(context.Background(), sum[:]); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("hostile log stored: %v", err)
	}
	wantVerdict(t, a.Pulse(func(p *parts) { p.SendLog = false }), trusted, pulsev1.Reason_REASON_OK)
}

// TestRequireLauncher: under agent_binary { require_launcher = true } an
// agent started through the launcher is TRUSTED and one that measured
// itself is denied, with the launcher rule's finding.
func TestRequireLauncher(t *testing.T) {
	other := simtest.StartFresh(t, "rhel8-uefi")
	build := sha256.Sum256([]byte("pulse-agent build for edge-launched"))
	self := sha256.Sum256([]byte("pulse-agent build for edge-self"))
	e := newEnvCfg(t, "rhel8-uefi", fleetPolicy(t, fmt.Sprintf("  agent_binary {\n    require_launcher = true\n    allow = [%q, %q]\n  }\n",
		hex.EncodeToString(build[:]), hex.EncodeToString(self[:]))), other)
	if e == nil {
		return
	}
	a := e.enroll("edge-launched")
	wantVerdict(t, a.Pulse(nil), trusted, pulsev1.Reason_REASON_OK)

	b := e.agent("edge-self", e.openTPM(other))
	if res := b.Enroll(); !res.GetEnrolled() {
		t.Fatal(res.GetMessage())
	}
	b.Measure(&cel.Generic{Name: cel.SelfMeasuredMarker, Data: b.Binary[:]})
	b.MeasureBinary()
	b.Challenge()
	resp := b.Pulse(nil)
	wantVerdict(t, resp, untrusted, pulsev1.Reason_REASON_POLICY_DENIED)
	if len(resp.GetFindings()) != 1 || resp.GetFindings()[0].GetRule() != "agent_binary" || !strings.Contains(resp.GetFindings()[0].GetMessage(), "measured itself") {
		t.Fatalf("findings %v", resp.GetFindings())
	}
}
