package agent

import (
	"errors"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
)

func TestClockSyncOf(t *testing.T) {
	tests := []struct {
		name  string
		tx    unix.Timex
		state int
		err   error
		want  *pulsev1.ClockSync
	}{
		{"synchronised", unix.Timex{Status: unix.STA_PLL, Esterror: 120, Maxerror: 4500}, unix.TIME_OK, nil,
			&pulsev1.ClockSync{Synchronized: true, EstErrorUs: 120, MaxErrorUs: 4500, Status: unix.STA_PLL, State: unix.TIME_OK}},
		{"leap second pending", unix.Timex{Status: unix.STA_PLL | unix.STA_INS, Esterror: 1, Maxerror: 2}, unix.TIME_INS, nil,
			&pulsev1.ClockSync{Synchronized: true, EstErrorUs: 1, MaxErrorUs: 2, Status: unix.STA_PLL | unix.STA_INS, State: unix.TIME_INS}},
		{"time error", unix.Timex{Status: unix.STA_UNSYNC, Esterror: 1600000, Maxerror: 16000000}, unix.TIME_ERROR, nil,
			&pulsev1.ClockSync{EstErrorUs: 1600000, MaxErrorUs: 16000000, Status: unix.STA_UNSYNC, State: unix.TIME_ERROR}},
		{"unsync flag without time error", unix.Timex{Status: unix.STA_UNSYNC}, unix.TIME_OK, nil,
			&pulsev1.ClockSync{Status: unix.STA_UNSYNC, State: unix.TIME_OK}},
		{"time error without unsync flag", unix.Timex{}, unix.TIME_ERROR, nil,
			&pulsev1.ClockSync{State: unix.TIME_ERROR}},
		{"adjtimex failed", unix.Timex{}, 0, errors.New("adjtimex: operation not permitted"),
			&pulsev1.ClockSync{Error: "adjtimex: operation not permitted"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := ClockSyncOf(tc.tx, tc.state, tc.err)
			if !proto.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// TestAdjtimexReaderOnThisKernel reads the real kernel's clock discipline
// and checks it against clock_adjtime(CLOCK_REALTIME), the kernel's other
// interface to the same state. On this project's test machine no NTP
// daemon disciplines the clock: the kernel answers TIME_ERROR and the
// pulse reports the clock unsynchronised.
func TestAdjtimexReaderOnThisKernel(t *testing.T) {
	tx, state, err := AdjtimexReader()
	if err != nil {
		t.Fatal(err)
	}
	var other unix.Timex
	otherState, err := unix.ClockAdjtime(unix.CLOCK_REALTIME, &other)
	if err != nil {
		t.Fatal(err)
	}
	if state != otherState || tx.Status != other.Status {
		t.Fatalf("adjtimex says state %d status %#x; clock_adjtime says %d %#x", state, tx.Status, otherState, other.Status)
	}
	cs := ClockSyncOf(tx, state, nil)
	t.Logf("this kernel: state %d (TIME_ERROR is %d), status %#x, synchronised %t, est error %d us, max error %d us",
		state, unix.TIME_ERROR, tx.Status, cs.GetSynchronized(), cs.GetEstErrorUs(), cs.GetMaxErrorUs())
	if state == unix.TIME_ERROR && cs.GetSynchronized() {
		t.Fatal("the kernel answered TIME_ERROR but the pulse would say synchronised")
	}
	if cs.GetState() != int32(state) || cs.GetStatus() != int32(tx.Status) {
		t.Fatalf("ClockSync %v does not carry what the kernel answered", cs)
	}
}

// TestPulseClock: every pulse carries the clock discipline state its
// reader gave (an injected synchronised reader here; the kernel's below)
// and the time of the agent's wall clock, misset by an hour through
// Options.Now: the agent sends what its clock says.
func TestPulseClock(t *testing.T) {
	h := newHarness(t, harnessOpts{tpm: true})
	synced := func() (unix.Timex, int, error) {
		return unix.Timex{Status: unix.STA_PLL, Esterror: 250, Maxerror: 8000}, unix.TIME_OK, nil
	}
	const off = time.Hour
	a, err := New(Options{Config: h.cfg, Logger: h.log, TPM: h.tpm, Clock: synced,
		Now: func() time.Time { return time.Now().Add(off) }})
	if err != nil {
		t.Fatal(err)
	}
	h.start(a)
	rs := h.fv.waitPulses(t, 2, 60*time.Second)
	requireAccepted(t, rs)
	for i, r := range rs {
		cs := r.Payload.GetClockSync()
		if !cs.GetSynchronized() || cs.GetEstErrorUs() != 250 || cs.GetMaxErrorUs() != 8000 || cs.GetState() != unix.TIME_OK {
			t.Fatalf("pulse %d clock sync %v, want the injected reader's", i, cs)
		}
		if d := time.Until(r.Payload.GetTime().AsTime()); d < off-time.Minute || d > off+time.Minute {
			t.Fatalf("pulse %d time is %s from now, want about %s (the misset clock)", i, d.Round(time.Second), off)
		}
	}
	h.stopAgent()

	// The kernel's reader (the default).
	n := len(h.fv.received())
	h.start(nil)
	rs = h.fv.waitPulses(t, n+1, 60*time.Second)
	_, state, err := AdjtimexReader()
	if err != nil {
		t.Fatal(err)
	}
	cs := rs[n].Payload.GetClockSync()
	if cs.GetState() != int32(state) || cs.GetError() != "" {
		t.Fatalf("clock sync %v, the kernel says state %d", cs, state)
	}
	if d := time.Since(rs[n].Payload.GetTime().AsTime()); d < -time.Minute || d > time.Minute {
		t.Fatalf("default clock: pulse time is %s off", d)
	}
}
