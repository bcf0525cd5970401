package verifier

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/pulse-attest/pulse/policy"
)

func bigEvidence(events int) policy.Evidence {
	on := true
	b := &policy.BootEvidence{Bank: "sha256", PCRs: map[int]string{0: strings.Repeat("ab", 32)}, SecureBoot: &on}
	for i := 0; i < events; i++ {
		b.Events = append(b.Events, policy.BootEvent{Seq: i, PCR: 4, Type: "EV_EFI_BOOT_SERVICES_APPLICATION",
			Digest: fmt.Sprintf("%064x", i*7919), Note: strings.Repeat(fmt.Sprintf("\\EFI\\vendor\\file%04d.efi ", i), 8)})
	}
	return policy.Evidence{AgentID: "a", TPM: true, Boot: b, Runtime: &policy.RuntimeEvidence{AgentBinarySHA256: strings.Repeat("cd", 32)}}
}

// TestEncodeEvidenceBound: evidence is kept whole when it fits, loses its
// notes, then its boot events (marked incomplete) when it does not, and is
// refused when even that does not fit.
func TestEncodeEvidenceBound(t *testing.T) {
	ev := bigEvidence(60)
	full, err := encodeEvidence(ev, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	noNotes := ev
	nb := *ev.Boot
	nb.Events = append([]policy.BootEvent(nil), ev.Boot.Events...)
	for i := range nb.Events {
		nb.Events[i].Note = ""
	}
	noNotes.Boot = &nb
	trimmed, _ := encodeEvidence(noNotes, 1<<20)
	// The real encoding also says what it dropped.
	slack := len(`,"dropped":"boot event notes"`) + 8
	if len(trimmed)+slack >= len(full) {
		t.Fatalf("notes do not weigh: %d bytes without, %d with", len(trimmed), len(full))
	}
	cases := []struct {
		name     string
		budget   int
		complete bool
		dropped  string
		events   int
		notes    bool
		err      bool
	}{
		{name: "fits", budget: len(full), complete: true, events: 60, notes: true},
		{name: "notes dropped", budget: len(trimmed) + slack, complete: true, dropped: "boot event notes", events: 60},
		{name: "events dropped", budget: len(trimmed) - 8, complete: false, dropped: "60 boot events"},
		{name: "too small", budget: 40, err: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b, err := encodeEvidence(ev, c.budget)
			if c.err {
				if err == nil {
					t.Fatalf("encoded %d bytes within %d", len(b), c.budget)
				}
				return
			}
			if err != nil || len(b) > c.budget {
				t.Fatalf("%d bytes, budget %d: %v", len(b), c.budget, err)
			}
			se, err := DecodeEvidence(b)
			if err != nil {
				t.Fatal(err)
			}
			if se.Complete != c.complete || se.Dropped != c.dropped || len(se.Evidence.Boot.Events) != c.events {
				t.Fatalf("complete %v dropped %q events %d", se.Complete, se.Dropped, len(se.Evidence.Boot.Events))
			}
			if c.events > 0 && (se.Evidence.Boot.Events[0].Note != "") != c.notes {
				t.Fatalf("notes kept: %v", se.Evidence.Boot.Events[0].Note != "")
			}
			if se.Evidence.Runtime.AgentBinarySHA256 != ev.Runtime.AgentBinarySHA256 {
				t.Fatal("runtime evidence lost")
			}
		})
	}
	if len(ev.Boot.Events[0].Note) == 0 {
		t.Fatal("encoding changed the caller's evidence")
	}
}

