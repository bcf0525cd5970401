package verifier

import (
	"context"

	"github.com/pulse-attest/pulse/verifier/admin"
	"github.com/pulse-attest/pulse/verifier/store"
)

var _ admin.MaintenanceBackend = AdminBackend{}

// SetMaintenance opens the agent's maintenance window in the store (every
// replica reads it there when the agent's planned stop arrives).
func (b AdminBackend) SetMaintenance(ctx context.Context, m admin.Maintenance) error {
	err := b.V.store.SetMaintenance(ctx, store.Maintenance{AgentID: m.AgentID, Until: m.Until, By: m.By, Reason: m.Reason, At: m.At})
	return notFound(err, "agent %s is not enrolled", m.AgentID)
}

// ListMaintenance returns the windows open now.
func (b AdminBackend) ListMaintenance(ctx context.Context) ([]admin.Maintenance, error) {
	ms, err := b.V.store.ListMaintenance(ctx, b.V.now())
	if err != nil {
		return nil, err
	}
	out := make([]admin.Maintenance, 0, len(ms))
	for _, m := range ms {
		out = append(out, admin.Maintenance{AgentID: m.AgentID, Until: m.Until, By: m.By, Reason: m.Reason, At: m.At})
	}
	return out, nil
}
