package verifier_test

import (
	"encoding/binary"
	"testing"
	"unicode/utf16"

	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/tpm/eventlog"
)

// appendEvent appends one TCG_PCR_EVENT2 record to a crypto-agile log,
// with a digest of data in every bank the log carries unless digests names
// another, and returns the log and the digests (what root extends into the
// PCR after boot).
func appendEvent(t *testing.T, raw []byte, pcr uint32, typ eventlog.EventType, data []byte, digests map[uint16][]byte) ([]byte, map[uint16][]byte) {
	t.Helper()
	l, err := eventlog.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	out := append([]byte(nil), raw...)
	out = binary.LittleEndian.AppendUint32(out, pcr)
	out = binary.LittleEndian.AppendUint32(out, uint32(typ))
	out = binary.LittleEndian.AppendUint32(out, uint32(len(l.Algs)))
	used := map[uint16][]byte{}
	for _, a := range l.Algs {
		d, ok := digests[uint16(a)]
		if !ok {
			h := a.Hash().New()
			h.Write(data)
			d = h.Sum(nil)
		}
		used[uint16(a)] = d
		out = binary.LittleEndian.AppendUint16(out, uint16(a))
		out = append(out, d...)
	}
	out = binary.LittleEndian.AppendUint32(out, uint32(len(data)))
	return append(out, data...), used
}

// uefiVariable encodes a UEFI_VARIABLE_DATA.
func uefiVariable(guid eventlog.GUID, name string, data []byte) []byte {
	u := utf16.Encode([]rune(name))
	out := append([]byte(nil), guid[:]...)
	out = binary.LittleEndian.AppendUint64(out, uint64(len(u)))
	out = binary.LittleEndian.AppendUint64(out, uint64(len(data)))
	for _, c := range u {
		out = binary.LittleEndian.AppendUint16(out, c)
	}
	return append(out, data...)
}

// TestSecureBootSpoofedAfterBoot: a device booted with Secure Boot off.
// Root extends PCR 7 after boot with a correctly hashed SecureBoot=1
// variable event and appends the same event to the log it sends: the log
// replays to the quote, but Secure Boot state comes from the pre-OS record
// only, so the log is refused.
func TestSecureBootSpoofedAfterBoot(t *testing.T) {
	e := newEnv(t, "ubuntu-2104-no-secure-boot")
	if e == nil {
		return
	}
	a := e.enroll("edge-sb")
	// Honest: Secure Boot is off, the fleet policy requires it.
	resp := a.Pulse(nil)
	wantVerdict(t, resp, untrusted, pulsev1.Reason_REASON_POLICY_DENIED)
	if len(resp.GetFindings()) == 0 || resp.GetFindings()[0].GetRule() != "measured_boot.secure_boot" {
		t.Fatalf("findings %v", resp.GetFindings())
	}
	// Attack.
	spoofed, d := appendEvent(t, e.fwLog, 7, eventlog.EvEFIVariableDriverConfig,
		uefiVariable(eventlog.GUIDGlobalVariable, "SecureBoot", []byte{1}), nil)
	if err := a.Dev.Extend(7, d); err != nil {
		t.Fatal(err)
	}
	a.FwLog = spoofed
	resp = a.Pulse(nil)
	wantVerdict(t, resp, untrusted, pulsev1.Reason_REASON_FIRMWARE_LOG_MALFORMED)
}
