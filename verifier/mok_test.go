package verifier_test

import (
	"crypto/sha256"
	"os"
	"path/filepath"
	"strings"
	"testing"

	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/tpm/cel"
	"github.com/pulse-attest/pulse/tpm/eventlog"
)

// appendIPL appends an EV_IPL event whose SHA-256 digest is the given one.
func appendIPL(t *testing.T, raw []byte, pcr uint32, data, sha256Digest []byte) []byte {
	t.Helper()
	out, _ := appendEvent(t, raw, pcr, eventlog.EvIPL, data, map[uint16][]byte{uint16(eventlog.AlgSHA256): sha256Digest})
	return out
}

// TestRuntimePCRHistoryPinned: the launcher starts a backdoored build
// (configuration record and binary record); the backdoor measures the
// approved build and claims it. Root passes the launcher's two records off
// as MOK measurements shim never made (MokSBState, MokPolicy) in the
// firmware log it sends, and the approved record as the runtime log's
// first. A policy that pins the device class's pre-OS history of the
// runtime PCR (shim measures MokList and MokListX) refuses it.
func TestRuntimePCRHistoryPinned(t *testing.T) {
	e := newEnv(t, "rhel8-uefi")
	if e == nil {
		return
	}
	path := filepath.Join(e.dir, "policy.hcl")
	pol := strings.Replace(testPolicy, "    secure_boot {}", "    secure_boot {}\n    runtime_pcr_history = [\"MokList\", \"MokListX\"]", 1)
	if err := os.WriteFile(path+".tmp", []byte(pol), 0o644); err != nil {
		t.Fatal(err)
	}
	old := e.daemon.Watcher.Current().Digest()
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the pinned policy", func() bool { return e.daemon.Watcher.Current().Digest() != old })

	a := e.enrolled("edge-mok") // honest: TRUSTED under the pin
	approved := a.Binary

	// Next boot: the launcher starts a backdoored build.
	if _, err := e.sw.Boot(e.fwLog); err != nil {
		t.Fatal(err)
	}
	a.Records, a.SentUpTo = nil, 0
	a.Measure(&cel.Generic{Name: "pulse.launcher.config", Data: []byte("args=[run] env=[PATH=/usr/bin]")})
	a.Binary = sha256.Sum256([]byte("backdoored pulse-agent"))
	a.MeasureBinary()
	a.Binary = approved
	a.MeasureBinary()
	honest := append([]cel.Record(nil), a.Records...)

	fake := appendIPL(t, e.fwLog, runtimePCR, []byte("MokSBState\x00"), honest[0].Digests[0].Value)
	fake = appendIPL(t, fake, runtimePCR, []byte("MokPolicy\x00"), honest[1].Digests[0].Value)
	last := honest[2]
	last.RecNum = 0
	a.Records, a.SentUpTo, a.FwLog = []cel.Record{last}, 0, fake
	a.Challenge()
	resp := a.Pulse(nil)
	wantVerdict(t, resp, untrusted, pulsev1.Reason_REASON_POLICY_DENIED)
	if len(resp.GetFindings()) == 0 || resp.GetFindings()[0].GetRule() != "measured_boot.runtime_pcr_history" {
		t.Fatalf("findings %v", resp.GetFindings())
	}
	// The honest log of the same boot shows the backdoor for what it is.
	a.Records, a.SentUpTo, a.FwLog = honest, 0, e.fwLog
	wantVerdict(t, a.Pulse(nil), untrusted, pulsev1.Reason_REASON_BINARY_CHANGED)
}
