package verifier

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"

	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
)

// HealthServices are the names the agent listener's gRPC health service
// answers for: "" (the whole server) and the attestation service.
var HealthServices = []string{"", pulsev1.Attestation_ServiceDesc.ServiceName}

// registerEcosystem adds the standard gRPC health service
// (grpc.health.v1.Health, for grpc_health_probe-style checks) and server
// reflection (v1 and v1alpha, for grpcurl) to the agent listener. Both sit
// behind the same mutual TLS, certificate guard and decode guard as the
// attestation service: a caller needs a valid, unrevoked agent certificate,
// and an undecodable request is refused like any other. Reflection describes
// only the public protocol (proto/pulse/v1), nothing of the verifier's state.
func registerEcosystem(srv *grpc.Server, decode *decodeGuard) *health.Server {
	h := health.NewServer()
	for _, s := range HealthServices {
		h.SetServingStatus(s, healthpb.HealthCheckResponse_SERVING)
	}
	srv.RegisterService(decode.Desc(&healthpb.Health_ServiceDesc), h)
	opts := reflection.ServerOptions{Services: srv}
	srv.RegisterService(decode.Desc(&reflectionv1.ServerReflection_ServiceDesc), reflection.NewServerV1(opts))
	srv.RegisterService(decode.Desc(&reflectionv1alpha.ServerReflection_ServiceDesc), reflection.NewServer(opts))
	return h
}

// Reload re-reads what an operator edits while the verifier runs, now
// rather than at the next poll: the certificate, key and CA files (tls
// block), the policy files and the revocation list. systemd's ExecReload
// (SIGHUP) calls it. A file that does not load keeps the previous one in
// force (and is logged and alerted as at a poll); the errors are returned
// joined.
func (d *Daemon) Reload(ctx context.Context) error {
	var errs []error
	if d.certReloader != nil {
		if err := d.certReloader.Reload(); err != nil {
			errs = append(errs, fmt.Errorf("verifier: reload certificates: %w", err))
		}
	}
	if _, err := d.Watcher.Check(); err != nil {
		errs = append(errs, fmt.Errorf("verifier: reload policy: %w", err))
	}
	if err := d.RefreshRevocations(ctx); err != nil {
		errs = append(errs, fmt.Errorf("verifier: reload revocations: %w", err))
	}
	err := errors.Join(errs...)
	if err != nil {
		d.log.Warn("reload incomplete", "error", err)
	} else {
		d.log.Info("reloaded certificates, policy and revocations", "policy_digest", d.Watcher.Current().Digest())
	}
	return err
}
