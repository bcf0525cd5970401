package agent

import (
	"context"
	"errors"
	"io"
	"net/netip"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pulse-attest/pulse/internal/directivesig"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
)

// startDirectives keeps a Directives stream open on s until the returned
// stop function is called, reopening it with backoff when it breaks.
func (a *Agent) startDirectives(parent context.Context, s *session) (stop func()) {
	ctx, cancel := context.WithCancel(parent)
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.runDirectives(ctx, s)
	}()
	return func() {
		cancel()
		<-done
	}
}

func (a *Agent) runDirectives(ctx context.Context, s *session) {
	log := a.log.Named("directives")
	b := Backoff{Min: time.Second, Max: maxRetryWait}
	for ctx.Err() == nil {
		opened := time.Now()
		err := a.readDirectives(ctx, s)
		if ctx.Err() != nil {
			return
		}
		if time.Since(opened) > time.Minute {
			// The stream lived a while: the verifier was there.
			b.Reset()
		}
		code := status.Code(err)
		switch code {
		case codes.Unavailable, codes.Canceled, codes.DeadlineExceeded:
			// The verifier is away: reopen within the same cap as pulses.
			b.limit(a.retryBounds(a.Interval()))
		default:
			b.limit(time.Second, maxRetryWait)
		}
		wait := b.Next()
		switch code {
		case codes.Unavailable, codes.Canceled, codes.DeadlineExceeded:
			log.Debug("directives stream closed, reopening", "error", err, "retry_in", wait.Round(time.Millisecond).String())
		default:
			log.Warn("directives stream failed, reopening", "error", err, "retry_in", wait.Round(time.Millisecond).String())
		}
		if sleep(ctx, wait) != nil {
			return
		}
	}
}

// readDirectives opens the stream and handles directives until it ends.
func (a *Agent) readDirectives(ctx context.Context, s *session) error {
	stream, err := s.client.Directives(ctx, &pulsev1.DirectivesRequest{})
	if err != nil {
		return err
	}
	a.log.Named("directives").Debug("directives stream open")
	for {
		d, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return status.Error(codes.Unavailable, "verifier closed the directives stream")
		}
		if err != nil {
			return err
		}
		a.handleDirective(d, s.agentID)
	}
}

// handleDirective carries out one directive for the agent named audience.
// Quarantine and release are acted on only from a copy signed with the
// verifier's directive key for this agent, fresh and never seen before
// (openDirective); anything else is refused and logged. They go through
// the BPF seam; their effect shows in the next pulse's quarantined list,
// which is sent at once.
func (a *Agent) handleDirective(d *pulsev1.Directive, audience string) {
	log := a.log.Named("directives").With("directive_id", d.GetId())
	if needsSignature(d) {
		signed, err := a.openDirective(d, audience)
		if err != nil {
			log.Warn("directive refused", "directive", directivesig.Kind(d), "error", err)
			a.noteRefused()
			return
		}
		d = signed
		log = a.log.Named("directives").With("directive_id", d.GetId())
	}
	switch k := d.GetKind().(type) {
	case *pulsev1.Directive_NextNonce:
		// Never log the nonce itself.
		a.noteNonce(k.NextNonce, nil)
		log.Debug("received next nonce")
	case *pulsev1.Directive_SetInterval:
		iv := k.SetInterval.AsDuration()
		if iv <= 0 {
			log.Warn("ignoring set_interval with a non-positive interval", "interval", iv.String())
			return
		}
		a.setInterval(iv, "directive")
	case *pulsev1.Directive_SendFirmwareLog:
		a.mu.Lock()
		a.sendFirmware = true
		a.mu.Unlock()
		log.Info("verifier asked for the whole firmware log; pulsing now")
		a.PulseNow()
	case *pulsev1.Directive_PulseNow:
		log.Info("verifier asked for a pulse now")
		a.PulseNow()
	case *pulsev1.Directive_Quarantine:
		a.applyAddresses(log, "quarantine", k.Quarantine.GetAddresses(), k.Quarantine.GetOffender(), a.quarantineUnlessProtected,
			"reason", k.Quarantine.GetReason().String())
		a.PulseNow()
	case *pulsev1.Directive_Release:
		a.applyAddresses(log, "release", k.Release.GetAddresses(), k.Release.GetOffender(), a.bpf.Release)
		a.PulseNow()
	case *pulsev1.Directive_Rotate:
		log.Info("verifier asked for certificate rotation; install a new certificate and key at the configured paths (the agent picks them up without a restart)",
			"cert_file", a.cfg.TLS.Cert)
	default:
		log.Warn("ignoring unknown directive (verifier newer than this agent?)")
	}
}

func (a *Agent) applyAddresses(log interface {
	Info(string, ...any)
	Error(string, ...any)
	Warn(string, ...any)
}, what string, addrs []string, offender string, apply func(netip.Addr) error, extra ...any) {
	var ok, failed []string
	for _, s := range addrs {
		addr, err := netip.ParseAddr(strings.TrimSpace(s))
		if err != nil {
			log.Warn("ignoring bad address in "+what+" directive", append([]any{"address", s, "error", err}, extra...)...)
			failed = append(failed, s)
			continue
		}
		addr = addr.Unmap()
		if err := apply(addr); err != nil {
			log.Error(what+" failed", append([]any{"address", addr.String(), "offender", offender, "error", err}, extra...)...)
			failed = append(failed, s)
			continue
		}
		ok = append(ok, addr.String())
	}
	args := append([]any{"offender", offender, "applied", strings.Join(ok, ","), "failed", strings.Join(failed, ",")}, extra...)
	if len(failed) > 0 {
		log.Warn(what+" directive partly applied; the next pulse reports the actual drop list", args...)
		return
	}
	log.Info(what+" directive applied", args...)
}
