package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
)

// ErrEnrollRefused is returned (wrapped in an *EnrollError) when the
// verifier decided against the enrollment.
var ErrEnrollRefused = errors.New("enrollment refused")

// EnrollError carries the verifier's typed reason for a refused enrollment.
type EnrollError struct {
	Reason  pulsev1.Reason
	Message string
}

func (e *EnrollError) Error() string {
	return fmt.Sprintf("enrollment refused: %s: %s", e.Reason, e.Message)
}

// Unwrap makes errors.Is(err, ErrEnrollRefused) true.
func (e *EnrollError) Unwrap() error { return ErrEnrollRefused }

// enrolled reports whether the state file records an enrollment of this
// agent ID with this TPM's AK (or, without a TPM, an mTLS-only one).
func (a *Agent) enrolled(s *session) bool {
	return a.state.Enrollment().Matches(s.agentID, a.tpm != nil, a.akDigest)
}

// enroll runs Enroll, then ActivateCredential with the TPM when the
// verifier sent a credential challenge, and records the result.
func (a *Agent) enroll(ctx context.Context, s *session) error {
	log := a.log.Named("enroll")
	req := &pulsev1.EnrollRequest{Tpm: a.tpm != nil, Partition: a.cfg.Partition, AgentVersion: Version}
	if a.tpm != nil {
		ek, err := a.tpm.EK()
		if err != nil {
			return fmt.Errorf("enroll: %w", err)
		}
		req.EkPublic, req.EkCertificate, req.AkPublic = ek.PublicBlob, ek.Certificate, a.ak.Public()
		log.Info("enrolling attestation key", "agent_id", s.agentID, "ek_certificate", len(ek.Certificate) > 0)
	} else {
		log.Info("enrolling without a tpm (mtls-only)", "agent_id", s.agentID)
	}
	cctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	resp, err := s.client.Enroll(cctx, req)
	if err != nil {
		return fmt.Errorf("enroll: %w", err)
	}
	result := resp.GetResult()
	if resp.GetEnrollmentId() != "" {
		if a.tpm == nil {
			return errors.New("enroll: verifier sent a credential challenge to an agent without a tpm")
		}
		// Only the TPM holding this EK can open the challenge, and only for
		// this AK's name. The secret is never logged.
		secret, err := a.tpm.ActivateCredential(a.ak, resp.GetCredentialBlob(), resp.GetEncryptedSecret())
		if err != nil {
			return fmt.Errorf("enroll: %w", err)
		}
		actx, cancel := context.WithTimeout(ctx, rpcTimeout)
		defer cancel()
		result, err = s.client.ActivateCredential(actx, &pulsev1.ActivateCredentialRequest{
			EnrollmentId: resp.GetEnrollmentId(),
			Secret:       secret,
		})
		clear(secret)
		if err != nil {
			return fmt.Errorf("enroll: activate credential: %w", err)
		}
	}
	if result == nil {
		return errors.New("enroll: verifier answered neither a challenge nor a result")
	}
	if !result.GetEnrolled() {
		return &EnrollError{Reason: result.GetReason(), Message: result.GetMessage()}
	}
	e := &Enrollment{
		AgentID:    s.agentID,
		TPM:        a.tpm != nil,
		Verifier:   a.cfg.Verifier,
		EnrolledAt: time.Now().UTC(),
	}
	if a.tpm != nil {
		e.AKPublicSHA256, e.AKHandle = a.akDigest, a.ak.Handle()
	}
	if err := a.state.SetEnrollment(e); err != nil {
		return fmt.Errorf("enroll: %w", err)
	}
	log.Info("enrolled", "agent_id", s.agentID, "tpm", e.TPM, "reason", result.GetReason().String())
	return nil
}
