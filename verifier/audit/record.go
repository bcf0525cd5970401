// Package audit is the verifier's append-only, hash-chained audit log: one
// JSON record per line (JSON Lines), each committing to its own content
// (hash) and to the exact bytes of the line before it (prev), so an edit,
// deletion, insertion or reordering anywhere in the file is found by Verify.
//
// Record format (one line, no whitespace, fields in this order):
//
//		{"seq":1,"time":"2026-01-02T03:04:05.123456789Z","kind":"binary_changed",
//		 "agent_id":"edge-7","severity":1,"data":{"alert_id":"...","reason":"..."},
//		 "prev":"<64 hex>","hash":"<64 hex>"}
//
//	  - seq counts from 1 with no gaps.
//	  - time is RFC 3339 with nanoseconds, UTC, as Go's time.RFC3339Nano
//	    prints it (trailing zeros of the fraction dropped).
//	  - data is an object of string values with keys in byte order.
//	  - prev is the lowercase hex SHA-256 of the previous record's line bytes
//	    (without its trailing newline), or 64 zeros for the first record.
//	  - hash is the lowercase hex SHA-256 of the canonical encoding of the
//	    record without the hash field: the same line with `,"hash":"..."`
//	    removed.
//
// The canonical encoding is JSON with no insignificant whitespace, the field
// order above, and strings escaped minimally: `"` and `\` are backslash
// escaped, \b \f \n \r \t use their short forms, other control characters
// below U+0020 are \u00xx (lowercase hex), and everything else, including
// non-ASCII, is written as UTF-8. It is what Python's
// json.dumps(obj, separators=(",", ":"), ensure_ascii=False) produces for the
// same object, so the chain can be checked without Pulse (docs/alerts.md).
// Verify insists that every line is exactly the canonical encoding of the
// record it holds, so a line has a single valid spelling.
//
// What the chain does and does not prove: anyone who can write the file can
// rewrite it from some record to the end and recompute every hash. The chain
// makes such a rewrite (and truncation of the tail) detectable only against a
// hash kept elsewhere: the alert dispatcher puts each record's seq and hash
// into the structured log and the webhook body, and `pulsectl audit verify
// --anchor SEQ:HASH` checks a file against such a copy.
//
// Secrets never belong in the audit log: it is plain text, readable by
// operators and shipped to log stores. Do not put private keys, nonce
// secrets, webhook secrets, passwords or tokens in Record.Data. As a last
// line of defence Append replaces the value of any data key that names a
// secret (see RedactedValue) before writing.
package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// MaxLineSize is the longest record line, in bytes without the newline, that
// Append writes and Verify accepts.
const MaxLineSize = 1 << 20

// GenesisPrev is the prev value of the first record of a log.
const GenesisPrev = "0000000000000000000000000000000000000000000000000000000000000000"

// RedactedValue replaces the value of a data key that names a secret.
const RedactedValue = "[redacted]"

// Record is one audit entry. Seq, Prev and Hash are assigned by Append.
type Record struct {
	Seq      uint64            `json:"seq"`
	Time     time.Time         `json:"time"`
	Kind     string            `json:"kind"`
	AgentID  string            `json:"agent_id"`
	Severity int               `json:"severity"`
	Data     map[string]string `json:"data"`
	Prev     string            `json:"prev"`
	Hash     string            `json:"hash"`
}

// wireRecord is a record as it is spelled on disk; Time stays a string so
// the hash is re-derived from the exact characters in the file.
type wireRecord struct {
	Seq      uint64            `json:"seq"`
	Time     string            `json:"time"`
	Kind     string            `json:"kind"`
	AgentID  string            `json:"agent_id"`
	Severity int               `json:"severity"`
	Data     map[string]string `json:"data"`
	Prev     string            `json:"prev"`
	Hash     string            `json:"hash"`
}

func (w *wireRecord) record() (Record, error) {
	t, err := time.Parse(time.RFC3339Nano, w.Time)
	if err != nil {
		return Record{}, fmt.Errorf("time %q: %w", w.Time, err)
	}
	if got := t.UTC().Format(time.RFC3339Nano); got != w.Time {
		return Record{}, fmt.Errorf("time %q is not canonical RFC 3339 UTC (want %q)", w.Time, got)
	}
	return Record{
		Seq: w.Seq, Time: t.UTC(), Kind: w.Kind, AgentID: w.AgentID, Severity: w.Severity,
		Data: w.Data, Prev: w.Prev, Hash: w.Hash,
	}, nil
}

