package tpm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// ErrActivationRefused is returned (wrapped, with the TPM's response code,
// e.g. tpm2.TPMRCIntegrity for a blob made for another AK name) when the TPM
// refuses a credential: it was not made for this EK and AK, or was altered.
var ErrActivationRefused = errors.New("tpm refused the credential")

// ActivateCredential recovers the secret a verifier sealed with
// tpm/credential.Make for this TPM's RSA EK and this AK (TPM2_ActivateCredential).
// credBlob and encSecret are the marshalled TPM2B_ID_OBJECT and
// TPM2B_ENCRYPTED_SECRET (with their size prefixes). The TPM only releases
// the secret if the blob was made for this EK and for the AK's name.
func (t *TPM) ActivateCredential(ak *AK, credBlob, encSecret []byte) ([]byte, error) {
	return t.ActivateCredentialEK(EKRSA2048, ak, credBlob, encSecret)
}

// ActivateCredentialEK is ActivateCredential with the EK of the given type.
func (t *TPM) ActivateCredentialEK(k EKType, ak *AK, credBlob, encSecret []byte) ([]byte, error) {
	if ak == nil {
		return nil, fmt.Errorf("activate credential: nil ak")
	}
	info, err := ekFor(k)
	if err != nil {
		return nil, fmt.Errorf("activate credential: %w", err)
	}
	idObject, err := unwrap2B(credBlob)
	if err != nil {
		return nil, fmt.Errorf("activate credential: credential blob: %w", err)
	}
	secret, err := unwrap2B(encSecret)
	if err != nil {
		return nil, fmt.Errorf("activate credential: encrypted secret: %w", err)
	}
	var out []byte
	err = t.do(func(tr transport.TPM) error {
		ek, flushEK, err := t.loadEK(tr, info)
		if err != nil {
			return err
		}
		if flushEK {
			defer t.flush(tr, ek.Handle)
		}
		// The EK's policy is PolicySecret(TPM_RH_ENDORSEMENT).
		sess, closeSess, err := tpm2.PolicySession(tr, tpm2.TPMAlgSHA256, 16)
		if err != nil {
			return fmt.Errorf("start policy session: %w", err)
		}
		defer func() {
			if err := closeSess(); err != nil {
				t.log.Warn("flush policy session failed", "error", err)
			}
		}()
		if _, err := (tpm2.PolicySecret{
			AuthHandle:    tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)},
			PolicySession: sess.Handle(),
			NonceTPM:      sess.NonceTPM(),
		}).Execute(tr); err != nil {
			return fmt.Errorf("policy secret (endorsement): %w", err)
		}
		rsp, err := (tpm2.ActivateCredential{
			ActivateHandle: tpm2.AuthHandle{
				Handle: tpm2.TPMHandle(ak.handle),
				Name:   tpm2.TPM2BName{Buffer: ak.name},
				Auth:   tpm2.PasswordAuth(nil),
			},
			KeyHandle: tpm2.AuthHandle{
				Handle: ek.Handle,
				Name:   ek.Name,
				Auth:   sess,
			},
			CredentialBlob: tpm2.TPM2BIDObject{Buffer: idObject},
			Secret:         tpm2.TPM2BEncryptedSecret{Buffer: secret},
		}).Execute(tr)
		if err != nil {
			var rc tpm2.TPMRC
			if errors.As(err, &rc) {
				return fmt.Errorf("%w: tpm2 activate credential: %w", ErrActivationRefused, err)
			}
			return fmt.Errorf("tpm2 activate credential: %w", err)
		}
		out = slices.Clone(rsp.CertInfo.Buffer)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("activate credential: %w", err)
	}
	return out, nil
}

// unwrap2B strips a TPM2B size prefix, insisting it matches the length.
func unwrap2B(b []byte) ([]byte, error) {
	if len(b) < 2 {
		return nil, fmt.Errorf("%d bytes, too short for a sized buffer", len(b))
	}
	n := int(binary.BigEndian.Uint16(b))
	if n != len(b)-2 {
		return nil, fmt.Errorf("size prefix says %d bytes, %d follow", n, len(b)-2)
	}
	return b[2:], nil
}
