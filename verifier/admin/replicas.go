package admin

import (
	"context"
	"net/http"
	"time"
)

// ReplicaLister is implemented by backends that know the verifier replicas
// sharing the store. It is optional: without it GET /api/v1/replicas
// answers 404.
type ReplicaLister interface {
	// Replicas lists the replicas seen lately with the policy digest each
	// enforces.
	Replicas(ctx context.Context) (*ReplicaList, error)
}

// ReplicaStatus is one replica and the digest of the policy set it
// enforces, as it last recorded them.
type ReplicaStatus struct {
	ID           string    `json:"replica_id"`
	PolicyDigest string    `json:"policy_digest"`
	SeenAt       time.Time `json:"seen_at"`
	// Divergent: its digest differs from the serving replica's.
	Divergent bool `json:"divergent"`
}

// ReplicaList is the body of GET /api/v1/replicas: the serving replica, the
// digest it enforces, and every replica seen within the last minute.
type ReplicaList struct {
	Now          time.Time       `json:"now"`
	Self         string          `json:"self"`
	PolicyDigest string          `json:"policy_digest"`
	Replicas     []ReplicaStatus `json:"replicas"`
}

func (h *handler) listReplicas(w http.ResponseWriter, r *http.Request) {
	rl, ok := h.backend.(ReplicaLister)
	if !ok {
		writeError(w, http.StatusNotFound, "this verifier does not report replicas")
		return
	}
	list, err := rl.Replicas(r.Context())
	if err == nil && list == nil {
		err = ErrNotFound
	}
	if err != nil {
		h.backendError(w, r, err)
		return
	}
	out := *list
	if out.Replicas == nil {
		out.Replicas = []ReplicaStatus{}
	}
	writeJSON(w, http.StatusOK, out)
}
