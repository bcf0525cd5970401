package verifier_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pulse-attest/pulse/internal/pki"
	"github.com/pulse-attest/pulse/internal/tlsconfig"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/verifier"
	"github.com/pulse-attest/pulse/verifier/admin"
	"github.com/pulse-attest/pulse/verifier/config"
	"github.com/pulse-attest/pulse/verifier/store"
	"github.com/pulse-attest/pulse/verifier/verifiertest"
)

// fastTLS makes the verifier re-check streams and re-read its files often,
// so the tests below do not wait for the defaults.
func fastTLS(c *config.Config) {
	c.TLS.RevocationRefresh = 50 * time.Millisecond
	c.TLS.ReloadInterval = 50 * time.Millisecond
}

// openStream opens a directive stream for a and returns once the verifier
// holds it (a directive sent through it arrives), and a channel that
// receives the error the stream ends with.
func openStream(t *testing.T, e *env, a *verifiertest.Client) <-chan error {
	t.Helper()
	stream, err := a.Cl.Directives(ctx(t), &pulsev1.DirectivesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	probe := &pulsev1.Directive{Kind: &pulsev1.Directive_Release{Release: &pulsev1.Release{Addresses: []string{"192.0.2.1"}}}}
	for !e.daemon.Verifier.SendDirective(a.ID, probe) {
		if ctx(t).Err() != nil {
			t.Fatal("the directive stream never opened")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatalf("first directive: %v", err)
	}
	ended := make(chan error, 1)
	go func() {
		for {
			if _, err := stream.Recv(); err != nil {
				ended <- err
				return
			}
		}
	}()
	return ended
}

// wantCertRefused checks err is the guard's refusal of a certificate, naming want.
func wantCertRefused(t *testing.T, what string, err error, want string) {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != codes.Unauthenticated || !strings.Contains(st.Message(), verifier.CertRefusedMessage) || !strings.Contains(st.Message(), want) {
		t.Fatalf("%s: %v; want Unauthenticated %q naming %q", what, err, verifier.CertRefusedMessage, want)
	}
}

// handshakeErr makes a fresh TLS connection to the verifier with cert and
// reports whether the verifier accepted it (nil) or why not. In TLS 1.3 a
// client learns that its certificate was refused at its first read; an
// accepted gRPC connection starts with the server's HTTP/2 settings.
func (e *env) handshakeErr(cert *pki.Issued) (serial string, err error) {
	e.t.Helper()
	kp, err := tls.X509KeyPair(cert.CertPEM, cert.KeyPEM)
	if err != nil {
		e.t.Fatal(err)
	}
	cfg := e.tlsConfigFor(&kp)
	cfg.NextProtos = []string{"h2"}
	conn, err := tls.Dial("tcp", e.daemon.Addr(), cfg)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	serial = conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
	if err := conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		e.t.Fatal(err)
	}
	var b [1]byte
	_, err = conn.Read(b[:])
	return serial, err
}

// TestCertExpiresWhileConnected: an agent whose certificate expires while
// it is connected is refused at its next call and its directive stream
// ends, on the connection it already has; a new connection is refused at
// the handshake. Before expiry the same calls pass.
func TestCertExpiresWhileConnected(t *testing.T) {
	e := newEnvCfg(t, "rhel8-uefi", fastTLS)
	if e == nil {
		return
	}
	a := e.agent("lab-expiring", nil)
	if _, err := a.Cl.Challenge(ctx(t), &pulsev1.ChallengeRequest{}); err != nil {
		t.Fatalf("challenge before expiry: %v", err)
	}
	ended := openStream(t, e, a)

	e.clock.Advance(time.Until(a.Cert.Cert.NotAfter) + time.Minute)

	select {
	case err := <-ended:
		wantCertRefused(t, "stream", err, "expired")
	case <-ctx(t).Done():
		t.Fatal("the directive stream outlived the certificate")
	}
	_, err := a.Cl.Challenge(ctx(t), &pulsev1.ChallengeRequest{})
	wantCertRefused(t, "challenge after expiry", err, "expired")
	if _, err := e.handshakeErr(a.Cert); err == nil {
		t.Fatal("a new connection with the expired certificate was accepted")
	}
}

// TestCertNotYetValidRefused: the verifier's clock, not the agent's, says
// whether a certificate is valid yet; one whose validity starts later is
// refused per call.
func TestCertNotYetValidRefused(t *testing.T) {
	e := newEnvCfg(t, "rhel8-uefi", fastTLS)
	if e == nil {
		return
	}
	a := e.agent("lab-early", nil)
	if _, err := a.Cl.Challenge(ctx(t), &pulsev1.ChallengeRequest{}); err != nil {
		t.Fatalf("challenge: %v", err)
	}
	e.clock.Advance(-time.Until(a.Cert.Cert.NotBefore) - time.Hour)
	_, err := a.Cl.Challenge(ctx(t), &pulsev1.ChallengeRequest{})
	wantCertRefused(t, "challenge before validity", err, "not yet valid")
}

// TestRevokedCertificate: for each kind of entry, a revoked agent is
// refused on its open connection (stream ended, next call refused) and at
// the handshake, another agent is not, and removing the entry lets the
// agent back.
func TestRevokedCertificate(t *testing.T) {
	e := newEnvCfg(t, "rhel8-uefi", fastTLS)
	if e == nil {
		return
	}
	st := e.daemon.Store
	for _, kind := range tlsconfig.RevocationKinds {
		t.Run(kind, func(t *testing.T) {
			a := e.agent("lab-revoked-"+kind, nil)
			b := e.agent("lab-bystander-"+kind, nil)
			value := map[string]string{
				tlsconfig.RevokeSerial: tlsconfig.SerialKey(a.Cert.Cert),
				tlsconfig.RevokeSPKI:   tlsconfig.SPKIKey(a.Cert.Cert),
				tlsconfig.RevokeAgent:  a.ID,
			}[kind]
			if _, err := e.handshakeErr(a.Cert); err != nil {
				t.Fatalf("handshake before revocation: %v", err)
			}
			ended := openStream(t, e, a)

			if err := st.AddRevocation(ctx(t), store.Revocation{Kind: kind, Value: value, By: "test", At: time.Now()}); err != nil {
				t.Fatal(err)
			}
			if err := e.daemon.RefreshRevocations(ctx(t)); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-ended:
				wantCertRefused(t, "stream", err, "revoked")
			case <-ctx(t).Done():
				t.Fatal("the revoked agent's stream stayed open")
			}
			_, err := a.Cl.Challenge(ctx(t), &pulsev1.ChallengeRequest{})
			wantCertRefused(t, "call on the open connection", err, "revoked")
			if _, err := e.handshakeErr(a.Cert); err == nil {
				t.Fatal("the revoked certificate completed a handshake")
			}
			if _, err := b.Cl.Challenge(ctx(t), &pulsev1.ChallengeRequest{}); err != nil {
				t.Fatalf("bystander refused: %v", err)
			}
			if _, err := e.handshakeErr(b.Cert); err != nil {
				t.Fatalf("bystander handshake: %v", err)
			}

			if _, err := st.RemoveRevocation(ctx(t), kind, value); err != nil {
				t.Fatal(err)
			}
			if err := e.daemon.RefreshRevocations(ctx(t)); err != nil {
				t.Fatal(err)
			}
			if _, err := e.handshakeErr(a.Cert); err != nil {
				t.Fatalf("handshake after the entry was removed: %v", err)
			}
			if _, err := a.Cl.Challenge(ctx(t), &pulsev1.ChallengeRequest{}); err != nil {
				t.Fatalf("call after the entry was removed: %v", err)
			}
		})
	}
}

