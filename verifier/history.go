package verifier

import (
	"errors"
	"fmt"

	"github.com/pulse-attest/pulse/tpm/eventlog"
)

// ErrRuntimeHistory is the firmware log naming events in the runtime PCR
// that Pulse cannot attribute to the boot chain.
var ErrRuntimeHistory = errors.New("runtime PCR history")

// mokVariables are the MOK state variables shim measures into PCR 14
// before the OS starts, each an EV_IPL event whose data is the variable's
// name (shim's mok.c; the PC Client profile leaves PCR 14 to the boot
// loader and OS). Nothing else of the pre-OS boot extends a PCR Pulse
// accepts as its runtime PCR (11-15).
var mokVariables = map[string]bool{
	"MokList\x00":        true,
	"MokListX\x00":       true,
	"MokSBState\x00":     true,
	"MokListTrusted\x00": true,
	"MokPolicy\x00":      true,
}

// checkRuntimeHistory checks what the firmware log says happened to the
// runtime PCR before the runtime log's first record: the verifier starts
// the runtime replay from that value, so the events are not verified by
// anything but the final replay, and root could pass off a runtime record
// it wants hidden (a backdoored agent's launcher measurement) as one of
// them. Only shim's MOK measurements are accepted, each at most once;
// anything else makes the log malformed. What remains: root can disguise
// one record as a MOK variable the real boot did not measure (see
// docs/threat-model.md, "The runtime PCR").
//
// It returns the names of the accepted events, in order (empty, not nil,
// when there are none): policy's measured_boot.runtime_pcr_history pins
// them exactly per device class, which closes that last gap.
func checkRuntimeHistory(l *eventlog.Log, pcr uint32) ([]string, error) {
	seen := map[string]bool{}
	names := []string{}
	for _, e := range l.Events {
		if e.PCR != pcr {
			continue
		}
		if e.Type != eventlog.EvIPL || !mokVariables[string(e.Data)] {
			return nil, fmt.Errorf("%w: event %d (%s) in runtime PCR %d is not a measurement of shim's MOK state", ErrRuntimeHistory, e.Seq, e.Type, pcr)
		}
		if seen[string(e.Data)] {
			return nil, fmt.Errorf("%w: event %d measures %q into PCR %d a second time", ErrRuntimeHistory, e.Seq, string(e.Data[:len(e.Data)-1]), pcr)
		}
		seen[string(e.Data)] = true
		names = append(names, string(e.Data[:len(e.Data)-1]))
	}
	return names, nil
}
