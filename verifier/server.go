package verifier

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/google/go-tpm/tpm2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/pulse-attest/pulse/internal/pki"
	"github.com/pulse-attest/pulse/internal/pulsesig"
	"github.com/pulse-attest/pulse/internal/tlsconfig"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/tpm/credential"
	"github.com/pulse-attest/pulse/tpm/quote"
	"github.com/pulse-attest/pulse/verifier/alert"
	"github.com/pulse-attest/pulse/verifier/config"
	"github.com/pulse-attest/pulse/verifier/ektrust"
	"github.com/pulse-attest/pulse/verifier/store"
)

// peerOf extracts the agent identity the TLS handshake proved. The
// handshake already refused missing, unverified and non-agent certificates;
// this is the second line.
func peerOf(ctx context.Context) (Peer, error) {
	pr, ok := peer.FromContext(ctx)
	if !ok {
		return Peer{}, status.Error(codes.Unauthenticated, "no peer")
	}
	ti, ok := pr.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return Peer{}, status.Error(codes.Unauthenticated, "not a TLS connection")
	}
	id, err := tlsconfig.PeerIdentity(ti.State)
	if err != nil {
		return Peer{}, status.Errorf(codes.Unauthenticated, "peer identity: %v", err)
	}
	if id.Role != pki.RoleAgent {
		return Peer{}, status.Errorf(codes.PermissionDenied, "%s is not an agent", id)
	}
	leaf := ti.State.PeerCertificates[0]
	p := Peer{AgentID: id.ID, Key: leaf.PublicKey, KeySHA256: pulsesig.LeafKeyDigest(leaf),
		CertSubject: leaf.Subject.String(), CertNotAfter: leaf.NotAfter}
	if host, _, err := net.SplitHostPort(pr.Addr.String()); err == nil {
		p.Addr = host
	}
	return p, nil
}

// Enrollment alert kinds, beside those of ops.go (docs/alerts.md).
const (
	AlertPartitionMismatch = "partition_mismatch"
	AlertAKChanged         = "ak_changed"
)

