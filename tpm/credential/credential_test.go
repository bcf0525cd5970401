package credential_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/pulse-attest/pulse/simulator/simtest"
	"github.com/pulse-attest/pulse/tpm"
	"github.com/pulse-attest/pulse/tpm/credential"
)

func secret(t *testing.T) []byte {
	t.Helper()
	s := make([]byte, 32)
	if _, err := rand.Read(s); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestActivateOnSwtpm runs both sides: the verifier makes a credential for
// the TPM's EK and AK name, the TPM recovers it; a credential made for
// another AK name or another EK is refused by the TPM.
func TestActivateOnSwtpm(t *testing.T) {
	sw := simtest.Start(t, "")
	tp, err := sw.Open(simtest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	ak, err := tp.AK(tpm.AKOptions{})
	if err != nil {
		t.Fatal(err)
	}

	for _, k := range []tpm.EKType{tpm.EKRSA2048, tpm.EKECCP256} {
		t.Run(k.String(), func(t *testing.T) {
			ek, err := tp.EKOfType(k)
			if err != nil {
				t.Fatal(err)
			}
			want := secret(t)
			blob, enc, err := credential.Make(ek.Public, ak.Name(), want)
			if err != nil {
				t.Fatal(err)
			}
			got, err := tp.ActivateCredentialEK(k, ak, blob, enc)
			if err != nil {
				t.Fatalf("activate: %v", err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("recovered %x, want %x", got, want)
			}

			// The same, from the EK's public area.
			blob, enc, err = credential.MakeForPublic(ek.PublicBlob, ak.Name(), want)
			if err != nil {
				t.Fatal(err)
			}
			if got, err := tp.ActivateCredentialEK(k, ak, blob, enc); err != nil || !bytes.Equal(got, want) {
				t.Fatalf("activate (MakeForPublic): %x, %v", got, err)
			}

			// Made for another AK name: the TPM's integrity check fails.
			otherName := ak.Name()
			otherName[len(otherName)-1] ^= 1
			blob, enc, err = credential.Make(ek.Public, otherName, want)
			if err != nil {
				t.Fatal(err)
			}
			if got, err := tp.ActivateCredentialEK(k, ak, blob, enc); !errors.Is(err, tpm.ErrActivationRefused) || !errors.Is(err, tpm2.TPMRCIntegrity) {
				t.Fatalf("credential for another AK name: %x, %v; want ErrActivationRefused (TPM_RC_INTEGRITY)", got, err)
			}

			// A tampered blob is refused.
			blob, enc, err = credential.Make(ek.Public, ak.Name(), want)
			if err != nil {
				t.Fatal(err)
			}
			blob[len(blob)-1] ^= 0x80
			if _, err := tp.ActivateCredentialEK(k, ak, blob, enc); !errors.Is(err, tpm.ErrActivationRefused) {
				t.Fatalf("tampered credential blob: %v, want ErrActivationRefused", err)
			}
			// Malformed size prefixes never reach the TPM.
			if _, err := tp.ActivateCredentialEK(k, ak, blob[:len(blob)-1], enc); err == nil || errors.Is(err, tpm.ErrActivationRefused) {
				t.Fatalf("blob whose size prefix disagrees: %v, want a local parse error", err)
			}
		})
	}

	t.Run("another EK", func(t *testing.T) {
		other := simtest.StartFresh(t, "")
		otp, err := other.Open(nil)
		if err != nil {
			t.Fatal(err)
		}
		defer otp.Close()
		otherEK, err := otp.EK()
		if err != nil {
			t.Fatal(err)
		}
		ownEK, err := tp.EK()
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(otherEK.PublicBlob, ownEK.PublicBlob) {
			t.Fatal("fresh TPM has the same EK")
		}
		blob, enc, err := credential.Make(otherEK.Public, ak.Name(), secret(t))
		if err != nil {
			t.Fatal(err)
		}
		if got, err := tp.ActivateCredential(ak, blob, enc); !errors.Is(err, tpm.ErrActivationRefused) {
			t.Fatalf("credential for another TPM's EK: %x, %v; want ErrActivationRefused", got, err)
		} else {
			t.Logf("refused: %v", err)
		}
		// The refusal did not leave the TPM in failure mode: a good
		// credential still activates.
		want := secret(t)
		blob, enc, err = credential.Make(ownEK.Public, ak.Name(), want)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := tp.ActivateCredential(ak, blob, enc); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("good credential after a refused one: %x, %v", got, err)
		}
	})

	if n, err := tp.TransientHandles(); err != nil || n != 0 {
		t.Fatalf("%d transient handles left (%v)", n, err)
	}
}

func TestMakeRejectsBadInput(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	name := append([]byte{0x00, 0x0b}, bytes.Repeat([]byte{1}, 32)...)
	good := bytes.Repeat([]byte{7}, 32)
	tests := []struct {
		name   string
		key    any
		akName []byte
		secret []byte
		want   error
	}{
		{"rsa 1024", &small.PublicKey, name, good, credential.ErrUnsupportedKey},
		{"p-384", &p384.PublicKey, name, good, credential.ErrUnsupportedKey},
		{"ed25519", edPub, name, good, credential.ErrUnsupportedKey},
		{"nil key", nil, name, good, credential.ErrUnsupportedKey},
		{"empty name", &rsaKey.PublicKey, nil, good, credential.ErrBadName},
		{"short name", &rsaKey.PublicKey, name[:20], good, credential.ErrBadName},
		{"unknown name alg", &rsaKey.PublicKey, append([]byte{0x00, 0x99}, name[2:]...), good, credential.ErrBadName},
		{"empty secret", &rsaKey.PublicKey, name, nil, credential.ErrBadSecret},
		{"long secret", &rsaKey.PublicKey, name, make([]byte, 33), credential.ErrBadSecret},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := credential.Make(tc.key, tc.akName, tc.secret)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Make: %v, want %v", err, tc.want)
			}
		})
	}
	if _, _, err := credential.MakeForPublic([]byte{1, 2, 3}, name, good); !errors.Is(err, credential.ErrUnsupportedKey) {
		t.Fatalf("MakeForPublic(garbage): %v", err)
	}
	// A good call gives sized buffers whose prefixes match.
	blob, enc, err := credential.Make(&rsaKey.PublicKey, name, good)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range [][]byte{blob, enc} {
		if len(b) < 2 || int(b[0])<<8|int(b[1]) != len(b)-2 {
			t.Fatalf("not a TPM2B: %x", b[:4])
		}
	}
	// RSA: the encrypted seed is one RSA block.
	if len(enc) != 2+256 {
		t.Fatalf("rsa encrypted secret %d bytes", len(enc))
	}
}