// encode appends the canonical encoding of w to dst, with the hash field
// when withHash is set.
func (w *wireRecord) encode(dst []byte, withHash bool) []byte {
	dst = append(dst, `{"seq":`...)
	dst = strconv.AppendUint(dst, w.Seq, 10)
	dst = append(dst, `,"time":`...)
	dst = appendString(dst, w.Time)
	dst = append(dst, `,"kind":`...)
	dst = appendString(dst, w.Kind)
	dst = append(dst, `,"agent_id":`...)
	dst = appendString(dst, w.AgentID)
	dst = append(dst, `,"severity":`...)
	dst = strconv.AppendInt(dst, int64(w.Severity), 10)
	dst = append(dst, `,"data":{`...)
	keys := make([]string, 0, len(w.Data))
	for k := range w.Data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, k)
		dst = append(dst, ':')
		dst = appendString(dst, w.Data[k])
	}
	dst = append(dst, `},"prev":`...)
	dst = appendString(dst, w.Prev)
	if withHash {
		dst = append(dst, `,"hash":`...)
		dst = appendString(dst, w.Hash)
	}
	return append(dst, '}')
}

// contentHash is the hex SHA-256 of the canonical encoding without hash.
func (w *wireRecord) contentHash() string {
	sum := sha256.Sum256(w.encode(nil, false))
	return hex.EncodeToString(sum[:])
}

// lineHash is the hex SHA-256 of a record line without its newline: the next
// record's prev.
func lineHash(line []byte) string {
	sum := sha256.Sum256(line)
	return hex.EncodeToString(sum[:])
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a canonical JSON string. s must be valid UTF-8
// (the writer sanitises; the reader compares bytes, so a line holding
// invalid UTF-8 never matches its re-encoding).
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c == '\b':
			dst = append(dst, '\\', 'b')
		case c == '\f':
			dst = append(dst, '\\', 'f')
		case c == '\n':
			dst = append(dst, '\\', 'n')
		case c == '\r':
			dst = append(dst, '\\', 'r')
		case c == '\t':
			dst = append(dst, '\\', 't')
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}

// parseLine decodes one line strictly: known fields only, the right JSON
// types, a canonical time. It does not check hash, canonical spelling or
// chain links.
func parseLine(line []byte) (*wireRecord, error) {
	if !utf8.Valid(line) {
		return nil, errors.New("invalid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	var w wireRecord
	if err := dec.Decode(&w); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("trailing data after the record")
	}
	if _, err := w.record(); err != nil {
		return nil, err
	}
	if w.Kind == "" {
		return nil, errors.New("empty kind")
	}
	return &w, nil
}

// secretKeyWords are substrings of data keys whose values Append redacts.
var secretKeyWords = []string{"secret", "password", "passwd", "private_key", "privkey", "credential", "token", "api_key", "apikey"}

func namesSecret(key string) bool {
	k := strings.ToLower(key)
	for _, w := range secretKeyWords {
		if strings.Contains(k, w) {
			return true
		}
	}
	return false
}

// toWire prepares a caller's record for writing: valid UTF-8 everywhere,
// secret-looking values redacted, the data map copied.
func toWire(r Record) wireRecord {
	data := make(map[string]string, len(r.Data))
	for k, v := range r.Data {
		k = strings.ToValidUTF8(k, "\uFFFD")
		if namesSecret(k) {
			v = RedactedValue
		}
		data[k] = strings.ToValidUTF8(v, "\uFFFD")
	}
	return wireRecord{
		Seq:      r.Seq,
		Time:     r.Time.UTC().Format(time.RFC3339Nano),
		Kind:     strings.ToValidUTF8(r.Kind, "\uFFFD"),
		AgentID:  strings.ToValidUTF8(r.AgentID, "\uFFFD"),
		Severity: r.Severity,
		Data:     data,
		Prev:     r.Prev,
	}
}
