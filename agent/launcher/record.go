package launcher

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/pulse-attest/pulse/tpm/cel"
)

// ConfigRecordName names the Generic runtime-log record the launcher
// appends right before the agent-binary record of the binary it launches:
// the configuration file the agent will read (path and SHA-256 of its
// bytes), the agent's arguments and the environment it gets. The record's
// data is EncodeConfigRecord's canonical encoding; a future change of the
// format takes a new name.
const ConfigRecordName = "pulse.launcher.config"

// ErrInvalidConfigRecord is returned (wrapped) for data that is not the
// canonical encoding of a configuration record.
var ErrInvalidConfigRecord = errors.New("invalid launcher configuration record")

// ConfigRecord is what the launcher measured about how it started the
// agent.
type ConfigRecord struct {
	// AgentSHA256 is the digest of the agent binary launched (the
	// agent-binary record that follows carries it too).
	AgentSHA256 [sha256.Size]byte
	// ConfigPath is the absolute path of the configuration file.
	ConfigPath string
	// ConfigSHA256 and ConfigSize describe the exact bytes the launcher
	// read and handed to the agent.
	ConfigSHA256 [sha256.Size]byte
	ConfigSize   uint64
	// Args are the agent's arguments, without argv[0] (the binary's path,
	// in the agent-binary record).
	Args []string
	// Env is the environment passed on (NAME=VALUE, sorted by name), not
	// counting the PULSE_AGENT_* variables the launcher sets itself.
	Env []string
}

// Field types of the encoding. Every field is a TLV (1-byte type, 4-byte
// big-endian length, value), in this order:
//
//	1 agent sha256 (32 bytes)
//	2 config path (UTF-8)
//	3 config sha256 (32 bytes)
//	4 config size (uint64, 8 bytes big-endian)
//	5 argument — once per argument, in argument order
//	6 environment entry NAME=VALUE — once per variable, sorted by name
//
// Arguments and environment entries are bytes without NUL (what execve
// can carry); names are unique.
const (
	fieldAgentSHA256  = 1
	fieldConfigPath   = 2
	fieldConfigSHA256 = 3
	fieldConfigSize   = 4
	fieldArg          = 5
	fieldEnv          = 6
)

// Encode returns the canonical encoding of r.
func (r *ConfigRecord) Encode() ([]byte, error) {
	if !utf8.ValidString(r.ConfigPath) || r.ConfigPath == "" {
		return nil, fmt.Errorf("%w: config path %q", ErrInvalidConfigRecord, r.ConfigPath)
	}
	for _, a := range r.Args {
		if strings.IndexByte(a, 0) >= 0 {
			return nil, fmt.Errorf("%w: argument holds a NUL byte", ErrInvalidConfigRecord)
		}
	}
	if err := checkEnv(r.Env); err != nil {
		return nil, err
	}
	var b []byte
	tlv := func(typ byte, v []byte) {
		b = append(b, typ)
		b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
		b = append(b, v...)
	}
	tlv(fieldAgentSHA256, r.AgentSHA256[:])
	tlv(fieldConfigPath, []byte(r.ConfigPath))
	tlv(fieldConfigSHA256, r.ConfigSHA256[:])
	tlv(fieldConfigSize, binary.BigEndian.AppendUint64(nil, r.ConfigSize))
	for _, a := range r.Args {
		tlv(fieldArg, []byte(a))
	}
	for _, e := range r.Env {
		tlv(fieldEnv, []byte(e))
	}
	return b, nil
}

// checkEnv requires NAME=VALUE entries, sorted by name, names unique and
// non-empty, no NUL.
func checkEnv(env []string) error {
	prev := ""
	for i, e := range env {
		name, _, ok := strings.Cut(e, "=")
		if !ok || name == "" || strings.IndexByte(e, 0) >= 0 {
			return fmt.Errorf("%w: environment entry %d is not NAME=VALUE", ErrInvalidConfigRecord, i)
		}
		if i > 0 && name <= prev {
			return fmt.Errorf("%w: environment not sorted by unique name at %q", ErrInvalidConfigRecord, name)
		}
		prev = name
	}
	return nil
}

