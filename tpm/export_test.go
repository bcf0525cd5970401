package tpm

import (
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// Test hooks for the external tests of this package.

// DoForTest runs f with the TPM's transport.
func (t *TPM) DoForTest(f func(tr transport.TPM) error) error { return t.do(f) }

// FlushForTest flushes a transient handle.
func (t *TPM) FlushForTest(tr transport.TPM, h tpm2.TPMHandle) { t.flush(tr, h) }

// NewAKForTest wraps a persisted key as an AK.
func NewAKForTest(h uint32, pub tpm2.TPMTPublic, name []byte) (*AK, error) {
	return newAK(h, pub, name)
}
