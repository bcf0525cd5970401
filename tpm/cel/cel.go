// Package cel encodes, decodes and verifies Pulse's runtime measurement log in
// the TLV form of the TCG Canonical Event Log (CEL) format.
//
// # Wire format
//
// Every TLV is a 1-byte type, a 4-byte big-endian length and the value. A
// record is four consecutive TLVs, in this order:
//
//	type 0 (recnum)   value: uint64, 8 bytes big-endian
//	type 1 (pcr)      value: uint32, 4 bytes big-endian
//	type 3 (digests)  value: nested TLVs, type = TPM_ALG_ID (sha1=4,
//	                  sha256=11, sha384=12, sha512=13), value = the digest;
//	                  ascending by algorithm, each at most once, at least one
//	type 231 (content) value: Pulse content, nested TLVs (below)
//
// CEL's nv_index (type 2) and the TCG content types (cel_mgt 4,
// pcclient_std 5, ima_template 7, ima_tlv 8) are not used by Pulse and are
// rejected. Pulse's content type is ContentTypePulse = 231 (0xE7), a value
// outside the TCG-assigned ones and away from go-tpm-tools' COS type (80).
//
// Pulse content is a kind TLV (type 0, 1 byte) followed by the kind's fields,
// every one present exactly once, in ascending field-type order:
//
//	kind 1 agent binary:  1 path (UTF-8), 2 sha256 (32 bytes), 3 size (uint64)
//	kind 2 eBPF program:  1 name, 2 program type, 3 attach point (UTF-8),
//	                      4 instructions sha256 (32), 5 kernel tag (8),
//	                      6 object sha256 (32, or empty when unknown),
//	                      7 kernel release (UTF-8)
//	kind 3 Fortress:      1 active (1 byte, 0 or 1), 2 mechanism, 3 reason (UTF-8)
//	kind 4 generic:       1 name (UTF-8), 2 data (bytes)
//
// The encoding is canonical: Decode accepts only what Encode produces, so a
// record has exactly one byte representation. A record's digest in bank H is
// H(the content TLV: type, length and value), which is what the agent extends
// into the runtime PCR; the verifier re-derives it from the content
// (VerifyRecords), so the content of a replayed record is evidence.
package cel

import (
	"encoding/binary"
	"fmt"
	"unicode/utf8"

	"github.com/pulse-attest/pulse/tpm/eventlog"
)

// TLV types of a CEL record.
const (
	TypeRecNum  = 0
	TypePCR     = 1
	TypeNVIndex = 2
	TypeDigests = 3
	// ContentTypePulse is the content type of Pulse's records.
	ContentTypePulse = 231
)

// Kind is the kind of a Pulse content.
type Kind uint8

// Content kinds.
const (
	KindAgentBinary   Kind = 1
	KindEBPFProgram   Kind = 2
	KindFortressState Kind = 3
	KindGeneric       Kind = 4
)

