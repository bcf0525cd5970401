package bpf

import (
	"testing"
	"time"
)

func TestRingWindow(t *testing.T) {
	tests := []struct {
		acked, next, slots uint64
		from, lost         uint64
	}{
		{0, 0, 8, 1, 0},  // empty
		{0, 3, 8, 1, 0},  // three new
		{3, 3, 8, 4, 0},  // all acknowledged
		{0, 8, 8, 1, 0},  // exactly full
		{0, 10, 8, 3, 2}, // two overwritten
		{5, 30, 8, 23, 17},
		{7, 5, 8, 6, 0}, // ack ahead of the ring (fresh map): nothing
	}
	for _, tc := range tests {
		from, lost := ringWindow(tc.acked, tc.next, tc.slots)
		if from != tc.from || lost != tc.lost {
			t.Errorf("ringWindow(%d, %d, %d) = %d, %d; want %d, %d", tc.acked, tc.next, tc.slots, from, lost, tc.from, tc.lost)
		}
	}
}

func comm(s string) [16]int8 {
	var c [16]int8
	for i := 0; i < len(s) && i < 15; i++ {
		c[i] = int8(s[i])
	}
	return c
}

func TestDecodeEvent(t *testing.T) {
	wall := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clk := clocks{wall: wall, boot: 100 * time.Second}

	sig := decodeEvent(sentinelSentinelEvent{
		Seq: 7, BootNs: uint64(99 * time.Second), Kind: 1,
		SenderTgid: 4242, SenderTid: 4243, SenderUid: 0, SenderComm: comm("kill"),
		TargetTgid: 100, TargetTid: 100, TargetComm: comm("pulse-agent"), Signal: 9, Result: 0,
	}, clk)
	want := Event{
		Seq: 7, Kind: EventSignal, Time: wall.Add(-time.Second), SenderPID: 4242, SenderTID: 4243,
		SenderComm: "kill", TargetPID: 100, TargetTID: 100, TargetComm: "pulse-agent",
		Signal: 9, SignalName: "SIGKILL", Outcome: "delivered",
	}
	if sig != want {
		t.Errorf("signal event\n got %+v\nwant %+v", sig, want)
	}

	denied := decodeEvent(sentinelSentinelEvent{Seq: 8, Kind: 3, Signal: 15, Result: -1, SenderComm: comm("bash")}, clk)
	if denied.Kind != EventFortressDenied || denied.Outcome != "denied" || denied.SignalName != "SIGTERM" {
		t.Errorf("fortress event %+v", denied)
	}

	load := decodeEvent(sentinelSentinelEvent{Seq: 9, Kind: 2, ProgType: 6, InsnCnt: 12, ProgName: comm("evil_xdp"), SenderComm: comm("loader")}, clk)
	if load.Kind != EventBPFProgLoad || load.ProgType != "xdp" || load.ProgName != "evil_xdp" || load.InsnCount != 12 || load.Signal != 0 {
		t.Errorf("load event %+v", load)
	}
	unreadable := decodeEvent(sentinelSentinelEvent{Seq: 10, Kind: 2, Result: -1}, clk)
	if unreadable.Outcome != "attr_unreadable" || unreadable.ProgType != "" {
		t.Errorf("unreadable load event %+v", unreadable)
	}
	for _, tc := range []struct {
		code    int32
		outcome string
		signal  int
	}{{9, "killed by SIGKILL", 9}, {0x80 | 6, "killed by SIGABRT", 6}, {1 << 8, "exited 1", 0}, {0, "exited 0", 0}} {
		ex := decodeEvent(sentinelSentinelEvent{Seq: 11, Kind: 4, Result: tc.code, TargetTgid: 100, SenderTgid: 100}, clk)
		if ex.Kind != EventExit || ex.Outcome != tc.outcome || ex.Signal != tc.signal || ex.ExitCode != tc.code || ex.TargetPID != 100 {
			t.Errorf("exit code %#x decoded as %+v", tc.code, ex)
		}
	}
	if k := decodeEvent(sentinelSentinelEvent{Kind: 77}, clk).Kind; k != "unknown_77" {
		t.Errorf("unknown kind decoded as %q", k)
	}
	if o := decodeEvent(sentinelSentinelEvent{Kind: 1, Result: 9}, clk).Outcome; o != "result_9" {
		t.Errorf("unknown result decoded as %q", o)
	}
}

func TestCString(t *testing.T) {
	full := [16]int8{}
	for i := range full {
		full[i] = 'a'
	}
	if got := cString(full[:]); len(got) != 16 {
		t.Errorf("unterminated comm: %q", got)
	}
	empty := comm("")
	if got := cString(empty[:]); got != "" {
		t.Errorf("empty comm: %q", got)
	}
}