// TestDecodeEvidenceRefuses: stored bytes that are not the format decode
// to ErrEvidenceEncoding, a gzip bomb included.
func TestDecodeEvidenceRefuses(t *testing.T) {
	gz := func(b []byte) []byte {
		var buf bytes.Buffer
		w := gzip.NewWriter(&buf)
		w.Write(b) //nolint:errcheck // bytes.Buffer
		w.Close()  //nolint:errcheck // bytes.Buffer
		return buf.Bytes()
	}
	cases := map[string][]byte{
		"not gzip":       []byte("{}"),
		"not json":       gz([]byte("nope")),
		"other format":   gz([]byte(`{"format":2,"evidence":{}}`)),
		"inflates a lot": gz(append([]byte(`{"format":1,"evidence":{"source":"`), bytes.Repeat([]byte("A"), maxEvidenceJSON+10)...)),
		"truncated":      gz([]byte(`{"format":1}`))[:10],
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := DecodeEvidence(b); !errors.Is(err, ErrEvidenceEncoding) {
				t.Fatalf("err %v, want ErrEvidenceEncoding", err)
			}
		})
	}
}

func FuzzDecodeEvidence(f *testing.F) {
	b, _ := encodeEvidence(bigEvidence(3), 1<<20)
	f.Add(b)
	f.Add([]byte{0x1f, 0x8b})
	f.Fuzz(func(t *testing.T, b []byte) {
		se, err := DecodeEvidence(b)
		if err == nil && se.Format != evidenceFormat {
			t.Fatalf("format %d accepted", se.Format)
		}
	})
}

// TestEncodeFindingsBound: findings fit maxFindingsBytes, enforced first.
func TestEncodeFindingsBound(t *testing.T) {
	var fs []StoredFinding
	for i := 0; i < 40; i++ {
		fs = append(fs, StoredFinding{Rule: fmt.Sprintf("r%d", i), Message: strings.Repeat("é", 500), Expected: strings.Repeat("x", 900)})
	}
	b, err := encodeFindings(fs)
	if err != nil || len(b) > maxFindingsBytes {
		t.Fatalf("%d bytes: %v", len(b), err)
	}
	got, err := DecodeFindings(b)
	if err != nil || len(got) == 0 || got[0].Rule != "r0" || len(got[0].Expected) > maxFindingText+len("…") {
		t.Fatalf("findings %d: %v", len(got), err)
	}
}

// BenchmarkEncodeEvidence: what the pulse's commit adds to encode its
// evidence (JSON, gzip) for a UEFI-sized evidence (60 boot events).
func BenchmarkEncodeEvidence(b *testing.B) {
	ev := bigEvidence(60)
	var n int
	for b.Loop() {
		out, err := encodeEvidence(ev, 8<<10)
		if err != nil {
			b.Fatal(err)
		}
		n = len(out)
	}
	b.ReportMetric(float64(n), "bytes")
}

// BenchmarkEncodeEvidenceCached: the same, for a pulse whose evidence a
// fleet's other agents (or its own last pulse) already showed.
func BenchmarkEncodeEvidenceCached(b *testing.B) {
	ev := bigEvidence(60)
	for b.Loop() {
		if _, err := encodeEvidenceCached(ev, 8<<10, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// TestEncodeEvidenceCachedNamesNoAgent: two agents with the same evidence
// share one encoding, which names neither.
func TestEncodeEvidenceCachedNamesNoAgent(t *testing.T) {
	a, b := bigEvidence(5), bigEvidence(5)
	a.AgentID, b.AgentID = "edge-a", "edge-b"
	ea, err := encodeEvidenceCached(a, 8<<10, nil)
	if err != nil {
		t.Fatal(err)
	}
	eb, _ := encodeEvidenceCached(b, 8<<10, nil)
	if !bytes.Equal(ea, eb) {
		t.Fatal("same evidence, two encodings")
	}
	se, err := DecodeEvidence(ea)
	if err != nil || se.Evidence.AgentID != "" || len(se.Evidence.Boot.Events) != 5 {
		t.Fatalf("decoded %+v %v", se, err)
	}
	b.Runtime.AgentBinarySHA256 = strings.Repeat("ef", 32)
	if ec, _ := encodeEvidenceCached(b, 8<<10, nil); bytes.Equal(ec, ea) {
		t.Fatal("different evidence, the same encoding")
	}
}
