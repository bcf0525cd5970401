package verifier

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/pulse-attest/pulse/internal/pki"
	"github.com/pulse-attest/pulse/internal/tlsconfig"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/verifier/config"
	"github.com/pulse-attest/pulse/verifier/store"
	"github.com/pulse-attest/pulse/verifier/verifiertest"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// probeEnv is a verifier daemon on loopback (no TPM needed: nothing here
// gets past the handshake or the decoding of a request) with a frozen
// clock, so every refusal falls in one window.
type probeEnv struct {
	d       *Daemon
	ca      *pki.CA
	dir     string
	logs    *lockedBuffer
	vCert   tls.Certificate
	agent   tls.Certificate
	expired tls.Certificate
}

func newProbeEnv(t *testing.T, alertAfter int) *probeEnv {
	t.Helper()
	dir := t.TempDir()
	tp := verifiertest.WritePKI(t, dir, "probe test ca", 24*time.Hour)
	ca, caFile := tp.CA, tp.CAFile
	policy := "policy \"fleet\" {\n  match {\n    agents = [\"*\"]\n  }\n  tpm = \"optional\"\n}\n"
	if err := os.WriteFile(filepath.Join(dir, "policy.hcl"), []byte(policy), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{
		Listen:       "127.0.0.1:0",
		TLS:          config.TLS{Cert: filepath.Join(dir, "v.pem"), Key: filepath.Join(dir, "v-key.pem"), AgentCA: caFile, ProbeAlertAfter: alertAfter},
		Store:        config.Store{Engine: "sqlite", DSN: filepath.Join(dir, "state.db")},
		Policy:       []string{filepath.Join(dir, "policy.hcl")},
		Enrollment:   config.Enrollment{Timeout: time.Minute, DefaultPartition: "fleet"},
		NonceTTL:     time.Minute,
		ClockSkew:    30 * time.Second,
		AllowTPMless: true,
	}
	logs := &lockedBuffer{}
	log := hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Debug})
	t0 := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	d, err := Start(ctx, cfg, log, func(o *Options) { o.Now = func() time.Time { return t0 } })
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Stop(); cancel() })
	e := &probeEnv{d: d, ca: ca, dir: dir, logs: logs}
	e.vCert = keyPair(t, tp.Verifier.CertPEM, tp.Verifier.KeyPEM)
	ac, err := pki.Issue(ca, pki.Request{Role: pki.RoleAgent, ID: "edge-1"})
	if err != nil {
		t.Fatal(err)
	}
	e.agent = keyPair(t, ac.CertPEM, ac.KeyPEM)
	e.expired = expiredAgentCert(t, ca, t0)
	return e
}

func keyPair(t *testing.T, certPEM, keyPEM []byte) tls.Certificate {
	t.Helper()
	kp, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// expiredAgentCert is an agent certificate from ca that expired an hour
// before now.
func expiredAgentCert(t *testing.T, ca *pki.CA, now time.Time) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse("pulse://agent/edge-old")
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(4242), Subject: pkix.Name{CommonName: "edge-old"},
		NotBefore: now.Add(-2 * time.Hour), NotAfter: now.Add(-time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs: []*url.URL{u},
	}, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := pki.EncodeKeyPEM(key)
	if err != nil {
		t.Fatal(err)
	}
	return keyPair(t, pki.EncodeCertPEM(der), keyPEM)
}

