package quote

import (
	"encoding/binary"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// Hand-written decoders for the two structures on the verification path,
// TPMS_ATTEST (quote) and TPMT_SIGNATURE, in the TPM's big-endian wire format
// (TPM 2.0 Part 2: Structures, 10.12.12 and 11.3.4). They replace go-tpm's
// reflective tpm2.Unmarshal there, which costs tens of microseconds and
// hundreds of allocations per quote. Both are strict: every length is checked
// against the bytes left, trailing bytes are an error, and they accept
// exactly what go-tpm's decoder (followed by the length checks this package
// applied before) accepts, with the same field values; decode_test.go holds
// the differential and fuzz tests against go-tpm. The decoded structures
// alias the input bytes.

// maxSized is the largest TPM2B buffer and TPML count go-tpm accepts (its
// maxListLength); a larger one is an error there, so it is one here too.
const maxSized = 4096

// decoder reads big-endian fields from b; the first failure sticks in err
// and every later read returns zero values.
type decoder struct {
	b   []byte
	off int
	err error
}

// take returns the next n bytes, or nil after recording an error.
func (d *decoder) take(n int, field string) []byte {
	if d.err != nil {
		return nil
	}
	if n > len(d.b)-d.off {
		d.err = fmt.Errorf("%s: %d bytes needed at offset %d, %d left", field, n, d.off, len(d.b)-d.off)
		return nil
	}
	v := d.b[d.off : d.off+n : d.off+n]
	d.off += n
	return v
}

func (d *decoder) u8(field string) uint8 {
	if v := d.take(1, field); v != nil {
		return v[0]
	}
	return 0
}

func (d *decoder) u16(field string) uint16 {
	if v := d.take(2, field); v != nil {
		return binary.BigEndian.Uint16(v)
	}
	return 0
}

func (d *decoder) u32(field string) uint32 {
	if v := d.take(4, field); v != nil {
		return binary.BigEndian.Uint32(v)
	}
	return 0
}

func (d *decoder) u64(field string) uint64 {
	if v := d.take(8, field); v != nil {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

// tpm2b reads a TPM2B: a 16-bit size and that many bytes. An empty buffer
// is a non-nil empty slice (as go-tpm returns it).
func (d *decoder) tpm2b(field string) []byte {
	if d.err != nil {
		return nil
	}
	if len(d.b)-d.off < 2 {
		d.err = fmt.Errorf("%s: size: 2 bytes needed at offset %d, %d left", field, d.off, len(d.b)-d.off)
		return nil
	}
	n := int(binary.BigEndian.Uint16(d.b[d.off:]))
	d.off += 2
	if n > maxSized {
		d.err = fmt.Errorf("%s: size %d exceeds %d", field, n, maxSized)
		return nil
	}
	return d.take(n, field)
}

// end records an error if bytes are left over and returns the error.
func (d *decoder) end(what string) error {
	if d.err == nil && d.off != len(d.b) {
		d.err = fmt.Errorf("%d bytes after the %s (%d bytes)", len(d.b)-d.off, what, d.off)
	}
	return d.err
}

// attestQuote is a decoded TPMS_ATTEST of type TPM_ST_ATTEST_QUOTE.
type attestQuote struct {
	Magic           uint32
	Type            uint16
	QualifiedSigner []byte
	ExtraData       []byte
	Clock           ClockInfo
	FirmwareVersion uint64
	// SelectionCount TPMS_PCR_SELECTION entries, already checked, are in
	// Selections; walk them with nextSelection.
	SelectionCount int
	Selections     []byte
	PCRDigest      []byte
}

// attestTypeError is decodeAttest's error for a well-formed header whose
// type is not a quote; the body after the header was not examined.
type attestTypeError struct{ Type uint16 }

func (e *attestTypeError) Error() string {
	return fmt.Sprintf("attestation type 0x%04x is not a quote", e.Type)
}

// decodeAttest decodes a quote TPMS_ATTEST that must fill b exactly. It does
// not check the magic (the caller does, to tell a bad magic apart). For any
// type other than a quote it returns an *attestTypeError once the common
// header has decoded.
func decodeAttest(b []byte) (attestQuote, error) {
	d := decoder{b: b}
	var a attestQuote
	a.Magic = d.u32("magic")
	a.Type = d.u16("type")
	a.QualifiedSigner = d.tpm2b("qualifiedSigner")
	a.ExtraData = d.tpm2b("extraData")
	a.Clock.Clock = d.u64("clock")
	a.Clock.ResetCount = d.u32("resetCount")
	a.Clock.RestartCount = d.u32("restartCount")
	// TPMI_YES_NO: only 0 and 1 are values.
	switch safe := d.u8("safe"); safe {
	case 0, 1:
		a.Clock.Safe = safe == 1
	default:
		if d.err == nil {
			d.err = fmt.Errorf("safe: value %d is not TPMI_YES_NO", safe)
		}
	}
	a.FirmwareVersion = d.u64("firmwareVersion")
	if d.err != nil {
		return attestQuote{}, d.err
	}
	if a.Type != uint16(tpm2.TPMSTAttestQuote) {
		return attestQuote{}, &attestTypeError{Type: a.Type}
	}
	// TPMS_QUOTE_INFO: TPML_PCR_SELECTION, TPM2B_DIGEST.
	count := d.u32("pcrSelect count")
	if d.err == nil && count > maxSized {
		d.err = fmt.Errorf("pcrSelect count %d exceeds %d", count, maxSized)
	}
	start := d.off
	for i := uint32(0); i < count && d.err == nil; i++ {
		d.u16("pcrSelections hash")
		n := d.u8("sizeofSelect")
		d.take(int(n), "pcrSelect")
	}
	a.SelectionCount = int(count)
	a.Selections = d.b[start:d.off:d.off]
	a.PCRDigest = d.tpm2b("pcrDigest")
	if err := d.end("TPMS_ATTEST"); err != nil {
		return attestQuote{}, err
	}
	return a, nil
}

// nextSelection splits the first TPMS_PCR_SELECTION off sel (the checked
// Selections of an attestQuote): its bank's TPM_ALG_ID and its bitmap.
func nextSelection(sel []byte) (alg uint16, bitmap, rest []byte) {
	n := 3 + int(sel[2])
	return binary.BigEndian.Uint16(sel), sel[3:n:n], sel[n:]
}

// signature is a decoded TPMT_SIGNATURE of an ECDSA, RSASSA or RSAPSS key.
type signature struct {
	Alg  tpm2.TPMAlgID
	Hash tpm2.TPMAlgID
	// R and S for ECDSA.
	R, S []byte
	// Sig for RSASSA and RSAPSS.
	Sig []byte
}

// decodeSignature decodes a TPMT_SIGNATURE that must fill b exactly. Only
// the schemes an AK may use (ECDSA, RSASSA, RSAPSS) are accepted.
func decodeSignature(b []byte) (signature, error) {
	d := decoder{b: b}
	var s signature
	s.Alg = tpm2.TPMAlgID(d.u16("sigAlg"))
	if d.err != nil {
		return signature{}, d.err
	}
	switch s.Alg {
	case tpm2.TPMAlgECDSA:
		s.Hash = tpm2.TPMAlgID(d.u16("hash"))
		s.R = d.tpm2b("signatureR")
		s.S = d.tpm2b("signatureS")
	case tpm2.TPMAlgRSASSA, tpm2.TPMAlgRSAPSS:
		s.Hash = tpm2.TPMAlgID(d.u16("hash"))
		s.Sig = d.tpm2b("sig")
	default:
		return signature{}, fmt.Errorf("signature algorithm 0x%04x", uint16(s.Alg))
	}
	if err := d.end("TPMT_SIGNATURE"); err != nil {
		return signature{}, err
	}
	return s, nil
}