// Enroll implements the first step of enrollment. The verifier, not the
// agent, decides the partition (enrollment.partition rules): a request
// naming another one is refused and alerts. An EK backs at most
// enrollment.ek_max_agents agent IDs. Calls are rate-limited per source
// address, since nothing here needs a TPM: the EK public area and
// certificate are public.
func (v *Verifier) Enroll(ctx context.Context, req *pulsev1.EnrollRequest) (*pulsev1.EnrollResponse, error) {
	p, err := peerOf(ctx)
	if err != nil {
		return nil, err
	}
	log := v.log.With("agent_id", p.AgentID, "peer_addr", p.Addr)
	now := v.now()
	refuse := func(r pulsev1.Reason, format string, args ...any) (*pulsev1.EnrollResponse, error) {
		msg := fmt.Sprintf(format, args...)
		log.Warn("enrollment refused", "reason", r.String(), "detail", msg)
		return &pulsev1.EnrollResponse{Result: &pulsev1.EnrollResult{Reason: r, Message: msg}}, nil
	}
	if !v.enroll.allow(p.Addr, now, v.cfg.Enrollment.RatePerMinute) {
		return refuse(pulsev1.Reason_REASON_ENROLL_RATE_LIMITED, "too many enrollment attempts from this address; retry in a minute")
	}
	v.sweepEnrollments(ctx, now)
	partition := v.cfg.Enrollment.PartitionOf(p.AgentID)
	if asked := req.GetPartition(); asked != "" && asked != partition {
		v.raisePartitionMismatch(p, asked, partition)
		return refuse(pulsev1.Reason_REASON_PARTITION_MISMATCH, "agent %s is assigned to partition %q by the verifier's configuration; it asked for %s",
			p.AgentID, partition, describePartition(asked))
	}
	if !req.GetTpm() {
		if !v.cfg.AllowTPMless {
			return refuse(pulsev1.Reason_REASON_TPM_REQUIRED, "this verifier does not enroll agents without a TPM (allow_tpmless)")
		}
		_, err := v.store.EnrollAgentLimited(ctx, &store.Agent{ID: p.AgentID, Partition: partition, TPM: false, EnrolledAt: now,
			RuntimePCR: v.cfg.RuntimePCR}, v.ekMaxAgents())
		if errors.Is(err, store.ErrConflict) {
			v.raiseTakeover(p, nil, pulsev1.Reason_REASON_TPM_DOWNGRADE, "agent enrolled with a TPM tried to enroll without one")
			return refuse(pulsev1.Reason_REASON_TPM_DOWNGRADE, "agent %s is enrolled with a TPM; an mTLS-only enrollment is a downgrade", p.AgentID)
		}
		if err != nil {
			return nil, status.Errorf(codes.Internal, "enroll: %v", err)
		}
		v.startDeadline(ctx, p.AgentID, partition)
		v.registerAddress(ctx, p.AgentID, p.Addr)
		log.Info("agent enrolled without TPM (mTLS-only)", "partition", partition)
		return &pulsev1.EnrollResponse{Result: &pulsev1.EnrollResult{Enrolled: true, Reason: pulsev1.Reason_REASON_OK, Message: "enrolled mTLS-only"}}, nil
	}
	decision, err := v.ekTrust.Check(req.GetEkPublic(), req.GetEkCertificate(), req.GetEkIntermediates(), now,
		ektrust.Options{AllowNonconforming: v.cfg.Enrollment.AllowNonconformingEK})
	if err != nil {
		return refuse(pulsev1.Reason_REASON_EK_UNTRUSTED, "endorsement key: %v", err)
	}
	if decision.Nonconformity != nil {
		log.Warn("EK certificate accepted outside the TCG profile (allow_nonconforming_ek)", "detail", decision.Nonconformity.Error())
	}
	if err := checkAKAttributes(req.GetAkPublic()); err != nil {
		return refuse(pulsev1.Reason_REASON_AK_UNKNOWN, "attestation key: %v", err)
	}
	akName, err := quote.AKName(req.GetAkPublic())
	if err != nil {
		return refuse(pulsev1.Reason_REASON_AK_UNKNOWN, "attestation key name: %v", err)
	}
	// The same agent ID with another EK is an identity takeover attempt,
	// refused before any challenge is issued; so is a new agent ID on an EK
	// that backs as many agents as allowed. ActivateCredential decides
	// both again atomically (store.EnrollAgentLimited).
	existing, err := v.store.GetAgent(ctx, p.AgentID)
	switch {
	case err == nil:
		if !existing.TPM || subtle.ConstantTimeCompare(existing.EKSHA256, decision.EKSHA256) != 1 {
			v.raiseTakeover(p, decision.EKSHA256, pulsev1.Reason_REASON_EK_MISMATCH, "enrollment with a different endorsement key")
			return refuse(pulsev1.Reason_REASON_EK_MISMATCH, "agent %s is enrolled with another TPM (EK %s); refusing EK %s",
				p.AgentID, hex.EncodeToString(short(existing.EKSHA256)), hex.EncodeToString(short(decision.EKSHA256)))
		}
	case errors.Is(err, store.ErrNotFound):
		n, err := v.store.AgentsOnEK(ctx, decision.EKSHA256, p.AgentID)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "enroll: %v", err)
		}
		if n >= v.ekMaxAgents() {
			return refuse(pulsev1.Reason_REASON_EK_IN_USE, "%s", v.ekInUse(p, decision.EKSHA256, n))
		}
	default:
		return nil, status.Errorf(codes.Internal, "enroll: %v", err)
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, status.Errorf(codes.Internal, "enroll: %v", err)
	}
	blob, encSecret, err := credential.MakeForPublic(req.GetEkPublic(), akName, secret)
	if err != nil {
		return refuse(pulsev1.Reason_REASON_EK_UNTRUSTED, "make credential: %v", err)
	}
	idb := make([]byte, 16)
	if _, err := rand.Read(idb); err != nil {
		return nil, status.Errorf(codes.Internal, "enroll: %v", err)
	}
	sum := sha256.Sum256(secret)
	e := &store.Enrollment{ID: hex.EncodeToString(idb), AgentID: p.AgentID, Partition: partition, SecretSHA256: sum[:],
		EKPublic: req.GetEkPublic(), EKSHA256: decision.EKSHA256, EKCertificate: req.GetEkCertificate(),
		AKPublic: req.GetAkPublic(), AKName: akName, Expires: now.Add(v.cfg.Enrollment.Timeout)}
	if err := v.store.CreateEnrollment(ctx, e); err != nil {
		return nil, status.Errorf(codes.Internal, "enroll: %v", err)
	}
	log.Info("enrollment challenge issued", "partition", partition, "ek_accepted_by", decision.By, "ek_sha256", hex.EncodeToString(decision.EKSHA256))
	return &pulsev1.EnrollResponse{EnrollmentId: e.ID, CredentialBlob: blob, EncryptedSecret: encSecret}, nil
}

