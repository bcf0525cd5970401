package verifier

import (
	"fmt"
	"strconv"
	"time"

	"github.com/pulse-attest/pulse/policy"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
)

// timeError is adjtimex's TIME_ERROR: the kernel considers its clock
// unsynchronised.
const timeError = 5

// maxClockNote bounds how much of the agent's own error text a message
// quotes.
const maxClockNote = 120

// clockSyncNote says, for a pulse whose time is outside the skew, what the
// agent's kernel reports about its clock discipline (adjtimex, every
// pulse): an unsynchronised clock says its time service is broken or
// absent, a synchronised one that its time source is off. The report is a
// claim the TPM does not measure; the TPM-clock cross-check (tpmClockHint)
// is what tells a misset clock from a stale pulse.
func clockSyncNote(cs *pulsev1.ClockSync) string {
	switch {
	case cs == nil:
		return "; the agent reports nothing about its clock's sync state"
	case cs.GetError() != "":
		return "; the agent could not read its clock's sync state: " + quoteClip(cs.GetError())
	case !cs.GetSynchronized():
		state := fmt.Sprintf("state %d", cs.GetState())
		if cs.GetState() == timeError {
			state = "TIME_ERROR"
		}
		return fmt.Sprintf("; the agent's kernel reports its clock unsynchronised (adjtimex %s, maximum error %s): its time service (NTP) is not running or not synchronised",
			state, usDuration(cs.GetMaxErrorUs()))
	default:
		return fmt.Sprintf("; the agent's kernel reports its clock synchronised (maximum error %s): its time source itself is off",
			usDuration(cs.GetMaxErrorUs()))
	}
}

// clockEvidence is the policy's view of the reported clock discipline (nil
// when the pulse reports none).
func clockEvidence(cs *pulsev1.ClockSync) *policy.ClockEvidence {
	if cs == nil {
		return nil
	}
	ev := &policy.ClockEvidence{Synchronized: cs.GetSynchronized(), MaxErrorUs: cs.GetMaxErrorUs(), EstErrorUs: cs.GetEstErrorUs()}
	if cs.GetError() != "" {
		ev.Error = clipClock(cs.GetError())
	}
	return ev
}

func usDuration(us int64) string {
	return (time.Duration(us) * time.Microsecond).Round(time.Millisecond).String()
}

// clipClock bounds text the agent chose before it enters a message.
func clipClock(s string) string {
	r := []rune(s)
	if len(r) > maxClockNote {
		return string(r[:maxClockNote]) + "…"
	}
	return s
}

func quoteClip(s string) string { return strconv.Quote(clipClock(s)) }
