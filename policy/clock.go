package policy

import (
	"fmt"
	"time"

	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// Clock is the clock block: what a policy asks of the clock discipline of
// its agents' kernels (adjtimex, as every pulse reports it).
//
//	clock {
//	  require_synchronized = true
//	  max_error            = "500ms"
//	  mode                 = "warn"
//	}
//
// The state is the agent's report, bound to the quote by the payload
// digest but not measured by the TPM: root on the device can report any
// state. The rule catches devices whose time service is broken or absent,
// which makes their pulses CLOCK_DESYNC sooner or later; it proves nothing
// against an attacker (docs/policy.md, "clock").
type Clock struct {
	Rule
	// RequireSynchronized: the kernel must consider the clock synchronised.
	RequireSynchronized bool
	// MaxError is the largest maximum error (the kernel's maxerror) the
	// policy accepts; 0 means not checked.
	MaxError time.Duration
}

// ClockEvidence is the agent kernel's clock discipline state as the pulse
// reports it (adjtimex): a claim, never verified against the TPM.
type ClockEvidence struct {
	// Synchronized: adjtimex did not answer TIME_ERROR and STA_UNSYNC is
	// clear.
	Synchronized bool `json:"synchronized"`
	// MaxErrorUs and EstErrorUs are the kernel's maximum and estimated
	// error of the clock, in microseconds.
	MaxErrorUs int64 `json:"max_error_us"`
	EstErrorUs int64 `json:"est_error_us"`
	// Error says why the agent could not read the state ("" when it could).
	Error string `json:"error,omitempty"`
}

// maxClockError bounds clock.max_error: the kernel caps maxerror at 16 s.
const maxClockError = 16 * time.Second

func (d *decoder) clock(blk *hclsyntax.Block, base settings, file string) *Clock {
	b := d.content(blk.Body, "clock", with(ruleAttrs, "require_synchronized", "max_error"), nil)
	c := &Clock{Rule: d.settings(b, base).rule("clock", blk.TypeRange.Start, file)}
	if a := b.attrs["require_synchronized"]; a != nil {
		if v, ok := d.boolean(a); ok {
			c.RequireSynchronized = v
		}
	}
	if a := b.attrs["max_error"]; a != nil {
		if v, ok := d.duration(a, time.Millisecond, maxClockError); ok {
			c.MaxError = v
		}
	}
	if b.attrs["require_synchronized"] == nil && b.attrs["max_error"] == nil {
		d.errorf(blk.TypeRange, "clock has no rules",
			`say what the agents' clocks must be: require_synchronized = true, max_error = "500ms", or both`)
	}
	return c
}

// clock judges the clock discipline the pulse reports.
func (e *evaluator) clock(ev Evidence) {
	c := e.p.Clock
	if c == nil {
		return
	}
	ck := ev.Clock
	switch {
	case ck == nil:
		e.fail(c.Rule, "the pulse reports nothing about the agent's clock discipline")
		return
	case ck.Error != "":
		e.fail(c.Rule, "the agent could not read its clock discipline: %s", ck.Error)
		return
	}
	if c.RequireSynchronized && !ck.Synchronized {
		e.fail(c.Rule, "the agent's kernel reports its clock unsynchronised (no time service disciplines it)")
	}
	if maxErr := time.Duration(ck.MaxErrorUs) * time.Microsecond; c.MaxError > 0 && maxErr > c.MaxError {
		e.fail(c.Rule, "the agent's clock may be off by up to %s (the kernel's maximum error), more than max_error %s",
			fmtClockError(maxErr), fmtDuration(c.MaxError))
	}
}

// fmtClockError prints a clock error at millisecond precision.
func fmtClockError(d time.Duration) string {
	if d >= time.Second {
		return d.Round(time.Millisecond).String()
	}
	return fmt.Sprintf("%dms", d.Milliseconds())
}
