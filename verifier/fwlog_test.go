package verifier_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/simulator/simtest"
	"github.com/pulse-attest/pulse/tpm"
	"github.com/pulse-attest/pulse/tpm/eventlog"
	"github.com/pulse-attest/pulse/verifier"
	"github.com/pulse-attest/pulse/verifier/store"
	"github.com/pulse-attest/pulse/verifier/verifiertest"
)

// grownLog returns log with one more EV_IPL record in pcr carrying data,
// and the digests to extend the TPM with so that the grown log replays (a
// device root can do this at will: PCRs 8 and 9 are extendable from the OS).
func grownLog(t *testing.T, log []byte, pcr uint32, data []byte) ([]byte, map[uint16][]byte) {
	t.Helper()
	l, err := eventlog.Parse(log)
	if err != nil {
		t.Fatal(err)
	}
	if l.SpecID == nil {
		t.Fatal("fixture is not a crypto-agile log")
	}
	rec := binary.LittleEndian.AppendUint32(nil, pcr)
	rec = binary.LittleEndian.AppendUint32(rec, uint32(eventlog.EvIPL))
	rec = binary.LittleEndian.AppendUint32(rec, uint32(len(l.SpecID.DigestSizes)))
	digests := map[uint16][]byte{}
	for _, as := range l.SpecID.DigestSizes {
		h := as.Alg.Hash().New()
		h.Write(data)
		d := h.Sum(nil)
		digests[uint16(as.Alg)] = d
		rec = binary.LittleEndian.AppendUint16(rec, uint16(as.Alg))
		rec = append(rec, d...)
	}
	rec = binary.LittleEndian.AppendUint32(rec, uint32(len(data)))
	rec = append(rec, data...)
	return append(bytes.Clone(log), rec...), digests
}

// bootInto extends the TPM as the grown log says and makes it the agent's
// log: a new, distinct log that verifies.
func bootInto(t *testing.T, a *verifiertest.Client, dev *tpm.TPM, note string) []byte {
	t.Helper()
	grown, digests := grownLog(t, a.FwLog, 8, []byte(note))
	if err := dev.Extend(8, digests); err != nil {
		t.Fatal(err)
	}
	a.FwLog = grown
	return grown
}

func sendLog(log []byte) func(*parts) {
	return func(p *parts) {
		s := sha256.Sum256(log)
		p.Payload.FirmwareLogSha256 = s[:]
		p.FwLog = log
		p.SendLog = true
	}
}

func fwUsage(t *testing.T, s *store.Store) store.FirmwareLogUsage {
	t.Helper()
	u, err := s.FirmwareLogUsage(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func storedLog(t *testing.T, s *store.Store, log []byte) bool {
	t.Helper()
	sum := sha256.Sum256(log)
	_, err := s.GetFirmwareLog(context.Background(), sum[:])
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		t.Fatal(err)
	}
	return err == nil
}

// enrolledAgent enrolls a TPM agent (partition left to the verifier) and
// brings it to its first nonce.
func enrolledAgent(t *testing.T, e *env, id string, dev *tpm.TPM) *verifiertest.Client {
	t.Helper()
	a := e.agent(id, dev)
	a.Partition = ""
	if res := a.Enroll(); !res.GetEnrolled() {
		t.Fatalf("enroll %s: %s %s", id, res.GetReason(), res.GetMessage())
	}
	a.MeasureBinary()
	a.Challenge()
	return a
}

// TestFirmwareLogNotKeptUnlessVerified: logs that do not replay against the
// quote — padded copies, records the TPM never saw, tampered digests,
// garbage — are refused with their typed reason and leave no row, however
// many the agent sends; the honest log is kept once.
func TestFirmwareLogNotKeptUnlessVerified(t *testing.T) {
	e := newEnv(t, "rhel8-uefi")
	if e == nil {
		return
	}
	st := e.daemon.Store
	a := enrolledAgent(t, e, "fw-liar", e.openTPM(e.sw))
	wantVerdict(t, a.Pulse(nil), trusted, pulsev1.Reason_REASON_OK)
	honest := fwUsage(t, st)
	if honest.Logs != 1 || honest.Refs != 1 || honest.Bytes != int64(len(e.fwLog)) || !storedLog(t, st, e.fwLog) {
		t.Fatalf("after the honest pulse: %+v, want the log once", honest)
	}

	flipped := bytes.Clone(e.fwLog)
	l, err := eventlog.Parse(flipped)
	if err != nil {
		t.Fatal(err)
	}
	d := lastDigest(l, 4)
	i := bytes.Index(flipped, d)
	if i < 0 {
		t.Fatal("PCR 4 digest not in the raw log")
	}
	flipped[i] ^= 1
	unseen, _ := grownLog(t, e.fwLog, 8, []byte("a record the TPM never saw"))
	bigUnseen, _ := grownLog(t, e.fwLog, 9, bytes.Repeat([]byte("x"), 1<<20))
	garbage := make([]byte, 256<<10)
	rand.Read(garbage) //nolint:errcheck // crypto/rand

	type badLogs struct {
		name   string
		logs   [][]byte
		reason pulsev1.Reason
	}
	cases := []badLogs{
		{"a record the TPM never saw", [][]byte{unseen}, pulsev1.Reason_REASON_FIRMWARE_LOG_REPLAY},
		{"a 1 MiB record the TPM never saw", [][]byte{bigUnseen}, pulsev1.Reason_REASON_FIRMWARE_LOG_REPLAY},
		{"a digest flipped", [][]byte{flipped}, pulsev1.Reason_REASON_FIRMWARE_LOG_REPLAY},
		{"garbage", [][]byte{garbage}, pulsev1.Reason_REASON_FIRMWARE_LOG_MALFORMED},
	}
	// The exploit: twelve copies of the honest log, each padded differently.
	var padded [][]byte
	for n := range 12 {
		padded = append(padded, append(bytes.Clone(e.fwLog), make([]byte, 1+n*(256<<10)/12)...))
	}
	cases = append(cases, badLogs{"twelve padded copies", padded, pulsev1.Reason_REASON_FIRMWARE_LOG_MALFORMED})

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, log := range c.logs {
				wantVerdict(t, a.Pulse(sendLog(log)), untrusted, c.reason)
				if storedLog(t, st, log) {
					t.Fatalf("a %d-byte log that did not verify was stored", len(log))
				}
			}
			if u := fwUsage(t, st); u != honest {
				t.Fatalf("store after %d refused logs: %+v, want %+v", len(c.logs), u, honest)
			}
			// The honest log, sent again or named by digest, still verifies.
			wantVerdict(t, a.Pulse(nil), trusted, pulsev1.Reason_REASON_OK)
			wantVerdict(t, a.Pulse(func(p *parts) { p.SendLog = false }), trusted, pulsev1.Reason_REASON_OK)
		})
	}
}