// ActivateCredential finishes enrollment: only the TPM holding the EK and
// the AK could have recovered the secret. A new AK on the enrolled TPM is
// accepted and alerts (REASON_AK_CHANGED): the store drops the evidence
// baseline, so what follows is never taken for a reboot.
func (v *Verifier) ActivateCredential(ctx context.Context, req *pulsev1.ActivateCredentialRequest) (*pulsev1.EnrollResult, error) {
	p, err := peerOf(ctx)
	if err != nil {
		return nil, err
	}
	log := v.log.With("agent_id", p.AgentID, "peer_addr", p.Addr)
	e, err := v.store.TakeEnrollment(ctx, req.GetEnrollmentId(), p.AgentID)
	if errors.Is(err, store.ErrNotFound) {
		return &pulsev1.EnrollResult{Reason: pulsev1.Reason_REASON_ENROLLMENT_EXPIRED, Message: "no such pending enrollment for this agent"}, nil
	}
	if err != nil {
		return nil, status.Errorf(codes.Internal, "activate: %v", err)
	}
	now := v.now()
	if now.After(e.Expires) {
		return &pulsev1.EnrollResult{Reason: pulsev1.Reason_REASON_ENROLLMENT_EXPIRED, Message: "enrollment challenge expired"}, nil
	}
	sum := sha256.Sum256(req.GetSecret())
	if subtle.ConstantTimeCompare(sum[:], e.SecretSHA256) != 1 {
		log.Warn("credential activation failed")
		return &pulsev1.EnrollResult{Reason: pulsev1.Reason_REASON_CREDENTIAL_ACTIVATION_FAILED, Message: "secret does not match: the AK and EK are not in the same TPM"}, nil
	}
	// The operator's assignment now, whatever it was at Enroll.
	partition := v.cfg.Enrollment.PartitionOf(p.AgentID)
	out, err := v.store.EnrollAgentLimited(ctx, &store.Agent{ID: p.AgentID, Partition: partition, TPM: true, EKPublic: e.EKPublic, EKSHA256: e.EKSHA256,
		EKCertificate: e.EKCertificate, AKPublic: e.AKPublic, AKName: e.AKName, EnrolledAt: now, RuntimePCR: v.cfg.RuntimePCR}, v.ekMaxAgents())
	switch {
	case errors.Is(err, store.ErrConflict):
		v.raiseTakeover(p, e.EKSHA256, pulsev1.Reason_REASON_EK_MISMATCH, "activation for a different endorsement key")
		return &pulsev1.EnrollResult{Reason: pulsev1.Reason_REASON_EK_MISMATCH, Message: "agent is enrolled with another TPM"}, nil
	case errors.Is(err, store.ErrEKInUse):
		// Another agent ID took the EK's last place since Enroll.
		n, _ := v.store.AgentsOnEK(ctx, e.EKSHA256, p.AgentID)
		msg := v.ekInUse(p, e.EKSHA256, n)
		log.Warn("enrollment refused", "reason", pulsev1.Reason_REASON_EK_IN_USE.String(), "detail", msg)
		return &pulsev1.EnrollResult{Reason: pulsev1.Reason_REASON_EK_IN_USE, Message: msg}, nil
	case err != nil:
		return nil, status.Errorf(codes.Internal, "activate: %v", err)
	}
	v.startDeadline(ctx, p.AgentID, partition)
	v.registerAddress(ctx, p.AgentID, p.Addr)
	if out.PreviousPartition != "" && out.PreviousPartition != partition {
		log.Info("agent moved to the partition the verifier assigns", "partition", partition, "previous_partition", out.PreviousPartition)
	}
	if out.AKChanged(e.AKName) {
		v.raise(ctx, &store.Alert{DedupKey: fmt.Sprintf("ak_changed:%s:%x", p.AgentID, e.AKName), AgentID: p.AgentID,
			Kind: AlertAKChanged, Severity: 2, Reason: pulsev1.Reason_REASON_AK_CHANGED.String(),
			Message: fmt.Sprintf("agent re-enrolled from %s on the same TPM with another attestation key (AK %s replaces %s); its reboot baseline starts again",
				p.Addr, hex.EncodeToString(short(e.AKName)), hex.EncodeToString(short(out.PreviousAKName)))})
		log.Warn("agent re-enrolled with a new attestation key", "ak_name", hex.EncodeToString(e.AKName),
			"previous_ak_name", hex.EncodeToString(out.PreviousAKName))
		return &pulsev1.EnrollResult{Enrolled: true, Reason: pulsev1.Reason_REASON_AK_CHANGED,
			Message: "enrolled with a new attestation key; the verifier raised an alert"}, nil
	}
	log.Info("agent enrolled", "partition", partition, "ak_name", hex.EncodeToString(e.AKName))
	return &pulsev1.EnrollResult{Enrolled: true, Reason: pulsev1.Reason_REASON_OK, Message: "enrolled"}, nil
}

