package verifiertest

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/internal/pki"
)

// PKI is a test CA and the verifier certificate it issued, written to a
// directory.
type PKI struct {
	CA                *pki.CA
	CAFile            string
	Verifier          *pki.Issued
	CertFile, KeyFile string
}

// WritePKI makes a CA valid for validity and a verifier certificate
// (pulse://verifier/v1, DNS name localhost), and writes ca.pem, v.pem and
// v-key.pem into dir.
func WritePKI(t testing.TB, dir, caName string, validity time.Duration) *PKI {
	t.Helper()
	ca, err := pki.NewCA(caName, validity)
	if err != nil {
		t.Fatal(err)
	}
	p := &PKI{CA: ca, CAFile: filepath.Join(dir, "ca.pem"), CertFile: filepath.Join(dir, "v.pem"), KeyFile: filepath.Join(dir, "v-key.pem")}
	if err := os.WriteFile(p.CAFile, ca.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	vc, err := pki.Issue(ca, pki.Request{Role: pki.RoleVerifier, ID: "v1", DNSNames: []string{"localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := vc.WriteFiles(p.CertFile, p.KeyFile, false); err != nil {
		t.Fatal(err)
	}
	p.Verifier = vc
	return p
}
