package agent

import (
	"fmt"

	"golang.org/x/sys/unix"

	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
)

// ClockReader reads the kernel's clock discipline state (what adjtimex(2)
// with modes 0 answers): the timex structure and the clock state it
// returned. Tests inject one; AdjtimexReader is the kernel's.
type ClockReader func() (unix.Timex, int, error)

// AdjtimexReader asks the kernel: adjtimex with modes 0 reads and changes
// nothing, and needs no privilege.
func AdjtimexReader() (unix.Timex, int, error) {
	var tx unix.Timex // Modes 0: read only
	state, err := unix.Adjtimex(&tx)
	if err != nil {
		return unix.Timex{}, 0, fmt.Errorf("adjtimex: %w", err)
	}
	return tx, state, nil
}

// ClockSyncOf converts what adjtimex answered into the pulse's ClockSync.
// The clock is synchronised when the kernel did not answer TIME_ERROR and
// STA_UNSYNC is clear (what ntp_gettime and timedatectl's "System clock
// synchronized" also read); the kernel's estimated and maximum errors are
// in microseconds.
func ClockSyncOf(tx unix.Timex, state int, err error) *pulsev1.ClockSync {
	if err != nil {
		return &pulsev1.ClockSync{Error: err.Error()}
	}
	return &pulsev1.ClockSync{
		Synchronized: state != unix.TIME_ERROR && tx.Status&unix.STA_UNSYNC == 0,
		EstErrorUs:   int64(tx.Esterror),
		MaxErrorUs:   int64(tx.Maxerror),
		Status:       int32(tx.Status),
		State:        int32(state),
	}
}

// clockSync reads the clock discipline state for a pulse.
func (a *Agent) clockSync() *pulsev1.ClockSync {
	tx, state, err := a.readClock()
	return ClockSyncOf(tx, state, err)
}
