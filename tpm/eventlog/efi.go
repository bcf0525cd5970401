package eventlog

import (
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"unicode/utf16"
	"unicode/utf8"
)

// GUID is an EFI_GUID in its in-memory (mixed-endian) byte order.
type GUID [16]byte

// String formats the GUID in the canonical 8-4-4-4-12 form.
func (g GUID) String() string {
	return fmt.Sprintf("%08x-%04x-%04x-%x-%x",
		binary.LittleEndian.Uint32(g[0:4]), binary.LittleEndian.Uint16(g[4:6]),
		binary.LittleEndian.Uint16(g[6:8]), g[8:10], g[10:16])
}

func mustGUID(a uint32, b, c uint16, d [8]byte) GUID {
	var g GUID
	binary.LittleEndian.PutUint32(g[0:], a)
	binary.LittleEndian.PutUint16(g[4:], b)
	binary.LittleEndian.PutUint16(g[6:], c)
	copy(g[8:], d[:])
	return g
}

// Well-known EFI GUIDs.
var (
	GUIDGlobalVariable        = mustGUID(0x8be4df61, 0x93ca, 0x11d2, [8]byte{0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c})
	GUIDImageSecurityDatabase = mustGUID(0xd719b2cb, 0x3d3a, 0x4596, [8]byte{0xa3, 0xbc, 0xda, 0xd0, 0x0e, 0x67, 0x65, 0x6f})
	GUIDCertX509              = mustGUID(0xa5c059a1, 0x94e4, 0x4aa7, [8]byte{0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b, 0xf0, 0x72})
	GUIDCertSHA256            = mustGUID(0xc1c41626, 0x504c, 0x4092, [8]byte{0xac, 0xa9, 0x41, 0xf9, 0x36, 0x93, 0x43, 0x28})
)

// ErrEFIData reports malformed UEFI structures inside event data.
var ErrEFIData = errors.New("eventlog: malformed UEFI event data")

// UEFIVariable is a UEFI_VARIABLE_DATA structure (the data of
// EV_EFI_VARIABLE_* events).
type UEFIVariable struct {
	VendorGUID GUID
	Name       string
	Data       []byte
}

// ParseUEFIVariable decodes a UEFI_VARIABLE_DATA structure. The structure
// must fill b exactly.
func ParseUEFIVariable(b []byte) (*UEFIVariable, error) {
	_, dataOff, err := variableLayout(b)
	if err != nil {
		return nil, err
	}
	v := &UEFIVariable{Name: decodeUCS2(b[32:dataOff]), Data: b[dataOff:]}
	copy(v.VendorGUID[:], b[:16])
	return v, nil
}

// decodeUCS2 decodes a little-endian UTF-16 name without its trailing NULs,
// in one pass and one allocation (names of hostile logs can be megabytes).
func decodeUCS2(b []byte) string {
	n := len(b) / 2
	for n > 0 && binary.LittleEndian.Uint16(b[2*(n-1):]) == 0 {
		n--
	}
	out := make([]byte, 0, n)
	for i := 0; i < n; i++ {
		r := rune(binary.LittleEndian.Uint16(b[2*i:]))
		if utf16.IsSurrogate(r) && i+1 < n {
			if d := utf16.DecodeRune(r, rune(binary.LittleEndian.Uint16(b[2*i+2:]))); d != utf8.RuneError {
				out = utf8.AppendRune(out, d)
				i++
				continue
			}
		}
		out = utf8.AppendRune(out, r) // a lone surrogate becomes U+FFFD
	}
	return string(out)
}

// variableLayout checks a UEFI_VARIABLE_DATA's lengths and returns its name
// length (in UTF-16 units) and the offset of its VariableData.
func variableLayout(b []byte) (nameLen, dataOff int, err error) {
	if len(b) < 32 {
		return 0, 0, fmt.Errorf("%w: UEFI_VARIABLE_DATA is %d bytes", ErrEFIData, len(b))
	}
	nl := binary.LittleEndian.Uint64(b[16:])
	dl := binary.LittleEndian.Uint64(b[24:])
	rest := uint64(len(b) - 32)
	if nl > rest/2 || dl > rest || nl*2+dl != rest {
		return 0, 0, fmt.Errorf("%w: UEFI_VARIABLE_DATA name length %d and data length %d in %d bytes",
			ErrEFIData, nl, dl, rest)
	}
	return int(nl), 32 + 2*int(nl), nil
}

// variableDataOffset returns where a UEFI_VARIABLE_DATA's VariableData
// starts, without decoding the name.
func variableDataOffset(b []byte) (int, bool) {
	_, off, err := variableLayout(b)
	return off, err == nil
}

// ucs2Is reports whether little-endian UTF-16 raw spells the ASCII string
// name exactly.
func ucs2Is(raw []byte, name string) bool {
	if len(raw) != 2*len(name) {
		return false
	}
	for i := 0; i < len(name); i++ {
		if binary.LittleEndian.Uint16(raw[2*i:]) != uint16(name[i]) {
			return false
		}
	}
	return true
}

