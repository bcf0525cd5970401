package tpm

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// DefaultAKHandle is where the AK is persisted unless AKOptions says
// otherwise: in the owner range outside the TCG-reserved SRK
// (0x81000000-0x8100FFFF) and EK (0x81010000-0x8101FFFF) ranges, so it does
// not collide with an EK a vendor or swtpm_setup persisted (0x81010002 is the
// ECC P-256 EK's conventional handle).
const DefaultAKHandle uint32 = 0x81020001

// ErrAKTemplateMismatch is returned when the AK's persistent handle holds a
// key that is not a Pulse AK. Pulse never overwrites it: evict it yourself
// (tpm2_evictcontrol) or configure another handle.
var ErrAKTemplateMismatch = errors.New("persistent handle holds a key that is not a pulse attestation key")

// akUnique makes the AK's primary-key derivation Pulse's own: two
// applications using the same bare template would get the same key.
var akUnique = sha256.Sum256([]byte("pulse attestation key v1"))

// AKTemplate returns the template of Pulse's attestation key: an ECC P-256
// restricted signing key (ECDSA-SHA256, name algorithm SHA-256), fixedTPM,
// fixedParent, sensitiveDataOrigin, userWithAuth, noDA, with an empty auth
// value. It is created as a primary key of the owner hierarchy, so the same
// TPM always derives the same key from it.
//
// noDA: using the key is not subject to dictionary-attack protection. Its
// auth value is empty (nothing to guess), and without noDA every unorderly
// shutdown after the key was used counts as a failure: a few power cuts
// lock the TPM out (TPM_RC_LOCKOUT) and the device can no longer attest.
func AKTemplate() tpm2.TPMTPublic {
	t := legacyAKTemplate()
	t.ObjectAttributes.NoDA = true
	return t
}

// LegacyAKTemplate is Pulse's AK template before noDA: an agent that finds
// such a key persisted replaces it once (see TPM.AK). Tests use it to
// recreate a device enrolled by an earlier agent.
func LegacyAKTemplate() tpm2.TPMTPublic { return legacyAKTemplate() }

func legacyAKTemplate() tpm2.TPMTPublic {
	return tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgECC,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			FixedTPM:            true,
			FixedParent:         true,
			SensitiveDataOrigin: true,
			UserWithAuth:        true,
			Restricted:          true,
			SignEncrypt:         true,
		},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
			Scheme: tpm2.TPMTECCScheme{
				Scheme: tpm2.TPMAlgECDSA,
				Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{
					HashAlg: tpm2.TPMAlgSHA256,
				}),
			},
			CurveID: tpm2.TPMECCNistP256,
			KDF:     tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: akUnique[:]},
			Y: tpm2.TPM2BECCParameter{Buffer: make([]byte, 0)},
		}),
	}
}

// AKOptions configures where the AK lives.
type AKOptions struct {
	// Handle is the persistent handle (0x81xxxxxx); 0 means DefaultAKHandle.
	Handle uint32
	// OwnerAuth is the owner hierarchy's auth value (usually empty).
	OwnerAuth []byte
}

// AK is the attestation key, persisted in the TPM.
type AK struct {
	handle uint32
	public []byte // marshalled TPMT_PUBLIC
	name   []byte // TPM2B_NAME contents: nameAlg || H(public)
	key    crypto.PublicKey
	// Created is true when this call created and persisted the key.
	Created bool
	// Replaced is true when it replaced Pulse's earlier AK, which lacked
	// noDA (Created is true too).
	Replaced bool
}

// Handle is the AK's persistent handle.
func (a *AK) Handle() uint32 { return a.handle }

// Public is the marshalled TPMT_PUBLIC, as tpm/quote.Verify takes it.
func (a *AK) Public() []byte { return slices.Clone(a.public) }

// PublicKey is the AK's public key (*ecdsa.PublicKey).
func (a *AK) PublicKey() crypto.PublicKey { return a.key }

// Name is the AK's TPM name (name algorithm ID || digest of the public area),
// the name credential activation binds to.
func (a *AK) Name() []byte { return slices.Clone(a.name) }

