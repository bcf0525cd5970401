package verifier

import (
	"testing"

	"github.com/google/go-tpm/tpm2"
	"google.golang.org/protobuf/types/known/durationpb"

	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/tpm"
	"github.com/pulse-attest/pulse/verifier/store"
)

// TestUnquoted: a pulse without a quote from an agent enrolled with a TPM
// is TPM_LOCKOUT only when it says so and its enrolled AK lacks noDA (a
// TPM in lockout refuses only such a key); every other case is a
// downgrade. Neither is ever accepted.
func TestUnquoted(t *testing.T) {
	legacy := tpm2.Marshal(tpm.LegacyAKTemplate())
	current := tpm2.Marshal(tpm.AKTemplate())
	locked := &pulsev1.Health{Tpm: &pulsev1.TPMHealth{InLockout: true, LockoutCounter: 3, MaxAuthFail: 3, LockoutInterval: durationpb.New(1000e9)}}
	for _, c := range []struct {
		name   string
		ak     []byte
		tpm    bool
		health *pulsev1.Health
		want   pulsev1.Reason
	}{
		{"lockout, AK without noDA", legacy, true, locked, pulsev1.Reason_REASON_TPM_LOCKOUT},
		{"lockout, AK with noDA", current, true, locked, pulsev1.Reason_REASON_TPM_DOWNGRADE},
		{"lockout, unreadable AK", []byte{1, 2, 3}, true, locked, pulsev1.Reason_REASON_TPM_DOWNGRADE},
		{"lockout, payload says no TPM", legacy, false, locked, pulsev1.Reason_REASON_TPM_DOWNGRADE},
		{"no lockout", legacy, true, &pulsev1.Health{Tpm: &pulsev1.TPMHealth{MaxAuthFail: 3}}, pulsev1.Reason_REASON_TPM_DOWNGRADE},
		{"no health", legacy, true, nil, pulsev1.Reason_REASON_TPM_DOWNGRADE},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := unquoted(&Outcome{}, &store.Agent{ID: "a", TPM: true, AKPublic: c.ak}, &pulsev1.PulsePayload{Tpm: c.tpm, Health: c.health})
			if o.Reason != c.want || o.Verdict != pulsev1.Verdict_VERDICT_UNTRUSTED || accepted(o.Verdict) {
				t.Fatalf("%s/%s (%s), want UNTRUSTED/%s", o.Verdict, o.Reason, o.Message, c.want)
			}
		})
	}
}

// FuzzAKNoDA: the enrolled AK's public area is parsed for its noDA bit;
// any bytes give an answer or an error, never a panic, and only a key
// whose attributes say noDA is reported so.
func FuzzAKNoDA(f *testing.F) {
	f.Add(tpm2.Marshal(tpm.AKTemplate()))
	f.Add(tpm2.Marshal(tpm.LegacyAKTemplate()))
	f.Add([]byte{0, 0x23, 0, 0x0b})
	f.Fuzz(func(t *testing.T, b []byte) {
		noDA, err := akNoDA(b)
		if err != nil {
			if noDA {
				t.Fatal("noDA reported with an error")
			}
			return
		}
		pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](b)
		if err != nil || pub.ObjectAttributes.NoDA != noDA {
			t.Fatalf("akNoDA %t disagrees with the attributes (%v)", noDA, err)
		}
	})
}
