package tpm

import (
	"crypto"
	"errors"
	"fmt"
	"slices"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// EKType is one of the TCG default (low range) endorsement key templates.
type EKType int

// The EK templates Pulse knows.
const (
	// EKRSA2048 is template L-1: RSA 2048, AES-128-CFB, PolicySecret(endorsement).
	EKRSA2048 EKType = iota
	// EKECCP256 is template L-2: ECC NIST P-256, AES-128-CFB, PolicySecret(endorsement).
	EKECCP256
)

func (k EKType) String() string {
	switch k {
	case EKRSA2048:
		return "rsa2048"
	case EKECCP256:
		return "ecc-p256"
	}
	return fmt.Sprintf("ektype(%d)", int(k))
}

// ekInfo says where an EK type's certificate and conventional persistent
// handle are (TCG EK Credential Profile, section 2.2.1.5).
type ekInfo struct {
	template   tpm2.TPMTPublic
	certIndex  uint32
	persistent uint32
}

func ekFor(k EKType) (ekInfo, error) {
	switch k {
	case EKRSA2048:
		return ekInfo{template: tpm2.RSAEKTemplate, certIndex: 0x01c00002, persistent: 0x81010001}, nil
	case EKECCP256:
		return ekInfo{template: tpm2.ECCEKTemplate, certIndex: 0x01c0000a, persistent: 0x81010002}, nil
	}
	return ekInfo{}, fmt.Errorf("unknown ek type %d", int(k))
}

// ErrNoEKCertificate is not returned by EK (a missing certificate is a nil
// EK.Certificate); it is exported for callers that require one.
var ErrNoEKCertificate = errors.New("tpm has no ek certificate in nv")

// EK is an endorsement key's public part and its certificate.
type EK struct {
	Type EKType
	// Public is the EK public key (*rsa.PublicKey or *ecdsa.PublicKey).
	Public crypto.PublicKey
	// PublicBlob is the marshalled TPMT_PUBLIC.
	PublicBlob []byte
	// Certificate is the raw certificate from NV (DER, trailing padding
	// removed when the DER length is readable), nil when the TPM has none.
	// It is deliberately not parsed here: vendor certificates are not always
	// strict DER, and swtpm's has a critical SAN Go's x509 rejects.
	Certificate []byte
	// CertificateIndex is the NV index the certificate was read from.
	CertificateIndex uint32
	// Handle is the persistent handle the EK was read from, or 0 when it was
	// created from the template (and flushed).
	Handle uint32
}

// EK returns the RSA 2048 endorsement key (the TCG default template, low
// range) and its certificate. Use EKOfType for the ECC P-256 EK.
func (t *TPM) EK() (*EK, error) { return t.EKOfType(EKRSA2048) }

// EKOfType returns the endorsement key of the given default template: read
// from its conventional persistent handle when a key with that template is
// persisted there, else created from the template (the same key, as the
// endorsement seed decides it). Its certificate is read from NV when present.
func (t *TPM) EKOfType(k EKType) (*EK, error) {
	info, err := ekFor(k)
	if err != nil {
		return nil, err
	}
	ek := &EK{Type: k}
	err = t.do(func(tr transport.TPM) error {
		pub, h, err := t.ekPublic(tr, info)
		if err != nil {
			return err
		}
		ek.Handle = h
		ek.PublicBlob = tpm2.Marshal(pub)
		if ek.Public, err = tpm2.Pub(pub); err != nil {
			return fmt.Errorf("ek public key: %w", err)
		}
		cert, err := readNV(tr, info.certIndex)
		switch {
		case errors.Is(err, tpm2.TPMRCHandle):
			t.log.Debug("no ek certificate in nv", "ek_type", k.String(), "nv_index", fmt.Sprintf("0x%08x", info.certIndex))
		case err != nil:
			return fmt.Errorf("read ek certificate: %w", err)
		default:
			ek.Certificate = trimDER(cert)
			ek.CertificateIndex = info.certIndex
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ek %s: %w", k, err)
	}
	return ek, nil
}

// ekPublic returns the EK public area and the persistent handle it was read
// from (0 when created from the template and flushed).
func (t *TPM) ekPublic(tr transport.TPM, info ekInfo) (tpm2.TPMTPublic, uint32, error) {
	pub, _, err := readPersistent(tr, info.persistent)
	switch {
	case err == nil:
		terr := checkTemplate(pub, info.template)
		if terr == nil {
			return pub, info.persistent, nil
		}
		t.log.Warn("persisted key at ek handle does not match the default ek template, creating the ek from the template",
			"handle", fmt.Sprintf("0x%08x", info.persistent), "reason", terr.Error())
	case !errors.Is(err, tpm2.TPMRCHandle):
		return tpm2.TPMTPublic{}, 0, err
	}
	h, pubp, err := t.createEK(tr, info)
	if err != nil {
		return tpm2.TPMTPublic{}, 0, err
	}
	t.flush(tr, h)
	return pubp, 0, nil
}

// createEK creates the EK primary from the template; the caller flushes it.
func (t *TPM) createEK(tr transport.TPM, info ekInfo) (tpm2.TPMHandle, tpm2.TPMTPublic, error) {
	rsp, err := (tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(info.template),
	}).Execute(tr)
	if err != nil {
		return 0, tpm2.TPMTPublic{}, fmt.Errorf("create ek primary: %w", err)
	}
	pub, err := rsp.OutPublic.Contents()
	if err != nil {
		t.flush(tr, rsp.ObjectHandle)
		return 0, tpm2.TPMTPublic{}, fmt.Errorf("create ek primary: public area: %w", err)
	}
	return rsp.ObjectHandle, *pub, nil
}

// loadEK returns a handle to the EK for use (persisted or freshly created)
// and whether the caller must flush it.
func (t *TPM) loadEK(tr transport.TPM, info ekInfo) (tpm2.NamedHandle, bool, error) {
	pub, name, err := readPersistent(tr, info.persistent)
	if err == nil && checkTemplate(pub, info.template) == nil {
		return tpm2.NamedHandle{Handle: tpm2.TPMHandle(info.persistent), Name: tpm2.TPM2BName{Buffer: name}}, false, nil
	}
	if err != nil && !errors.Is(err, tpm2.TPMRCHandle) {
		return tpm2.NamedHandle{}, false, err
	}
	rsp, err := (tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(info.template),
	}).Execute(tr)
	if err != nil {
		return tpm2.NamedHandle{}, false, fmt.Errorf("create ek primary: %w", err)
	}
	return tpm2.NamedHandle{Handle: rsp.ObjectHandle, Name: rsp.Name}, true, nil
}

// nvBufferMax returns TPM_PT_NV_BUFFER_MAX (the largest NV_Read), or a
// conservative default when the TPM does not say.
func nvBufferMax(tr transport.TPM) int {
	const fallback = 512
	rsp, err := (tpm2.GetCapability{
		Capability:    tpm2.TPMCapTPMProperties,
		Property:      uint32(tpm2.TPMPTNVBufferMax),
		PropertyCount: 1,
	}).Execute(tr)
	if err != nil {
		return fallback
	}
	props, err := rsp.CapabilityData.Data.TPMProperties()
	if err != nil || len(props.TPMProperty) == 0 || props.TPMProperty[0].Property != tpm2.TPMPTNVBufferMax {
		return fallback
	}
	if v := int(props.TPMProperty[0].Value); v > 0 && v < 1<<16 {
		return v
	}
	return fallback
}

// readNV reads a whole NV index, in chunks of TPM_PT_NV_BUFFER_MAX,
// authorising with the index's own (empty) auth when it allows AUTHREAD and
// is NO_DA, else with the owner's (empty) auth when it allows OWNERREAD
// (neither then counts against dictionary-attack protection), else with
// the index's. An absent index gives an error
// matching tpm2.TPMRCHandle.
func readNV(tr transport.TPM, index uint32) ([]byte, error) {
	pubRsp, err := (tpm2.NVReadPublic{NVIndex: tpm2.TPMHandle(index)}).Execute(tr)
	if err != nil {
		return nil, fmt.Errorf("nv read public 0x%08x: %w", index, err)
	}
	nvPub, err := pubRsp.NVPublic.Contents()
	if err != nil {
		return nil, fmt.Errorf("nv read public 0x%08x: %w", index, err)
	}
	auth := tpm2.AuthHandle{Handle: tpm2.TPMHandle(index), Name: pubRsp.NVName, Auth: tpm2.PasswordAuth(nil)}
	switch {
	case nvPub.Attributes.AuthRead && nvPub.Attributes.NoDA:
		// The index's own auth, exempt from dictionary-attack protection
		// (TCG's EK certificate indices are NO_DA).
	case nvPub.Attributes.OwnerRead:
		// The owner's: hierarchy authorisations are exempt from DA
		// protection, so a power cut after this read counts nothing.
		auth = tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)}
	case nvPub.Attributes.AuthRead:
		// Only the index's auth, DA-protected: the read marks the TPM as
		// having used DA protection until the next orderly shutdown.
	default:
		return nil, fmt.Errorf("nv index 0x%08x is readable neither with its auth nor the owner's", index)
	}
	size := int(nvPub.DataSize)
	chunk := nvBufferMax(tr)
	out := make([]byte, 0, size)
	for off := 0; off < size; off += chunk {
		n := min(chunk, size-off)
		rsp, err := (tpm2.NVRead{
			AuthHandle: auth,
			NVIndex:    tpm2.NamedHandle{Handle: tpm2.TPMHandle(index), Name: pubRsp.NVName},
			Size:       uint16(n),
			Offset:     uint16(off),
		}).Execute(tr)
		if err != nil {
			return nil, fmt.Errorf("nv read 0x%08x at %d: %w", index, off, err)
		}
		out = append(out, rsp.Data.Buffer...)
	}
	return out, nil
}

// trimDER cuts b to the length of the DER/BER SEQUENCE it starts with, when
// that length is readable and fits (NV areas are often larger than the
// certificate, padded with 0x00 or 0xff). Anything else is returned as is.
func trimDER(b []byte) []byte {
	if len(b) < 2 || b[0] != 0x30 {
		return slices.Clone(b)
	}
	l := int(b[1])
	hdr := 2
	if l&0x80 != 0 {
		n := l & 0x7f
		if n == 0 || n > 4 || len(b) < 2+n {
			return slices.Clone(b)
		}
		l = 0
		for _, c := range b[2 : 2+n] {
			l = l<<8 | int(c)
		}
		hdr += n
	}
	if hdr+l > len(b) {
		return slices.Clone(b)
	}
	return slices.Clone(b[:hdr+l])
}
