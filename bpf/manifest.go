package bpf

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"

	"github.com/pulse-attest/pulse/bpf/snapshot"
)

// The manifest is a pinned single-slot array map holding the agent's load
// records (JSON, length-prefixed), so `pulse-agent snapshot` run by an
// operator can check the pins against them without talking to the agent.
// The agent itself checks against its in-memory records; a root attacker can
// rewrite the manifest, so it is an operator aid, not evidence.
const (
	manifestName      = "manifest"
	manifestValueSize = 16 << 10
	manifestVersion   = 1
)

type manifestDoc struct {
	Version  int                             `json:"version"`
	Programs map[string]snapshot.Expectation `json:"programs"`
}

func manifestSpec() *ebpf.MapSpec {
	return &ebpf.MapSpec{
		Name:       manifestName,
		Type:       ebpf.Array,
		KeySize:    4,
		ValueSize:  manifestValueSize,
		MaxEntries: 1,
		Pinning:    ebpf.PinByName,
	}
}

func openManifest(mapsDir string) (*ebpf.Map, error) {
	spec := manifestSpec()
	path := filepath.Join(mapsDir, manifestName)
	if old, err := ebpf.LoadPinnedMap(path, nil); err == nil {
		if spec.Compatible(old) == nil {
			return old, nil
		}
		old.Close()
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("replace manifest: %w", err)
		}
	}
	m, err := ebpf.NewMapWithOptions(spec, ebpf.MapOptions{PinPath: mapsDir})
	if err != nil {
		return nil, fmt.Errorf("create manifest map: %w", err)
	}
	return m, nil
}

func encodeManifest(progs map[string]snapshot.Expectation) ([]byte, error) {
	doc, err := json.Marshal(manifestDoc{Version: manifestVersion, Programs: progs})
	if err != nil {
		return nil, fmt.Errorf("encode manifest: %w", err)
	}
	if len(doc)+4 > manifestValueSize {
		return nil, fmt.Errorf("manifest of %d bytes exceeds %d", len(doc), manifestValueSize-4)
	}
	buf := make([]byte, manifestValueSize)
	binary.LittleEndian.PutUint32(buf, uint32(len(doc)))
	copy(buf[4:], doc)
	return buf, nil
}

func decodeManifest(buf []byte) (map[string]snapshot.Expectation, error) {
	if len(buf) < 4 {
		return nil, errors.New("manifest: truncated")
	}
	n := binary.LittleEndian.Uint32(buf)
	if n == 0 {
		return nil, errors.New("manifest: empty")
	}
	if uint64(n) > uint64(len(buf)-4) {
		return nil, fmt.Errorf("manifest: length %d exceeds %d", n, len(buf)-4)
	}
	var doc manifestDoc
	if err := json.Unmarshal(buf[4:4+n], &doc); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	if doc.Version != manifestVersion {
		return nil, fmt.Errorf("manifest: version %d, want %d", doc.Version, manifestVersion)
	}
	if doc.Programs == nil {
		doc.Programs = map[string]snapshot.Expectation{}
	}
	return doc.Programs, nil
}

// writeManifest stores the current load records in the pinned manifest.
func (m *Manager) writeManifest() error {
	m.mu.Lock()
	progs := m.expectationsLocked()
	mf := m.manifest
	m.mu.Unlock()
	if mf == nil {
		return nil
	}
	buf, err := encodeManifest(progs)
	if err != nil {
		return fmt.Errorf("ebpf: %w", err)
	}
	if err := mf.Put(uint32(0), buf); err != nil {
		return fmt.Errorf("ebpf: write manifest: %w", err)
	}
	return nil
}

// readManifest returns the load records pinned under pinDir; os.ErrNotExist
// when there are none.
func readManifest(pinDir string) (map[string]snapshot.Expectation, error) {
	path := filepath.Join(pinDir, "maps", manifestName)
	mf, err := ebpf.LoadPinnedMap(path, &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	defer mf.Close()
	buf := make([]byte, manifestValueSize)
	if err := mf.Lookup(uint32(0), &buf); err != nil {
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	return decodeManifest(buf)
}