func (k Kind) String() string {
	switch k {
	case KindAgentBinary:
		return "agent_binary"
	case KindEBPFProgram:
		return "ebpf_program"
	case KindFortressState:
		return "fortress_state"
	case KindGeneric:
		return "generic"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Content is the typed content of a record: *AgentBinary, *EBPFProgram,
// *FortressState or *Generic.
type Content interface {
	Kind() Kind
	encodeFields(e *encoder)
	decodeFields(d *fieldDecoder) error
}

// AgentBinary measures the agent executable before it runs.
type AgentBinary struct {
	Path   string
	SHA256 [32]byte
	Size   uint64
}

// EBPFProgram measures one loaded eBPF program.
type EBPFProgram struct {
	Name        string
	ProgramType string
	AttachPoint string
	// InsnSHA256 is the SHA-256 of the program's translated instructions.
	InsnSHA256 [32]byte
	// Tag is the kernel's program tag.
	Tag [8]byte
	// ObjectSHA256 is the SHA-256 of the ELF object it came from; nil when
	// unknown (a program Pulse did not load), else 32 bytes.
	ObjectSHA256  []byte
	KernelRelease string
}

// FortressState records a change of the Fortress supervisor's state.
type FortressState struct {
	Active    bool
	Mechanism string
	Reason    string
}

// Generic is any other measurement, named.
type Generic struct {
	Name string
	Data []byte
}

// Kind implements Content.
func (*AgentBinary) Kind() Kind { return KindAgentBinary }

// Kind implements Content.
func (*EBPFProgram) Kind() Kind { return KindEBPFProgram }

// Kind implements Content.
func (*FortressState) Kind() Kind { return KindFortressState }

// Kind implements Content.
func (*Generic) Kind() Kind { return KindGeneric }

// Record is one CEL record.
type Record struct {
	RecNum  uint64
	PCR     uint32
	Digests []eventlog.Digest
	Content Content
}

type encoder struct{ b []byte }

func (e *encoder) tlv(typ uint8, v []byte) {
	e.b = append(e.b, typ)
	e.b = binary.BigEndian.AppendUint32(e.b, uint32(len(v)))
	e.b = append(e.b, v...)
}

func (e *encoder) u64(typ uint8, v uint64) { e.tlv(typ, binary.BigEndian.AppendUint64(nil, v)) }

func (e *encoder) str(typ uint8, s string) { e.tlv(typ, []byte(s)) }

func (c *AgentBinary) encodeFields(e *encoder) {
	e.str(1, c.Path)
	e.tlv(2, c.SHA256[:])
	e.u64(3, c.Size)
}

func (c *EBPFProgram) encodeFields(e *encoder) {
	e.str(1, c.Name)
	e.str(2, c.ProgramType)
	e.str(3, c.AttachPoint)
	e.tlv(4, c.InsnSHA256[:])
	e.tlv(5, c.Tag[:])
	e.tlv(6, c.ObjectSHA256)
	e.str(7, c.KernelRelease)
}

func (c *FortressState) encodeFields(e *encoder) {
	a := byte(0)
	if c.Active {
		a = 1
	}
	e.tlv(1, []byte{a})
	e.str(2, c.Mechanism)
	e.str(3, c.Reason)
}

func (c *Generic) encodeFields(e *encoder) {
	e.str(1, c.Name)
	e.tlv(2, c.Data)
}

// validate checks what the type system cannot: UTF-8 strings and the
// object digest length.
func validate(c Content) error {
	var strs []string
	switch v := c.(type) {
	case *AgentBinary:
		strs = []string{v.Path}
	case *EBPFProgram:
		if len(v.ObjectSHA256) != 0 && len(v.ObjectSHA256) != 32 {
			return fmt.Errorf("%w: object sha256 of %d bytes", ErrInvalid, len(v.ObjectSHA256))
		}
		strs = []string{v.Name, v.ProgramType, v.AttachPoint, v.KernelRelease}
	case *FortressState:
		strs = []string{v.Mechanism, v.Reason}
	case *Generic:
		strs = []string{v.Name}
	case nil:
		return fmt.Errorf("%w: no content", ErrInvalid)
	default:
		return fmt.Errorf("%w: content type %T", ErrInvalid, c)
	}
	for _, s := range strs {
		if !utf8.ValidString(s) {
			return fmt.Errorf("%w: string is not UTF-8", ErrInvalid)
		}
	}
	return nil
}

// EncodeContent returns the canonical content TLV of c: the bytes that are
// hashed into the record's digests.
func EncodeContent(c Content) ([]byte, error) {
	if err := validate(c); err != nil {
		return nil, err
	}
	var inner encoder
	inner.tlv(0, []byte{byte(c.Kind())})
	c.encodeFields(&inner)
	var out encoder
	out.tlv(ContentTypePulse, inner.b)
	return out.b, nil
}

// ContentDigest is the digest of the record's content in the given bank.
func (r Record) ContentDigest(alg eventlog.HashAlg) ([]byte, error) {
	if !alg.Replayable() {
		return nil, fmt.Errorf("cel: content digest: %w", eventlog.ErrUnsupportedAlg)
	}
	b, err := EncodeContent(r.Content)
	if err != nil {
		return nil, err
	}
	h := alg.Hash().New()
	h.Write(b)
	return h.Sum(nil), nil
}

// NewRecord builds a record for c with its digests in the given banks (SHA-256
// when none are given).
func NewRecord(recnum uint64, pcr uint32, c Content, banks ...eventlog.HashAlg) (Record, error) {
	if len(banks) == 0 {
		banks = []eventlog.HashAlg{eventlog.AlgSHA256}
	}
	r := Record{RecNum: recnum, PCR: pcr, Content: c}
	for _, b := range banks {
		d, err := r.ContentDigest(b)
		if err != nil {
			return Record{}, err
		}
		r.Digests = append(r.Digests, eventlog.Digest{Alg: b, Value: d})
	}
	sortDigests(r.Digests)
	return r, nil
}

func sortDigests(ds []eventlog.Digest) {
	for i := 1; i < len(ds); i++ {
		for j := i; j > 0 && ds[j].Alg < ds[j-1].Alg; j-- {
			ds[j], ds[j-1] = ds[j-1], ds[j]
		}
	}
}

// Append appends the canonical encoding of r to b.
func (r Record) Append(b []byte) ([]byte, error) {
	content, err := EncodeContent(r.Content)
	if err != nil {
		return nil, err
	}
	if len(r.Digests) == 0 {
		return nil, fmt.Errorf("%w: record %d has no digests", ErrInvalid, r.RecNum)
	}
	ds := append([]eventlog.Digest(nil), r.Digests...)
	sortDigests(ds)
	var dig encoder
	for i, d := range ds {
		if d.Alg > 0xff || d.Alg.Size() == 0 || len(d.Value) != d.Alg.Size() {
			return nil, fmt.Errorf("%w: record %d: %s digest of %d bytes", ErrInvalid, r.RecNum, d.Alg, len(d.Value))
		}
		if i > 0 && ds[i-1].Alg == d.Alg {
			return nil, fmt.Errorf("%w: record %d: two %s digests", ErrInvalid, r.RecNum, d.Alg)
		}
		dig.tlv(uint8(d.Alg), d.Value)
	}
	e := encoder{b: b}
	e.u64(TypeRecNum, r.RecNum)
	e.tlv(TypePCR, binary.BigEndian.AppendUint32(nil, r.PCR))
	e.tlv(TypeDigests, dig.b)
	e.b = append(e.b, content...)
	return e.b, nil
}

// Encode returns the concatenated canonical encoding of the records.
func Encode(records []Record) ([]byte, error) {
	var b []byte
	for _, r := range records {
		var err error
		if b, err = r.Append(b); err != nil {
			return nil, err
		}
	}
	return b, nil
}
