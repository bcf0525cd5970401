package eventlog

import (
	"bytes"
	"fmt"
	"hash"
	"sort"
)

// dataMatch compares one bank's digest of the event with its data.
type dataMatch int

const (
	matchNone    dataMatch = iota // the digest is not the hash of the data
	matchFull                     // digest == H(data)
	matchPartial                  // digest == H(part of data) (EFI variable quirks)
)

// matcher compares events' digests in one bank with their data, reusing one
// hash state and one sum buffer.
type matcher struct {
	alg HashAlg
	h   hash.Hash
	sum []byte
}

func newMatcher(alg HashAlg) *matcher {
	m := &matcher{alg: alg}
	if alg.Replayable() {
		m.h = alg.Hash().New()
		m.sum = make([]byte, 0, m.h.Size())
	}
	return m
}

// smallData is the data size up to which match hashes a prefix candidate
// separately rather than in the same pass as the whole data.
const smallData = 1024

func (m *matcher) sumIs(d []byte) bool {
	m.sum = m.h.Sum(m.sum[:0])
	return bytes.Equal(m.sum, d)
}

// match says how the event's digest in the matcher's bank relates to its
// data. The accepted variants that are prefixes of the data (a string
// without its terminating NUL, shim's authority events one byte longer than
// what it hashed) are summed in the same pass as the whole data when the
// data is large, since Sum does not change a hash's state; only the
// variable-data suffix of an EFI variable event needs a second pass. So an
// event costs at most two reads of its data per bank beyond smallData
// bytes, whatever its type.
func (m *matcher) match(e *Event) dataMatch {
	bind := e.Type.binding()
	if bind == bindNone || m.h == nil {
		return matchNone
	}
	d := e.Digest(m.alg)
	if d == nil {
		return matchNone
	}
	data := e.Data
	n := len(data)
	cut := 0 // trailing bytes whose shorter prefixes are candidates too
	switch {
	case bind == bindOpportunistic && n >= 2 && data[n-1] == 0 && data[n-2] == 0:
		// Strings are often measured without their terminating NUL (one
		// byte for ASCII, two for UCS-2).
		cut = 2
	case bind == bindOpportunistic && n >= 1 && data[n-1] == 0:
		cut = 1
	case e.Type == EvEFIVariableAuthority && n >= 1:
		// shim before commit 8a27a480 logs authority events one byte longer
		// than what it hashes (go-attestation issue 157).
		cut = 1
	}
	prefix := false
	if cut > 0 && n <= smallData {
		// Small data: the whole first, the prefixes only if it fails (one
		// block each, cheaper than summing every candidate).
		m.h.Reset()
		m.h.Write(data)
		if m.sumIs(d) {
			return matchFull
		}
		m.h.Reset()
		m.h.Write(data[:n-cut])
		for k := cut; k > 0 && !prefix; k-- {
			prefix = m.sumIs(d)
			m.h.Write(data[n-k : n-k+1])
		}
	} else {
		m.h.Reset()
		m.h.Write(data[:n-cut])
		for k := cut; k > 0; k-- {
			if m.sumIs(d) {
				prefix = true
			}
			m.h.Write(data[n-k : n-k+1])
		}
		if m.sumIs(d) {
			return matchFull
		}
	}
	switch bind {
	case bindOpportunistic:
		if prefix {
			return matchFull
		}
	case bindVariable:
		if prefix {
			return matchPartial
		}
		// EDK2 hashes only the VariableData of boot variables.
		if off, ok := variableDataOffset(data); ok {
			m.h.Reset()
			m.h.Write(data[off:])
			if m.sumIs(d) {
				return matchPartial
			}
		}
	}
	return matchNone
}

// DataBound reports whether the event's data is bound by its digest in
// every given bank (every replayable bank the event carries when none is
// given): the digest is the hash of the data, so the data is evidence
// wherever the digest is. It hashes the data on each call. Event types
// whose digest covers something else (an image, a table) are never bound.
func (e *Event) DataBound(banks ...HashAlg) bool {
	if e.Type.binding() == bindNone {
		return false
	}
	n := 0
	for _, d := range e.Digests {
		if !d.Alg.Replayable() || (len(banks) > 0 && !containsAlg(banks, d.Alg)) {
			continue
		}
		if newMatcher(d.Alg).match(e) != matchFull {
			return false
		}
		n++
	}
	return n > 0
}

// checkMatch returns a *DataError when the event type requires its digest
// to be the hash of its data and the match found in bank alg says it is not.
func (e *Event) checkMatch(alg HashAlg, m dataMatch) error {
	switch e.Type.binding() {
	case bindStrict:
		if m == matchFull {
			return nil
		}
	case bindVariable:
		if m != matchNone {
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
	_, err := l.matchAll(alg)
	return err
}

// matchAll matches every event's data in bank alg (index i of the result is
// l.Events[i]) and returns the first *DataError. Logs are shared between
// goroutines (the verifier caches parsed logs), so nothing is stored in l.
func (l *Log) matchAll(alg HashAlg) ([]dataMatch, error) {
	if !alg.Replayable() {
		return nil, fmt.Errorf("eventlog: check data %s: %w", alg, ErrUnsupportedAlg)
	}
	m := newMatcher(alg)
	out := make([]dataMatch, len(l.Events))
	for i := range l.Events {
		ev := &l.Events[i]
		out[i] = m.match(ev)
		if err := ev.checkMatch(alg, out[i]); err != nil {
			return nil, err
		}
	}
	return out, nil
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
	var vals [maxPCR + 1][]byte
	h := alg.Hash().New()
	buf := make([]byte, 0, 2*alg.Size())
	for i := range l.Events {
		ev := &l.Events[i]
		d := ev.Digest(alg)
		if d == nil {
			return nil, fmt.Errorf("eventlog: replay %s: event %d (%s, pcr %d) has no %s digest: %w",
				alg, ev.Seq, ev.Type, ev.PCR, alg, ErrBankNotInLog)
		}
		cur := vals[ev.PCR]
		if cur == nil {
			cur = l.InitialPCR(alg, ev.PCR)
		}
		buf = append(append(buf[:0], cur...), d...)
		h.Reset()
		h.Write(buf)
		vals[ev.PCR] = h.Sum(cur[:0])
	}
	out := map[uint32][]byte{}
	for pcr, v := range vals {
		if v != nil {
			out[uint32(pcr)] = v
		}
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
