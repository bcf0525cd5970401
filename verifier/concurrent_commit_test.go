package verifier_test

import (
	"context"
	"crypto/sha256"
	"sync"
	"testing"

	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/verifier/store"
)

// TestConcurrentCopiesOneWrite: eight copies of one pulse whose evidence
// alerts (an agent binary changed outside any window), sent at once over
// real gRPC/mTLS to a verifier on swtpm evidence. The commit is the
// pulse's only write and everything else follows a commit that won: one
// copy is UNTRUSTED/BINARY_CHANGED, the seven others NONCE_REPLAYED with
// none of its evidence; one alert (in the store and in the audit log), one
// history entry, and the last-known-good untouched.
func TestConcurrentCopiesOneWrite(t *testing.T) {
	e := newEnv(t, "rhel8-uefi")
	if e == nil {
		return
	}
	st := openStore(t, e)
	const id = "edge-copies"
	a := e.enrolled(id)
	ctx := context.Background()
	lkg, err := st.GetLKG(ctx, id)
	if err != nil || lkg.BinarySHA256 == "" {
		t.Fatalf("last-known-good after the first pulse: %+v, %v", lkg, err)
	}
	// Honest side first: an unchanged pulse is TRUSTED and alerts nothing.
	wantVerdict(t, a.Pulse(nil), trusted, pulsev1.Reason_REASON_OK)

	a.Binary = sha256.Sum256([]byte("swapped agent build"))
	a.MeasureBinary()
	req := a.Build(nil)
	const copies = 8
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		resps = make([]*pulsev1.PulseResponse, copies)
		errs  = make([]error, copies)
	)
	for i := range copies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			resps[i], errs[i] = a.Cl.Pulse(ctx, req)
		}()
	}
	close(start)
	wg.Wait()
	var changed, replayed int
	for i, r := range resps {
		if errs[i] != nil {
			t.Fatalf("copy %d: %v", i, errs[i])
		}
		switch {
		case r.GetVerdict() == untrusted && r.GetReason() == pulsev1.Reason_REASON_BINARY_CHANGED:
			changed++
		case r.GetVerdict() == untrusted && r.GetReason() == pulsev1.Reason_REASON_NONCE_REPLAYED:
			replayed++
			if len(r.GetFindings()) != 0 || len(r.GetNotes()) != 0 || r.GetState().GetSendFirmwareLog() {
				t.Fatalf("copy %d lost its epoch but carries evidence: %v", i, r)
			}
		default:
			t.Fatalf("copy %d: %s/%s (%s)", i, r.GetVerdict(), r.GetReason(), r.GetMessage())
		}
	}
	if changed != 1 || replayed != copies-1 {
		t.Fatalf("%d BINARY_CHANGED and %d NONCE_REPLAYED, want 1 and %d", changed, replayed, copies-1)
	}

	// One alert of its kind, and no other alert of any kind more than once.
	alerts, err := st.ListAlerts(ctx, store.AlertFilter{AgentID: id})
	if err != nil {
		t.Fatal(err)
	}
	byKind := map[string]int{}
	for _, al := range alerts {
		byKind[al.Kind]++
	}
	if byKind["binary_changed"] != 1 {
		t.Fatalf("alerts by kind %v, want one binary_changed", byKind)
	}
	for k, n := range byKind {
		if n != 1 {
			t.Fatalf("%d %s alerts from eight copies of one pulse, want at most 1", n, k)
		}
	}
	waitFor(t, "the audit record", func() bool { n, _ := auditedAlerts(t, e, id, "binary_changed", ""); return n >= 1 })
	if n, _ := auditedAlerts(t, e, id, "binary_changed", ""); n != 1 {
		t.Fatalf("%d binary_changed audit records, want 1", n)
	}
	hist, err := st.History(ctx, id, 100)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, h := range hist {
		if pulsev1.Reason(h.Reason) == pulsev1.Reason_REASON_BINARY_CHANGED {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d BINARY_CHANGED history entries, want 1: %+v", n, hist)
	}
	if got, err := st.GetLKG(ctx, id); err != nil || got.BinarySHA256 != lkg.BinarySHA256 {
		t.Fatalf("last-known-good moved to %+v (%v), want %s kept", got, err, lkg.BinarySHA256)
	}
	// The agent's row records the winner's verdict, at the next epoch.
	ag, err := st.GetAgent(ctx, id)
	if err != nil || pulsev1.Reason(ag.LastReason) != pulsev1.Reason_REASON_BINARY_CHANGED {
		t.Fatalf("stored %v, %v; want BINARY_CHANGED", ag, err)
	}
}
