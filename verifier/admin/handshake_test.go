package admin

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pulse-attest/pulse/internal/pki"
)

// TestAdminHandshakeRefusalsCounted: every handshake the admin listener
// refuses is counted in pulse_admin_auth_failures_total under the reason
// docs/operations.md lists for it, with a real TLS client on loopback.
func TestAdminHandshakeRefusalsCounted(t *testing.T) {
	p := newTestPKI(t)
	for _, withToken := range []bool{false, true} {
		name := "certificate only"
		if withToken {
			name = "certificate or token"
		}
		t.Run(name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			logs := &syncBuffer{}
			log := hclog.New(&hclog.LoggerOptions{Name: "test", Level: hclog.Debug, Output: logs})
			token := ""
			if withToken {
				token = testToken
			}
			h, err := New(Options{Backend: sampleBackend(time.Now()), Registry: reg, Logger: log, Token: token})
			if err != nil {
				t.Fatal(err)
			}
			cfg, _, err := TLSConfig(TLSOptions{CertFile: p.serverCert, KeyFile: p.serverKey, OperatorCAFile: p.caFile, AllowNoClientCert: withToken, Logger: log})
			if err != nil {
				t.Fatal(err)
			}
			s, err := Listen("127.0.0.1:0", cfg, h, log)
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_ = s.Stop(ctx)
			}()
			counter := h.(*handler).authFail
			tests := []struct {
				name      string
				cert, key string
				tls12     bool
				reason    string // "": the handshake succeeds
			}{
				{name: "agent certificate", cert: p.agentCert, key: p.agentKey, reason: "wrong_role"},
				{name: "verifier certificate", cert: p.serverCert, key: p.serverKey, reason: "wrong_role"},
				{name: "operator from another CA", cert: p.strangerCert, key: p.strangerKey, reason: "bad_certificate"},
				{name: "tls 1.2 only", cert: p.operatorCert, key: p.operatorKey, tls12: true, reason: "bad_version"},
				{name: "no certificate", reason: map[bool]string{false: "no_credentials", true: ""}[withToken]},
				{name: "operator", cert: p.operatorCert, key: p.operatorKey},
			}
			want := map[string]float64{}
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					c := &tls.Config{RootCAs: p.pool(t), ServerName: "localhost", MinVersion: tls.VersionTLS13}
					if tc.tls12 {
						c.MinVersion, c.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
					}
					if tc.cert != "" {
						kp, err := tls.LoadX509KeyPair(tc.cert, tc.key)
						if err != nil {
							t.Fatal(err)
						}
						c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &kp, nil }
					}
					conn, err := tls.Dial("tcp", s.Addr(), c)
					if err == nil {
						// A TLS 1.3 client learns of a refused certificate on its
						// first read; an accepted one gets the 400 of an empty
						// request line.
						_, _ = conn.Write([]byte("\r\n\r\n"))
						_, err = io.ReadFull(conn, make([]byte, 1))
						conn.Close()
					}
					if (err != nil) != (tc.reason != "") {
						t.Fatalf("handshake error %v, want refused=%v", err, tc.reason != "")
					}
					if tc.reason == "" {
						return
					}
					want[tc.reason]++
					// The server reports once the connection closes: wait for
					// the count, not for a time.
					for testutil.ToFloat64(counter.WithLabelValues(tc.reason)) < want[tc.reason] {
						time.Sleep(time.Millisecond)
					}
				})
			}
			for reason, n := range want {
				if got := testutil.ToFloat64(counter.WithLabelValues(reason)); got != n {
					t.Errorf("auth failures {reason=%s} = %v, want %v", reason, got, n)
				}
			}
			if got := testutil.CollectAndCount(counter); got != len(want) {
				t.Errorf("%d reasons counted, want %d:\n%s", got, len(want), logs)
			}
		})
	}
}

func (p *testPKI) pool(t *testing.T) *x509.CertPool {
	t.Helper()
	pool, err := pki.ReadCertPool(p.caFile)
	if err != nil {
		t.Fatal(err)
	}
	return pool
}
