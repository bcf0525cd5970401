package verifier

import (
	"context"
	"encoding/hex"
	"time"

	"github.com/pulse-attest/pulse/verifier/admin"
)

var _ admin.DecommissionBackend = AdminBackend{}

// RemoveAgent implements admin.DecommissionBackend: the agent's row, pending
// enrollments, firmware log references and addresses leave the shared
// store, so every replica refuses its AK from the next pulse on (the
// agent is asked to enroll again, which its revocation, when the operator
// asked for one, refuses). History and alerts stay.
//
// With afterRevocation the removal waits two revocation refresh periods
// (tls.revocation_refresh, the same on every replica of a fleet) first: by
// then every replica refuses the revoked certificate, so the device cannot
// enroll again in between and bring its row back.
func (b AdminBackend) RemoveAgent(ctx context.Context, id string, afterRevocation bool) (*admin.RemovedAgent, error) {
	if afterRevocation {
		if _, err := b.V.store.GetAgent(ctx, id); err != nil {
			return nil, notFound(err, "agent %s is not enrolled", id)
		}
		t := time.NewTimer(2 * b.V.cfg.TLS.RevocationRefresh)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
	ra, err := b.V.store.RemoveAgent(ctx, id)
	if err != nil {
		return nil, notFound(err, "agent %s is not enrolled", id)
	}
	return &admin.RemovedAgent{ID: ra.ID, Partition: ra.Partition, TPM: ra.TPM, EKSHA256: hex.EncodeToString(ra.EKSHA256), EnrolledAt: ra.EnrolledAt}, nil
}
