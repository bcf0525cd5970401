package tpm_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/pulse-attest/pulse/simulator/simtest"
	"github.com/pulse-attest/pulse/tpm"
	"github.com/pulse-attest/pulse/tpm/credential"
)

func TestParseLockout(t *testing.T) {
	prop := func(p tpm2.TPMPT, v uint32) tpm2.TPMSTaggedProperty {
		return tpm2.TPMSTaggedProperty{Property: p, Value: v}
	}
	full := func(permanent, counter uint32) []tpm2.TPMSTaggedProperty {
		return []tpm2.TPMSTaggedProperty{
			prop(tpm2.TPMPTPermanent, permanent),
			prop(tpm2.TPMPTStartupClear, 0x0000000f), // enables, not orderly
			prop(tpm2.TPMPTNVIndexMax, 2048),         // ignored
			prop(tpm2.TPMPTLockoutCounter, counter),
			prop(tpm2.TPMPTMaxAuthFail, 3),
			prop(tpm2.TPMPTLockoutInterval, 1000),
			prop(tpm2.TPMPTLockoutRecovery, 1000),
		}
	}
	tests := []struct {
		name    string
		props   []tpm2.TPMSTaggedProperty
		want    tpm.LockoutState
		wantErr bool
	}{
		{"healthy", full(0x1, 0), tpm.LockoutState{MaxAuthFail: 3, Interval: 1000 * time.Second, Recovery: 1000 * time.Second}, false},
		{"counting", full(0x0, 2), tpm.LockoutState{Counter: 2, MaxAuthFail: 3, Interval: 1000 * time.Second, Recovery: 1000 * time.Second}, false},
		{"in lockout (bit 9)", full(0x200|0x1, 3), tpm.LockoutState{Counter: 3, MaxAuthFail: 3, InLockout: true, Interval: 1000 * time.Second, Recovery: 1000 * time.Second}, false},
		{"other permanent bits only", full(0x1ff|0x400, 0), tpm.LockoutState{MaxAuthFail: 3, Interval: 1000 * time.Second, Recovery: 1000 * time.Second}, false},
		{"missing counter", []tpm2.TPMSTaggedProperty{prop(tpm2.TPMPTPermanent, 0), prop(tpm2.TPMPTMaxAuthFail, 3),
			prop(tpm2.TPMPTLockoutInterval, 1), prop(tpm2.TPMPTLockoutRecovery, 1)}, tpm.LockoutState{}, true},
		{"missing permanent", full(0, 0)[1:], tpm.LockoutState{}, true},
		{"orderly", append(full(0x1, 0), prop(tpm2.TPMPTStartupClear, 0x8000000f)), tpm.LockoutState{MaxAuthFail: 3, Interval: 1000 * time.Second, Recovery: 1000 * time.Second, Orderly: true}, false},
		{"missing startup clear", append(full(0, 0)[:1], full(0, 0)[2:]...), tpm.LockoutState{}, true},
		{"empty", nil, tpm.LockoutState{}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tpm.ParseLockout(tc.props)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %t", err, tc.wantErr)
			}
			if got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestLockoutOnSwtpm drives swtpm (default: 3 failures, 1000 s) into
// lockout with wrong passwords for a DA-protected key and reads the state
// at each step. Pulse's noDA AK still quotes in lockout; Pulse's earlier AK
// (no noDA) is refused with TPM_RC_LOCKOUT, which tpm.IsLockout names.
func TestLockoutOnSwtpm(t *testing.T) {
	sw := simtest.StartFresh(t, "")
	if sw == nil {
		return
	}
	tp, err := sw.Open(simtest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	st, err := tp.Lockout()
	if err != nil {
		t.Fatal(err)
	}
	if st.Counter != 0 || st.InLockout || st.MaxAuthFail == 0 {
		t.Fatalf("fresh swtpm: %+v", st)
	}
	t.Logf("fresh swtpm: %+v", st)
	legacy := persistLegacyAK(t, tp, legacyAKHandle)
	ak, err := tp.AK(tpm.AKOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := uint32(1); i <= st.MaxAuthFail; i++ {
		if err := sw.FailAuthorizations(1); err != nil {
			t.Fatal(err)
		}
		got, err := tp.Lockout()
		if err != nil {
			t.Fatal(err)
		}
		if got.Counter != i || got.InLockout != (i >= st.MaxAuthFail) {
			t.Fatalf("after %d failures: %+v", i, got)
		}
	}
	nonce := make([]byte, 32)
	if _, _, err := tp.Quote(ak, []uint32{0, 7}, nonce); err != nil {
		t.Fatalf("noDA AK in lockout: %v", err)
	}
	_, _, err = tp.Quote(legacy, []uint32{0, 7}, nonce)
	if !tpm.IsLockout(err) || !errors.Is(err, tpm.ErrLockout) {
		t.Fatalf("legacy AK in lockout: %v, want TPM_RC_LOCKOUT", err)
	}
}

// TestOrderlyRebootCountsNothing: with a DA-protected key in use (Pulse's
// earlier AK), a reboot preceded by TPM2_Shutdown leaves the lockout
// counter alone and the TPM reports the shutdown orderly; a reset without
// it (a power cut) counts one failure and is reported unorderly.
func TestOrderlyRebootCountsNothing(t *testing.T) {
	sw := simtest.StartFresh(t, "")
	if sw == nil {
		return
	}
	tp, err := sw.Open(simtest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	legacy := persistLegacyAK(t, tp, legacyAKHandle)
	nonce := make([]byte, 32)
	state := func() tpm.LockoutState {
		t.Helper()
		st, err := tp.Lockout()
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	for i := 0; i < 5; i++ {
		if _, _, err := tp.Quote(legacy, []uint32{0}, nonce); err != nil {
			t.Fatal(err)
		}
		if err := sw.Shutdown(); err != nil {
			t.Fatal(err)
		}
		if err := sw.Reboot(); err != nil {
			t.Fatal(err)
		}
		if st := state(); st.Counter != 0 || !st.Orderly {
			t.Fatalf("orderly reboot %d: %+v", i+1, st)
		}
	}
	if _, _, err := tp.Quote(legacy, []uint32{0}, nonce); err != nil {
		t.Fatal(err)
	}
	if err := sw.Reboot(); err != nil {
		t.Fatal(err)
	}
	if st := state(); st.Counter != 1 || st.Orderly {
		t.Fatalf("after a power cut: %+v, want counter 1 and not orderly", st)
	}
}

// TestAgentObjectsSurvivePowerCut: everything the agent does with the TPM
// (read the EK and its certificate, activate a credential with EK and AK,
// extend the runtime PCR, quote) uses no DA-protected authorisation, so a
// power cut right after counts nothing (TestOrderlyRebootCountsNothing is
// the other side: a DA-protected key in use makes it count).
func TestAgentObjectsSurvivePowerCut(t *testing.T) {
	sw := simtest.StartFresh(t, "")
	if sw == nil {
		return
	}
	tp, err := sw.Open(simtest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	for i := 0; i < 3; i++ {
		ak, err := tp.AK(tpm.AKOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ek, err := tp.EK()
		if err != nil || len(ek.Certificate) == 0 {
			t.Fatalf("ek: certificate %d bytes, %v", len(ek.Certificate), err)
		}
		secret := bytes.Repeat([]byte{byte(i + 1)}, 32)
		blob, enc, err := credential.MakeForPublic(ek.PublicBlob, ak.Name(), secret)
		if err != nil {
			t.Fatal(err)
		}
		got, err := tp.ActivateCredential(ak, blob, enc)
		if err != nil || !bytes.Equal(got, secret) {
			t.Fatalf("activate credential: %v", err)
		}
		d := sha256.Sum256([]byte("runtime record"))
		if err := tp.Extend(14, map[uint16][]byte{tpm.AlgSHA256: d[:]}); err != nil {
			t.Fatal(err)
		}
		if _, _, err := tp.Quote(ak, []uint32{0, 14}, d[:]); err != nil {
			t.Fatal(err)
		}
		if err := sw.Reboot(); err != nil {
			t.Fatal(err)
		}
		st, err := tp.Lockout()
		if err != nil {
			t.Fatal(err)
		}
		if st.Counter != 0 || st.Orderly {
			t.Fatalf("power cut %d after the agent's TPM work: %+v, want counter 0 (and an unorderly shutdown)", i+1, st)
		}
	}
}

// BenchmarkLockout is the per-pulse cost of reading the lockout state
// (one TPM2_GetCapability) on swtpm.
func BenchmarkLockout(b *testing.B) {
	sw := simtest.Start(b, "")
	if sw == nil {
		return
	}
	tp, err := sw.Open(nil)
	if err != nil {
		b.Fatal(err)
	}
	defer tp.Close()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := tp.Lockout(); err != nil {
			b.Fatal(err)
		}
	}
}
