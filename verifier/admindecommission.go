package verifier

import (
	"context"
	"encoding/hex"

	"github.com/pulse-attest/pulse/verifier/admin"
)

var _ admin.DecommissionBackend = AdminBackend{}

// RemoveAgent implements admin.DecommissionBackend: the agent's row, pending
// enrollments, firmware log references and addresses leave the shared
// store, so every replica refuses its AK from the next pulse on (the
// agent is asked to enroll again, which its revocation, when the operator
// asked for one, refuses). History and alerts stay.
func (b AdminBackend) RemoveAgent(ctx context.Context, id string) (*admin.RemovedAgent, error) {
	ra, err := b.V.store.RemoveAgent(ctx, id)
	if err != nil {
		return nil, notFound(err, "agent %s is not enrolled", id)
	}
	return &admin.RemovedAgent{ID: ra.ID, Partition: ra.Partition, TPM: ra.TPM, EKSHA256: hex.EncodeToString(ra.EKSHA256), EnrolledAt: ra.EnrolledAt}, nil
}
