package verifier

import (
	"context"
	"errors"
	"fmt"

	"github.com/pulse-attest/pulse/verifier/admin"
	"github.com/pulse-attest/pulse/verifier/store"
)

var _ admin.RevocationBackend = AdminBackend{}

// ListRevocations implements admin.RevocationBackend.
func (b AdminBackend) ListRevocations(ctx context.Context) ([]admin.Revocation, error) {
	rs, err := b.V.store.ListRevocations(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]admin.Revocation, 0, len(rs))
	for _, r := range rs {
		out = append(out, admin.Revocation{Kind: r.Kind, Value: r.Value, Reason: r.Reason, By: r.By, At: r.At})
	}
	return out, nil
}

// AddRevocation implements admin.RevocationBackend. Every replica (this
// one included) applies it at its next revocation refresh
// (tls.revocation_refresh): new handshakes and calls are refused and open
// streams end.
func (b AdminBackend) AddRevocation(ctx context.Context, r admin.Revocation) error {
	err := b.V.store.AddRevocation(ctx, store.Revocation{Kind: r.Kind, Value: r.Value, Reason: r.Reason, By: r.By, At: r.At})
	if errors.Is(err, store.ErrConflict) {
		return fmt.Errorf("%s %s is already revoked: %w", r.Kind, r.Value, admin.ErrConflict)
	}
	return err
}

// RemoveRevocation implements admin.RevocationBackend.
func (b AdminBackend) RemoveRevocation(ctx context.Context, kind, value string) (*admin.Revocation, error) {
	r, err := b.V.store.RemoveRevocation(ctx, kind, value)
	if err != nil {
		return nil, notFound(err, "%s %s is not revoked", kind, value)
	}
	return &admin.Revocation{Kind: r.Kind, Value: r.Value, Reason: r.Reason, By: r.By, At: r.At}, nil
}
