package tpm

import (
	"crypto"
	"fmt"
	"slices"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// TPM_ALG_ID values of the PCR banks Pulse deals with.
const (
	AlgSHA1   uint16 = 0x0004
	AlgSHA256 uint16 = 0x000B
	AlgSHA384 uint16 = 0x000C
	AlgSHA512 uint16 = 0x000D
)

// NumPCRs is the number of PCRs of a PC-client TPM (0-23).
const NumPCRs = 24

// pcrSelectSize is the size of a PC-client PCR selection bitmap (24 PCRs).
const pcrSelectSize = 3

// AlgName names a TPM hash algorithm ("sha256"), or "alg(0x....)".
func AlgName(alg uint16) string {
	switch alg {
	case AlgSHA1:
		return "sha1"
	case AlgSHA256:
		return "sha256"
	case AlgSHA384:
		return "sha384"
	case AlgSHA512:
		return "sha512"
	}
	return fmt.Sprintf("alg(0x%04x)", alg)
}

// digestSize returns the digest size of a TPM hash algorithm.
func digestSize(alg uint16) (int, error) {
	h, err := tpm2.TPMAlgID(alg).Hash()
	if err != nil {
		return 0, fmt.Errorf("unsupported hash algorithm %s: %w", AlgName(alg), err)
	}
	if !h.Available() {
		return 0, fmt.Errorf("hash algorithm %s not linked in", AlgName(alg))
	}
	return h.Size(), nil
}

// HashFor returns the crypto.Hash of a TPM hash algorithm.
func HashFor(alg uint16) (crypto.Hash, error) {
	h, err := tpm2.TPMAlgID(alg).Hash()
	if err != nil {
		return 0, fmt.Errorf("unsupported hash algorithm %s: %w", AlgName(alg), err)
	}
	return h, nil
}

// pcrSelection builds a one-bank TPML_PCR_SELECTION.
func pcrSelection(alg uint16, pcrs []uint32) (tpm2.TPMLPCRSelection, error) {
	bitmap := make([]byte, pcrSelectSize)
	for _, p := range pcrs {
		if p >= NumPCRs {
			return tpm2.TPMLPCRSelection{}, fmt.Errorf("pcr %d out of range 0-%d", p, NumPCRs-1)
		}
		bitmap[p/8] |= 1 << (p % 8)
	}
	return tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
		Hash:      tpm2.TPMAlgID(alg),
		PCRSelect: bitmap,
	}}}, nil
}

// selected lists the PCR indexes set in a selection bitmap, ascending.
func selected(bitmap []byte) []uint32 {
	var out []uint32
	for i, b := range bitmap {
		for bit := 0; bit < 8; bit++ {
			if b&(1<<bit) != 0 {
				out = append(out, uint32(i*8+bit))
			}
		}
	}
	return out
}

// PCRBanks returns the hash algorithms of the PCR banks that are allocated
// (have at least one PCR), in the order the TPM reports them.
func (t *TPM) PCRBanks() ([]uint16, error) {
	var banks []uint16
	err := t.do(func(tr transport.TPM) error {
		rsp, err := (tpm2.GetCapability{Capability: tpm2.TPMCapPCRs, PropertyCount: 1}).Execute(tr)
		if err != nil {
			return fmt.Errorf("get capability pcrs: %w", err)
		}
		sel, err := rsp.CapabilityData.Data.AssignedPCR()
		if err != nil {
			return fmt.Errorf("get capability pcrs: %w", err)
		}
		for _, s := range sel.PCRSelections {
			if len(selected(s.PCRSelect)) > 0 {
				banks = append(banks, uint16(s.Hash))
			}
		}
		return nil
	})
	return banks, err
}

