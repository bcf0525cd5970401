package verifier

import (
	"context"
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/pulse-attest/pulse/internal/pki"
	"github.com/pulse-attest/pulse/internal/tlsconfig"
	"github.com/pulse-attest/pulse/policy"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/verifier/store"
)

func (e *probeEnv) conn(t *testing.T, cert *tls.Certificate) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(e.d.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(e.clientConfig(cert, false))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// listServices asks server reflection (v1, what grpcurl list uses first)
// for the service names.
func listServices(ctx context.Context, conn *grpc.ClientConn) ([]string, error) {
	s, err := reflectionv1.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.Send(&reflectionv1.ServerReflectionRequest{MessageRequest: &reflectionv1.ServerReflectionRequest_ListServices{}}); err != nil {
		return nil, err
	}
	resp, err := s.Recv()
	if err != nil {
		return nil, err
	}
	if err := s.CloseSend(); err != nil {
		return nil, err
	}
	var names []string
	for _, svc := range resp.GetListServicesResponse().GetService() {
		names = append(names, svc.GetName())
	}
	return names, nil
}

// TestHealthAndReflection: an agent certificate gets the standard health
// answers and a reflection listing of the attestation protocol.
func TestHealthAndReflection(t *testing.T) {
	e := newProbeEnv(t, 1000)
	conn := e.conn(t, &e.agent)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hc := healthpb.NewHealthClient(conn)
	for _, tc := range []struct {
		service string
		want    healthpb.HealthCheckResponse_ServingStatus
		code    codes.Code
	}{
		{service: "", want: healthpb.HealthCheckResponse_SERVING},
		{service: "pulse.v1.Attestation", want: healthpb.HealthCheckResponse_SERVING},
		{service: "pulse.v1.NoSuchService", code: codes.NotFound},
	} {
		t.Run("check "+tc.service, func(t *testing.T) {
			resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: tc.service})
			if status.Code(err) != tc.code {
				t.Fatalf("Check(%q): %v, want code %v", tc.service, err, tc.code)
			}
			if err == nil && resp.GetStatus() != tc.want {
				t.Fatalf("Check(%q) = %v, want %v", tc.service, resp.GetStatus(), tc.want)
			}
		})
	}
	names, err := listServices(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{pulsev1.Attestation_ServiceDesc.ServiceName, healthpb.Health_ServiceDesc.ServiceName, reflectionv1.ServerReflection_ServiceDesc.ServiceName} {
		if !slices.Contains(names, want) {
			t.Errorf("reflection lists %v, missing %s", names, want)
		}
	}
}

// TestHealthBehindMTLS: health and reflection refuse every caller the
// attestation service refuses: no certificate, a verifier's certificate,
// an expired one and a revoked one; an undecodable health request gets
// InvalidArgument like an undecodable pulse.
func TestHealthBehindMTLS(t *testing.T) {
	e := newProbeEnv(t, 1000)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	revoked, err := pki.Issue(e.ca, pki.Request{Role: pki.RoleAgent, ID: "edge-revoked"})
	if err != nil {
		t.Fatal(err)
	}
	revokedPair := keyPair(t, revoked.CertPEM, revoked.KeyPEM)
	if err := e.d.Store.AddRevocation(ctx, store.Revocation{Kind: tlsconfig.RevokeAgent, Value: "edge-revoked", By: "test", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := e.d.RefreshRevocations(ctx); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		cert  *tls.Certificate
		code  codes.Code
		cause tlsconfig.Cause // the refusal counted, "" for none
	}{
		{"agent certificate", &e.agent, codes.OK, ""},
		{"no certificate", nil, codes.Unavailable, tlsconfig.CauseNoCertificate},
		{"verifier certificate", &e.vCert, codes.Unavailable, tlsconfig.CauseWrongRole},
		{"expired certificate", &e.expired, codes.Unavailable, tlsconfig.CauseExpired},
		{"revoked agent", &revokedPair, codes.Unavailable, tlsconfig.CauseRevoked},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var before float64
			if tc.cause != "" {
				before = e.refused(t, tc.cause)
			}
			conn := e.conn(t, tc.cert)
			_, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
			if got := status.Code(err); got != tc.code {
				t.Fatalf("health check: %v (code %v), want %v", err, got, tc.code)
			}
			_, err = listServices(ctx, conn)
			if got := status.Code(err); got != tc.code {
				t.Fatalf("reflection: %v (code %v), want %v", err, got, tc.code)
			}
			// The server counts a refusal when its side of the handshake
			// ends, which may be after the client gave up: wait for it.
			if tc.cause != "" {
				deadline := time.Now().Add(10 * time.Second)
				for e.refused(t, tc.cause) <= before {
					if time.Now().After(deadline) {
						t.Fatalf("refusal not counted as %s", tc.cause)
					}
					time.Sleep(10 * time.Millisecond)
				}
			}
		})
	}
	t.Run("undecodable request", func(t *testing.T) {
		conn := e.conn(t, &e.agent)
		var reply []byte
		err := conn.Invoke(ctx, healthpb.Health_Check_FullMethodName, []byte{0x0a, 0x64, 0x01, 0x02}, &reply, grpc.ForceCodec(rawCodec{}))
		if status.Code(err) != codes.InvalidArgument {
			t.Fatalf("undecodable health request: %v, want InvalidArgument", err)
		}
	})
}

// TestDaemonReload: Reload swaps in an edited policy at once, and keeps the
// one in force (returning the *policy.LoadError) when the edit is invalid.
func TestDaemonReload(t *testing.T) {
	e := newProbeEnv(t, 1000)
	ctx := context.Background()
	before := e.d.Watcher.Current().Digest()
	path := filepath.Join(e.dir, "policy.hcl")
	edited := "policy \"fleet\" {\n  match {\n    agents = [\"*\"]\n  }\n  tpm = \"required\"\n}\n"
	if err := os.WriteFile(path, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := e.d.Reload(ctx); err != nil {
		t.Fatalf("reload of a valid edit: %v", err)
	}
	after := e.d.Watcher.Current().Digest()
	if after == before {
		t.Fatal("policy digest unchanged after reloading an edited policy")
	}
	if err := os.WriteFile(path, []byte("policy \"fleet\" {\n  tpm = \n"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := e.d.Reload(ctx)
	var le *policy.LoadError
	if !errors.As(err, &le) {
		t.Fatalf("reload of an invalid edit: %v, want a *policy.LoadError", err)
	}
	if e.d.Watcher.Current().Digest() != after {
		t.Fatal("an invalid edit replaced the policy in force")
	}
}
