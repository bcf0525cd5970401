package policy

import (
	"fmt"
	"time"

	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// DefaultMaxOffline is how long a planned stop keeps an agent OFFLINE
// (instead of BLINDED) when the policy's planned_stop block does not say.
const DefaultMaxOffline = time.Hour

// MaxStopSenderLen bounds a stopped_by pattern: the kernel's comm, which
// is what Sentinel records about a signal's sender, is 15 characters.
const MaxStopSenderLen = 15

// PlannedStop is the planned_stop block: what an orderly stop of the agent
// (SIGTERM, announced in a final signed and quoted pulse) means.
//
//	planned_stop {
//	  stopped_by  = ["systemd"]
//	  max_offline = "1h"
//	}
type PlannedStop struct {
	// StoppedBy are globs over the sender's command name (comm) as
	// Sentinel recorded the terminating signal; a match makes the stop
	// expected (severity 4) without a maintenance window. The name is what
	// the kernel reported about the sending process, carried in the
	// agent's signed and quoted pulse: root on the device can choose it.
	StoppedBy []string
	// MaxOffline is how long after a planned stop the agent stays OFFLINE
	// rather than BLINDED when no maintenance window is open.
	MaxOffline time.Duration
	Pos        Pos
}

// StopSender reports whether comm, the recorded sender of the signal that
// stopped the agent, is one stopped_by allows; it returns the pattern that
// matched. No planned_stop block, or no recorded sender, allows nothing.
func (p *Policy) StopSender(comm string) (string, bool) {
	if p == nil || p.PlannedStop == nil || comm == "" {
		return "", false
	}
	for _, pat := range p.PlannedStop.StoppedBy {
		if Glob(pat, comm) {
			return pat, true
		}
	}
	return "", false
}

// MaxOffline is how long a planned stop shelters the agent from BLINDED
// when no maintenance window is open (DefaultMaxOffline without a
// planned_stop block).
func (p *Policy) MaxOffline() time.Duration {
	if p == nil || p.PlannedStop == nil || p.PlannedStop.MaxOffline <= 0 {
		return DefaultMaxOffline
	}
	return p.PlannedStop.MaxOffline
}

func (d *decoder) plannedStop(blk *hclsyntax.Block) *PlannedStop {
	b := d.content(blk.Body, "planned_stop", []string{"stopped_by", "max_offline"}, nil)
	ps := &PlannedStop{MaxOffline: DefaultMaxOffline, Pos: posOf(blk.TypeRange)}
	if a := b.attrs["stopped_by"]; a != nil {
		if items, ok := d.strList(a); ok {
			for _, it := range items {
				if err := ValidateGlob(it.s); err != nil {
					d.errorf(it.rng, fmt.Sprintf("bad glob %q in \"stopped_by\"", it.s), "%s; * matches any run, ? one character, [a-z] a range, \\ escapes",
						err.(*GlobError).Detail())
					continue
				}
				if it.s == "" || len(it.s) > MaxStopSenderLen && !hasMeta(it.s) {
					d.errorf(it.rng, fmt.Sprintf("stopped_by entry %q can never match", it.s),
						"entries match the sending process's command name as the kernel records it (comm: 1 to 15 characters, e.g. \"systemd\")")
					continue
				}
				ps.StoppedBy = append(ps.StoppedBy, it.s)
			}
		}
	}
	if a := b.attrs["max_offline"]; a != nil {
		if v, ok := d.duration(a, time.Minute, 7*24*time.Hour); ok {
			ps.MaxOffline = v
		}
	}
	return ps
}

// hasMeta reports whether a glob has a wildcard (so its length is not the
// length of what it matches).
func hasMeta(s string) bool {
	for _, r := range s {
		switch r {
		case '*', '?', '[', '\\':
			return true
		}
	}
	return false
}