// AK returns the attestation key, creating and persisting it on first use.
// The same TPM gives the same key on every later call, in this process or
// after a restart. If the persistent handle holds some other key, AK returns
// ErrAKTemplateMismatch and leaves it alone.
func (t *TPM) AK(opts AKOptions) (*AK, error) {
	h := opts.Handle
	if h == 0 {
		h = DefaultAKHandle
	}
	if h>>24 != uint32(tpm2.TPMHTPersistent) || h >= 0x81800000 {
		return nil, fmt.Errorf("ak: handle 0x%08x is not an owner persistent handle (0x81000000-0x817fffff)", h)
	}
	var ak *AK
	err := t.do(func(tr transport.TPM) error {
		pub, name, err := readPersistent(tr, h)
		switch {
		case err == nil:
			if err := checkTemplate(pub, AKTemplate()); err != nil {
				if checkTemplate(pub, legacyAKTemplate()) != nil {
					return fmt.Errorf("%w: handle 0x%08x: %v", ErrAKTemplateMismatch, h, err)
				}
				// Pulse's own earlier AK, without noDA: replace it once (the
				// agent re-enrolls the new key through credential activation).
				if err := evictPersistent(tr, h, name, opts.OwnerAuth); err != nil {
					return fmt.Errorf("replace attestation key without noDA at 0x%08x: %w", h, err)
				}
				if ak, err = t.createAK(tr, h, opts.OwnerAuth); err != nil {
					return err
				}
				ak.Replaced = true
				return nil
			}
			ak, err = newAK(h, pub, name)
			return err
		case !errors.Is(err, tpm2.TPMRCHandle):
			return err
		}
		ak, err = t.createAK(tr, h, opts.OwnerAuth)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("ak: %w", err)
	}
	if ak.Replaced {
		t.log.Warn("replaced an attestation key without noDA (power cuts would lock the TPM out); the new key must be enrolled again",
			"handle", fmt.Sprintf("0x%08x", h))
	} else if ak.Created {
		t.log.Info("attestation key created and persisted", "handle", fmt.Sprintf("0x%08x", h))
	} else {
		t.log.Debug("attestation key loaded", "handle", fmt.Sprintf("0x%08x", h))
	}
	return ak, nil
}

// createAK creates the AK primary and persists it at h.
func (t *TPM) createAK(tr transport.TPM, h uint32, ownerAuth []byte) (*AK, error) {
	owner := tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(ownerAuth)}
	rsp, err := (tpm2.CreatePrimary{
		PrimaryHandle: owner,
		InPublic:      tpm2.New2B(AKTemplate()),
	}).Execute(tr)
	if err != nil {
		return nil, fmt.Errorf("create primary: %w", err)
	}
	defer t.flush(tr, rsp.ObjectHandle)
	_, err = (tpm2.EvictControl{
		Auth:             owner,
		ObjectHandle:     tpm2.NamedHandle{Handle: rsp.ObjectHandle, Name: rsp.Name},
		PersistentHandle: tpm2.TPMIDHPersistent(h),
	}).Execute(tr)
	if err != nil {
		return nil, fmt.Errorf("persist at 0x%08x: %w", h, err)
	}
	pub, err := rsp.OutPublic.Contents()
	if err != nil {
		return nil, fmt.Errorf("create primary: public area: %w", err)
	}
	ak, err := newAK(h, *pub, rsp.Name.Buffer)
	if err != nil {
		return nil, err
	}
	ak.Created = true
	return ak, nil
}

// evictPersistent removes the persistent object at h.
func evictPersistent(tr transport.TPM, h uint32, name, ownerAuth []byte) error {
	_, err := (tpm2.EvictControl{
		Auth:             tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(ownerAuth)},
		ObjectHandle:     tpm2.NamedHandle{Handle: tpm2.TPMHandle(h), Name: tpm2.TPM2BName{Buffer: name}},
		PersistentHandle: tpm2.TPMIDHPersistent(h),
	}).Execute(tr)
	return err
}

// readPersistent reads a persistent object's public area and name.
func readPersistent(tr transport.TPM, h uint32) (tpm2.TPMTPublic, []byte, error) {
	rsp, err := (tpm2.ReadPublic{ObjectHandle: tpm2.TPMHandle(h)}).Execute(tr)
	if err != nil {
		return tpm2.TPMTPublic{}, nil, fmt.Errorf("read public 0x%08x: %w", h, err)
	}
	pub, err := rsp.OutPublic.Contents()
	if err != nil {
		return tpm2.TPMTPublic{}, nil, fmt.Errorf("read public 0x%08x: %w", h, err)
	}
	return *pub, rsp.Name.Buffer, nil
}

func newAK(h uint32, pub tpm2.TPMTPublic, name []byte) (*AK, error) {
	key, err := tpm2.Pub(pub)
	if err != nil {
		return nil, fmt.Errorf("ak public key: %w", err)
	}
	blob := tpm2.Marshal(pub)
	// The TPM's name must be the one computed from the public area; if not,
	// the object at the handle is not what ReadPublic claims.
	computed, err := tpm2.ObjectName(&pub)
	if err != nil {
		return nil, fmt.Errorf("ak name: %w", err)
	}
	if !bytes.Equal(computed.Buffer, name) {
		return nil, fmt.Errorf("ak name mismatch: tpm says %x, public area gives %x", name, computed.Buffer)
	}
	return &AK{handle: h, public: blob, name: slices.Clone(name), key: key}, nil
}

// checkTemplate reports how pub differs from template, ignoring the unique
// field (which the TPM replaces with the generated public key).
func checkTemplate(pub, template tpm2.TPMTPublic) error {
	if pub.Type != template.Type {
		return fmt.Errorf("key type 0x%04x, want 0x%04x", uint16(pub.Type), uint16(template.Type))
	}
	if pub.NameAlg != template.NameAlg {
		return fmt.Errorf("name algorithm 0x%04x, want 0x%04x", uint16(pub.NameAlg), uint16(template.NameAlg))
	}
	if a, b := tpm2.Marshal(pub.ObjectAttributes), tpm2.Marshal(template.ObjectAttributes); !bytes.Equal(a, b) {
		return fmt.Errorf("object attributes %x, want %x", a, b)
	}
	if !bytes.Equal(pub.AuthPolicy.Buffer, template.AuthPolicy.Buffer) {
		return fmt.Errorf("auth policy %x, want %x", pub.AuthPolicy.Buffer, template.AuthPolicy.Buffer)
	}
	if a, b := marshalParms(pub), marshalParms(template); !bytes.Equal(a, b) {
		return fmt.Errorf("key parameters %x, want %x", a, b)
	}
	return nil
}

// marshalParms marshals a public area without its unique field's contents,
// so the remaining bytes are type, nameAlg, attributes, policy and
// parameters.
func marshalParms(p tpm2.TPMTPublic) []byte {
	switch p.Type {
	case tpm2.TPMAlgECC:
		p.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{})
	case tpm2.TPMAlgRSA:
		p.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{})
	}
	return tpm2.Marshal(p)
}
