package agent

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/simulator"
	"github.com/pulse-attest/pulse/simulator/simtest"
)

// harnessSwtpm attaches to the harness's swtpm (its state directory holds
// the server socket the TPM spec names).
func harnessSwtpm(t *testing.T, h *harness) *simulator.Swtpm {
	t.Helper()
	sock, ok := strings.CutPrefix(h.tpm.Spec(), "swtpm:")
	if !ok {
		t.Fatalf("harness tpm %q is not swtpm", h.tpm.Spec())
	}
	sw, err := simulator.Attach(filepath.Dir(sock), h.log)
	if err != nil {
		t.Fatal(err)
	}
	return sw
}

// TestPulseReportsTPMLockout: every pulse carries the TPM's
// dictionary-attack state. Driven into lockout by failed authorisations of
// another (DA-protected) key, the TPM still lets Pulse's noDA AK quote:
// the pulses stay verified and say the TPM is in lockout.
func TestPulseReportsTPMLockout(t *testing.T) {
	h := newHarness(t, harnessOpts{tpm: true})
	sw := harnessSwtpm(t, h)
	h.start(nil)
	rs := h.fv.waitPulses(t, 2, 60*time.Second)
	requireAccepted(t, rs)
	for i, r := range rs {
		th := r.Payload.GetHealth().GetTpm()
		if th.GetLockoutCounter() != 0 || th.GetInLockout() || th.GetMaxAuthFail() == 0 || th.GetError() != "" {
			t.Fatalf("pulse %d tpm health %v, want a healthy tpm", i, th)
		}
	}
	max := int(rs[0].Payload.GetHealth().GetTpm().GetMaxAuthFail())
	if err := sw.FailAuthorizations(max); err != nil {
		t.Fatal(err)
	}
	n := len(h.fv.received())
	deadline := time.Now().Add(60 * time.Second)
	for {
		rs = h.fv.waitPulses(t, n+1, 60*time.Second)
		last := rs[len(rs)-1]
		if th := last.Payload.GetHealth().GetTpm(); th.GetInLockout() {
			if last.Err != nil || last.Quote == nil {
				t.Fatalf("pulse in lockout: quote %v, verifier says %v; the noDA AK must keep quoting", last.Quote != nil, last.Err)
			}
			if th.GetLockoutCounter() != uint32(max) {
				t.Fatalf("lockout counter %d, want %d", th.GetLockoutCounter(), max)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no pulse reported the lockout")
		}
		n = len(rs)
	}
}

// TestUnquotedInLockout: only the TPM refusing in lockout, with the
// pulse's own health saying so, sends a pulse without a quote.
func TestUnquotedInLockout(t *testing.T) {
	locked := &PayloadInput{Health: &pulsev1.Health{Tpm: &pulsev1.TPMHealth{InLockout: true, LockoutCounter: 3, MaxAuthFail: 3}}}
	healthy := &PayloadInput{Health: &pulsev1.Health{Tpm: &pulsev1.TPMHealth{MaxAuthFail: 3}}}
	rcLockout := error(tpm2.TPMRCLockout)
	tests := []struct {
		name string
		in   *PayloadInput
		err  error
		want bool
	}{
		{"quoted", locked, nil, false},
		{"lockout reported and refused", locked, rcLockout, true},
		{"wrapped refusal", locked, errors.Join(errors.New("quote"), rcLockout), true},
		{"refused but health says no lockout", healthy, rcLockout, false},
		{"other tpm failure in lockout", locked, tpm2.TPMRCFailure, false},
		{"no health", &PayloadInput{}, rcLockout, false},
	}
	a := &Agent{log: simtest.Logger(t)}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := a.unquotedInLockout(tc.in, tc.err); got != tc.want {
				t.Fatalf("got %t, want %t", got, tc.want)
			}
		})
	}
}

// TestReplacesAKWithoutNoDA: a TPM left by an agent from before noDA (its
// AK persisted without noDA, enrolled with the verifier). The agent
// replaces the key once and enrolls the new one through credential
// activation; the verifier, which holds the old key, would refuse its
// quotes otherwise. A restart keeps the new key and enrolls nothing.
func TestReplacesAKWithoutNoDA(t *testing.T) {
	h := newHarness(t, harnessOpts{tpm: true})
	sw := harnessSwtpm(t, h)
	const handle = 0x81020042
	h.cfg.AKHandle = handle
	oldPub, err := sw.PersistLegacyAK(handle)
	if err != nil {
		t.Fatal(err)
	}
	// The earlier agent's enrollment: its state file and the verifier's.
	st, err := OpenState(h.cfg.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	oldSum := sha256.Sum256(oldPub)
	if err := st.SetEnrollment(&Enrollment{AgentID: testAgentID, TPM: true, Verifier: h.cfg.Verifier,
		AKPublicSHA256: hex.EncodeToString(oldSum[:]), AKHandle: handle, EnrolledAt: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	h.fv.mu.Lock()
	h.fv.akPublic, h.fv.enrolled, h.fv.tpmEnrolled = oldPub, true, true
	h.fv.mu.Unlock()

	a := h.newAgent()
	if !a.ak.Replaced || bytes.Equal(a.ak.Public(), oldPub) {
		t.Fatalf("AK replaced %t, same key %t", a.ak.Replaced, bytes.Equal(a.ak.Public(), oldPub))
	}
	h.start(a)
	rs := h.fv.waitPulses(t, 2, 60*time.Second)
	requireAccepted(t, rs)
	_, enrolls, _ := h.fv.counts()
	h.fv.mu.Lock()
	enrolledPub := h.fv.akPublic
	h.fv.mu.Unlock()
	if enrolls != 1 || !bytes.Equal(enrolledPub, a.ak.Public()) {
		t.Fatalf("%d enrollments, verifier holds the new key %t; want one re-enrollment of the new key", enrolls, bytes.Equal(enrolledPub, a.ak.Public()))
	}
	newPub := a.ak.Public()
	h.stopAgent()

	b := h.newAgent()
	if b.ak.Replaced || b.ak.Created || !bytes.Equal(b.ak.Public(), newPub) {
		t.Fatalf("restart: replaced %t created %t same key %t", b.ak.Replaced, b.ak.Created, bytes.Equal(b.ak.Public(), newPub))
	}
	n := len(h.fv.received())
	h.start(b)
	requireAccepted(t, h.fv.waitPulses(t, n+1, 60*time.Second)[n:])
	if _, enrolls, _ := h.fv.counts(); enrolls != 1 {
		t.Fatalf("restart enrolled again (%d enrollments)", enrolls)
	}
}
