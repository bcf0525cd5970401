package quote

import (
	"encoding/binary"

	"github.com/google/go-tpm/tpm2"
)

// tpmRHOwner is TPM_RH_OWNER, the owner hierarchy's handle.
const tpmRHOwner = 0x40000001

// OwnerPrimaryQualifiedName returns the Qualified Name (TPM 2.0 Part 1,
// "Qualified Name") of a primary key of the owner hierarchy whose Name is
// name (nameAlg || digest): nameAlg || H_nameAlg(TPM_RH_OWNER || name). A
// quote's qualifiedSigner equals it exactly when the signing key is such a
// primary, the kind Pulse's agent creates: the TPM then obfuscates the
// quote's reset and restart counts with a secret of the owner hierarchy,
// and TPM2_Clear (which resets those counts) replaces the key.
func OwnerPrimaryQualifiedName(name []byte) ([]byte, error) {
	if len(name) < 2 {
		return nil, fail(ReasonMalformedAK, nil, "name of %d bytes", len(name))
	}
	alg := tpm2.TPMAlgID(binary.BigEndian.Uint16(name))
	h, ok := algHash(alg)
	if !ok || len(name) != 2+h.Size() {
		return nil, fail(ReasonUnsupportedKey, nil, "name algorithm 0x%04x with a %d-byte name", uint16(alg), len(name))
	}
	hh := h.New()
	var handle [4]byte
	binary.BigEndian.PutUint32(handle[:], tpmRHOwner)
	hh.Write(handle[:])
	hh.Write(name)
	return hh.Sum(append([]byte(nil), name[:2]...)), nil
}
