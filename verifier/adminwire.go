package verifier

import (
	"context"
	"fmt"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pulse-attest/pulse/internal/tlsconfig"
	"github.com/pulse-attest/pulse/policy"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/verifier/admin"
	"github.com/pulse-attest/pulse/verifier/alert"
	"github.com/pulse-attest/pulse/verifier/config"
	"github.com/pulse-attest/pulse/verifier/metrics"
)

// watchComponents makes the metrics read the policy watcher's and the alert
// dispatcher's own counters at every scrape.
func watchComponents(m *metrics.Metrics, w *policy.Watcher, d *alert.Dispatcher) error {
	m.WatchPolicy(func() metrics.PolicyStatus {
		s := w.Stats()
		return metrics.PolicyStatus{Loads: s.Loads, Rejected: s.Rejected, Failing: s.Failing, Digest: s.Digest, LoadedAt: s.LoadedAt}
	})
	if d == nil {
		return nil
	}
	return m.WatchAlertDispatch(func() metrics.DispatchCounts {
		s := d.Stats()
		out := metrics.DispatchCounts{Rejected: s.Rejected, AuditFailed: s.AuditFailed, Webhooks: map[string]metrics.WebhookCounts{}}
		for name, h := range s.Webhooks {
			out.Webhooks[name] = metrics.WebhookCounts{Delivered: h.Delivered, Failed: h.Failed, Dropped: h.Dropped, Retried: h.Retried, Queued: h.Queued,
				DroppedBySeverity: h.DroppedBySeverity}
		}
		return out
	})
}

// startAdmin starts the operator listener on cfg.AdminListen (skip the call
// when it is empty). tokenFile is the new config key admin_token_file
// (empty: operator certificates only). certs serves the certificate and
// re-reads the operator CA file (the daemon runs its loop).
func startAdmin(cfg *config.Config, tokenFile string, v *Verifier, reg *prometheus.Registry, log hclog.Logger, certs *tlsconfig.Reloader) (*admin.Server, error) {
	var tokens map[string]string
	if tokenFile != "" {
		var err error
		if tokens, err = admin.ReadTokenFile(tokenFile); err != nil {
			return nil, fmt.Errorf("verifier: %w", err)
		}
		if _, unnamed := tokens[""]; unnamed {
			log.Warn("the admin token file holds one unnamed token: its actions are recorded as \"token\", not attributable to an operator; give each operator a name:token line (docs/operations.md)")
		}
	}
	h, err := admin.New(admin.Options{Backend: AdminBackend{V: v}, Registry: reg, Logger: log, Tokens: tokens})
	if err != nil {
		return nil, err
	}
	tlsCfg, _, err := admin.TLSConfig(admin.TLSOptions{Reloader: certs,
		OperatorCAFile: cfg.TLS.OperatorCA, AllowNoClientCert: len(tokens) > 0, Logger: log.Named("admin_tls")})
	if err != nil {
		return nil, err
	}
	return admin.Listen(cfg.AdminListen, tlsCfg, h, log)
}

var _ admin.LiveSource = AdminBackend{}

// AgentVerdicts feeds the admin listener's live updates.
func (b AdminBackend) AgentVerdicts(ctx context.Context) (map[string]admin.VerdictReason, error) {
	vs, err := b.V.store.AgentVerdicts(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string]admin.VerdictReason, len(vs))
	for id, v := range vs {
		out[id] = admin.VerdictReason{Verdict: pulsev1.Verdict(v.Verdict).String(), Reason: pulsev1.Reason(v.Reason).String()}
	}
	return out, nil
}
