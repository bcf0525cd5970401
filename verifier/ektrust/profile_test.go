// The verifier binary parses certificates with negative serial numbers, as
// some real TPM vendors and firmware issue them (cmd/pulse-verifier sets the
// same setting); this test binary does too.
//go:debug x509negativeserial=1

package ektrust_test

import (
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/internal/testutil"
	"github.com/pulse-attest/pulse/simulator/simtest"
	"github.com/pulse-attest/pulse/tpm/eventlog"
	"github.com/pulse-attest/pulse/verifier/ektrust"
	"github.com/pulse-attest/pulse/verifier/ektrust/ektrusttest"
)

// TestEKProfile: a certificate chaining to a trusted vendor root vouches
// for an EK only when it follows the TCG EK Credential Profile; each
// missing or malformed part is refused with its own error, and
// allow_nonconforming_ek waives exactly the profile checks.
func TestEKProfile(t *testing.T) {
	sw := simtest.Start(t, "")
	if sw == nil {
		return
	}
	ek := readEK(t, sw)
	vendor := ektrusttest.NewVendor(t)
	trust, err := ektrust.Load([]string{vendor.RootFile}, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	strict, lenient := ektrust.Options{}, ektrust.Options{AllowNonconforming: true}
	cases := []struct {
		name string
		p    ektrusttest.Profile
		// want is the strict refusal (nil: accepted); lenientWant the
		// refusal with the switch on.
		want, lenientWant error
	}{
		{"conforming", ektrusttest.Profile{}, nil, nil},
		{"conforming with a subject and a non-critical SAN", ektrusttest.Profile{Subject: "tpm-1", SAN: ektrusttest.SANTPMNonCritical}, nil, nil},
		{"conforming with a negative serial", ektrusttest.Profile{NegativeSerial: true}, nil, nil},
		{"no extended key usage", ektrusttest.Profile{NoEKUsage: true}, ektrust.ErrNoEKUsage, nil},
		{"server auth instead of the EK usage", ektrusttest.Profile{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, ektrust.ErrNoEKUsage, nil},
		{"no subjectAltName", ektrusttest.Profile{Subject: "tpm-1", SAN: ektrusttest.SANNone}, ektrust.ErrNoTPMSAN, nil},
		{"dNSName instead of the TPM", ektrusttest.Profile{Subject: "tpm-1", SAN: ektrusttest.SANDNS}, ektrust.ErrNoTPMSAN, nil},
		{"TPM model missing", ektrusttest.Profile{SAN: ektrusttest.SANNoModel}, ektrust.ErrNoTPMSAN, nil},
		{"empty subject, SAN not critical", ektrusttest.Profile{SAN: ektrusttest.SANTPMNonCritical}, ektrust.ErrBadSAN, nil},
		{"critical SAN with an uninterpretable name", ektrusttest.Profile{SAN: ektrusttest.SANCriticalOtherName}, ektrust.ErrBadSAN, ektrust.ErrBadSAN},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			der := vendor.Issue(t, ek.PublicBlob, c.p)
			d, err := trust.Check(ek.PublicBlob, der, nil, now, strict)
			if !errors.Is(err, c.want) || (c.want == nil && err != nil) {
				t.Fatalf("strict: got %v, want %v", err, c.want)
			}
			if err == nil && (d.By != "certificate" || d.Nonconformity != nil) {
				t.Fatalf("strict decision %+v", d)
			}
			d, err = trust.Check(ek.PublicBlob, der, nil, now, lenient)
			if !errors.Is(err, c.lenientWant) || (c.lenientWant == nil && err != nil) {
				t.Fatalf("allow_nonconforming_ek: got %v, want %v", err, c.lenientWant)
			}
			// What the switch waived is reported, typed.
			if err == nil && c.want != nil && !errors.Is(d.Nonconformity, c.want) {
				t.Fatalf("nonconformity %v, want %v", d.Nonconformity, c.want)
			}
		})
	}

	// Both failures at once are both reported.
	der := vendor.Issue(t, ek.PublicBlob, ektrusttest.Profile{NoEKUsage: true, Subject: "tpm-1", SAN: ektrusttest.SANNone})
	if _, err := trust.Check(ek.PublicBlob, der, nil, now, strict); !errors.Is(err, ektrust.ErrNoEKUsage) || !errors.Is(err, ektrust.ErrNoTPMSAN) {
		t.Fatalf("both missing: %v", err)
	}
	// The switch waives the profile, not the chain: a conforming
	// certificate from an untrusted vendor stays refused.
	stranger := ektrusttest.NewVendor(t)
	der = stranger.Issue(t, ek.PublicBlob, ektrusttest.Profile{NoEKUsage: true})
	if _, err := trust.Check(ek.PublicBlob, der, nil, now, lenient); !errors.Is(err, ektrust.ErrUntrustedChain) {
		t.Fatalf("untrusted vendor with the switch on: %v", err)
	}
}

// TestSwtpmEKConforms: swtpm_localca's EK certificates (swtpm_setup
// --create-ek-cert) carry the EK extended key usage and the critical TPM
// SAN, so the honest simulated TPM enrolls under the strict profile.
func TestSwtpmEKConforms(t *testing.T) {
	sw := simtest.Start(t, "")
	if sw == nil {
		return
	}
	ek := readEK(t, sw)
	cert, err := ektrust.ParseEKCertificate(ek.Certificate)
	if err != nil {
		t.Fatal(err)
	}
	if err := ektrust.CheckProfile(cert); err != nil {
		t.Fatalf("swtpm EK certificate: %v", err)
	}
}

// TestRealFirmwareCertificateIsNotAnEKCertificate: a real vendor
// certificate (the LENOVO Secure Boot PK of the glinux-alex fixture, whose
// serial number is negative) parses under the verifier's settings and is
// refused as an EK certificate on both counts.
func TestRealFirmwareCertificateIsNotAnEKCertificate(t *testing.T) {
	fx := testutil.LoadFixture(t, "glinux-alex")
	l, err := eventlog.Parse(fx.Log)
	if err != nil {
		t.Fatal(err)
	}
	var der []byte
	for _, ev := range l.Events {
		if ev.Type != eventlog.EvEFIVariableDriverConfig {
			continue
		}
		v, err := eventlog.ParseUEFIVariable(ev.Data)
		if err != nil || v.Name != "PK" {
			continue
		}
		entries, err := eventlog.ParseSignatureList(v.Data)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if e.Cert() != nil {
				der = e.Data
			}
		}
	}
	if der == nil {
		t.Fatal("no PK certificate in glinux-alex")
	}
	cert, err := ektrust.ParseEKCertificate(der)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	if cert.SerialNumber.Sign() >= 0 {
		t.Fatalf("serial %v: the fixture's PK has a negative serial", cert.SerialNumber)
	}
	err = ektrust.CheckProfile(cert)
	if !errors.Is(err, ektrust.ErrNoEKUsage) || !errors.Is(err, ektrust.ErrNoTPMSAN) {
		t.Fatalf("profile of a firmware PK certificate: %v", err)
	}
}
