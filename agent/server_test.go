package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pulse-attest/pulse/internal/pki"
	"github.com/pulse-attest/pulse/internal/pulsesig"
	"github.com/pulse-attest/pulse/internal/tlsconfig"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/tpm/cel"
	"github.com/pulse-attest/pulse/tpm/credential"
	"github.com/pulse-attest/pulse/tpm/quote"
)

// testPKI is a CA with a verifier certificate and files for one agent.
type testPKI struct {
	dir                string
	ca                 *pki.CA
	caFile             string
	serverCert, srvKey string
	agentCert, agentKy string
}

func newTestPKI(t *testing.T, agentID string) *testPKI {
	t.Helper()
	dir := t.TempDir()
	ca, err := pki.NewCA("pulse test ca", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	p := &testPKI{dir: dir, ca: ca, caFile: filepath.Join(dir, "ca.crt"),
		serverCert: filepath.Join(dir, "verifier.crt"), srvKey: filepath.Join(dir, "verifier.key"),
		agentCert: filepath.Join(dir, "agent.crt"), agentKy: filepath.Join(dir, "agent.key")}
	if err := pki.WriteFileAtomic(p.caFile, ca.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	srv, err := pki.Issue(ca, pki.Request{Role: pki.RoleVerifier, ID: "verifier-1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.WriteFiles(p.serverCert, p.srvKey, true); err != nil {
		t.Fatal(err)
	}
	p.issueAgent(t, agentID)
	return p
}

// issueAgent writes a fresh certificate and key for the agent.
func (p *testPKI) issueAgent(t *testing.T, id string) *pki.Issued {
	t.Helper()
	iss, err := pki.Issue(p.ca, pki.Request{Role: pki.RoleAgent, ID: id})
	if err != nil {
		t.Fatal(err)
	}
	if err := iss.WriteFiles(p.agentCert, p.agentKy, true); err != nil {
		t.Fatal(err)
	}
	return iss
}

// received is one pulse the test verifier accepted or refused.
type received struct {
	Payload     *pulsev1.PulsePayload
	Raw         []byte
	PeerKey     [32]byte
	Quote       *pulsev1.Quote
	FirmwareLog []byte
	NonceSource string // challenge, response (next_nonce) or directive
	Err         error
}

// fakeVerifier implements the Attestation service strictly enough to
// catch agent mistakes: identity, leaf key binding, signature, single-use
// nonces, the quote over SHA-256(payload), and the runtime log's replay.
type fakeVerifier struct {
	pulsev1.UnimplementedAttestationServer
	t       *testing.T
	initial []byte // runtime PCR value the firmware log leaves

	mu            sync.Mutex
	nonces        map[string]string // nonce -> where it was issued: challenge, response, directive
	enrollments   map[string]*fakeEnrollment
	akPublic      []byte
	tpmEnrolled   bool
	enrolled      bool
	records       []cel.Record
	resetCount    uint32
	fwDigest      []byte
	hostDigest    []byte
	pulses        []received
	challenges    int
	enrolls       int
	enrollVersion string // agent_version of the last EnrollRequest
	interval      time.Duration
	directives    chan *pulsev1.Directive
	streams       int
	refuseNext    pulsev1.Reason // answer the next pulse with this reason
	refuseEnrolls int            // refuse this many enrollments (EK_UNTRUSTED)
	pulseSignal   chan struct{}
}

type fakeEnrollment struct {
	secret   []byte
	akPublic []byte
}

func newFakeVerifier(t *testing.T, initial []byte) *fakeVerifier {
	return &fakeVerifier{
		t: t, initial: initial,
		nonces:      map[string]string{},
		enrollments: map[string]*fakeEnrollment{},
		directives:  make(chan *pulsev1.Directive, 16),
		pulseSignal: make(chan struct{}, 256),
	}
}

// serve starts a gRPC server with mTLS on addr ("127.0.0.1:0" for any
// port) and returns its address and a stop function.
func (f *fakeVerifier) serve(t *testing.T, p *testPKI, addr string) (string, func()) {
	t.Helper()
	tlsCfg, _, err := tlsconfig.ServerConfig(tlsconfig.ServerOptions{
		CertFile: p.serverCert, KeyFile: p.srvKey, ClientCAFile: p.caFile, RequireRole: pki.RoleAgent,
	})
	if err != nil {
		t.Fatal(err)
	}
	var lis net.Listener
	for i := 0; ; i++ {
		lis, err = net.Listen("tcp", addr)
		if err == nil || i > 50 {
			break
		}
		time.Sleep(100 * time.Millisecond) // the port may still be held briefly
	}
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(grpc.Creds(credentials.NewTLS(tlsCfg)))
	pulsev1.RegisterAttestationServer(s, f)
	go s.Serve(lis)
	var once sync.Once
	stop := func() { once.Do(s.Stop) }
	t.Cleanup(stop)
	return lis.Addr().String(), stop
}

func peerOf(ctx context.Context) (pki.Identity, *tlsconfigPeer, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return pki.Identity{}, nil, errors.New("no peer")
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return pki.Identity{}, nil, errors.New("not tls")
	}
	id, err := tlsconfig.PeerIdentity(ti.State)
	if err != nil {
		return pki.Identity{}, nil, err
	}
	leaf := ti.State.PeerCertificates[0]
	return id, &tlsconfigPeer{key: leaf.PublicKey, digest: pulsesig.LeafKeyDigest(leaf)}, nil
}

type tlsconfigPeer struct {
	key    any
	digest [32]byte
}

func (f *fakeVerifier) newNonce(source string) *pulsev1.Nonce {
	v := make([]byte, 32)
	rand.Read(v)
	f.nonces[string(v)] = source
	return &pulsev1.Nonce{Value: v, Expires: timestamppb.New(time.Now().Add(time.Minute))}
}

func (f *fakeVerifier) state() *pulsev1.VerifierState {
	st := &pulsev1.VerifierState{
		FirmwareLogSha256:   f.fwDigest,
		RuntimeRecordsAcked: uint64(len(f.records)),
		BootResetCount:      f.resetCount,
		HostProgramsSha256:  f.hostDigest,
	}
	if f.interval > 0 {
		st.Interval = durationpb.New(f.interval)
	}
	return st
}

func (f *fakeVerifier) Enroll(ctx context.Context, req *pulsev1.EnrollRequest) (*pulsev1.EnrollResponse, error) {
	if _, _, err := peerOf(ctx); err != nil {
		return nil, status.Error(codes.Unauthenticated, err.Error())
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.enrolls++
	f.enrollVersion = req.GetAgentVersion()
	if f.refuseEnrolls > 0 {
		f.refuseEnrolls--
		return &pulsev1.EnrollResponse{Result: &pulsev1.EnrollResult{Reason: pulsev1.Reason_REASON_EK_UNTRUSTED, Message: "awaiting operator approval"}}, nil
	}
	if !req.GetTpm() {
		f.enrolled, f.tpmEnrolled = true, false
		return &pulsev1.EnrollResponse{Result: &pulsev1.EnrollResult{Enrolled: true, Reason: pulsev1.Reason_REASON_OK}}, nil
	}
	name, err := quote.AKName(req.GetAkPublic())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	secret := make([]byte, 32)
	rand.Read(secret)
	blob, enc, err := credential.MakeForPublic(req.GetEkPublic(), name, secret)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	id := fmt.Sprintf("enr-%d", f.enrolls)
	f.enrollments[id] = &fakeEnrollment{secret: secret, akPublic: req.GetAkPublic()}
	return &pulsev1.EnrollResponse{EnrollmentId: id, CredentialBlob: blob, EncryptedSecret: enc}, nil
}

func (f *fakeVerifier) ActivateCredential(ctx context.Context, req *pulsev1.ActivateCredentialRequest) (*pulsev1.EnrollResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e := f.enrollments[req.GetEnrollmentId()]
	if e == nil {
		return &pulsev1.EnrollResult{Reason: pulsev1.Reason_REASON_ENROLLMENT_EXPIRED}, nil
	}
	delete(f.enrollments, req.GetEnrollmentId())
	if subtle.ConstantTimeCompare(e.secret, req.GetSecret()) != 1 {
		return &pulsev1.EnrollResult{Reason: pulsev1.Reason_REASON_CREDENTIAL_ACTIVATION_FAILED}, nil
	}
	f.akPublic, f.enrolled, f.tpmEnrolled = e.akPublic, true, true
	f.records, f.fwDigest = nil, nil
	return &pulsev1.EnrollResult{Enrolled: true, Reason: pulsev1.Reason_REASON_OK}, nil
}

func (f *fakeVerifier) Challenge(ctx context.Context, _ *pulsev1.ChallengeRequest) (*pulsev1.ChallengeResponse, error) {
	if _, _, err := peerOf(ctx); err != nil {
		return nil, status.Error(codes.Unauthenticated, err.Error())
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.challenges++
	return &pulsev1.ChallengeResponse{Nonce: f.newNonce("challenge"), State: f.state()}, nil
}

func (f *fakeVerifier) Pulse(ctx context.Context, req *pulsev1.PulseRequest) (*pulsev1.PulseResponse, error) {
	id, pr, err := peerOf(ctx)
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, err.Error())
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	rec := received{Raw: req.GetPayload(), PeerKey: pr.digest, Quote: req.GetQuote(), FirmwareLog: req.GetFirmwareLog()}
	reason, err := f.check(id, pr, req, &rec)
	rec.Err = err
	f.pulses = append(f.pulses, rec)
	select {
	case f.pulseSignal <- struct{}{}:
	default:
	}
	resp := &pulsev1.PulseResponse{Verdict: pulsev1.Verdict_VERDICT_TRUSTED, Reason: pulsev1.Reason_REASON_OK}
	if err == nil && f.refuseNext != 0 {
		reason, err = f.refuseNext, errors.New("refused by the test")
		f.refuseNext = 0
	}
	if err != nil {
		resp.Verdict, resp.Reason, resp.Message = pulsev1.Verdict_VERDICT_UNTRUSTED, reason, err.Error()
		if reason == pulsev1.Reason_REASON_NOT_ENROLLED {
			f.enrolled = false
		}
	} else if !rec.Payload.GetTpm() {
		resp.Verdict = pulsev1.Verdict_VERDICT_DEGRADED
	}
	resp.NextNonce, resp.State = f.newNonce("response"), f.state()
	return resp, nil
}

// check verifies one pulse; on success it stores the new runtime records.
func (f *fakeVerifier) check(id pki.Identity, pr *tlsconfigPeer, req *pulsev1.PulseRequest, rec *received) (pulsev1.Reason, error) {
	p := &pulsev1.PulsePayload{}
	if err := proto.Unmarshal(req.GetPayload(), p); err != nil {
		return pulsev1.Reason_REASON_MALFORMED_PAYLOAD, err
	}
	rec.Payload = p
	if p.GetAgentId() != id.ID {
		return pulsev1.Reason_REASON_IDENTITY_MISMATCH, fmt.Errorf("payload names %q, peer is %q", p.GetAgentId(), id.ID)
	}
	if !bytes.Equal(p.GetLeafKeySha256(), pr.digest[:]) {
		return pulsev1.Reason_REASON_LEAF_KEY_MISMATCH, errors.New("leaf key of the payload is not the peer's")
	}
	if err := pulsesig.Verify(pr.key, req.GetPayload(), req.GetSignature()); err != nil {
		return pulsev1.Reason_REASON_BAD_SIGNATURE, err
	}
	source, ok := f.nonces[string(p.GetVerifierNonce())]
	if !ok {
		return pulsev1.Reason_REASON_NONCE_UNKNOWN, errors.New("nonce unknown or spent")
	}
	delete(f.nonces, string(p.GetVerifierNonce()))
	rec.NonceSource = source
	if !f.enrolled {
		return pulsev1.Reason_REASON_NOT_ENROLLED, errors.New("not enrolled")
	}
	if len(req.GetFirmwareLog()) > 0 {
		sum := sha256.Sum256(req.GetFirmwareLog())
		if !bytes.Equal(sum[:], p.GetFirmwareLogSha256()) {
			return pulsev1.Reason_REASON_FIRMWARE_LOG_MALFORMED, errors.New("firmware log digest")
		}
		f.fwDigest = sum[:]
	}
	if d := p.GetBpf().GetHostProgramsSha256(); len(d) > 0 {
		f.hostDigest = d
	}
	if !p.GetTpm() {
		if req.GetQuote() != nil {
			return pulsev1.Reason_REASON_QUOTE_MALFORMED, errors.New("quote in an mtls-only pulse")
		}
		return pulsev1.Reason_REASON_OK, nil
	}
	if !f.tpmEnrolled {
		return pulsev1.Reason_REASON_TPM_DOWNGRADE, errors.New("tpm pulse from an mtls-only enrollment")
	}
	q := req.GetQuote()
	pcrs := map[uint32][]byte{}
	for _, v := range q.GetPcrs() {
		pcrs[v.GetIndex()] = v.GetDigest()
	}
	sum := sha256.Sum256(req.GetPayload())
	res, err := quote.Verify(f.akPublic, q.GetAttest(), q.GetSignature(), sum[:], pcrs)
	if err != nil {
		if errors.Is(err, quote.ErrPCRDigest) {
			return pulsev1.Reason_REASON_PCR_DIGEST, err
		}
		return pulsev1.Reason_REASON_QUOTE_SIGNATURE, err
	}
	for i := uint32(0); i <= 9; i++ {
		if _, ok := res.PCRs[i]; !ok {
			return pulsev1.Reason_REASON_PCR_SELECTION, fmt.Errorf("pcr %d not quoted", i)
		}
	}
	stored := f.records
	if res.Clock.ResetCount != f.resetCount {
		stored = nil
	}
	if p.GetRuntimeFirstRecord() != uint64(len(stored)) {
		if p.GetRuntimeFirstRecord() != 0 {
			return pulsev1.Reason_REASON_RUNTIME_LOG_GAP, fmt.Errorf("records from %d, verifier holds %d", p.GetRuntimeFirstRecord(), len(stored))
		}
		stored = nil
	}
	news, err := cel.Decode(p.GetRuntimeRecords())
	if err != nil {
		return pulsev1.Reason_REASON_RUNTIME_LOG_MALFORMED, err
	}
	all := append(append([]cel.Record(nil), stored...), news...)
	runtimePCR := p.GetRuntimePcr()
	if err := cel.VerifyRecords(all, runtimePCR, f.initial, res.PCRs[runtimePCR]); err != nil {
		return pulsev1.Reason_REASON_RUNTIME_LOG_REPLAY, err
	}
	latest := cel.Latest(all)
	if latest.Agent == nil || !bytes.Equal(latest.Agent.SHA256[:], p.GetAgentBinarySha256()) {
		return pulsev1.Reason_REASON_CLAIM_MISMATCH, errors.New("agent binary claim is not the latest record")
	}
	f.records, f.resetCount = all, res.Clock.ResetCount
	return pulsev1.Reason_REASON_OK, nil
}

func (f *fakeVerifier) Directives(_ *pulsev1.DirectivesRequest, stream grpc.ServerStreamingServer[pulsev1.Directive]) error {
	if _, _, err := peerOf(stream.Context()); err != nil {
		return status.Error(codes.Unauthenticated, err.Error())
	}
	f.mu.Lock()
	f.streams++
	f.mu.Unlock()
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case d := <-f.directives:
			if d.GetNextNonce() != nil {
				f.mu.Lock()
				d.Kind = &pulsev1.Directive_NextNonce{NextNonce: f.newNonce("directive")}
				f.mu.Unlock()
			}
			if err := stream.Send(d); err != nil {
				return err
			}
		}
	}
}

// snapshot returns a copy of what the verifier received.
func (f *fakeVerifier) received() []received {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]received(nil), f.pulses...)
}

func (f *fakeVerifier) counts() (challenges, enrolls, streams int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.challenges, f.enrolls, f.streams
}

// waitPulses waits until n pulses arrived.
func (f *fakeVerifier) waitPulses(t *testing.T, n int, timeout time.Duration) []received {
	t.Helper()
	deadline := time.After(timeout)
	for {
		if r := f.received(); len(r) >= n {
			return r
		}
		select {
		case <-f.pulseSignal:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatalf("timed out waiting for %d pulses (got %d)", n, len(f.received()))
		}
	}
}
