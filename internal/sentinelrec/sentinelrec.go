// Package sentinelrec is the runtime-log record that binds Sentinel's
// configuration to the TPM: when the agent configures Sentinel it appends a
// cel.Generic record named RecordName whose data names the agent's tgid, the
// service manager Fortress lets signal it, and the kernel ID of the
// sentinel_cfg map it wrote. The verifier holds each pulse's Sentinel report
// to the latest such record of the replayed log (docs/ebpf.md, "Sentinel").
package sentinelrec

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// RecordName names the cel.Generic record.
const RecordName = "pulse.sentinel.config"

// MaxRecordBytes bounds the record's data.
const MaxRecordBytes = 256

// Config is what the record says.
type Config struct {
	// AgentTGID is the agent process Sentinel watches (initial PID namespace).
	AgentTGID uint32
	// ManagerTGID may signal the agent under Fortress (0: nobody).
	ManagerTGID uint32
	// MapID is the kernel ID of the sentinel_cfg map the agent configured.
	MapID uint32
}

// ErrMalformed is wrapped by Decode's errors.
var ErrMalformed = errors.New("malformed sentinel config record")

var fields = []string{"agent_tgid", "manager_tgid", "cfg_map_id"}

// Encode renders c canonically: one "key value" line per field, in order.
func Encode(c Config) []byte {
	return fmt.Appendf(nil, "agent_tgid %d\nmanager_tgid %d\ncfg_map_id %d\n", c.AgentTGID, c.ManagerTGID, c.MapID)
}

// Decode parses data written by Encode and only that: every field once, in
// order, decimal without sign or leading zeros, each line ended by "\n".
func Decode(data []byte) (Config, error) {
	var c Config
	if len(data) > MaxRecordBytes {
		return c, fmt.Errorf("%w: %d bytes", ErrMalformed, len(data))
	}
	s := string(data)
	if !strings.HasSuffix(s, "\n") {
		return c, fmt.Errorf("%w: no final newline", ErrMalformed)
	}
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	if len(lines) != len(fields) {
		return c, fmt.Errorf("%w: %d lines, want %d", ErrMalformed, len(lines), len(fields))
	}
	vals := make([]uint32, len(fields))
	for i, l := range lines {
		k, v, ok := strings.Cut(l, " ")
		if !ok || k != fields[i] {
			return c, fmt.Errorf("%w: line %d is not %q", ErrMalformed, i+1, fields[i])
		}
		if v == "" || (len(v) > 1 && v[0] == '0') {
			return c, fmt.Errorf("%w: %s value %q", ErrMalformed, k, v)
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return c, fmt.Errorf("%w: %s: %v", ErrMalformed, k, err)
		}
		vals[i] = uint32(n)
	}
	c.AgentTGID, c.ManagerTGID, c.MapID = vals[0], vals[1], vals[2]
	return c, nil
}
