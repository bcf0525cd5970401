package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// MaxExplanationBytes bounds what the store keeps per agent to explain its
// state: the findings of its last verdict plus the evidence of its last
// verified pulse (both as the verifier encodes them, docs/operations.md
// "Fleet dashboard"). The verifier trims evidence to fit before the
// commit; a larger explanation is refused (and with it the commit).
const MaxExplanationBytes = 8 << 10

// ErrExplanationTooLarge is returned when an explanation exceeds
// MaxExplanationBytes.
var ErrExplanationTooLarge = errors.New("explanation exceeds its per-agent bound")

// Explanation is what a committed pulse leaves to explain the agent's
// verdict: written by CommitPulse in the pulse's own transaction, only by a
// commit that won the agent's epoch.
type Explanation struct {
	// At is when the verdict these findings explain was decided.
	At      time.Time
	Verdict int32
	Reason  int32
	// Policy names the policy that judged the pulse ("" when none did).
	Policy string
	// Findings is the verifier's encoding of the verdict's findings
	// (JSON); empty when none.
	Findings []byte
	// Evidence is the verifier's encoding of the pulse's verified evidence
	// (gzip'd JSON of policy.Evidence); nil when the pulse verified none,
	// which keeps the stored evidence of the last pulse that did.
	Evidence []byte
	// EvidenceAt is when the stored evidence was verified (read back only).
	EvidenceAt time.Time
	// CertSubject and CertNotAfter are the agent's TLS certificate as the
	// pulse's handshake verified it (explain_identity.go): written by
	// every committed pulse.
	CertSubject  string
	CertNotAfter time.Time
	// Kernel is the verifier's encoding of the kernel summary of the
	// pulse (eBPF snapshot, Fortress, Sentinel), set when the pulse's
	// quote verified; nil keeps the stored one.
	Kernel []byte
}

// Size is what the explanation occupies against MaxExplanationBytes.
func (e *Explanation) Size() int {
	return len(e.Findings) + len(e.Evidence) + len(e.Policy) + len(e.CertSubject) + len(e.Kernel)
}

// Digest names the explanation's content, so an unchanged one is not
// written again (the store compares it with the stored one; the verifier
// remembers the one its last commit wrote, agentcache.go).
func (e *Explanation) Digest() []byte {
	h := sha256.New()
	var n [8]byte
	for _, v := range []int64{int64(e.Verdict), int64(e.Reason), int64(len(e.Policy)), int64(len(e.Findings)), int64(len(e.Evidence)),
		int64(len(e.CertSubject)), nanos(e.CertNotAfter), int64(len(e.Kernel))} {
		binary.BigEndian.PutUint64(n[:], uint64(v))
		h.Write(n[:])
	}
	h.Write([]byte(e.Policy))
	h.Write(e.Findings)
	if e.Evidence != nil {
		h.Write([]byte{1})
		h.Write(e.Evidence)
	}
	h.Write([]byte(e.CertSubject))
	if e.Kernel != nil {
		h.Write([]byte{2})
		h.Write(e.Kernel)
	}
	return h.Sum(nil)
}

// qPutExplanation writes an agent's explanation: the findings always, the
// evidence only when the pulse verified some (evidence_at > 0). A content
// equal to the stored one (same digest) writes nothing: the steady state
// of a healthy fleet costs one index probe, and At stays when the verdict
// was first decided.
const qPutExplanation = `INSERT INTO agent_explanations (agent_id, at, verdict, reason, policy, findings, evidence_at, evidence, digest,
		cert_subject, cert_not_after, kernel)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
	ON CONFLICT (agent_id) DO UPDATE SET at = excluded.at, verdict = excluded.verdict, reason = excluded.reason,
		policy = excluded.policy, findings = excluded.findings,
		evidence_at = CASE WHEN excluded.evidence_at > 0 THEN excluded.evidence_at ELSE agent_explanations.evidence_at END,
		evidence = CASE WHEN excluded.evidence_at > 0 THEN excluded.evidence ELSE agent_explanations.evidence END,
		digest = excluded.digest, cert_subject = excluded.cert_subject, cert_not_after = excluded.cert_not_after,
		kernel = CASE WHEN excluded.kernel IS NOT NULL THEN excluded.kernel ELSE agent_explanations.kernel END
	WHERE agent_explanations.digest <> excluded.digest`

// putExplanation runs qPutExplanation in r (the pulse commit's
// transaction).
func (s *Store) putExplanation(ctx context.Context, r runner, agentID string, e *Explanation) error {
	if n := e.Size(); n > MaxExplanationBytes {
		return fmt.Errorf("store: explanation for %s: %d bytes: %w", agentID, n, ErrExplanationTooLarge)
	}
	var evAt int64
	if e.Evidence != nil {
		evAt = nanos(e.At)
	}
	if _, err := r.exec(ctx, qPutExplanation, agentID, nanos(e.At), int64(e.Verdict), int64(e.Reason), e.Policy,
		nilIfEmpty(e.Findings), evAt, e.Evidence, e.Digest(), e.CertSubject, nanos(e.CertNotAfter), nilIfEmpty(e.Kernel)); err != nil {
		return fmt.Errorf("store: explanation for %s: %w", agentID, err)
	}
	return nil
}