func foreignAgentCert(t *testing.T) tls.Certificate {
	t.Helper()
	other, err := pki.NewCA("someone else", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	is, err := pki.Issue(other, pki.Request{Role: pki.RoleAgent, ID: "intruder"})
	if err != nil {
		t.Fatal(err)
	}
	return keyPair(t, is.CertPEM, is.KeyPEM)
}

// clientConfig presents cert (when not nil) whatever CAs the server names.
func (e *probeEnv) clientConfig(cert *tls.Certificate, tls12 bool) *tls.Config {
	c := &tls.Config{RootCAs: e.ca.Pool(), ServerName: "localhost", MinVersion: tls.VersionTLS13, NextProtos: []string{"h2"}}
	if tls12 {
		c.MinVersion, c.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	}
	if cert != nil {
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	return c
}

// dial handshakes with the agent port and reads, which is where a TLS 1.3
// client learns that its certificate was refused. It returns the error.
func (e *probeEnv) dial(t *testing.T, cfg *tls.Config) error {
	t.Helper()
	c, err := tls.Dial("tcp", e.d.Addr(), cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = io.ReadFull(c, make([]byte, 1))
	return err
}

func (e *probeEnv) refused(t *testing.T, cause tlsconfig.Cause) float64 {
	t.Helper()
	mfs, err := e.d.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "pulse_refused_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["listener"] == AgentListener && labels["cause"] == string(cause) {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no pulse_refused_total{listener=agent,cause=%s}", cause)
	return 0
}

func (e *probeEnv) probeAlerts(t *testing.T) []*store.Alert {
	t.Helper()
	all, err := e.d.Store.ListAlerts(context.Background(), store.AlertFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var out []*store.Alert
	for _, a := range all {
		if a.Kind == AlertProbe {
			out = append(out, a)
		}
	}
	return out
}

// TestProbesCountedLoggedAlerted: each way a handshake is refused on the
// agent port, with a real TLS client, is counted by cause and logged with
// the remote address (and the certificate's subject); the burst from one
// address raises one probe alert.
func TestProbesCountedLoggedAlerted(t *testing.T) {
	foreign := foreignAgentCert(t)
	e := newProbeEnv(t, 5)
	tests := []struct {
		name    string
		cfg     *tls.Config
		cause   tlsconfig.Cause
		subject string
	}{
		{name: "no certificate", cfg: e.clientConfig(nil, false), cause: tlsconfig.CauseNoCertificate},
		{name: "foreign ca", cfg: e.clientConfig(&foreign, false), cause: tlsconfig.CauseUnknownAuthority, subject: "CN=intruder"},
		{name: "verifier's own certificate", cfg: e.clientConfig(&e.vCert, false), cause: tlsconfig.CauseWrongRole, subject: "CN=v1"},
		{name: "expired certificate", cfg: e.clientConfig(&e.expired, false), cause: tlsconfig.CauseExpired, subject: "CN=edge-old"},
		{name: "tls 1.2 only", cfg: e.clientConfig(&e.agent, true), cause: tlsconfig.CauseBadVersion},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := e.dial(t, tc.cfg); err == nil {
				t.Fatal("handshake accepted")
			}
			// The client may see the refusal before the server has
			// reported it: wait for the count, not for a time.
			for e.refused(t, tc.cause) < 1 {
				time.Sleep(time.Millisecond)
			}
			if got := e.refused(t, tc.cause); got != 1 {
				t.Errorf("refused{cause=%s} = %v, want 1", tc.cause, got)
			}
			logs := e.logs.String()
			var line string
			for _, l := range strings.Split(logs, "\n") {
				if strings.Contains(l, "refused agent connection") && strings.Contains(l, "cause="+string(tc.cause)) {
					line = l
				}
			}
			if !strings.Contains(line, "[WARN]") || !strings.Contains(line, "remote_addr=127.0.0.1:") {
				t.Errorf("log line %q", line)
			}
			if tc.subject != "" && !strings.Contains(strings.ReplaceAll(line, `"`, ""), "peer_subject="+tc.subject) {
				t.Errorf("log line %q lacks subject %s", line, tc.subject)
			}
			wantAlerts := 0
			if i+1 >= 5 {
				wantAlerts = 1
			}
			if n := len(e.probeAlerts(t)); n != wantAlerts {
				t.Errorf("%d probe alerts after %d refusals, want %d", n, i+1, wantAlerts)
			}
		})
	}
	// More refusals from the same address in the same hour: still one alert.
	for range 6 {
		_ = e.dial(t, e.clientConfig(nil, false))
	}
	for e.refused(t, tlsconfig.CauseNoCertificate) < 7 {
		time.Sleep(time.Millisecond)
	}
	alerts := e.probeAlerts(t)
	if len(alerts) != 1 {
		t.Fatalf("%d probe alerts, want 1", len(alerts))
	}
	if a := alerts[0]; a.Severity != 3 || a.AgentID != "" || !strings.Contains(a.Message, "from 127.0.0.1 ") {
		t.Errorf("alert %+v", a)
	}
	// An accepted agent is neither counted nor logged.
	before := e.logs.String()
	// The read returns the server's first HTTP/2 settings frame.
	if err := e.dial(t, e.clientConfig(&e.agent, false)); err != nil {
		t.Errorf("agent refused: %v", err)
	}
	if strings.Count(e.logs.String(), "refused agent connection") != strings.Count(before, "refused agent connection") {
		t.Error("accepted agent logged as refused")
	}
}

// rawCodec sends the bytes it is given as the request, under the proto
// content subtype, so the server's proto codec must decode them.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return v.([]byte), nil }
func (rawCodec) Unmarshal([]byte, any) error   { return nil }
func (rawCodec) Name() string                  { return "proto" }

// TestMalformedRequestInvalidArgument: a request that does not decode gets
// InvalidArgument, not Internal, on unary and streaming methods, and is
// counted and logged as malformed_request.
func TestMalformedRequestInvalidArgument(t *testing.T) {
	e := newProbeEnv(t, 20)
	conn, err := grpc.NewClient(e.d.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(e.clientConfig(&e.agent, false))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Field 1, wire type 2 (bytes), length 100, then 2 bytes: truncated.
	garbage := []byte{0x0a, 0x64, 0x01, 0x02}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tests := []struct {
		name string
		call func() error
	}{
		{name: "unary", call: func() error {
			var reply []byte
			return conn.Invoke(ctx, pulsev1.Attestation_Enroll_FullMethodName, garbage, &reply, grpc.ForceCodec(rawCodec{}))
		}},
		{name: "stream", call: func() error {
			s, err := conn.NewStream(ctx, &pulsev1.Attestation_ServiceDesc.Streams[0], pulsev1.Attestation_Directives_FullMethodName, grpc.ForceCodec(rawCodec{}))
			if err != nil {
				return err
			}
			if err := s.SendMsg(garbage); err != nil {
				return err
			}
			if err := s.CloseSend(); err != nil {
				return err
			}
			var reply []byte
			return s.RecvMsg(&reply)
		}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if st, _ := status.FromError(err); st.Code() != codes.InvalidArgument || st.Message() != MalformedRequestMessage {
				t.Fatalf("error %v, want InvalidArgument %q", err, MalformedRequestMessage)
			}
			if got := e.refused(t, tlsconfig.CauseMalformedRequest); got != float64(i+1) {
				t.Errorf("malformed_request = %v, want %d", got, i+1)
			}
			if !strings.Contains(e.logs.String(), "cause=malformed_request remote_addr=127.0.0.1:") {
				t.Errorf("not logged:\n%s", e.logs.String())
			}
		})
	}
	if n := len(e.probeAlerts(t)); n != 0 {
		t.Errorf("%d probe alerts for malformed requests", n)
	}
}