func (v *Verifier) ekMaxAgents() int {
	if n := v.cfg.Enrollment.EKMaxAgents; n > 0 {
		return n
	}
	return config.DefaultEKMaxAgents
}

// ekInUse raises a new agent ID on an EK that backs as many agents as
// allowed as an identity takeover (one TPM posing as several devices) and
// returns the refusal's message.
func (v *Verifier) ekInUse(p Peer, ekSHA256 []byte, n int) string {
	ek := hex.EncodeToString(short(ekSHA256))
	v.raiseTakeover(p, ekSHA256, pulsev1.Reason_REASON_EK_IN_USE, fmt.Sprintf("a new agent ID on EK %s, which already backs %d agent(s)", ek, n))
	return fmt.Sprintf("EK %s already backs %d other agent(s); at most %d allowed (enrollment.ek_max_agents)", ek, n, v.ekMaxAgents())
}

// raiseTakeover raises an identity takeover attempt: the same agent ID
// from another TPM is never a re-enrollment, nor is one TPM a second agent.
// ekSHA256 is the EK the attempt came with (nil: none, an mTLS-only
// attempt). One alert per agent, EK and AlertDedupWindow: an attacker
// repeating the attempt raises nothing new (each refusal is still logged).
func (v *Verifier) raiseTakeover(p Peer, ekSHA256 []byte, reason pulsev1.Reason, what string) {
	ek := "no-tpm"
	if ekSHA256 != nil {
		ek = hex.EncodeToString(ekSHA256)
	}
	// Kind and severity from the one reason table: EK_MISMATCH and
	// EK_IN_USE are identity_takeover, TPM_DOWNGRADE is tpm_downgrade.
	ra, _ := alert.Lookup(reason)
	v.raise(context.Background(), &store.Alert{DedupKey: fmt.Sprintf("takeover:%s:%s:%d", p.AgentID, ek, dedupBucket(v.now())), AgentID: p.AgentID,
		Kind: string(ra.Kind), Severity: ra.Severity, Reason: reason.String(),
		Message: fmt.Sprintf("identity takeover attempt from %s: %s", p.Addr, what)})
}