// commitInTx runs a pulse commit that writes more than the agent's row
// (its explanation) in one transaction: the batch's when the commit was
// batched, its own when it runs alone.
func (s *Store) commitInTx(ctx context.Context, r runner, run func(r runner) (commit bool, err error)) error {
	if r.tx != nil {
		_, err := run(r)
		return err
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: commit pulse: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after commit
	ok, err := run(runner{s: s, tx: tx})
	if err != nil || !ok {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: commit pulse: commit: %w", err)
	}
	return nil
}

const explanationColumns = `x.agent_id, x.at, x.verdict, x.reason, x.policy, x.findings, x.evidence_at, x.evidence,
	x.cert_subject, x.cert_not_after, x.kernel`

func scanExplanation(row scanner) (string, *Explanation, error) {
	var (
		id                 string
		e                  Explanation
		at, evAt, vd, rsn  int64
		findings, evidence []byte
		notAfter           int64
	)
	if err := row.Scan(&id, &at, &vd, &rsn, &e.Policy, &findings, &evAt, &evidence, &e.CertSubject, &notAfter, &e.Kernel); err != nil {
		return "", nil, err
	}
	e.At, e.EvidenceAt, e.CertNotAfter = fromNanos(at), fromNanos(evAt), fromNanos(notAfter)
	e.Verdict, e.Reason = int32(vd), int32(rsn)
	e.Findings, e.Evidence = findings, evidence
	return id, &e, nil
}

// GetExplanation returns the agent's stored explanation; ErrNotFound when
// the agent has none (no committed pulse since the table exists) or is
// gone.
func (s *Store) GetExplanation(ctx context.Context, agentID string) (*Explanation, error) {
	row := s.db.QueryRowContext(ctx, s.q(`SELECT `+explanationColumns+` FROM agent_explanations x
		JOIN agents a ON a.id = x.agent_id WHERE x.agent_id = ?`), agentID)
	_, e, err := scanExplanation(row)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("store: explanation for %s: %w", agentID, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("store: explanation for %s: %w", agentID, err)
	}
	return e, nil
}

// AgentEvidence is one agent's stored evidence, for a fleet-wide policy
// dry-run.
type AgentEvidence struct {
	AgentID   string
	Partition string
	TPM       bool
	// Verdict and Reason are the agent's current ones (its row).
	Verdict, Reason int32
	Explanation     *Explanation
}

// ListEvidence returns up to limit agents with stored evidence whose ID
// sorts after after, in ID order (a keyset page: pass the last ID to get
// the next page).
func (s *Store) ListEvidence(ctx context.Context, after string, limit int) ([]AgentEvidence, error) {
	if limit < 1 {
		return nil, fmt.Errorf("store: list evidence: limit %d", limit)
	}
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT `+explanationColumns+`, a.partition, a.tpm, a.last_verdict, a.last_reason
		FROM agent_explanations x JOIN agents a ON a.id = x.agent_id
		WHERE x.agent_id > ? AND x.evidence_at > 0 ORDER BY x.agent_id LIMIT ?`), after, limit)
	if err != nil {
		return nil, fmt.Errorf("store: list evidence: %w", err)
	}
	defer rows.Close()
	var out []AgentEvidence
	for rows.Next() {
		var (
			ae      AgentEvidence
			e       Explanation
			at, evA int64
			vd, rsn int64
			av, ar  int64
			na      int64
		)
		if err := rows.Scan(&ae.AgentID, &at, &vd, &rsn, &e.Policy, &e.Findings, &evA, &e.Evidence, &e.CertSubject, &na, &e.Kernel,
			&ae.Partition, &ae.TPM, &av, &ar); err != nil {
			return nil, fmt.Errorf("store: list evidence: %w", err)
		}
		e.At, e.EvidenceAt, e.Verdict, e.Reason, e.CertNotAfter = fromNanos(at), fromNanos(evA), int32(vd), int32(rsn), fromNanos(na)
		ae.Verdict, ae.Reason, ae.Explanation = int32(av), int32(ar), &e
		out = append(out, ae)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list evidence: %w", err)
	}
	return out, nil
}

// ExplanationBytes returns the bytes the explanations table holds for
// each agent on average and at most (findings, evidence, policy name).
func (s *Store) ExplanationBytes(ctx context.Context) (avg float64, max int64, err error) {
	var n int64
	var total, mx sql.NullInt64
	const size = `COALESCE(LENGTH(findings), 0) + COALESCE(LENGTH(evidence), 0) + LENGTH(policy) + LENGTH(cert_subject) + COALESCE(LENGTH(kernel), 0)`
	err = s.db.QueryRowContext(ctx, `SELECT COUNT(*), SUM(`+size+`), MAX(`+size+`) FROM agent_explanations`).Scan(&n, &total, &mx)
	if err != nil {
		return 0, 0, fmt.Errorf("store: explanation bytes: %w", err)
	}
	if n == 0 {
		return 0, 0, nil
	}
	return float64(total.Int64) / float64(n), mx.Int64, nil
}
