package bpf

import (
	"crypto/sha256"
	"fmt"
	"sort"
)

// BuildObject is one eBPF object compiled into this build: its SHA-256
// (what the runtime log's program records name as their object) and the
// programs it holds. An update_window's ebpf_objects lists these digests
// to approve the program set a new agent build brings.
type BuildObject struct {
	Name     string
	SHA256   [32]byte
	Programs []string
}

// BuildObjects returns the eBPF objects compiled into this binary, in a
// fixed order.
func BuildObjects() ([]BuildObject, error) {
	objs := []object{shieldObject, sentinelObject, fortressObject}
	out := make([]BuildObject, 0, len(objs))
	for _, o := range objs {
		spec, err := o.load()
		if err != nil {
			return nil, fmt.Errorf("object %s: %w", o.name, err)
		}
		b := BuildObject{Name: o.name, SHA256: sha256.Sum256(o.bytes)}
		for name := range spec.Programs {
			b.Programs = append(b.Programs, name)
		}
		sort.Strings(b.Programs)
		out = append(out, b)
	}
	return out, nil
}
