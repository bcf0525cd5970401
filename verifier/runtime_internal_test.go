package verifier

import (
	"bytes"
	"testing"

	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/tpm/cel"
	"github.com/pulse-attest/pulse/tpm/eventlog"
)

// TestVerifyRuntimeBounds: the runtime log is bounded in bytes as well as
// records, and records beyond what the verifier holds are a gap.
func TestVerifyRuntimeBounds(t *testing.T) {
	initial := make([]byte, 32)
	rec := func(n uint64, data []byte) cel.Record {
		r, err := cel.NewRecord(n, 14, &cel.Generic{Name: "x", Data: data}, eventlog.AlgSHA256)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	one, err := cel.Encode([]cel.Record{rec(0, []byte("small"))})
	if err != nil {
		t.Fatal(err)
	}
	quoted, err := cel.Replay([]cel.Record{rec(0, []byte("small"))}, 14, initial)
	if err != nil {
		t.Fatal(err)
	}
	if _, reason, err := verifyRuntime(nil, 0, 0, one, 14, initial, quoted); err != nil {
		t.Fatalf("honest record refused: %s %v", reason, err)
	}
	big, err := cel.Encode([]cel.Record{rec(0, bytes.Repeat([]byte{1}, MaxRuntimeBytes))})
	if err != nil {
		t.Fatal(err)
	}
	if _, reason, err := verifyRuntime(nil, 0, 0, big, 14, initial, quoted); err == nil || reason != pulsev1.Reason_REASON_RUNTIME_LOG_MALFORMED {
		t.Fatalf("a %d-byte log: %s %v, want RUNTIME_LOG_MALFORMED", len(big), reason, err)
	}
	if _, reason, err := verifyRuntime(one, 1, 3, nil, 14, initial, quoted); err == nil || reason != pulsev1.Reason_REASON_RUNTIME_LOG_GAP {
		t.Fatalf("records from 3 of 1 held: %s %v, want RUNTIME_LOG_GAP", reason, err)
	}
}
