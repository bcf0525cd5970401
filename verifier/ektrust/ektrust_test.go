package ektrust_test

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/internal/pki"
	"github.com/pulse-attest/pulse/simulator"
	"github.com/pulse-attest/pulse/simulator/simtest"
	"github.com/pulse-attest/pulse/tpm"
	"github.com/pulse-attest/pulse/verifier/ektrust"
)

// TestSwtpmEK checks a real swtpm EK certificate (critical TCG SAN) from
// both sides.
func TestSwtpmEK(t *testing.T) {
	sw := simtest.Start(t, "")
	if sw == nil {
		return
	}
	other := simtest.StartFresh(t, "")
	ek := readEK(t, sw)
	otherEK := readEK(t, other)
	if len(ek.Certificate) == 0 {
		t.Fatal("swtpm has no EK certificate")
	}
	roots := []string{sw.LocalCACert(), sw.IssuerCert()}
	now := time.Now()

	trust, err := ektrust.Load(roots, nil)
	if err != nil {
		t.Fatal(err)
	}
	d, err := trust.Check(ek.PublicBlob, ek.Certificate, nil, now, ektrust.Options{})
	if err != nil {
		t.Fatalf("good EK refused: %v", err)
	}
	if d.By != "certificate" || d.Nonconformity != nil {
		t.Fatalf("accepted by %q, nonconformity %v", d.By, d.Nonconformity)
	}

	// A foreign root does not vouch for it.
	ca, err := pki.NewCA("not a TPM vendor", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	foreign := filepath.Join(t.TempDir(), "foreign.pem")
	if err := os.WriteFile(foreign, ca.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	foreignTrust, err := ektrust.Load([]string{foreign}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(ek.PublicBlob)
	cases := []struct {
		name  string
		trust *ektrust.Trust
		pub   []byte
		cert  []byte
		want  error
	}{
		{"foreign root", foreignTrust, ek.PublicBlob, ek.Certificate, ektrust.ErrUntrustedChain},
		{"certificate of another EK", trust, otherEK.PublicBlob, ek.Certificate, ektrust.ErrCertKeyMismatch},
		{"no certificate, not allow-listed", trust, ek.PublicBlob, nil, ektrust.ErrNotAllowed},
		{"malformed certificate", trust, ek.PublicBlob, ek.Certificate[:40], ektrust.ErrMalformedCert},
		{"malformed EK", trust, ek.PublicBlob[:10], ek.Certificate, ektrust.ErrMalformedEK},
		{"chain not yet valid", trust, ek.PublicBlob, ek.Certificate, ektrust.ErrUntrustedChain},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			at := now
			if c.name == "chain not yet valid" {
				at = now.AddDate(-30, 0, 0)
			}
			if _, err := c.trust.Check(c.pub, c.cert, nil, at, ektrust.Options{}); !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}

	// The allow-list accepts an EK without any certificate.
	allow, err := ektrust.Load(nil, []string{hex.EncodeToString(sum[:])})
	if err != nil {
		t.Fatal(err)
	}
	if d, err := allow.Check(ek.PublicBlob, nil, nil, now, ektrust.Options{}); err != nil || d.By != "allow-list" {
		t.Fatalf("allow-listed EK: %+v %v", d, err)
	}
	if _, err := allow.Check(otherEK.PublicBlob, nil, nil, now, ektrust.Options{}); !errors.Is(err, ektrust.ErrNotAllowed) {
		t.Fatalf("other EK against allow-list: %v", err)
	}
	empty, _ := ektrust.Load(nil, nil)
	if _, err := empty.Check(ek.PublicBlob, nil, nil, now, ektrust.Options{}); !errors.Is(err, ektrust.ErrNoTrustConfigured) {
		t.Fatalf("no trust configured: %v", err)
	}
}

func readEK(t *testing.T, sw *simulator.Swtpm) *tpm.EK {
	t.Helper()
	dev, err := sw.Open(simtest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	ek, err := dev.EK()
	if err != nil {
		t.Fatal(err)
	}
	return ek
}