// raisePartitionMismatch raises an agent asking for another partition than
// the operator assigned (a compromised agent shopping for a laxer policy,
// or a misconfigured one): once per agent and AlertDedupWindow.
func (v *Verifier) raisePartitionMismatch(p Peer, asked, assigned string) {
	v.raise(context.Background(), &store.Alert{
		// One per agent and AlertDedupWindow, whatever partition it asks
		// for: the name is the agent's to vary (each refusal is logged).
		DedupKey: fmt.Sprintf("partition_mismatch:%s:%d", p.AgentID, dedupBucket(v.now())),
		AgentID:  p.AgentID, Kind: AlertPartitionMismatch, Severity: 2, Reason: pulsev1.Reason_REASON_PARTITION_MISMATCH.String(),
		Message: fmt.Sprintf("agent enrolling from %s asked for partition %s; the verifier assigns %q", p.Addr, describePartition(asked), assigned)})
}

// describePartition quotes a partition an agent sent, or only describes it
// when it is not a well-formed name (it may be long or hold control bytes).
func describePartition(p string) string {
	if config.ValidPartition(p) {
		return strconv.Quote(p)
	}
	return fmt.Sprintf("an invalid partition name (%d bytes; want 1-%d of [A-Za-z0-9._-])", len(p), config.MaxPartitionLen)
}

// Challenge issues a nonce bound to the calling agent.
func (v *Verifier) Challenge(ctx context.Context, _ *pulsev1.ChallengeRequest) (*pulsev1.ChallengeResponse, error) {
	p, err := peerOf(ctx)
	if err != nil {
		return nil, err
	}
	a, err := v.store.GetAgent(ctx, p.AgentID)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		// The store is down: the agent retries, as after a refused pulse.
		v.storeFault(storeOpChallenge, err)
		return nil, status.Errorf(codes.Unavailable, "challenge: %v", err)
	}
	var epoch uint64
	if a != nil {
		epoch = a.NonceEpoch
	}
	n, err := v.issueNonce(p.AgentID, epoch)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "challenge: %v", err)
	}
	return &pulsev1.ChallengeResponse{Nonce: n, State: v.state(a, nil)}, nil
}

