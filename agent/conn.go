package agent

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"github.com/pulse-attest/pulse/internal/pki"
	"github.com/pulse-attest/pulse/internal/pulsesig"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
)

// session is one gRPC connection to the verifier made with one certificate
// and key pair. Every handshake of the connection (gRPC redials by itself
// after a network failure) presents that same pair, and every payload sent
// on it is signed with that pair's key and names that pair's leaf key, so
// the key a pulse is signed with is always the key the TLS channel proved.
// When the Reloader swaps in a new pair, the agent builds a new session and
// moves to it once the verifier has answered on it; the old one keeps
// serving until then.
type session struct {
	cc      *grpc.ClientConn
	client  pulsev1.AttestationClient
	cert    *tls.Certificate
	signer  crypto.Signer
	agentID string
	leafKey [sha256.Size]byte
	// changed is the Reloader's Changed channel as it was before the pair
	// was read: it fires when a newer pair is available.
	changed <-chan struct{}
	serial  string
	stop    context.CancelFunc
	// retryCap is the longest wait of gRPC's own reconnect backoff, set
	// from the interval when the session was made (see connectParams).
	retryCap time.Duration
}

// minConnectTimeout is the least time one connection attempt (TCP and TLS
// handshake) is given, however short the interval; maxConnectTimeout the
// most, however long (a handshake that slow has failed).
const (
	minConnectTimeout = time.Second
	maxConnectTimeout = rpcTimeout
)

// connectParams matches gRPC's own reconnect backoff to the agent's retry
// cap for interval (retryBounds): a verifier that comes back is dialed
// again within that cap, not after gRPC's default of up to two minutes.
// gRPC adds up to ±20 % jitter to each delay, so MaxDelay is set a sixth
// under the cap.
func connectParams(interval time.Duration) grpc.ConnectParams {
	lo, hi := retryBounds(interval)
	return grpc.ConnectParams{
		Backoff:           backoff.Config{BaseDelay: lo, Multiplier: 1.6, Jitter: 0.2, MaxDelay: hi * 5 / 6},
		MinConnectTimeout: min(max(hi, minConnectTimeout), maxConnectTimeout),
	}
}

// dial makes a session with the Reloader's current pair. No network I/O
// happens until the first call.
func (a *Agent) dial() (*session, error) {
	// Read Changed before Current: a swap in between fires changed at once
	// instead of being missed.
	changed := a.reloader.Changed()
	cert, signer := a.reloader.Current()
	if cert.Leaf == nil {
		return nil, fmt.Errorf("dial: certificate without parsed leaf")
	}
	id, err := pki.IdentityFromCert(cert.Leaf)
	if err != nil {
		return nil, fmt.Errorf("dial: agent certificate: %w", err)
	}
	if id.Role != pki.RoleAgent {
		return nil, fmt.Errorf("dial: certificate names %s, not an agent", id)
	}
	tlsCfg := a.tlsBase.Clone()
	pinned := cert
	tlsCfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return pinned, nil }
	interval := a.Interval()
	target, extra := dialTarget(a.cfg.VerifierAddrs())
	if tlsCfg.ServerName == "" {
		if host, _, err := net.SplitHostPort(a.cfg.VerifierAddrs()[0]); err == nil {
			tlsCfg.ServerName = host
		}
	}
	cc, err := grpc.NewClient(target, append(extra,
		grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)),
		grpc.WithConnectParams(connectParams(interval)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 60 * time.Second, Timeout: 20 * time.Second}),
		// One message each interval: gRPC's pools would keep buffers of the
		// next size tier up (1 MiB for a 34 KB firmware log) between them,
		// the codec's for sending and the transport's for receiving.
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(exactCodec{})),
		experimental.WithBufferPool(mem.NopBufferPool{}),
	)...)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", a.cfg.Verifier, err)
	}
	ctx, stop := context.WithCancel(context.Background())
	s := &session{
		cc:      cc,
		client:  pulsev1.NewAttestationClient(cc),
		cert:    cert,
		signer:  signer,
		agentID: id.ID,
		leafKey: pulsesig.LeafKeyDigest(cert.Leaf),
		changed: changed,
		serial:  cert.Leaf.SerialNumber.String(),
		stop:    stop,
	}
	_, s.retryCap = retryBounds(interval)
	go a.watchState(ctx, s)
	return s, nil
}

// watchState follows the connection's state. It counts reconnects
// (transitions to READY after the first) and signals every READY that
// follows a lost or failed connection on a.reconnected, so the agent
// pulses at once instead of when its retry backoff runs out. A connection
// lost after working goes IDLE in gRPC and would be dialed again only by
// the next call; watchState asks for the dial at once, so gRPC's own
// backoff (connectParams) keeps trying while the verifier is away.
func (a *Agent) watchState(ctx context.Context, s *session) {
	log := a.log.Named("conn")
	ready, failed := false, false
	state := s.cc.GetState()
	for {
		switch state {
		case connectivity.Ready:
			if ready {
				a.counters.reconnects.Add(1)
				log.Info("reconnected to verifier; pulsing now", "verifier", a.cfg.Verifier, "cert_serial", s.serial)
			} else {
				log.Debug("connected to verifier", "verifier", a.cfg.Verifier, "cert_serial", s.serial)
			}
			if ready || failed {
				a.signalReconnected()
			}
			ready, failed = true, false
		case connectivity.TransientFailure:
			if ready && !failed {
				log.Warn("connection to verifier lost", "verifier", a.cfg.Verifier)
			}
			failed = true
		case connectivity.Idle:
			if ready {
				if !failed {
					log.Warn("connection to verifier lost", "verifier", a.cfg.Verifier)
				}
				failed = true
				s.cc.Connect()
			}
		}
		if !s.cc.WaitForStateChange(ctx, state) {
			return
		}
		state = s.cc.GetState()
	}
}

// signalReconnected asks the run loop for a pulse at once: the connection
// to the verifier is back after a loss or failure.
func (a *Agent) signalReconnected() {
	select {
	case a.reconnected <- struct{}{}:
	default:
	}
}

func (s *session) close(log hclog.Logger) {
	s.stop()
	if err := s.cc.Close(); err != nil {
		log.Debug("close connection", "error", err)
	}
}

// dialTarget turns the verifier addresses into a gRPC target. Several
// replicas go through a static resolver with pick_first: the agent uses the
// first replica that answers and moves to another when it goes away.
func dialTarget(addrs []string) (string, []grpc.DialOption) {
	if len(addrs) == 1 {
		return addrs[0], nil
	}
	r := manual.NewBuilderWithScheme("pulse-verifiers")
	state := resolver.State{}
	for _, a := range addrs {
		state.Addresses = append(state.Addresses, resolver.Address{Addr: a})
	}
	r.InitialState(state)
	return r.Scheme() + ":///verifiers", []grpc.DialOption{grpc.WithResolvers(r),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"pick_first":{"shuffleAddressList":true}}]}`)}
}
