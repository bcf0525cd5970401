package eventlog

import (
	"bytes"
	"fmt"
	"sort"
)

// dataMatch compares one bank's digest of the event with its data.
type dataMatch int

const (
	matchUnknown dataMatch = iota // not computed yet
	matchNone                     // the digest is not the hash of the data
	matchFull                     // digest == H(data)
	matchPartial                  // digest == H(part of data) (EFI boot variable quirk)
)

func (e *Event) matchData(alg HashAlg) dataMatch {
	for i, d := range e.Digests {
		if d.Alg == alg && i < len(e.match) && e.match[i] != matchUnknown {
			return e.match[i]
		}
	}
	return e.computeMatch(alg)
}

func (e *Event) computeMatch(alg HashAlg) dataMatch {
	if e.Type.binding() == bindNone {
		return matchNone
	}
	d := e.Digest(alg)
	if d == nil || !alg.Replayable() {
		return matchNone
	}
	if bytes.Equal(digestOf(alg, e.Data), d) {
		return matchFull
	}
	switch e.Type.binding() {
	case bindVariable:
		if v, err := ParseUEFIVariable(e.Data); err == nil && bytes.Equal(digestOf(alg, v.Data), d) {
			return matchPartial
		}
		// shim before commit 8a27a480 logs authority events one byte longer
		// than what it hashes (go-attestation issue 157).
		if n := len(e.Data); e.Type == EvEFIVariableAuthority && n > 0 && bytes.Equal(digestOf(alg, e.Data[:n-1]), d) {
			return matchPartial
		}
	case bindOpportunistic:
		// Strings are often measured without their terminating NUL (one
		// byte for ASCII, two for UCS-2).
		for _, k := range []int{1, 2} {
			if n := len(e.Data); n >= k && allZero(e.Data[n-k:]) && bytes.Equal(digestOf(alg, e.Data[:n-k]), d) {
				return matchFull
			}
		}
	}
	return matchNone
}

// dataBound reports whether the event's data is bound by its digest in every
// given bank (every replayable bank the event carries when banks is nil).
func (e *Event) dataBound(banks []HashAlg) bool {
	if e.Type.binding() == bindNone {
		return false
	}
	n := 0
	for _, d := range e.Digests {
		if !d.Alg.Replayable() {
			continue
		}
		if banks != nil && !containsAlg(banks, d.Alg) {
			continue
		}
		if e.matchData(d.Alg) != matchFull {
			return false
		}
		n++
	}
	return n > 0
}

// checkData returns a *DataError when the event type requires its digest to
// be the hash of its data and it is not, in the given bank.
func (e *Event) checkData(alg HashAlg) error {
	switch e.Type.binding() {
	case bindStrict:
		if e.matchData(alg) == matchFull {
			return nil
		}
	case bindVariable:
		if e.matchData(alg) != matchNone {
			return nil
		}
	default:
		return nil
	}
	return &DataError{Seq: e.Seq, Offset: e.Offset, PCR: e.PCR, Type: e.Type, Bank: alg}
}

// CheckData checks, in the given bank, every event whose digest the
// specification defines as the hash of its data (see the package
// documentation). The first failure is returned as a *DataError.
func (l *Log) CheckData(alg HashAlg) error {
	for i := range l.Events {
		if err := l.Events[i].checkData(alg); err != nil {
			return err
		}
	}
	return nil
}

func containsAlg(as []HashAlg, a HashAlg) bool {
	for _, x := range as {
		if x == a {
			return true
		}
	}
	return false
}

// InitialPCR returns the value PCR index holds before the first extension in
// the given bank: zero, except PCR 0 after a startup from a locality other
// than 0, whose last byte is the locality.
func (l *Log) InitialPCR(alg HashAlg, pcr uint32) []byte {
	v := make([]byte, alg.Size())
	if pcr == 0 && l.StartupLocality != 0 && len(v) > 0 {
		v[len(v)-1] = l.StartupLocality
	}
	return v
}

// Replay computes the PCR values the log produces in the given bank, for
// every PCR the log extends. EV_NO_ACTION records are not extended; PCR 0
// starts at the StartupLocality value when the log has one.
func (l *Log) Replay(alg HashAlg) (map[uint32][]byte, error) {
	if !alg.Replayable() {
		return nil, fmt.Errorf("eventlog: replay %s: %w", alg, ErrUnsupportedAlg)
	}
	if !containsAlg(l.Algs, alg) {
		return nil, fmt.Errorf("eventlog: replay %s (log has %v): %w", alg, l.Algs, ErrBankNotInLog)
	}
	out := map[uint32][]byte{}
	h := alg.Hash().New()
	for i := range l.Events {
		ev := &l.Events[i]
		d := ev.Digest(alg)
		if d == nil {
			return nil, fmt.Errorf("eventlog: replay %s: event %d (%s, pcr %d) has no %s digest: %w",
				alg, ev.Seq, ev.Type, ev.PCR, alg, ErrBankNotInLog)
		}
		cur, ok := out[ev.PCR]
		if !ok {
			cur = l.InitialPCR(alg, ev.PCR)
		}
		h.Reset()
		h.Write(cur)
		h.Write(d)
		out[ev.PCR] = h.Sum(cur[:0])
	}
	return out, nil
}

// PCRs returns the sorted PCR indexes the log extends.
func (l *Log) PCRs() []uint32 {
	seen := map[uint32]bool{}
	var out []uint32
	for i := range l.Events {
		if p := l.Events[i].PCR; !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}