// Pulse verifies one heartbeat. Verification failures are verdicts, not
// RPC errors: the agent learns the typed reason.
func (v *Verifier) Pulse(ctx context.Context, req *pulsev1.PulseRequest) (*pulsev1.PulseResponse, error) {
	p, err := peerOf(ctx)
	if err != nil {
		return nil, err
	}
	// Admission control: under overload, shed load early (the agent backs
	// off and retries) rather than queue work whose caller has gone.
	select {
	case v.inflight <- struct{}{}:
		defer func() { <-v.inflight }()
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	case <-time.After(admissionWait):
		return nil, status.Error(codes.ResourceExhausted, "verifier overloaded; retry later")
	}
	if ctx.Err() != nil {
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	t0 := time.Now()
	start := v.now()
	o := v.verify(ctx, p, req, start)
	if o.agent != nil && o.Reason != pulsev1.Reason_REASON_INTERNAL {
		v.settle(ctx, o)
		if v.commit(ctx, o) {
			v.afterPulse(ctx, p, o)
		}
	}
	v.metrics.ObservePulse(o.Verdict.String(), o.Reason.String(), time.Since(t0))
	log := v.log.With("agent_id", p.AgentID, "verdict", o.Verdict.String(), "reason", o.Reason.String())
	if o.Digest != "" {
		log = log.With("policy_digest", o.Digest)
	}
	switch o.Verdict {
	case pulsev1.Verdict_VERDICT_TRUSTED, pulsev1.Verdict_VERDICT_DEGRADED:
		log.Debug("pulse verified", "seq", o.payload.GetSequence(), "elapsed", time.Since(start))
	case pulsev1.Verdict_VERDICT_CLOCK_DESYNC:
		log.Warn("pulse clock desync", "detail", o.Message)
	case pulsev1.Verdict_VERDICT_OFFLINE:
		log.Info("planned stop recorded", "detail", o.Message)
	default:
		log.Warn("pulse rejected", "detail", o.Message)
	}
	for _, n := range o.Notes {
		log.Info("pulse note", "note", n.String())
	}
	resp := &pulsev1.PulseResponse{Verdict: o.Verdict, Reason: o.Reason, Message: o.Message, Findings: o.Findings, PolicyDigest: o.Digest, Notes: o.Notes}
	if o.Reason == pulsev1.Reason_REASON_INTERNAL {
		if storeFailed(o) {
			v.storeFault(storeOpPulse, errors.New(o.Message))
		}
		return nil, status.Errorf(codes.Unavailable, "verifier: %s", o.Message)
	}
	a := o.agent
	if a == nil {
		// Rejected before its commit (bad signature, spent nonce):
		// still tell it what the verifier holds, so its next honest pulse
		// does not resend everything.
		if got, err := v.store.GetAgent(ctx, p.AgentID); err == nil {
			a = got
		}
	}
	if a != nil {
		// After a commit, o.agent's epoch is the next one.
		if n, err := v.issueNonce(p.AgentID, a.NonceEpoch); err == nil {
			resp.NextNonce = n
		} else {
			log.Error("issuing next nonce failed", "error", err)
		}
	}
	resp.State = v.state(a, o)
	return resp, nil
}

// Directives streams orders to the calling agent until it disconnects.
func (v *Verifier) Directives(_ *pulsev1.DirectivesRequest, stream pulsev1.Attestation_DirectivesServer) error {
	p, err := peerOf(stream.Context())
	if err != nil {
		return err
	}
	ch, cancel := v.hub.subscribe(p.AgentID)
	defer cancel()
	ctx := stream.Context()
	if err := v.store.SetStream(ctx, p.AgentID, v.replica, v.now()); err != nil {
		v.log.Warn("recording stream failed", "agent_id", p.AgentID, "error", err)
	}
	defer func() {
		if v.hub.isCurrent(p.AgentID, ch) {
			if err := v.store.SetStream(context.Background(), p.AgentID, "", v.now()); err != nil {
				v.log.Warn("recording stream end failed", "agent_id", p.AgentID, "error", err)
			}
		}
	}()
	v.log.Debug("directive stream open", "agent_id", p.AgentID)
	// A trusted agent joining learns the current quarantine at once.
	v.replayQuarantine(ctx, p.AgentID)
	for {
		select {
		case <-stream.Context().Done():
			v.log.Debug("directive stream closed", "agent_id", p.AgentID)
			return nil
		case d, ok := <-ch:
			if !ok {
				return status.Error(codes.Unavailable, "directive stream replaced by a newer one")
			}
			if err := stream.Send(d); err != nil {
				return err
			}
		}
	}
}

// SendDirective queues a directive for an agent connected to this replica.
// It reports whether the agent had a stream open.
func (v *Verifier) SendDirective(agentID string, d *pulsev1.Directive) bool {
	return v.hub.send(agentID, d)
}

// checkAKAttributes accepts only a restricted signing key that cannot leave
// its TPM (fixedTPM, fixedParent) and was generated inside it
// (sensitiveDataOrigin): credential activation then proves it lives in the
// same TPM as the EK.
func checkAKAttributes(akPublic []byte) error {
	if _, err := quote.ParseAKPublic(akPublic); err != nil {
		return err
	}
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](akPublic)
	if err != nil {
		return fmt.Errorf("parse public area: %w", err)
	}
	a := pub.ObjectAttributes
	if !a.FixedTPM || !a.FixedParent || !a.SensitiveDataOrigin || !a.Restricted || !a.SignEncrypt || a.Decrypt {
		return fmt.Errorf("key attributes %+v are not those of an attestation key (fixedTPM, fixedParent, sensitiveDataOrigin, restricted, sign)", a)
	}
	return nil
}

