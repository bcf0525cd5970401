package verifier

import (
	"bytes"
	"crypto/sha256"
	"testing"

	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/tpm/cel"
)

// TestRuntimeMemo: a steady-state pulse reuses the runtime evidence
// verified from exactly the same inputs (stored log, count, PCR, initial
// and quoted values) and nothing else: any input that differs is verified
// again, so a quoted PCR the stored log does not replay to still fails.
func TestRuntimeMemo(t *testing.T) {
	const pcr = 14
	initial := make([]byte, sha256.Size)
	quoted := initial
	var recs []cel.Record
	for i, c := range []cel.Content{
		&cel.AgentBinary{Path: "/usr/bin/pulse-agent", SHA256: sha256.Sum256([]byte("build")), Size: 1},
		&cel.FortressState{Active: false, Mechanism: "bpf-lsm", Reason: "refused"},
	} {
		r, err := cel.NewRecord(uint64(i), pcr, c)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
		h := sha256.Sum256(append(bytes.Clone(quoted), r.Digests[0].Value...))
		quoted = h[:]
	}
	stored, err := cel.Encode(recs)
	if err != nil {
		t.Fatal(err)
	}
	n := uint64(len(recs))
	c := &agentCache{}
	first, _, err := c.runtimeEvidence("a", stored, n, n, nil, pcr, initial, quoted)
	if err != nil {
		t.Fatal(err)
	}
	again, _, err := c.runtimeEvidence("a", stored, n, n, nil, pcr, initial, quoted)
	if err != nil || again != first {
		t.Fatalf("the same inputs were verified again (%p, %p, %v)", first, again, err)
	}

	other := bytes.Clone(quoted)
	other[0] ^= 1
	tampered := bytes.Clone(stored)
	tampered[len(tampered)-1] ^= 1
	extra, err := cel.NewRecord(n, pcr, &cel.Generic{Name: "x", Data: []byte("y")})
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := cel.Encode([]cel.Record{extra})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		agent   string
		stored  []byte
		fresh   []byte
		initial []byte
		quoted  []byte
		fails   bool
	}{
		{name: "another agent, same inputs", agent: "b", stored: stored, initial: initial, quoted: quoted},
		{name: "quoted PCR the log does not replay to", agent: "a", stored: stored, initial: initial, quoted: other, fails: true},
		{name: "stored log changed", agent: "a", stored: tampered, initial: initial, quoted: quoted, fails: true},
		{name: "another initial value", agent: "a", stored: stored, initial: other, quoted: quoted, fails: true},
		{name: "new records", agent: "a", stored: stored, fresh: fresh, initial: initial, quoted: quoted, fails: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, reason, err := c.runtimeEvidence(tc.agent, tc.stored, n, n, tc.fresh, pcr, tc.initial, tc.quoted)
			if got == first {
				t.Fatal("reused evidence verified from other inputs")
			}
			if tc.fails != (err != nil) {
				t.Fatalf("err %v (reason %s), want failure %v", err, reason, tc.fails)
			}
			if tc.fails && reason == pulsev1.Reason_REASON_OK {
				t.Fatalf("failure without a reason: %v", err)
			}
		})
	}
	// The memo still serves the honest inputs, and a failure never
	// replaced it.
	if again, _, err := c.runtimeEvidence("a", stored, n, n, nil, pcr, initial, quoted); err != nil || again != first {
		t.Fatalf("after the failures: %p, %v; want the memo", again, err)
	}
	if _, reason, err := c.runtimeEvidence("a", stored, n, n, nil, pcr, initial, other); err == nil || reason != pulsev1.Reason_REASON_RUNTIME_LOG_REPLAY {
		t.Fatalf("a wrong quoted value after the memo was used: %s, %v; want RUNTIME_LOG_REPLAY", reason, err)
	}
}
