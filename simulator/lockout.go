package simulator

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/pulse-attest/pulse/tpm"
)

// FailAuthorizations does what a password-guessing attacker (or a broken
// application) on the device does to the TPM's dictionary-attack
// protection: it creates a DA-protected key (no noDA) with a password as a
// transient primary of the owner hierarchy and signs with it n times giving
// a wrong password, each a counted authorisation failure. With swtpm's
// defaults (3 failures) three put the TPM in lockout: it then refuses every
// DA-protected authorisation with TPM_RC_LOCKOUT until the counter decays
// (lockout interval) or someone with lockoutAuth clears it. Keys with noDA,
// such as Pulse's AK, are not affected by the lockout.
//
// An authorisation refused because the TPM is already in lockout is not a
// failure of this method; any other answer than an authorisation failure
// or lockout is.
func (s *Swtpm) FailAuthorizations(n int) error {
	tr := rawTransport{path: s.ServerSocket()}
	owner := tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)}
	tmpl := tpm2.New2B(tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgECC,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true,
			UserWithAuth: true, SignEncrypt: true, // no NoDA: the point
		},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Scheme: tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgECDSA, Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA,
				&tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256})},
			CurveID: tpm2.TPMECCNistP256,
		}),
	})
	rsp, err := (tpm2.CreatePrimary{
		PrimaryHandle: owner,
		InSensitive:   tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{UserAuth: tpm2.TPM2BAuth{Buffer: []byte("right password")}}},
		InPublic:      tmpl,
	}).Execute(tr)
	if err != nil {
		return fmt.Errorf("simulator: create a DA-protected key: %w", err)
	}
	defer func() { _, _ = (tpm2.FlushContext{FlushHandle: rsp.ObjectHandle}).Execute(tr) }()
	digest := bytes.Repeat([]byte{0x5a}, 32)
	for i := 0; i < n; i++ {
		_, err := (tpm2.Sign{
			KeyHandle:  tpm2.AuthHandle{Handle: rsp.ObjectHandle, Name: rsp.Name, Auth: tpm2.PasswordAuth([]byte("wrong password"))},
			Digest:     tpm2.TPM2BDigest{Buffer: digest},
			InScheme:   tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
			Validation: tpm2.TPMTTKHashCheck{Tag: tpm2.TPMSTHashCheck, Hierarchy: tpm2.TPMRHNull},
		}).Execute(tr)
		switch {
		case err == nil:
			return fmt.Errorf("simulator: sign %d with a wrong password succeeded", i+1)
		case isAuthFailure(err):
		default:
			return fmt.Errorf("simulator: sign %d with a wrong password: %w", i+1, err)
		}
	}
	return nil
}

// PersistLegacyAK leaves the TPM as an agent from before noDA did:
// Pulse's earlier AK (tpm.LegacyAKTemplate, no noDA) persisted at handle,
// which must be free. It returns the key's marshalled TPMT_PUBLIC (what
// that agent enrolled). Drills of the one-time replacement use it.
func (s *Swtpm) PersistLegacyAK(handle uint32) ([]byte, error) {
	tr := rawTransport{path: s.ServerSocket()}
	owner := tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)}
	rsp, err := (tpm2.CreatePrimary{PrimaryHandle: owner, InPublic: tpm2.New2B(tpm.LegacyAKTemplate())}).Execute(tr)
	if err != nil {
		return nil, fmt.Errorf("simulator: create the earlier ak: %w", err)
	}
	defer func() { _, _ = (tpm2.FlushContext{FlushHandle: rsp.ObjectHandle}).Execute(tr) }()
	if _, err := (tpm2.EvictControl{Auth: owner, ObjectHandle: tpm2.NamedHandle{Handle: rsp.ObjectHandle, Name: rsp.Name},
		PersistentHandle: tpm2.TPMIDHPersistent(handle)}).Execute(tr); err != nil {
		return nil, fmt.Errorf("simulator: persist the earlier ak at 0x%08x: %w", handle, err)
	}
	pub, err := rsp.OutPublic.Contents()
	if err != nil {
		return nil, fmt.Errorf("simulator: earlier ak public area: %w", err)
	}
	return tpm2.Marshal(pub), nil
}

// isAuthFailure: the TPM refused an authorisation (a wrong password, or
// the lockout that failures lead to).
func isAuthFailure(err error) bool {
	return errors.Is(err, tpm2.TPMRCAuthFail) || errors.Is(err, tpm2.TPMRCBadAuth) || errors.Is(err, tpm2.TPMRCLockout)
}

// rawTransport is a go-tpm transport over swtpm's server socket, one
// connection per command (swtpm serves one client at a time, and the agent
// under test keeps using its own).
type rawTransport struct{ path string }

// Send sends cmd, again while libtpms answers TPM_RC_RETRY, TPM_RC_YIELDED
// or TPM_RC_TESTING (it answers RETRY to the first use of an algorithm it
// has not self-tested yet).
func (r rawTransport) Send(cmd []byte) ([]byte, error) {
	pause := 10 * time.Millisecond
	for attempt := 0; ; attempt++ {
		rsp, err := r.sendOnce(cmd)
		if err != nil {
			return nil, err
		}
		switch tpm2.TPMRC(binary.BigEndian.Uint32(rsp[6:10])) {
		case tpm2.TPMRCRetry, tpm2.TPMRCYielded, tpm2.TPMRCTesting:
			if attempt < 12 {
				time.Sleep(pause)
				pause = min(2*pause, 500*time.Millisecond)
				continue
			}
		}
		return rsp, nil
	}
}

func (r rawTransport) sendOnce(cmd []byte) ([]byte, error) {
	conn, err := net.DialTimeout("unix", r.path, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", r.path, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := conn.Write(cmd); err != nil {
		return nil, fmt.Errorf("write: %w", err)
	}
	hdr := make([]byte, 10)
	if _, err := io.ReadFull(conn, hdr); err != nil {
		return nil, fmt.Errorf("read response: %w", err)
	}
	size := binary.BigEndian.Uint32(hdr[2:6])
	if size < 10 || size > 1<<16 {
		return nil, fmt.Errorf("response size %d", size)
	}
	out := make([]byte, size)
	copy(out, hdr)
	if _, err := io.ReadFull(conn, out[10:]); err != nil {
		return nil, fmt.Errorf("read response: %w", err)
	}
	return out, nil
}
