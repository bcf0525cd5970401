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

	// The open streams, checked by one sweep for all of them (run), not a
	// goroutine and a ticker each: a connected agent holds its directive
	// stream for hours, so per-stream watchers were one goroutine stack
	// and one timer wake-up per interval per agent.
	smu     sync.Mutex // guards streams and every watchedStream's refused
	streams map[*watchedStream]struct{}
	// sweepMu serialises sweeps; batch and watchedStream.checked belong
	// to the sweep holding it.
	sweepMu sync.Mutex
	batch   []*watchedStream
}

// watchedStream is one open stream in the guard's registry.
type watchedStream struct {
	leaf   *x509.Certificate
	cancel context.CancelFunc
	// refused is the refusal that ended the stream (under certGuard.smu).
	refused error
	// checked is the revocation set the leaf last passed: the sets are
	// immutable and replaced on every change, so the same set need not be
	// consulted again (validity, which depends on the clock, is checked
	// every sweep).
	checked *tlsconfig.RevocationSet
}

func newCertGuard(ctx context.Context, st *store.Store, now func() time.Time, every time.Duration, log hclog.Logger) (*certGuard, error) {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	g := &certGuard{store: st, now: now, log: log, every: every, changed: make(chan struct{}), streams: make(map[*watchedStream]struct{})}
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

// run is the guard's one loop: every interval it re-checks every open
// stream and then re-reads the revocation list, and whenever the list
// changes (by this refresh or another caller's) it re-checks every open
// stream at once. Streams are checked before the store is read, so a slow
// store delays neither validity checks nor the next interval's sweep by
// more than refreshTimeout.
func (g *certGuard) run(ctx context.Context) {
	t := time.NewTicker(g.every)
	defer t.Stop()
	changed := g.changedCh()
	// A change made before the channel was taken is seen by this sweep.
	g.sweep()
	for {
		select {
		case <-ctx.Done():
			return
		case <-changed:
			// Taken before the sweep: a change during it closes this
			// channel and sweeps again.
			changed = g.changedCh()
			g.sweep()
		case <-t.C:
			changed = g.changedCh()
			g.sweep()
			rctx, cancel := context.WithTimeout(ctx, g.refreshTimeout())
			_ = g.refresh(rctx)
			cancel()
		}
	}
}

// refreshTimeout bounds the loop's read of the revocation list: a store
// that does not answer is a failed read (the previous list is kept).
func (g *certGuard) refreshTimeout() time.Duration {
	return max(g.every, 10*time.Second)
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

// refusal logs a refused certificate and returns its status.
func (g *certGuard) refusal(leaf *x509.Certificate, err error) error {
	g.logRefusal(leaf, err)
	return refusalStatus(err)
}

func (g *certGuard) logRefusal(leaf *x509.Certificate, err error) {
	args := []any{"error", err.Error()}
	if leaf != nil {
		args = append(args, "peer_serial", leaf.SerialNumber.String())
		if id, ierr := pki.IdentityFromCert(leaf); ierr == nil {
			args = append(args, "agent_id", id.ID)
		}
	}
	g.log.Warn("agent certificate refused on an open connection", args...)
}

// refusalStatus is the error a call or stream ends with when its
// certificate is refused: the codes.Unauthenticated status sent to the
// agent, wrapping the reason (tlsconfig.ErrCertExpired,
// tlsconfig.ErrCertNotYetValid, *tlsconfig.RevokedError).
func refusalStatus(err error) error {
	msg := err.Error()
	switch {
	case errors.Is(err, tlsconfig.ErrCertExpired), errors.Is(err, tlsconfig.ErrCertNotYetValid):
		msg += "; reconnect with a current certificate"
	case errors.Is(err, tlsconfig.ErrRevoked):
		msg += "; an operator revoked it (pulsectl revocations list)"
	}
	return &CertRefusedError{Reason: err, st: status.Newf(codes.Unauthenticated, "%s: %s", CertRefusedMessage, msg)}
}

// CertRefusedError is a call or stream ended because the peer's
// certificate was refused after the handshake. Its gRPC status is
// codes.Unauthenticated with CertRefusedMessage; Reason (also reached by
// errors.Is and errors.As) says why.
type CertRefusedError struct {
	Reason error
	st     *status.Status
}

func (e *CertRefusedError) Error() string              { return e.st.Err().Error() }
func (e *CertRefusedError) Unwrap() error              { return e.Reason }
func (e *CertRefusedError) GRPCStatus() *status.Status { return e.st }

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

// stream checks the peer's certificate when a stream opens and registers
// the stream with the guard, whose one loop (run) re-checks it every
// interval and whenever the revocation list changes; a refused
// certificate ends the stream with the refusal.
func (g *certGuard) stream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	leaf, err := leafOf(ss.Context())
	if err != nil {
		return status.Errorf(codes.Unauthenticated, "%s: %v", CertRefusedMessage, err)
	}
	ctx, cancel := context.WithCancel(ss.Context())
	defer cancel()
	w := &watchedStream{leaf: leaf, cancel: cancel}
	g.watch(w)
	// Checked once registered: a list that changes in between is either
	// seen here or by the sweep its change starts.
	if err := g.check(leaf); err != nil {
		g.unwatch(w)
		return g.refusal(leaf, err)
	}
	herr := handler(srv, &guardedStream{ServerStream: ss, ctx: ctx})
	if r := g.unwatch(w); r != nil {
		return r
	}
	return herr
}

func (g *certGuard) watch(w *watchedStream) {
	g.smu.Lock()
	g.streams[w] = struct{}{}
	g.smu.Unlock()
}

// unwatch removes w from the registry and returns the refusal that ended
// it, if any.
func (g *certGuard) unwatch(w *watchedStream) error {
	g.smu.Lock()
	defer g.smu.Unlock()
	delete(g.streams, w)
	return w.refused
}

// openStreams is how many streams the guard watches.
func (g *certGuard) openStreams() int {
	g.smu.Lock()
	defer g.smu.Unlock()
	return len(g.streams)
}

// sweep re-checks every registered stream's leaf against the verifier's
// clock and the current revocation list and ends those refused. The
// registry lock is held only to copy the streams out and to record a
// refusal, never while checking, logging or cancelling.
func (g *certGuard) sweep() {
	g.sweepMu.Lock()
	defer g.sweepMu.Unlock()
	now, set := g.now(), g.set.Load()
	g.smu.Lock()
	batch := g.batch[:0]
	for w := range g.streams {
		if w.refused == nil {
			batch = append(batch, w)
		}
	}
	g.smu.Unlock()
	type refusedStream struct {
		w   *watchedStream
		err error
	}
	var refused []refusedStream
	for _, w := range batch {
		err := tlsconfig.CheckValidity(w.leaf, now)
		if err == nil && w.checked != set {
			if err = set.Check(w.leaf); err == nil {
				w.checked = set
			}
		}
		if err != nil {
			refused = append(refused, refusedStream{w, err})
		}
	}
	clear(batch) // keep no ended stream alive until the next sweep
	g.batch = batch[:0]
	for _, r := range refused {
		st := refusalStatus(r.err)
		g.smu.Lock()
		_, open := g.streams[r.w]
		if open {
			r.w.refused = st
		}
		g.smu.Unlock()
		if open {
			g.logRefusal(r.w.leaf, r.err)
			r.w.cancel()
		}
	}
}

// guardedStream is a stream whose context the guard can end.
type guardedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *guardedStream) Context() context.Context { return s.ctx }
