package eventlog

import (
	"bytes"
	"crypto/subtle"
	"sort"
)

// Verified is the evidence a firmware log yields once it replays against
// PCR values taken from a verified quote.
type Verified struct {
	Bank HashAlg
	// PCRs are the replayed values of the PCRs that matched.
	PCRs map[uint32][]byte
	// Events are the events of the PCRs that replayed, in log order, with
	// DataVerified computed for Bank. Events of PCRs that were not
	// supplied are left out: they are not evidence.
	Events []Event
	// SecureBoot is derived from verified PCR 7 events only, and of those
	// from the pre-OS record (before PCR 7's separator) for the
	// configuration; it is unknown when PCR 7 was not supplied.
	SecureBoot SecureBoot
	// Unverified lists the PCRs the log extends that were not supplied.
	Unverified []uint32
	// StartupLocality is the log's StartupLocality (0 when none).
	StartupLocality uint8
	// Log is the parsed log (all events, verified or not; their
	// DataVerified is false, see Event.DataBound).
	Log *Log
}

// Verify parses a firmware event log, replays the given bank and compares it
// with pcrs (PCR index → value of that bank, e.g. from a verified quote).
//
// It fails with a *ParseError for a malformed log, a *ReplayError (errors.Is
// ErrReplayMismatch) naming every supplied PCR whose value the log does not
// reproduce, a *DataError (ErrDataDigestMismatch) when an event whose
// digest must be the hash of its data is not, and a *StructureError
// (ErrMalformed, and the rule's own sentinel such as
// ErrSecureBootAfterSeparator) when the events are not where the PC Client
// Platform Firmware Profile puts them (see CheckStructure): a log can replay
// and still be refused, e.g. one whose PCR 7 was extended after boot with a
// Secure Boot variable. The checks run in that order. Supplied PCRs the log never
// extends are ignored (the OS may extend them later); PCRs the log extends
// but that were not supplied are listed in Unverified and their events are
// not returned. A PCR the caller extends after the firmware (a runtime PCR)
// must not be supplied here; use Log.Replay for its starting value.
func Verify(raw []byte, bank HashAlg, pcrs map[uint32][]byte) (*Verified, error) {
	l, err := Parse(raw)
	if err != nil {
		return nil, err
	}
	return l.Verify(bank, pcrs)
}

// Verify is the package-level Verify on an already parsed log. It does not
// modify l, so one parsed log may be verified from several goroutines.
func (l *Log) Verify(bank HashAlg, pcrs map[uint32][]byte) (*Verified, error) {
	replayed, err := l.Replay(bank)
	if err != nil {
		return nil, err
	}
	v := &Verified{Bank: bank, PCRs: map[uint32][]byte{}, StartupLocality: l.StartupLocality, Log: l}
	var rerr *ReplayError
	for _, p := range l.PCRs() {
		got := replayed[p]
		want, ok := pcrs[p]
		if !ok {
			v.Unverified = append(v.Unverified, p)
			continue
		}
		if len(want) != len(got) || subtle.ConstantTimeCompare(want, got) != 1 {
			if rerr == nil {
				rerr = &ReplayError{Bank: bank, Want: map[uint32][]byte{}, Got: map[uint32][]byte{}}
			}
			rerr.Mismatched = append(rerr.Mismatched, p)
			rerr.Want[p] = bytes.Clone(want)
			rerr.Got[p] = got
			continue
		}
		v.PCRs[p] = got
	}
	if rerr != nil {
		sort.Slice(rerr.Mismatched, func(i, j int) bool { return rerr.Mismatched[i] < rerr.Mismatched[j] })
		return nil, rerr
	}
	matches, err := l.matchAll(bank)
	if err != nil {
		return nil, err
	}
	if err := l.CheckStructure(); err != nil {
		return nil, err
	}
	v.Events = make([]Event, 0, len(l.Events))
	for i := range l.Events {
		ev := l.Events[i]
		if _, ok := v.PCRs[ev.PCR]; !ok {
			continue
		}
		ev.DataVerified = ev.Type.binding() != bindNone && matches[i] == matchFull
		v.Events = append(v.Events, ev)
	}
	if _, ok := v.PCRs[7]; ok {
		v.SecureBoot = deriveSecureBoot(v.Events, func(ev *Event) bool { return ev.DataVerified }, false)
	}
	return v, nil
}
