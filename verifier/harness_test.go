package verifier_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pulse-attest/pulse/internal/pki"
	"github.com/pulse-attest/pulse/internal/pulsesig"
	"github.com/pulse-attest/pulse/internal/tlsconfig"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/simulator"
	"github.com/pulse-attest/pulse/simulator/simtest"
	"github.com/pulse-attest/pulse/tpm"
	"github.com/pulse-attest/pulse/tpm/cel"
	"github.com/pulse-attest/pulse/tpm/eventlog"
	"github.com/pulse-attest/pulse/verifier"
	"github.com/pulse-attest/pulse/verifier/config"
)

const runtimePCR = 14

// policyTPM requires a TPM and Secure Boot; policyOptional accepts
// mTLS-only agents in partition "lab".
const testPolicy = `
policy "lab" {
  match {
    partitions = ["lab"]
  }
  tpm = "optional"
}

policy "fleet" {
  match {
    agents = ["*"]
  }
  tpm = "required"
  measured_boot {
    secure_boot {}
  }
  on_failure {
    isolate = true
  }
}
`

// env is a verifier served over real gRPC with mTLS on loopback, with its
// own CA, store and policy, and a swtpm booted with a real firmware log.
type env struct {
	t      *testing.T
	dir    string
	ca     *pki.CA
	caFile string
	sw     *simulator.Swtpm
	fwLog  []byte
	daemon *verifier.Daemon
	clock  *fakeClock
}

type fakeClock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.offset += d
	c.mu.Unlock()
}

func newEnv(t *testing.T, fixture string, extraTPMs ...*simulator.Swtpm) *env {
	t.Helper()
	sw := simtest.Start(t, fixture)
	if sw == nil {
		return nil
	}
	fwLog, err := os.ReadFile(sw.BootLogPath())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ca, err := pki.NewCA("pulse test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, ca.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	vc, err := pki.Issue(ca, pki.Request{Role: pki.RoleVerifier, ID: "v1", DNSNames: []string{"localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := vc.WriteFiles(filepath.Join(dir, "v.pem"), filepath.Join(dir, "v-key.pem"), false); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "policy.hcl"), []byte(testPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	ekRoots := []string{sw.LocalCACert(), sw.IssuerCert()}
	for _, x := range extraTPMs {
		ekRoots = append(ekRoots, x.LocalCACert(), x.IssuerCert())
	}
	cfg := &config.Config{
		Listen:       "127.0.0.1:0",
		TLS:          config.TLS{Cert: filepath.Join(dir, "v.pem"), Key: filepath.Join(dir, "v-key.pem"), AgentCA: caFile},
		Store:        config.Store{Engine: "sqlite", DSN: filepath.Join(dir, "state.db")},
		Policy:       []string{filepath.Join(dir, "policy.hcl")},
		Enrollment:   config.Enrollment{EKRoots: ekRoots, Timeout: time.Minute},
		NonceTTL:     time.Minute,
		ClockSkew:    30 * time.Second,
		AllowTPMless: true,
	}
	clock := &fakeClock{}
	ctx, cancel := context.WithCancel(context.Background())
	d, err := verifier.Start(ctx, cfg, simtest.Logger(t), func(o *verifier.Options) { o.Now = clock.Now })
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Stop(); cancel() })
	return &env{t: t, dir: dir, ca: ca, caFile: caFile, sw: sw, fwLog: fwLog, daemon: d, clock: clock}
}

// testAgent is a client built from the same parts the real agent uses: a
// real TPM, CEL runtime records, pulsesig signatures, real mTLS.
type testAgent struct {
	t         *testing.T
	id        string
	partition string
	cert      *pki.Issued
	conn      *grpc.ClientConn
	cl        pulsev1.AttestationClient
	dev       *tpm.TPM
	ak        *tpm.AK
	fwLog     []byte
	records   []cel.Record
	sentUpTo  uint64
	seq       uint64
	binary    [32]byte
	nonce     []byte
}

