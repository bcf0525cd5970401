package verifier

import (
	"errors"
	"os"
	"testing"

	"github.com/pulse-attest/pulse/tpm/eventlog"
)

func TestCheckRuntimeHistoryNames(t *testing.T) {
	raw, err := os.ReadFile("../testdata/eventlogs/rhel8-uefi.bin")
	if err != nil {
		t.Fatal(err)
	}
	l, err := eventlog.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if names, err := checkRuntimeHistory(l, 14); err != nil || len(names) != 2 || names[0] != "MokList" || names[1] != "MokListX" {
		t.Fatalf("names %q, %v", names, err)
	}
	if names, err := checkRuntimeHistory(l, 15); err != nil || names == nil || len(names) != 0 {
		t.Fatalf("names %q (nil %t), %v; want an empty list", names, names == nil, err)
	}
}

func TestCheckRuntimeHistory(t *testing.T) {
	raw, err := os.ReadFile("../testdata/eventlogs/rhel8-uefi.bin")
	if err != nil {
		t.Fatal(err)
	}
	real, err := eventlog.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	with := func(extra ...eventlog.Event) *eventlog.Log {
		l := *real
		l.Events = append(append([]eventlog.Event(nil), real.Events...), extra...)
		return &l
	}
	ipl := func(pcr uint32, data string) eventlog.Event {
		return eventlog.Event{Seq: 9999, PCR: pcr, Type: eventlog.EvIPL, Data: []byte(data)}
	}
	for _, c := range []struct {
		name string
		log  *eventlog.Log
		pcr  uint32
		ok   bool
	}{
		{"shim's MokList and MokListX in PCR 14 (real log)", real, 14, true},
		{"nothing in PCR 15", real, 15, true},
		{"MokSBState added", with(ipl(14, "MokSBState\x00")), 14, true},
		{"a runtime record passed off as a firmware event", with(ipl(14, "pulse agent")), 14, false},
		{"another event type", with(eventlog.Event{PCR: 14, Type: eventlog.EvEFIAction, Data: []byte("MokList\x00")}), 14, false},
		{"MokList measured twice", with(ipl(14, "MokList\x00")), 14, false},
		{"an event in PCR 13 when it is the runtime PCR", with(ipl(13, "MokList\x00")), 13, true},
		{"a kernel command line in PCR 12", with(ipl(12, "console=ttyS0")), 12, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := checkRuntimeHistory(c.log, c.pcr)
			if c.ok && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !c.ok && !errors.Is(err, ErrRuntimeHistory) {
				t.Fatalf("got %v, want ErrRuntimeHistory", err)
			}
		})
	}
}
