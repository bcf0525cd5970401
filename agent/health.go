package agent

import (
	"bytes"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/tpm"
)

// counters are the health counters a pulse reports.
type counters struct {
	pulsesSent  atomic.Uint64
	pulseErrors atomic.Uint64
	reconnects  atomic.Uint64
}

// health gathers the process's health figures.
func (c *counters) health(started time.Time) *pulsev1.Health {
	h := &pulsev1.Health{
		Uptime:      durationpb.New(time.Since(started).Truncate(time.Millisecond)),
		RssBytes:    rssBytes(),
		PulsesSent:  c.pulsesSent.Load(),
		PulseErrors: c.pulseErrors.Load(),
		Reconnects:  c.reconnects.Load(),
	}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
		h.CpuMicros = uint64(ru.Utime.Sec*1e6+ru.Utime.Usec) + uint64(ru.Stime.Sec*1e6+ru.Stime.Usec)
	}
	return h
}

// rssBytes reads the resident set size from /proc/self/statm (0 if unknown).
func rssBytes() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := bytes.Fields(b)
	if len(f) < 2 {
		return 0
	}
	pages, err := strconv.ParseUint(string(f[1]), 10, 64)
	if err != nil {
		return 0
	}
	return pages * uint64(os.Getpagesize())
}

// TPMHealthOf converts the TPM's dictionary-attack state (or the error
// reading it) into the pulse's Health.tpm.
func TPMHealthOf(st tpm.LockoutState, err error) *pulsev1.TPMHealth {
	if err != nil {
		return &pulsev1.TPMHealth{Error: err.Error()}
	}
	return &pulsev1.TPMHealth{
		LockoutCounter:  st.Counter,
		MaxAuthFail:     st.MaxAuthFail,
		InLockout:       st.InLockout,
		LockoutInterval: durationpb.New(st.Interval),
		LockoutRecovery: durationpb.New(st.Recovery),
	}
}

// health is a pulse's Health: the process's figures and the TPM's
// dictionary-attack state.
func (a *Agent) health() *pulsev1.Health {
	h := a.counters.health(a.started)
	h.Tpm = a.tpmHealth()
	return h
}

// unquotedInLockout reports whether a pulse goes out without a quote
// because the TPM refused the AK in dictionary-attack lockout. Pulse's AK
// has noDA, which the TPM lets sign in lockout; only a DA-protected AK is
// refused. The pulse is then still signed with the mTLS key and its health
// says the TPM is in lockout, so the verifier records TPM_LOCKOUT rather
// than silence; it never verifies anything about the device, and the
// verifier never trusts it (docs/agent.md, "TPM lockout").
func (a *Agent) unquotedInLockout(in *PayloadInput, err error) bool {
	if err == nil || !tpm.IsLockout(err) || !in.Health.GetTpm().GetInLockout() {
		return false
	}
	a.log.Named("pulse").Warn("the tpm refuses to quote in dictionary-attack lockout; sending the pulse unquoted so the verifier learns why",
		"lockout_counter", in.Health.GetTpm().GetLockoutCounter(), "error", err)
	return true
}

// tpmHealth reads the TPM's lockout state for a pulse (nil without a TPM).
func (a *Agent) tpmHealth() *pulsev1.TPMHealth {
	if a.tpm == nil {
		return nil
	}
	h := TPMHealthOf(a.tpm.Lockout())
	a.noteLockout(h)
	return h
}

// noteLockout logs the TPM's lockout state when it changes.
func (a *Agent) noteLockout(h *pulsev1.TPMHealth) {
	a.mu.Lock()
	was := a.inLockout
	a.inLockout = h.GetInLockout()
	a.mu.Unlock()
	switch {
	case h.GetInLockout() && !was:
		a.log.Named("tpm").Warn("tpm is in dictionary-attack lockout: something failed authorisations of DA-protected objects",
			"lockout_counter", h.GetLockoutCounter(), "max_auth_fail", h.GetMaxAuthFail(), "lockout_interval", h.GetLockoutInterval().AsDuration().String())
	case !h.GetInLockout() && was:
		a.log.Named("tpm").Info("tpm lockout ended", "lockout_counter", h.GetLockoutCounter())
	}
}