func (e *env) agent(id string, dev *tpm.TPM) *testAgent {
	t := e.t
	t.Helper()
	cert, err := pki.Issue(e.ca, pki.Request{Role: pki.RoleAgent, ID: id})
	if err != nil {
		t.Fatal(err)
	}
	a := &testAgent{t: t, id: id, partition: "fleet", cert: cert, dev: dev, fwLog: e.fwLog}
	a.conn = e.dial(cert)
	a.cl = pulsev1.NewAttestationClient(a.conn)
	if dev != nil {
		ak, err := dev.AK(tpm.AKOptions{})
		if err != nil {
			t.Fatal(err)
		}
		a.ak = ak
	}
	a.binary = sha256.Sum256([]byte("pulse-agent build for " + id))
	return a
}

func (e *env) dial(cert *pki.Issued) *grpc.ClientConn {
	t := e.t
	t.Helper()
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "a.pem"), filepath.Join(dir, "a-key.pem")
	if err := cert.WriteFiles(certFile, keyFile, false); err != nil {
		t.Fatal(err)
	}
	tc, _, err := tlsconfig.ClientConfig(tlsconfig.ClientOptions{CertFile: certFile, KeyFile: keyFile, ServerCAFile: e.caFile, ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(e.daemon.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func (e *env) openTPM(sw *simulator.Swtpm) *tpm.TPM {
	e.t.Helper()
	dev, err := sw.Open(simtest.Logger(e.t))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { dev.Close() })
	return dev
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// enroll runs Enroll and ActivateCredential with the TPM.
func (a *testAgent) enroll() *pulsev1.EnrollResult {
	t := a.t
	t.Helper()
	req := &pulsev1.EnrollRequest{Tpm: a.dev != nil, Partition: a.partition}
	if a.dev != nil {
		ek, err := a.dev.EK()
		if err != nil {
			t.Fatal(err)
		}
		req.EkPublic, req.EkCertificate, req.AkPublic = ek.PublicBlob, ek.Certificate, a.ak.Public()
	}
	resp, err := a.cl.Enroll(ctx(t), req)
	if err != nil {
		t.Fatalf("enroll: %v", err)
	}
	if resp.GetResult() != nil {
		return resp.GetResult()
	}
	secret, err := a.dev.ActivateCredential(a.ak, resp.GetCredentialBlob(), resp.GetEncryptedSecret())
	if err != nil {
		t.Fatalf("activate credential: %v", err)
	}
	res, err := a.cl.ActivateCredential(ctx(t), &pulsev1.ActivateCredentialRequest{EnrollmentId: resp.GetEnrollmentId(), Secret: secret})
	if err != nil {
		t.Fatalf("activate: %v", err)
	}
	return res
}

// measure appends a runtime record and extends the runtime PCR (log first).
func (a *testAgent) measure(c cel.Content) {
	t := a.t
	t.Helper()
	r, err := cel.NewRecord(uint64(len(a.records)), runtimePCR, c)
	if err != nil {
		t.Fatal(err)
	}
	a.records = append(a.records, r)
	if err := a.dev.Extend(runtimePCR, map[uint16][]byte{uint16(eventlog.AlgSHA256): r.Digests[0].Value}); err != nil {
		t.Fatal(err)
	}
}

func (a *testAgent) measureBinary() {
	a.measure(&cel.AgentBinary{Path: "/usr/bin/pulse-agent", SHA256: a.binary, Size: 1234})
}

func (a *testAgent) challenge() {
	t := a.t
	t.Helper()
	resp, err := a.cl.Challenge(ctx(t), &pulsev1.ChallengeRequest{})
	if err != nil {
		t.Fatalf("challenge: %v", err)
	}
	a.nonce = resp.GetNonce().GetValue()
}

// parts is a pulse under construction; tests mutate it to attack.
type parts struct {
	payload   *pulsev1.PulsePayload
	signer    *pki.Issued
	sendLog   bool
	fwLog     []byte
	noQuote   bool
	quoteWith *testAgent // quote with another agent's TPM
	// after runs on the finished request.
	after func(*pulsev1.PulseRequest)
	// beforeQuote runs between signing and quoting.
	beforeQuote func()
}

func (a *testAgent) basePayload() *pulsev1.PulsePayload {
	// Sequence numbers start at 0, as the real agent's do.
	defer func() { a.seq++ }()
	pn := make([]byte, 16)
	rand.Read(pn) //nolint:errcheck // crypto/rand
	fw := sha256.Sum256(a.fwLog)
	leaf := pulsesig.LeafKeyDigest(a.cert.Cert)
	rtBytes, err := cel.Encode(a.records[a.sentUpTo:])
	if err != nil {
		a.t.Fatal(err)
	}
	return &pulsev1.PulsePayload{
		AgentId: a.id, Partition: a.partition, Time: timestamppb.Now(), VerifierNonce: a.nonce, PulseNonce: pn,
		Sequence: a.seq, LeafKeySha256: leaf[:], AgentBinarySha256: a.binary[:], Tpm: a.dev != nil,
		RuntimePcr: runtimePCR, RuntimeFirstRecord: a.sentUpTo, RuntimeRecords: rtBytes, FirmwareLogSha256: fw[:],
		AgentBinaryPath: "/usr/bin/pulse-agent", AgentBinaryDiskSha256: a.binary[:],
	}
}

// build makes a signed, quoted pulse request.
func (a *testAgent) build(mut func(*parts)) *pulsev1.PulseRequest {
	t := a.t
	t.Helper()
	p := &parts{payload: a.basePayload(), signer: a.cert, sendLog: true, fwLog: a.fwLog}
	if mut != nil {
		mut(p)
	}
	raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(p.payload)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := pulsesig.Sign(p.signer.Key, raw)
	if err != nil {
		t.Fatal(err)
	}
	req := &pulsev1.PulseRequest{Payload: raw, Signature: sig}
	if p.sendLog {
		req.FirmwareLog = p.fwLog
	}
	if p.beforeQuote != nil {
		p.beforeQuote()
	}
	q := a
	if p.quoteWith != nil {
		q = p.quoteWith
	}
	if q.dev != nil && !p.noQuote {
		sum := sha256.Sum256(raw)
		sel := []uint32{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, runtimePCR}
		vals, err := q.dev.ReadPCRs(uint16(eventlog.AlgSHA256), sel)
		if err != nil {
			t.Fatal(err)
		}
		attest, qsig, err := q.dev.Quote(q.ak, sel, sum[:])
		if err != nil {
			t.Fatal(err)
		}
		quote := &pulsev1.Quote{Attest: attest, Signature: qsig, PcrBank: uint32(eventlog.AlgSHA256)}
		for _, i := range sel {
			quote.Pcrs = append(quote.Pcrs, &pulsev1.PCRValue{Index: i, Digest: vals[i]})
		}
		req.Quote = quote
	}
	if p.after != nil {
		p.after(req)
	}
	return req
}

// send submits a request and, on acceptance, advances the acknowledged
// runtime records and takes the next nonce.
func (a *testAgent) send(req *pulsev1.PulseRequest) *pulsev1.PulseResponse {
	t := a.t
	t.Helper()
	resp, err := a.cl.Pulse(ctx(t), req)
	if err != nil {
		t.Fatalf("pulse rpc: %v", err)
	}
	if resp.GetNextNonce() != nil {
		a.nonce = resp.GetNextNonce().GetValue()
	}
	if st := resp.GetState(); st != nil {
		a.sentUpTo = st.GetRuntimeRecordsAcked()
		if a.sentUpTo > uint64(len(a.records)) {
			a.sentUpTo = 0
		}
	}
	return resp
}

func (a *testAgent) pulse(mut func(*parts)) *pulsev1.PulseResponse {
	a.t.Helper()
	return a.send(a.build(mut))
}

// tlsConfigFor returns a plain client TLS config with an optional certificate.
func (e *env) tlsConfigFor(cert *tls.Certificate) *tls.Config {
	pool, err := pki.ReadCertPool(e.caFile)
	if err != nil {
		e.t.Fatal(err)
	}
	c := &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS13}
	if cert != nil {
		c.Certificates = []tls.Certificate{*cert}
	}
	return c
}

// newForeignCert is an agent certificate from a CA the verifier does not trust.
func newForeignCert(t *testing.T) *tls.Certificate {
	t.Helper()
	ca, err := pki.NewCA("someone else", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	is, err := pki.Issue(ca, pki.Request{Role: pki.RoleAgent, ID: "intruder"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.X509KeyPair(is.CertPEM, is.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return &c
}