// SignatureEntry is one EFI_SIGNATURE_DATA of an EFI_SIGNATURE_LIST.
type SignatureEntry struct {
	// Type is the list's SignatureType (GUIDCertX509, GUIDCertSHA256...).
	Type  GUID
	Owner GUID
	Data  []byte
}

// Cert identifies the entry's certificate; it is nil unless the entry is an
// X.509 entry holding a decodable certificate. Decoding is done on each call.
func (e *SignatureEntry) Cert() *CertInfo {
	if e.Type != GUIDCertX509 {
		return nil
	}
	return DescribeCert(e.Data)
}

// CertInfo identifies an X.509 certificate found in a Secure Boot database
// or authority event. It is decoded leniently: real firmware certificates
// are not always strict DER (negative serial numbers, for example), so
// crypto/x509 is not used for identification.
type CertInfo struct {
	Subject string
	Issuer  string
	// Serial is the decimal serial number; it may be negative.
	Serial string
	// SHA256 is the SHA-256 of the DER certificate, the usual way to pin one.
	SHA256 []byte
	// ParseError records why crypto/x509 rejected the certificate, if it did.
	ParseError string `json:",omitempty"`
}

// ParseSignatureList decodes the concatenated EFI_SIGNATURE_LISTs of a
// Secure Boot database variable (PK, KEK, db, dbx).
func ParseSignatureList(b []byte) ([]SignatureEntry, error) {
	// Validate the list headers and count the entries first, so the result
	// is allocated once (a hostile megabyte database holds 65,000 entries).
	n := 0
	for off := 0; off < len(b); {
		if len(b)-off < 28 {
			return nil, fmt.Errorf("%w: EFI_SIGNATURE_LIST header truncated at %d", ErrEFIData, off)
		}
		listSize := binary.LittleEndian.Uint32(b[off+16:])
		hdrSize := binary.LittleEndian.Uint32(b[off+20:])
		sigSize := binary.LittleEndian.Uint32(b[off+24:])
		if uint64(listSize) > uint64(len(b)-off) || uint64(listSize) < 28+uint64(hdrSize) || sigSize < 16 {
			return nil, fmt.Errorf("%w: EFI_SIGNATURE_LIST at %d: list size %d, header size %d, signature size %d",
				ErrEFIData, off, listSize, hdrSize, sigSize)
		}
		body := int(listSize) - 28 - int(hdrSize)
		if body%int(sigSize) != 0 {
			return nil, fmt.Errorf("%w: EFI_SIGNATURE_LIST at %d: %d bytes of %d-byte signatures",
				ErrEFIData, off, body, sigSize)
		}
		n += body / int(sigSize)
		off += int(listSize)
	}
	if n == 0 {
		return nil, nil
	}
	out := make([]SignatureEntry, 0, n)
	for off := 0; off < len(b); {
		var typ GUID
		copy(typ[:], b[off:])
		listSize := int(binary.LittleEndian.Uint32(b[off+16:]))
		hdrSize := int(binary.LittleEndian.Uint32(b[off+20:]))
		sigSize := int(binary.LittleEndian.Uint32(b[off+24:]))
		body := b[off+28+hdrSize : off+listSize]
		for s := 0; s < len(body); s += sigSize {
			e := SignatureEntry{Type: typ, Data: body[s+16 : s+sigSize : s+sigSize]}
			copy(e.Owner[:], body[s:s+16])
			out = append(out, e)
		}
		off += listSize
	}
	return out, nil
}

// tbsCertificate is the prefix of an X.509 TBSCertificate, decoded without
// crypto/x509's strictness.
type tbsCertificate struct {
	Raw          asn1.RawContent
	Version      int `asn1:"optional,explicit,default:0,tag:0"`
	SerialNumber *big.Int
	SigAlg       asn1.RawValue
	Issuer       asn1.RawValue
	Validity     asn1.RawValue
	Subject      asn1.RawValue
	Rest         asn1.RawValue `asn1:"optional"`
}

type certificate struct {
	TBS    asn1.RawValue
	SigAlg asn1.RawValue
	Sig    asn1.BitString
}

// DescribeCert identifies a DER certificate. It returns nil when der is not
// a certificate at all.
func DescribeCert(der []byte) *CertInfo {
	var c certificate
	if rest, err := asn1.Unmarshal(der, &c); err != nil || len(rest) != 0 {
		return nil
	}
	var tbs tbsCertificate
	if _, err := asn1.Unmarshal(c.TBS.FullBytes, &tbs); err != nil {
		return nil
	}
	sum := sha256.Sum256(der)
	info := &CertInfo{SHA256: sum[:], Subject: rdn(tbs.Subject.FullBytes), Issuer: rdn(tbs.Issuer.FullBytes)}
	if tbs.SerialNumber != nil {
		info.Serial = tbs.SerialNumber.String()
	}
	if _, err := x509.ParseCertificate(der); err != nil {
		info.ParseError = err.Error()
	}
	return info
}

func rdn(b []byte) string {
	var seq pkix.RDNSequence
	if _, err := asn1.Unmarshal(b, &seq); err != nil {
		return ""
	}
	var n pkix.Name
	n.FillFromRDNSequence(&seq)
	return n.String()
}