// ReadPCRs reads PCRs of one bank. The TPM returns at most 8 digests per
// TPM2_PCR_Read, so this loops until every requested PCR is read. An
// unallocated bank is an error.
func (t *TPM) ReadPCRs(alg uint16, pcrs []uint32) (map[uint32][]byte, error) {
	if _, err := digestSize(alg); err != nil {
		return nil, fmt.Errorf("read pcrs: %w", err)
	}
	want := slices.Clone(pcrs)
	slices.Sort(want)
	want = slices.Compact(want)
	out := make(map[uint32][]byte, len(want))
	err := t.do(func(tr transport.TPM) error {
		for len(want) > 0 {
			sel, err := pcrSelection(alg, want)
			if err != nil {
				return err
			}
			rsp, err := (tpm2.PCRRead{PCRSelectionIn: sel}).Execute(tr)
			if err != nil {
				return fmt.Errorf("tpm2 pcr read: %w", err)
			}
			var got []uint32
			for _, s := range rsp.PCRSelectionOut.PCRSelections {
				if uint16(s.Hash) == alg {
					got = append(got, selected(s.PCRSelect)...)
				}
			}
			if len(got) == 0 {
				return fmt.Errorf("pcr bank %s returned none of pcrs %v (bank not allocated?)", AlgName(alg), want)
			}
			if len(got) != len(rsp.PCRValues.Digests) {
				return fmt.Errorf("tpm2 pcr read: %d pcrs selected but %d digests returned", len(got), len(rsp.PCRValues.Digests))
			}
			for i, p := range got {
				if !slices.Contains(want, p) {
					return fmt.Errorf("tpm2 pcr read: returned unrequested pcr %d", p)
				}
				out[p] = slices.Clone(rsp.PCRValues.Digests[i].Buffer)
			}
			want = slices.DeleteFunc(want, func(p uint32) bool { _, ok := out[p]; return ok })
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read %s pcrs: %w", AlgName(alg), err)
	}
	return out, nil
}

// Extend extends one PCR with one digest per bank (TPM2_PCR_Extend). Each
// digest must have its algorithm's size. Banks without a digest in the map
// are left unchanged, so pass one for every allocated bank (PCRBanks) to keep
// the banks consistent.
func (t *TPM) Extend(pcr uint32, digests map[uint16][]byte) error {
	if pcr >= NumPCRs {
		return fmt.Errorf("extend: pcr %d out of range 0-%d", pcr, NumPCRs-1)
	}
	if len(digests) == 0 {
		return fmt.Errorf("extend pcr %d: no digests", pcr)
	}
	algs := make([]uint16, 0, len(digests))
	for alg := range digests {
		algs = append(algs, alg)
	}
	slices.Sort(algs)
	var vals tpm2.TPMLDigestValues
	for _, alg := range algs {
		size, err := digestSize(alg)
		if err != nil {
			return fmt.Errorf("extend pcr %d: %w", pcr, err)
		}
		if len(digests[alg]) != size {
			return fmt.Errorf("extend pcr %d: %s digest is %d bytes, want %d", pcr, AlgName(alg), len(digests[alg]), size)
		}
		vals.Digests = append(vals.Digests, tpm2.TPMTHA{HashAlg: tpm2.TPMIAlgHash(alg), Digest: digests[alg]})
	}
	return t.do(func(tr transport.TPM) error {
		_, err := (tpm2.PCRExtend{
			PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(pcr), Auth: tpm2.PasswordAuth(nil)},
			Digests:   vals,
		}).Execute(tr)
		if err != nil {
			return fmt.Errorf("tpm2 pcr extend %d: %w", pcr, err)
		}
		return nil
	})
}

// Quote quotes PCRs of the SHA-256 bank with the AK over qualifyingData (the
// verifier's nonce or a digest binding it, at most 64 bytes; Pulse uses 32).
// It returns the marshalled TPMS_ATTEST and TPMT_SIGNATURE, the form
// tpm/quote.Verify takes.
func (t *TPM) Quote(ak *AK, pcrs []uint32, qualifyingData []byte) (attest, signature []byte, err error) {
	return t.QuoteBank(ak, AlgSHA256, pcrs, qualifyingData)
}

// QuoteBank is Quote over the PCRs of another bank.
func (t *TPM) QuoteBank(ak *AK, alg uint16, pcrs []uint32, qualifyingData []byte) (attest, signature []byte, err error) {
	if ak == nil {
		return nil, nil, fmt.Errorf("quote: nil ak")
	}
	if len(pcrs) == 0 {
		return nil, nil, fmt.Errorf("quote: no pcrs selected")
	}
	if len(qualifyingData) > 64 {
		return nil, nil, fmt.Errorf("quote: qualifying data is %d bytes, at most 64", len(qualifyingData))
	}
	sel, err := pcrSelection(alg, pcrs)
	if err != nil {
		return nil, nil, fmt.Errorf("quote: %w", err)
	}
	err = t.do(func(tr transport.TPM) error {
		rsp, err := (tpm2.Quote{
			SignHandle: tpm2.AuthHandle{
				Handle: tpm2.TPMHandle(ak.handle),
				Name:   tpm2.TPM2BName{Buffer: ak.name},
				Auth:   tpm2.PasswordAuth(nil),
			},
			QualifyingData: tpm2.TPM2BData{Buffer: qualifyingData},
			InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
			PCRSelect:      sel,
		}).Execute(tr)
		if err != nil {
			return fmt.Errorf("tpm2 quote: %w", err)
		}
		attest = slices.Clone(rsp.Quoted.Bytes())
		signature = tpm2.Marshal(rsp.Signature)
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("quote: %w", err)
	}
	return attest, signature, nil
}
