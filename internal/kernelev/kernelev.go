// Package kernelev holds the definitions the agent and the verifier share
// about kernel evidence (docs/kernel-evidence.md): the runtime-log record
// naming the maps an agent load created, and how a measured attach point
// names a hook. Pure: no kernel access.
package kernelev

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// MapsRecordName names the cel.Generic runtime-log record an agent appends
// once per load, after it created its maps and before it attaches any
// program: the name and kernel ID of every map its programs use.
const MapsRecordName = "pulse.bpf.maps"

// InterfacesRecordName names the cel.Generic runtime-log record an agent
// appends before it measures Shield's programs for interfaces: the name and
// ifindex of each interface, so that a hook is bound to the device Shield
// was attached to, not only to its name. Same canonical form as a maps
// record ("name ifindex" lines sorted by name): EncodeMaps and DecodeMaps.
const InterfacesRecordName = "pulse.bpf.interfaces"

// Hook kinds as HookChain.hook names them.
const (
	HookTCXIngress = "tcx_ingress"
	HookTCXEgress  = "tcx_egress"
	HookXDP        = "xdp"
	HookTracepoint = "tracepoint"
)

// MaxMaps bounds the entries of a maps record.
const MaxMaps = 256

// ErrMalformed is returned for a maps record that is not canonical.
var ErrMalformed = errors.New("malformed maps record")

// EncodeMaps is the canonical data of a maps record: one "name id" line per
// map, sorted by name, each ending in "\n". Names are non-empty and free of
// spaces and newlines; IDs are non-zero.
func EncodeMaps(maps map[string]uint32) ([]byte, error) {
	if len(maps) > MaxMaps {
		return nil, fmt.Errorf("%w: %d maps exceed %d", ErrMalformed, len(maps), MaxMaps)
	}
	names := make([]string, 0, len(maps))
	for n := range maps {
		if err := checkName(n); err != nil {
			return nil, err
		}
		if maps[n] == 0 {
			return nil, fmt.Errorf("%w: map %q has ID 0", ErrMalformed, n)
		}
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		b.WriteString(n)
		b.WriteByte(' ')
		b.WriteString(strconv.FormatUint(uint64(maps[n]), 10))
		b.WriteByte('\n')
	}
	return []byte(b.String()), nil
}

// DecodeMaps parses a maps record's data; it accepts only what EncodeMaps
// produces.
func DecodeMaps(data []byte) (map[string]uint32, error) {
	out := map[string]uint32{}
	if len(data) == 0 {
		return out, nil
	}
	s := string(data)
	if !strings.HasSuffix(s, "\n") {
		return nil, fmt.Errorf("%w: no final newline", ErrMalformed)
	}
	prev := ""
	for i, line := range strings.Split(strings.TrimSuffix(s, "\n"), "\n") {
		if i >= MaxMaps {
			return nil, fmt.Errorf("%w: more than %d maps", ErrMalformed, MaxMaps)
		}
		name, id, ok := strings.Cut(line, " ")
		if !ok {
			return nil, fmt.Errorf("%w: line %d: %q", ErrMalformed, i+1, line)
		}
		if err := checkName(name); err != nil {
			return nil, err
		}
		if i > 0 && name <= prev {
			return nil, fmt.Errorf("%w: line %d: %q is not sorted or repeats", ErrMalformed, i+1, name)
		}
		prev = name
		v, err := strconv.ParseUint(id, 10, 32)
		if err != nil || v == 0 || strconv.FormatUint(v, 10) != id {
			return nil, fmt.Errorf("%w: line %d: map ID %q", ErrMalformed, i+1, id)
		}
		out[name] = uint32(v)
	}
	return out, nil
}

func checkName(n string) error {
	if n == "" || len(n) > 64 || strings.ContainsAny(n, " \n\x00") {
		return fmt.Errorf("%w: map name %q", ErrMalformed, n)
	}
	return nil
}

// Hook is where the kernel runs a program: a HookChain's hook and target.
type Hook struct {
	Kind   string
	Target string
}

func (h Hook) String() string { return h.Kind + ":" + h.Target }

// netPrefixes are the attach-point prefixes of interface hooks.
var netPrefixes = [...]struct{ prefix, kind string }{
	{"tcx/ingress:", HookTCXIngress}, {"tcx/egress:", HookTCXEgress}, {"xdp:", HookXDP},
}

// ParseAttachPoint names the hook of an attach point as the agent's loader
// measures it: "tcx/ingress:IF", "tcx/egress:IF", "xdp:IF",
// "tracepoint/GROUP/NAME". ok is false for anything else (an empty point:
// the program is only pinned).
func ParseAttachPoint(point string) (Hook, bool) {
	for _, pk := range netPrefixes {
		if t, ok := strings.CutPrefix(point, pk.prefix); ok && t != "" {
			return Hook{Kind: pk.kind, Target: t}, true
		}
	}
	if t, ok := strings.CutPrefix(point, "tracepoint/"); ok && strings.Count(t, "/") == 1 && !strings.HasPrefix(t, "/") && !strings.HasSuffix(t, "/") {
		return Hook{Kind: HookTracepoint, Target: t}, true
	}
	return Hook{}, false
}

// Enforced reports whether Pulse enforces the hook kind: every program
// attached there must be Pulse's (tcx and XDP, where Shield filters).
func Enforced(kind string) bool {
	return kind == HookTCXIngress || kind == HookTCXEgress || kind == HookXDP
}