// TestRevocationSharedByReplicas: a revocation written by one replica
// reaches another replica on the same store by its own refresh.
func TestRevocationSharedByReplicas(t *testing.T) {
	e := newEnvCfg(t, "rhel8-uefi", fastTLS)
	if e == nil {
		return
	}
	a := e.agent("lab-other-replica", nil)
	ended := openStream(t, e, a)
	other, err := store.Open(ctx(t), store.EngineSQLite, filepath.Join(e.dir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := other.AddRevocation(ctx(t), store.Revocation{Kind: tlsconfig.RevokeAgent, Value: a.ID, By: "test", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	// No explicit refresh: the verifier's own refresh loop picks it up.
	select {
	case err := <-ended:
		wantCertRefused(t, "stream", err, "revoked")
	case <-ctx(t).Done():
		t.Fatal("the revocation never reached this replica")
	}
}

// TestTLSHotReload: the verifier's own certificate and its agent CA file
// are re-read while it runs: a new certificate is served on the next
// connection, a client of a CA added to the file is accepted and one of a
// CA removed from it is refused.
func TestTLSHotReload(t *testing.T) {
	var agentCA string
	e := newEnvCfg(t, "rhel8-uefi", func(c *config.Config) {
		fastTLS(c)
		agentCA = filepath.Join(filepath.Dir(c.TLS.AgentCA), "agent-ca.pem")
		b, err := os.ReadFile(c.TLS.AgentCA)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(agentCA, b, 0o644); err != nil {
			t.Fatal(err)
		}
		c.TLS.AgentCA = agentCA
	})
	if e == nil {
		return
	}
	oldAgent, err := pki.Issue(e.ca, pki.Request{Role: pki.RoleAgent, ID: "lab-old-ca"})
	if err != nil {
		t.Fatal(err)
	}
	before, err := e.handshakeErr(oldAgent)
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}

	// The verifier's certificate is rotated in place.
	vc, err := pki.Issue(e.ca, pki.Request{Role: pki.RoleVerifier, ID: "v1", DNSNames: []string{"localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := vc.WriteFiles(filepath.Join(e.dir, "v.pem"), filepath.Join(e.dir, "v-key.pem"), true); err != nil {
		t.Fatal(err)
	}
	want := vc.Cert.SerialNumber.String()
	for {
		got, err := e.handshakeErr(oldAgent)
		if err != nil {
			t.Fatalf("handshake during rotation: %v", err)
		}
		if got == want {
			break
		}
		if got != before {
			t.Fatalf("served serial %s, neither the old %s nor the new %s", got, before, want)
		}
		if ctx(t).Err() != nil {
			t.Fatal("the rotated verifier certificate was never served")
		}
		time.Sleep(20 * time.Millisecond)
	}

	// The agent CA is rotated: the file now trusts only the next CA.
	next, err := pki.NewCA("next agent CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	newAgent, err := pki.Issue(next, pki.Request{Role: pki.RoleAgent, ID: "lab-new-ca"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.handshakeErr(newAgent); err == nil {
		t.Fatal("an agent of an untrusted CA was accepted")
	}
	if err := os.WriteFile(agentCA, next.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	for {
		_, err := e.handshakeErr(newAgent)
		if err == nil {
			break
		}
		if ctx(t).Err() != nil {
			t.Fatalf("the new agent CA was never trusted: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := e.handshakeErr(oldAgent); err == nil {
		t.Fatal("an agent of the removed CA was still accepted")
	} else if ae := new(tls.AlertError); errors.As(err, ae) {
		t.Logf("old CA refused with alert %v", *ae)
	}
}

// TestMaxConnectionAge: connections are closed after max_connection_age,
// so an agent handshakes again (against the current CAs and revocations).
func TestMaxConnectionAge(t *testing.T) {
	e := newEnvCfg(t, "rhel8-uefi", func(c *config.Config) {
		fastTLS(c)
		c.TLS.MaxConnectionAge = 200 * time.Millisecond
		c.TLS.MaxConnectionAgeGrace = 100 * time.Millisecond
	})
	if e == nil {
		return
	}
	a := e.agent("lab-aging", nil)
	ended := openStream(t, e, a)
	select {
	case err := <-ended:
		if st, _ := status.FromError(err); st.Code() != codes.Unavailable {
			t.Fatalf("stream ended with %v, want Unavailable (connection closed by age)", err)
		}
	case <-ctx(t).Done():
		t.Fatal("the connection outlived max_connection_age")
	}
	// The agent reconnects and is served again.
	if _, err := a.Cl.Challenge(context.Background(), &pulsev1.ChallengeRequest{}); err != nil {
		t.Fatalf("call after reconnecting: %v", err)
	}
}

// TestRevokeThroughAdminAPI: an operator revokes an agent through the
// admin API (HTTPS, bearer token): its open stream ends and it is refused
// at the handshake; the list shows who revoked it; removing the entry lets
// the agent back.
func TestRevokeThroughAdminAPI(t *testing.T) {
	const token = "revoke-through-admin-0123456789abcdef"
	e := newEnvCfg(t, "rhel8-uefi", func(c *config.Config) {
		fastTLS(c)
		c.AdminListen = "127.0.0.1:0"
		c.AdminTokenFile = filepath.Join(filepath.Dir(c.TLS.AgentCA), "admin-token")
		if err := os.WriteFile(c.AdminTokenFile, []byte(token+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	})
	if e == nil {
		return
	}
	cl, err := admin.NewClient(admin.ClientOptions{URL: "https://" + e.daemon.AdminAddr(), CAFile: e.caFile, ServerName: "localhost", Token: token})
	if err != nil {
		t.Fatal(err)
	}
	a := e.agent("lab-admin-revoked", nil)
	ended := openStream(t, e, a)

	r, err := cl.Revoke(ctx(t), admin.RevocationRequest{Kind: tlsconfig.RevokeAgent, Value: a.ID, Reason: "decommissioned"})
	if err != nil {
		t.Fatal(err)
	}
	if r.Value != a.ID || r.By == "" {
		t.Fatalf("revocation %+v", r)
	}
	if _, err := cl.Revoke(ctx(t), admin.RevocationRequest{Kind: tlsconfig.RevokeAgent, Value: a.ID}); !errors.Is(err, admin.ErrConflict) {
		t.Fatalf("revoking twice: %v", err)
	}
	select {
	case err := <-ended:
		wantCertRefused(t, "stream", err, "revoked")
	case <-ctx(t).Done():
		t.Fatal("the revoked agent's stream stayed open")
	}
	if _, err := e.handshakeErr(a.Cert); err == nil {
		t.Fatal("the revoked agent completed a handshake")
	}
	l, err := cl.ListRevocations(ctx(t))
	if err != nil || len(l.Revocations) != 1 || l.Revocations[0].Reason != "decommissioned" {
		t.Fatalf("list: %+v, %v", l, err)
	}
	if _, err := cl.Unrevoke(ctx(t), tlsconfig.RevokeAgent, a.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Unrevoke(ctx(t), tlsconfig.RevokeAgent, a.ID); !errors.Is(err, admin.ErrNotFound) {
		t.Fatalf("removing twice: %v", err)
	}
	if err := e.daemon.RefreshRevocations(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.handshakeErr(a.Cert); err != nil {
		t.Fatalf("handshake after the revocation was lifted: %v", err)
	}
}

// TestOneWatcherForAllStreams: over real mTLS connections, the streams of
// 50 agents are watched by the guard's one loop (no goroutine per stream);
// revoking one agent in the store ends its stream within the refresh
// interval with the refusal, with no explicit refresh, while the others
// stay open; and the registry is empty once every stream has ended.
func TestOneWatcherForAllStreams(t *testing.T) {
	loops0, perStream0 := verifier.CertGuardGoroutines(t) // other tests' daemons, if any still run
	e := newEnvCfg(t, "rhel8-uefi", fastTLS)
	if e == nil {
		return
	}
	const n = 50
	agents := make([]*verifiertest.Client, n)
	ended := make([]<-chan error, n)
	for i := range agents {
		agents[i] = e.agent(fmt.Sprintf("lab-stream-%02d", i), nil)
		ended[i] = openStream(t, e, agents[i])
	}
	if got := verifier.CertGuardStreams(e.daemon); got != n {
		t.Fatalf("the guard watches %d streams, want %d", got, n)
	}
	loops, perStream := verifier.CertGuardGoroutines(t)
	if loops != loops0+1 || perStream != perStream0 {
		t.Fatalf("with %d open streams: %d guard loops and %d per-stream goroutines; want this daemon's one loop and none per stream (%d and %d before it started)", n, loops, perStream, loops0, perStream0)
	}

	victim := agents[0]
	if err := e.daemon.Store.AddRevocation(ctx(t), store.Revocation{Kind: tlsconfig.RevokeAgent, Value: victim.ID, By: "test", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-ended[0]:
		wantCertRefused(t, "revoked agent's stream", err, "revoked")
	case <-ctx(t).Done():
		t.Fatal("the revoked agent's stream stayed open")
	}
	// Sweeps after the one that ended the victim's stream leave the
	// others open.
	time.Sleep(4 * 50 * time.Millisecond)
	for i := 1; i < n; i++ {
		select {
		case err := <-ended[i]:
			t.Fatalf("agent %s's stream ended: %v", agents[i].ID, err)
		default:
		}
	}
	probe := &pulsev1.Directive{Kind: &pulsev1.Directive_Release{Release: &pulsev1.Release{Addresses: []string{"192.0.2.2"}}}}
	if !e.daemon.Verifier.SendDirective(agents[1].ID, probe) {
		t.Fatal("a bystander's stream is gone")
	}
	if got := verifier.CertGuardStreams(e.daemon); got != n-1 {
		t.Fatalf("the guard watches %d streams after one ended, want %d", got, n-1)
	}

	for _, a := range agents {
		a.Conn.Close()
	}
	for verifier.CertGuardStreams(e.daemon) != 0 {
		if ctx(t).Err() != nil {
			t.Fatalf("%d streams still registered after every connection closed", verifier.CertGuardStreams(e.daemon))
		}
		time.Sleep(10 * time.Millisecond)
	}
}