// Generic returns the runtime-log content for r.
func (r *ConfigRecord) Generic() (*cel.Generic, error) {
	data, err := r.Encode()
	if err != nil {
		return nil, err
	}
	return &cel.Generic{Name: ConfigRecordName, Data: data}, nil
}

// DecodeConfigRecord parses the data of a ConfigRecordName record. It
// accepts only the canonical encoding (what Encode produces).
func DecodeConfigRecord(data []byte) (*ConfigRecord, error) {
	r := &ConfigRecord{}
	p := data
	next := func() (byte, []byte, error) {
		if len(p) < 5 {
			return 0, nil, fmt.Errorf("%w: truncated field", ErrInvalidConfigRecord)
		}
		typ, n := p[0], binary.BigEndian.Uint32(p[1:5])
		if uint64(n) > uint64(len(p)-5) {
			return 0, nil, fmt.Errorf("%w: field %d longer than the data", ErrInvalidConfigRecord, typ)
		}
		v := p[5 : 5+n]
		p = p[5+n:]
		return typ, v, nil
	}
	fixed := func(want byte, size int) ([]byte, error) {
		typ, v, err := next()
		if err != nil {
			return nil, err
		}
		if typ != want || (size >= 0 && len(v) != size) {
			return nil, fmt.Errorf("%w: field %d (%d bytes) where field %d was expected", ErrInvalidConfigRecord, typ, len(v), want)
		}
		return v, nil
	}
	v, err := fixed(fieldAgentSHA256, sha256.Size)
	if err != nil {
		return nil, err
	}
	copy(r.AgentSHA256[:], v)
	if v, err = fixed(fieldConfigPath, -1); err != nil {
		return nil, err
	}
	r.ConfigPath = string(v)
	if v, err = fixed(fieldConfigSHA256, sha256.Size); err != nil {
		return nil, err
	}
	copy(r.ConfigSHA256[:], v)
	if v, err = fixed(fieldConfigSize, 8); err != nil {
		return nil, err
	}
	r.ConfigSize = binary.BigEndian.Uint64(v)
	for len(p) > 0 {
		typ, v, err := next()
		if err != nil {
			return nil, err
		}
		switch {
		case typ == fieldArg && len(r.Env) == 0:
			r.Args = append(r.Args, string(v))
		case typ == fieldEnv:
			r.Env = append(r.Env, string(v))
		default:
			return nil, fmt.Errorf("%w: unexpected field %d", ErrInvalidConfigRecord, typ)
		}
	}
	// Re-encoding checks everything else (UTF-8 path, NULs, env order) and
	// that nothing was encoded two ways.
	again, err := r.Encode()
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(again, data) {
		return nil, fmt.Errorf("%w: not the canonical encoding", ErrInvalidConfigRecord)
	}
	return r, nil
}

// FindConfigRecord returns the launcher's configuration record for the
// agent-binary record at index i of records: the record right before it,
// when that is a ConfigRecordName record naming the same binary digest.
// ok is false when the binary has no such record (self-measured, or
// measured by an older launcher).
func FindConfigRecord(records []cel.Record, i int) (rec *ConfigRecord, ok bool, err error) {
	if i <= 0 || i >= len(records) {
		return nil, false, nil
	}
	b, isBinary := records[i].Content.(*cel.AgentBinary)
	g, isGeneric := records[i-1].Content.(*cel.Generic)
	if !isBinary || !isGeneric || g.Name != ConfigRecordName {
		return nil, false, nil
	}
	rec, err = DecodeConfigRecord(g.Data)
	if err != nil {
		return nil, false, fmt.Errorf("record %d: %w", records[i-1].RecNum, err)
	}
	if rec.AgentSHA256 != b.SHA256 {
		return nil, false, nil
	}
	return rec, true, nil
}

// sortedEnv returns env sorted by name (a stable order for the record).
func sortedEnv(env []string) []string {
	out := slices.Clone(env)
	slices.SortFunc(out, func(a, b string) int {
		an, _, _ := strings.Cut(a, "=")
		bn, _, _ := strings.Cut(b, "=")
		return strings.Compare(an, bn)
	})
	return out
}
