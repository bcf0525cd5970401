package main

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pulse-attest/pulse/internal/pki"
	"github.com/pulse-attest/pulse/internal/testutil"
	"github.com/pulse-attest/pulse/verifier"
	"github.com/pulse-attest/pulse/verifier/config"
)

// TestGRPCEcosystemTools runs the README's grpcurl lines and a
// grpc_health_probe check, the real tools, against a verifier on loopback:
// with an agent certificate they list the services and report SERVING;
// without one, or with a verifier's certificate, they are refused.
func TestGRPCEcosystemTools(t *testing.T) {
	tools := testutil.RequireTools(t, "grpcurl", "grpc-health-probe")
	dir := t.TempDir()
	cfgPath, tp := writeConfig(t, dir)
	ac, err := pki.Issue(tp.CA, pki.Request{Role: pki.RoleAgent, ID: "edge-grpcurl"})
	if err != nil {
		t.Fatal(err)
	}
	agentCert, agentKey := filepath.Join(dir, "agent.pem"), filepath.Join(dir, "agent-key.pem")
	if err := ac.WriteFiles(agentCert, agentKey, false); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d, err := verifier.Start(ctx, cfg, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	// The verifier's certificate names localhost.
	addr := strings.Replace(d.Addr(), "127.0.0.1", "localhost", 1)
	run := func(name string, args ...string) (string, error) {
		cctx, ccancel := context.WithTimeout(ctx, time.Minute)
		defer ccancel()
		out, err := exec.CommandContext(cctx, tools[name], args...).CombinedOutput()
		return string(out), err
	}
	agentTLS := []string{"-cert", agentCert, "-key", agentKey, "-cacert", tp.CAFile}
	for _, tc := range []struct {
		name string
		tool string
		args []string
		ok   bool
		want string
	}{
		{"grpcurl list", "grpcurl", append(agentTLS, addr, "list"), true, "pulse.v1.Attestation"},
		{"grpcurl describe", "grpcurl", append(agentTLS, addr, "describe", "pulse.v1.Attestation"), true, "rpc Pulse"},
		{"grpcurl health", "grpcurl", append(agentTLS, addr, "grpc.health.v1.Health/Check"), true, `"status": "SERVING"`},
		{"grpc-health-probe", "grpc-health-probe", []string{"-addr", addr, "-tls", "-tls-ca-cert", tp.CAFile,
			"-tls-client-cert", agentCert, "-tls-client-key", agentKey}, true, "SERVING"},
		{"grpcurl without a client certificate", "grpcurl", []string{"-connect-timeout", "3", "-cacert", tp.CAFile, addr, "list"}, false, ""},
		{"grpcurl with the verifier's certificate", "grpcurl", []string{"-connect-timeout", "3", "-cert", tp.CertFile, "-key", tp.KeyFile, "-cacert", tp.CAFile, addr, "list"}, false, ""},
		{"grpc-health-probe without a client certificate", "grpc-health-probe", []string{"-addr", addr, "-tls", "-tls-ca-cert", tp.CAFile}, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := run(tc.tool, tc.args...)
			if tc.ok {
				if err != nil || !strings.Contains(out, tc.want) {
					t.Fatalf("%s: %v\n%s\nwant %q", tc.tool, err, out, tc.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("%s succeeded without an agent certificate:\n%s", tc.tool, out)
			}
			if strings.Contains(out, "pulse.v1.Attestation") || strings.Contains(out, "SERVING") {
				t.Fatalf("%s refused but printed the server's answer:\n%s", tc.tool, out)
			}
		})
	}
}
