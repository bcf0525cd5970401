// Package verifiertest is a Pulse client for tests: it builds pulses from
// the same parts the real agent uses (a real TPM, CEL runtime records,
// pulsesig signatures, real mTLS) and lets a test change any part to attack
// the verifier. It is test support, not an agent.
package verifiertest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"path/filepath"
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
	"github.com/pulse-attest/pulse/tpm"
	"github.com/pulse-attest/pulse/tpm/cel"
	"github.com/pulse-attest/pulse/tpm/eventlog"
)

// RuntimePCR is the runtime PCR the client extends.
const RuntimePCR = 14

// Client is a client built from the same parts the real agent uses: a
// real TPM, CEL runtime records, pulsesig signatures, real mTLS.
type Client struct {
	t         *testing.T
	ID        string
	Partition string
	Cert      *pki.Issued
	Conn      *grpc.ClientConn
	Cl        pulsev1.AttestationClient
	Dev       *tpm.TPM
	AK        *tpm.AK
	FwLog     []byte
	Records   []cel.Record
	SentUpTo  uint64
	Seq       uint64
	Binary    [32]byte
	Nonce     []byte
	// PayloadHook, when set, changes every payload BasePayload builds
	// (state the test's device keeps reporting, e.g. Fortress's status).
	PayloadHook func(*pulsev1.PulsePayload)
}

// NewClient issues an agent certificate for id from ca, dials addr over
// mTLS and, when dev is not nil, loads the TPM's AK.
func NewClient(t *testing.T, addr, caFile string, ca *pki.CA, id string, dev *tpm.TPM, fwLog []byte) *Client {
	t.Helper()
	return NewClientWithKey(t, addr, caFile, ca, id, pki.KeyECDSAP256, dev, fwLog)
}

// NewClientWithKey is NewClient with the agent certificate's key type.
func NewClientWithKey(t *testing.T, addr, caFile string, ca *pki.CA, id string, kt pki.KeyType, dev *tpm.TPM, fwLog []byte) *Client {
	t.Helper()
	cert, err := pki.Issue(ca, pki.Request{Role: pki.RoleAgent, ID: id, KeyType: kt})
	if err != nil {
		t.Fatal(err)
	}
	a := &Client{t: t, ID: id, Partition: "fleet", Cert: cert, Dev: dev, FwLog: fwLog}
	a.Conn = Dial(t, addr, caFile, cert)
	a.Cl = pulsev1.NewAttestationClient(a.Conn)
	if dev != nil {
		ak, err := dev.AK(tpm.AKOptions{})
		if err != nil {
			t.Fatal(err)
		}
		a.AK = ak
	}
	a.Binary = sha256.Sum256([]byte("pulse-agent build for " + id))
	return a
}