// TestFirmwareLogSharedByAgentsBootedAlike: two TPMs booted the same way
// store one log with two references, and the steady state writes none.
func TestFirmwareLogSharedByAgentsBootedAlike(t *testing.T) {
	other := simtest.StartFresh(t, "rhel8-uefi")
	e := newEnv(t, "rhel8-uefi", other)
	if e == nil {
		return
	}
	st := e.daemon.Store
	a := enrolledAgent(t, e, "fw-twin-1", e.openTPM(e.sw))
	b := enrolledAgent(t, e, "fw-twin-2", e.openTPM(other))
	wantVerdict(t, a.Pulse(nil), trusted, pulsev1.Reason_REASON_OK)
	wantVerdict(t, b.Pulse(nil), trusted, pulsev1.Reason_REASON_OK)
	if u := fwUsage(t, st); u.Logs != 1 || u.Refs != 2 || u.Bytes != int64(len(e.fwLog)) {
		t.Fatalf("two agents booted alike: %+v, want one log and two references", u)
	}
	refs := func(id string) []store.FirmwareLogRef {
		t.Helper()
		r, err := st.FirmwareLogRefs(ctx(t), id)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	before := refs("fw-twin-2")
	sum := sha256.Sum256(e.fwLog)
	if len(before) != 1 || !bytes.Equal(before[0].SHA256, sum[:]) {
		t.Fatalf("references of the second agent: %+v", before)
	}
	e.clock.Advance(time.Second) // a rewritten reference would show a later time
	for range 3 {
		wantVerdict(t, b.Pulse(func(p *parts) { p.SendLog = false; p.Payload.Time = timestamppb.New(e.clock.Now()) }), trusted, pulsev1.Reason_REASON_OK)
	}
	if after := refs("fw-twin-2"); len(after) != 1 || !after[0].UsedAt.Equal(before[0].UsedAt) {
		t.Fatalf("steady-state pulses rewrote the reference: %+v, then %+v", before, after)
	}
}

// TestFirmwareLogQuota: an agent that keeps moving to new logs that verify
// (a root user extending PCR 8, or real reboots into new firmware) gets
// per_agent of them a day; the next is refused with its reason and stored
// nowhere. A day later the least recently used one is evicted, the new log
// is accepted, and the evicted log, now nobody's, is collected.
func TestFirmwareLogQuota(t *testing.T) {
	e := newEnv(t, "rhel8-uefi")
	if e == nil {
		return
	}
	st := e.daemon.Store
	dev := e.openTPM(e.sw)
	a := enrolledAgent(t, e, "fw-churn", dev)
	wantVerdict(t, a.Pulse(nil), trusted, pulsev1.Reason_REASON_OK)
	logs := [][]byte{e.fwLog}
	// The harness's configuration leaves per_agent unset: the default.
	perAgent := 4
	for i := 1; i < perAgent; i++ {
		logs = append(logs, bootInto(t, a, dev, fmt.Sprintf("boot option %d", i)))
		wantVerdict(t, a.Pulse(nil), trusted, pulsev1.Reason_REASON_OK)
	}
	if u := fwUsage(t, st); u.Logs != perAgent || u.Refs != perAgent {
		t.Fatalf("after %d logs: %+v", perAgent, u)
	}

	over := bootInto(t, a, dev, "one too many")
	resp := a.Pulse(nil)
	wantVerdict(t, resp, untrusted, pulsev1.Reason_REASON_FIRMWARE_LOG_QUOTA)
	if storedLog(t, st, over) {
		t.Fatal("a log over the quota was stored")
	}
	if u := fwUsage(t, st); u.Logs != perAgent || u.Refs != perAgent {
		t.Fatalf("after the refused log: %+v", u)
	}
	if n := len(alertsOf(t, st, "fw-churn", verifier.AlertUntrusted)); n == 0 {
		t.Fatal("no alert for an agent over its firmware-log quota")
	}

	// A day later: the first log (least recently used) is evicted.
	e.clock.Advance(verifier.FirmwareLogQuotaWindow + time.Hour)
	a.Challenge()
	wantVerdict(t, a.Pulse(func(p *parts) { p.Payload.Time = timestamppb.New(e.clock.Now()) }), trusted, pulsev1.Reason_REASON_OK)
	refs, err := st.FirmwareLogRefs(ctx(t), "fw-churn")
	if err != nil {
		t.Fatal(err)
	}
	want := [][]byte{over, logs[3], logs[2], logs[1]}
	if len(refs) != len(want) {
		t.Fatalf("%d references, want %d", len(refs), len(want))
	}
	for i, r := range refs {
		if s := sha256.Sum256(want[i]); !bytes.Equal(r.SHA256, s[:]) {
			t.Fatalf("reference %d is %x, want %x", i, r.SHA256[:8], s[:8])
		}
	}
	// The sweeper collects the evicted log (nobody else booted with it).
	waitFor(t, "the evicted log to be collected", func() bool { return !storedLog(t, st, logs[0]) })
	for _, l := range append(logs[1:], over) {
		if !storedLog(t, st, l) {
			t.Fatal("a referenced log was collected")
		}
	}
}

// TestFirmwareLogCollectedWhileCached: a log whose row was collected while
// this replica still holds its parse (its last reference went on another
// replica) is not trusted from the cache alone when an agent moves back to
// it: the agent is asked for it, and the log it sends is stored again.
func TestFirmwareLogCollectedWhileCached(t *testing.T) {
	e := newEnv(t, "rhel8-uefi")
	if e == nil {
		return
	}
	st := e.daemon.Store
	dev := e.openTPM(e.sw)
	a := enrolledAgent(t, e, "fw-back", dev)
	wantVerdict(t, a.Pulse(nil), trusted, pulsev1.Reason_REASON_OK)
	bootInto(t, a, dev, "new firmware")
	wantVerdict(t, a.Pulse(nil), trusted, pulsev1.Reason_REASON_OK)

	first := sha256.Sum256(e.fwLog)
	if _, err := st.DB().ExecContext(ctx(t), `DELETE FROM agent_firmware_logs WHERE sha256 = ?`, first[:]); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(verifier.FirmwareLogGCGrace + verifier.FirmwareLogGCInterval + time.Minute)
	waitFor(t, "the unreferenced log to be collected", func() bool { return !storedLog(t, st, e.fwLog) })

	// Reboot into the first firmware.
	if _, err := e.sw.Boot(e.fwLog); err != nil {
		t.Fatal(err)
	}
	a.FwLog, a.Records, a.SentUpTo = e.fwLog, nil, 0
	a.MeasureBinary()
	a.Challenge()
	now := func(p *parts) { p.Payload.Time = timestamppb.New(e.clock.Now()) }
	resp := a.Pulse(func(p *parts) { now(p); p.SendLog = false })
	wantVerdict(t, resp, untrusted, pulsev1.Reason_REASON_FIRMWARE_LOG_MISSING)
	if !resp.GetState().GetSendFirmwareLog() {
		t.Fatal("the verifier did not ask for the collected log")
	}
	a.SentUpTo = 0 // the acknowledgement is of the previous boot's records
	wantVerdict(t, a.Pulse(now), trusted, pulsev1.Reason_REASON_OK)
	if !storedLog(t, st, e.fwLog) {
		t.Fatal("the log sent again was not stored")
	}
}
