package verifier

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/pulse-attest/pulse/internal/pki"
	"github.com/pulse-attest/pulse/internal/tlsconfig"
	"github.com/pulse-attest/pulse/verifier/store"
)

// CertRefusedMessage starts the message of every call refused because the
// agent's certificate is no longer acceptable (codes.Unauthenticated): it
// expired, is not yet valid, or was revoked since the connection was made.
const CertRefusedMessage = "agent certificate refused"

// certGuard re-checks agent certificates after the handshake: the TLS
// handshake checks validity and revocation once, but a connection (and a
// directive stream on it) can outlive the certificate, and an operator can
// revoke it meanwhile. The guard checks the peer's leaf on every call and,
// every interval and whenever the revocation list changes, on every open
// stream, which it ends when the leaf is refused. The revocation list is
// read from the store (shared by every replica) at each refresh.
type certGuard struct {
	store *store.Store
	now   func() time.Time
	log   hclog.Logger
	every time.Duration

	set atomic.Pointer[tlsconfig.RevocationSet]

	mu      sync.Mutex // guards the fields below and serialises loads
	digest  [sha256.Size]byte
	changed chan struct{} // closed (and replaced) when the list changes
	failing bool
}

func newCertGuard(ctx context.Context, st *store.Store, now func() time.Time, every time.Duration, log hclog.Logger) (*certGuard, error) {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	g := &certGuard{store: st, now: now, log: log, every: every, changed: make(chan struct{})}
	g.set.Store(tlsconfig.NewRevocationSet(nil))
	if err := g.refresh(ctx); err != nil {
		return nil, err
	}
	return g, nil
}

// refresh reads the revocation list from the store. A failed read keeps
// the previous list (logged once per outage).
func (g *certGuard) refresh(ctx context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	rs, err := g.store.ListRevocations(ctx)
	if err != nil {
		if !g.failing {
			g.failing = true
			g.log.Error("reading the revocation list failed; keeping the previous one", "entries", g.set.Load().Len(), "error", err)
		}
		return fmt.Errorf("verifier: revocation list: %w", err)
	}
	if g.failing {
		g.failing = false
		g.log.Info("revocation list readable again")
	}
	entries := make([]tlsconfig.RevocationEntry, 0, len(rs))
	h := sha256.New()
	for _, r := range rs {
		entries = append(entries, tlsconfig.RevocationEntry{Kind: r.Kind, Value: r.Value})
		fmt.Fprintf(h, "%s\x00%s\x00", r.Kind, r.Value)
	}
	var d [sha256.Size]byte
	h.Sum(d[:0])
	if d == g.digest {
		return nil
	}
	g.digest = d
	g.set.Store(tlsconfig.NewRevocationSet(entries))
	close(g.changed)
	g.changed = make(chan struct{})
	g.log.Info("revocation list loaded", "entries", len(entries))
	return nil
}

// run refreshes the list every interval until ctx ends.
func (g *certGuard) run(ctx context.Context) {
	t := time.NewTicker(g.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_ = g.refresh(ctx)
		}
	}
}

func (g *certGuard) changedCh() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.changed
}

// revoked is the handshake check (tlsconfig.ServerOptions.CheckPeer):
// crypto/tls already checked validity against the verifier's clock.
func (g *certGuard) revoked(leaf *x509.Certificate, _ pki.Identity) error {
	return g.set.Load().Check(leaf)
}

// check refuses a leaf outside its validity period by the verifier's clock
// or on the revocation list.
func (g *certGuard) check(leaf *x509.Certificate) error {
	if err := tlsconfig.CheckValidity(leaf, g.now()); err != nil {
		return err
	}
	return g.set.Load().Check(leaf)
}

// leafOf returns the verified peer leaf of a call.
func leafOf(ctx context.Context) (*x509.Certificate, error) {
	pr, ok := peer.FromContext(ctx)
	if !ok {
		return nil, errors.New("no peer")
	}
	ti, ok := pr.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return nil, errors.New("not a TLS connection")
	}
	if len(ti.State.PeerCertificates) == 0 || len(ti.State.VerifiedChains) == 0 {
		return nil, tlsconfig.ErrUnverifiedPeer
	}
	return ti.State.PeerCertificates[0], nil
}

// refusal is the status of a refused certificate.
func (g *certGuard) refusal(leaf *x509.Certificate, err error) error {
	args := []any{"error", err.Error()}
	if leaf != nil {
		args = append(args, "peer_serial", leaf.SerialNumber.String())
		if id, ierr := pki.IdentityFromCert(leaf); ierr == nil {
			args = append(args, "agent_id", id.ID)
		}
	}
	g.log.Warn("agent certificate refused on an open connection", args...)
	msg := err.Error()
	switch {
	case errors.Is(err, tlsconfig.ErrCertExpired), errors.Is(err, tlsconfig.ErrCertNotYetValid):
		msg += "; reconnect with a current certificate"
	case errors.Is(err, tlsconfig.ErrRevoked):
		msg += "; an operator revoked it (pulsectl revocations list)"
	}
	return status.Errorf(codes.Unauthenticated, "%s: %s", CertRefusedMessage, msg)
}

func (g *certGuard) checkCall(ctx context.Context) (*x509.Certificate, error) {
	leaf, err := leafOf(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Unauthenticated, "%s: %v", CertRefusedMessage, err)
	}
	if err := g.check(leaf); err != nil {
		return leaf, g.refusal(leaf, err)
	}
	return leaf, nil
}

// unary checks the peer's certificate before every call.
func (g *certGuard) unary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if _, err := g.checkCall(ctx); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

// stream checks the peer's certificate when a stream opens, then every
// interval and whenever the revocation list changes; a refused certificate
// ends the stream with the refusal.
func (g *certGuard) stream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	leaf, err := g.checkCall(ss.Context())
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ss.Context())
	defer cancel()
	var refused atomic.Pointer[error]
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(g.every)
		defer t.Stop()
		for {
			changed := g.changedCh()
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			case <-changed:
			}
			if err := g.check(leaf); err != nil {
				rerr := g.refusal(leaf, err)
				refused.Store(&rerr)
				cancel()
				return
			}
		}
	}()
	herr := handler(srv, &guardedStream{ServerStream: ss, ctx: ctx})
	cancel()
	<-done
	if r := refused.Load(); r != nil {
		return *r
	}
	return herr
}

// guardedStream is a stream whose context the guard can end.
type guardedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *guardedStream) Context() context.Context { return s.ctx }