// Dial opens a gRPC connection with the agent certificate.
func Dial(t *testing.T, addr, caFile string, cert *pki.Issued) *grpc.ClientConn {
	t.Helper()
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "a.pem"), filepath.Join(dir, "a-key.pem")
	if err := cert.WriteFiles(certFile, keyFile, false); err != nil {
		t.Fatal(err)
	}
	tc, _, err := tlsconfig.ClientConfig(tlsconfig.ClientOptions{CertFile: certFile, KeyFile: keyFile, ServerCAFile: caFile, ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func Ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// enroll runs Enroll and ActivateCredential with the TPM.
func (a *Client) Enroll() *pulsev1.EnrollResult {
	t := a.t
	t.Helper()
	req := &pulsev1.EnrollRequest{Tpm: a.Dev != nil, Partition: a.Partition}
	if a.Dev != nil {
		ek, err := a.Dev.EK()
		if err != nil {
			t.Fatal(err)
		}
		req.EkPublic, req.EkCertificate, req.AkPublic = ek.PublicBlob, ek.Certificate, a.AK.Public()
	}
	resp, err := a.Cl.Enroll(Ctx(t), req)
	if err != nil {
		t.Fatalf("enroll: %v", err)
	}
	if resp.GetResult() != nil {
		return resp.GetResult()
	}
	secret, err := a.Dev.ActivateCredential(a.AK, resp.GetCredentialBlob(), resp.GetEncryptedSecret())
	if err != nil {
		t.Fatalf("activate credential: %v", err)
	}
	res, err := a.Cl.ActivateCredential(Ctx(t), &pulsev1.ActivateCredentialRequest{EnrollmentId: resp.GetEnrollmentId(), Secret: secret})
	if err != nil {
		t.Fatalf("activate: %v", err)
	}
	return res
}

// measure appends a runtime record and extends the runtime PCR (log first).
func (a *Client) Measure(c cel.Content) {
	t := a.t
	t.Helper()
	r, err := cel.NewRecord(uint64(len(a.Records)), RuntimePCR, c)
	if err != nil {
		t.Fatal(err)
	}
	a.Records = append(a.Records, r)
	if err := a.Dev.Extend(RuntimePCR, map[uint16][]byte{uint16(eventlog.AlgSHA256): r.Digests[0].Value}); err != nil {
		t.Fatal(err)
	}
}

func (a *Client) MeasureBinary() {
	a.Measure(&cel.AgentBinary{Path: "/usr/bin/pulse-agent", SHA256: a.Binary, Size: 1234})
}

func (a *Client) Challenge() {
	t := a.t
	t.Helper()
	resp, err := a.Cl.Challenge(Ctx(t), &pulsev1.ChallengeRequest{})
	if err != nil {
		t.Fatalf("challenge: %v", err)
	}
	a.Nonce = resp.GetNonce().GetValue()
}

// Parts is a pulse under construction; tests mutate it to attack.
type Parts struct {
	Payload   *pulsev1.PulsePayload
	Signer    *pki.Issued
	SendLog   bool
	FwLog     []byte
	NoQuote   bool
	QuoteWith *Client // quote with another agent's TPM
	// After runs on the finished request.
	After func(*pulsev1.PulseRequest)
	// BeforeQuote runs between signing and quoting.
	BeforeQuote func()
}

func (a *Client) BasePayload() *pulsev1.PulsePayload {
	// Sequence numbers start at 0, as the real agent's do.
	defer func() { a.Seq++ }()
	pn := make([]byte, 16)
	rand.Read(pn) //nolint:errcheck // crypto/rand
	fw := sha256.Sum256(a.FwLog)
	leaf := pulsesig.LeafKeyDigest(a.Cert.Cert)
	rtBytes, err := cel.Encode(a.Records[a.SentUpTo:])
	if err != nil {
		a.t.Fatal(err)
	}
	p := &pulsev1.PulsePayload{
		AgentId: a.ID, Partition: a.Partition, Time: timestamppb.Now(), VerifierNonce: a.Nonce, PulseNonce: pn,
		Sequence: a.Seq, LeafKeySha256: leaf[:], AgentBinarySha256: a.Binary[:], Tpm: a.Dev != nil,
		RuntimePcr: RuntimePCR, RuntimeFirstRecord: a.SentUpTo, RuntimeRecords: rtBytes, FirmwareLogSha256: fw[:],
		AgentBinaryPath: "/usr/bin/pulse-agent", AgentBinaryDiskSha256: a.Binary[:],
	}
	if a.PayloadHook != nil {
		a.PayloadHook(p)
	}
	return p
}

// build makes a signed, quoted pulse request.
func (a *Client) Build(mut func(*Parts)) *pulsev1.PulseRequest {
	t := a.t
	t.Helper()
	p := &Parts{Payload: a.BasePayload(), Signer: a.Cert, SendLog: true, FwLog: a.FwLog}
	if mut != nil {
		mut(p)
	}
	raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(p.Payload)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := pulsesig.Sign(p.Signer.Key, raw)
	if err != nil {
		t.Fatal(err)
	}
	req := &pulsev1.PulseRequest{Payload: raw, Signature: sig}
	if p.SendLog {
		req.FirmwareLog = p.FwLog
	}
	if p.BeforeQuote != nil {
		p.BeforeQuote()
	}
	q := a
	if p.QuoteWith != nil {
		q = p.QuoteWith
	}
	if q.Dev != nil && !p.NoQuote {
		sum := sha256.Sum256(raw)
		sel := []uint32{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, RuntimePCR}
		vals, err := q.Dev.ReadPCRs(uint16(eventlog.AlgSHA256), sel)
		if err != nil {
			t.Fatal(err)
		}
		attest, qsig, err := q.Dev.Quote(q.AK, sel, sum[:])
		if err != nil {
			t.Fatal(err)
		}
		quote := &pulsev1.Quote{Attest: attest, Signature: qsig, PcrBank: uint32(eventlog.AlgSHA256)}
		for _, i := range sel {
			quote.Pcrs = append(quote.Pcrs, &pulsev1.PCRValue{Index: i, Digest: vals[i]})
		}
		req.Quote = quote
	}
	if p.After != nil {
		p.After(req)
	}
	return req
}

// send submits a request and, on acceptance, advances the acknowledged
// runtime records and takes the next nonce.
func (a *Client) Send(req *pulsev1.PulseRequest) *pulsev1.PulseResponse {
	t := a.t
	t.Helper()
	resp, err := a.Cl.Pulse(Ctx(t), req)
	if err != nil {
		t.Fatalf("pulse rpc: %v", err)
	}
	if resp.GetNextNonce() != nil {
		a.Nonce = resp.GetNextNonce().GetValue()
	}
	if st := resp.GetState(); st != nil {
		a.SentUpTo = st.GetRuntimeRecordsAcked()
		if a.SentUpTo > uint64(len(a.Records)) {
			a.SentUpTo = 0
		}
	}
	return resp
}

func (a *Client) Pulse(mut func(*Parts)) *pulsev1.PulseResponse {
	a.t.Helper()
	return a.Send(a.Build(mut))
}
