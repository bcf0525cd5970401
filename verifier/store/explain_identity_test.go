package store_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/verifier/store"
)

// TestExplanationCertificateAndKernel: the agent's TLS certificate
// (subject, NotAfter) is written by every committed pulse, the kernel
// summary when the pulse sets one (a pulse without it keeps the last one);
// a replayed epoch writes neither; both count against the bound.
func TestExplanationCertificateAndKernel(t *testing.T) {
	for name, s := range engines(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			enrollPlain(t, s, "k")
			at := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
			exp := at.Add(90 * 24 * time.Hour)
			x1 := &store.Explanation{At: at, Verdict: 1, Reason: 1, Findings: []byte(`[]`), Evidence: []byte("ev1"),
				CertSubject: "CN=k,O=fleet", CertNotAfter: exp, Kernel: []byte(`{"pinned":1}`)}
			if st, err := s.CommitPulse(ctx, "k", 0, store.PulseUpdate{At: at, Verdict: 1, Explanation: x1}); err != nil || st != store.NonceOK {
				t.Fatalf("commit 1: %v %v", st, err)
			}
			got, err := s.GetExplanation(ctx, "k")
			if err != nil {
				t.Fatal(err)
			}
			if got.CertSubject != "CN=k,O=fleet" || !got.CertNotAfter.Equal(exp) || string(got.Kernel) != `{"pinned":1}` {
				t.Fatalf("explanation %+v", got)
			}

			// A replay writes nothing: not the certificate, not the kernel.
			bad := &store.Explanation{At: at, Verdict: 1, CertSubject: "CN=forged", CertNotAfter: exp.Add(time.Hour), Evidence: []byte("x"), Kernel: []byte(`{}`)}
			if st, err := s.CommitPulse(ctx, "k", 0, store.PulseUpdate{At: at, Verdict: 1, Explanation: bad}); err != nil || st != store.NonceReplayed {
				t.Fatalf("replay: %v %v", st, err)
			}
			if got, _ := s.GetExplanation(ctx, "k"); got.CertSubject != "CN=k,O=fleet" || string(got.Kernel) != `{"pinned":1}` {
				t.Fatalf("replay changed the explanation: %+v", got)
			}

			// A rotated certificate on a pulse without a kernel summary (its
			// quote did not verify): the certificate moves, the summary stays.
			exp2 := exp.Add(30 * 24 * time.Hour)
			x2 := &store.Explanation{At: at.Add(time.Minute), Verdict: 2, Reason: 7, CertSubject: "CN=k,O=fleet,OU=rotated", CertNotAfter: exp2}
			if st, err := s.CommitPulse(ctx, "k", 1, store.PulseUpdate{At: at.Add(time.Minute), Verdict: 2, Explanation: x2}); err != nil || st != store.NonceOK {
				t.Fatalf("commit 2: %v %v", st, err)
			}
			got, _ = s.GetExplanation(ctx, "k")
			if got.CertSubject != "CN=k,O=fleet,OU=rotated" || !got.CertNotAfter.Equal(exp2) || string(got.Kernel) != `{"pinned":1}` || !bytes.Equal(got.Evidence, []byte("ev1")) {
				t.Fatalf("after a pulse without evidence: %+v", got)
			}

			// Only the certificate changed: still written (it is in the
			// digest).
			x3 := *x2
			x3.CertNotAfter = exp2.Add(time.Hour)
			if st, err := s.CommitPulse(ctx, "k", 2, store.PulseUpdate{At: at.Add(2 * time.Minute), Verdict: 2, Explanation: &x3}); err != nil || st != store.NonceOK {
				t.Fatalf("commit 3: %v %v", st, err)
			}
			if got, _ := s.GetExplanation(ctx, "k"); !got.CertNotAfter.Equal(x3.CertNotAfter) {
				t.Fatalf("NotAfter %v, want %v", got.CertNotAfter, x3.CertNotAfter)
			}

			// The kernel summary and subject count against the bound.
			huge := &store.Explanation{At: at, Verdict: 1, Evidence: []byte("e"), CertSubject: strings.Repeat("s", 100),
				Kernel: bytes.Repeat([]byte{'k'}, store.MaxExplanationBytes-100)}
			if _, err := s.CommitPulse(ctx, "k", 3, store.PulseUpdate{At: at, Verdict: 1, Explanation: huge}); !errors.Is(err, store.ErrExplanationTooLarge) {
				t.Fatalf("over the bound: %v, want ErrExplanationTooLarge", err)
			}
			if _, mx, err := s.ExplanationBytes(ctx); err != nil || mx < int64(len(x3.CertSubject)+len(`{"pinned":1}`)+3) {
				t.Fatalf("explanation bytes max %d: %v", mx, err)
			}
		})
	}
}