// MalformedRequestMessage is the status message of a request that does not
// decode (codes.InvalidArgument).
const MalformedRequestMessage = "malformed request: the message does not decode"

// decodeGuard answers a request on the agent port that does not decode
// with codes.InvalidArgument and reports it, where the gRPC library would
// answer codes.Internal (a fault of the server's, which this is not).
//
// The library turns any codec error into codes.Internal and sends it
// before a handler or interceptor sees it, so the guard's codec (Codec,
// the server's only codec) does not fail: it resets a message that does
// not decode and notes it, and the guarded handlers (Desc), which decode
// every request of the service, refuse a noted message before it is used.
// Register no service but guarded ones on a server using Codec: another
// handler would be given the reset message.
type decodeGuard struct {
	proto     encoding.CodecV2
	malformed func(context.Context, error)

	undecodable sync.Map // message pointer → its decode error
}

func newDecodeGuard(malformed func(context.Context, error)) *decodeGuard {
	return &decodeGuard{proto: encoding.GetCodecV2(protoCodecName), malformed: malformed}
}

const protoCodecName = "proto"

// Codec is the server codec (grpc.ForceServerCodecV2).
func (g *decodeGuard) Codec() encoding.CodecV2 { return guardCodec{g} }

type guardCodec struct{ g *decodeGuard }

func (c guardCodec) Name() string { return protoCodecName }

func (c guardCodec) Marshal(v any) (mem.BufferSlice, error) { return c.g.proto.Marshal(v) }

func (c guardCodec) Unmarshal(data mem.BufferSlice, v any) error {
	err := c.g.proto.Unmarshal(data, v)
	m, ok := v.(proto.Message)
	if err == nil || !ok {
		return err
	}
	proto.Reset(m)
	c.g.undecodable.Store(v, err)
	return nil
}

// check returns the refusal of msg when it did not decode.
func (g *decodeGuard) check(ctx context.Context, msg any) error {
	err, ok := g.undecodable.LoadAndDelete(msg)
	if !ok {
		return nil
	}
	g.malformed(ctx, err.(error))
	return status.Error(codes.InvalidArgument, MalformedRequestMessage)
}

// Desc returns a copy of desc whose handlers refuse a request that did not
// decode.
func (g *decodeGuard) Desc(desc *grpc.ServiceDesc) *grpc.ServiceDesc {
	out := *desc
	out.Methods = make([]grpc.MethodDesc, len(desc.Methods))
	for i, m := range desc.Methods {
		h := m.Handler
		m.Handler = func(srv any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
			return h(srv, ctx, func(msg any) error {
				if err := dec(msg); err != nil {
					return err
				}
				return g.check(ctx, msg)
			}, icpt)
		}
		out.Methods[i] = m
	}
	out.Streams = make([]grpc.StreamDesc, len(desc.Streams))
	for i, s := range desc.Streams {
		h := s.Handler
		s.Handler = func(srv any, ss grpc.ServerStream) error {
			return h(srv, decodeGuardedStream{ServerStream: ss, g: g})
		}
		out.Streams[i] = s
	}
	return &out
}

type decodeGuardedStream struct {
	grpc.ServerStream
	g *decodeGuard
}

func (s decodeGuardedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return s.g.check(s.Context(), m)
}
