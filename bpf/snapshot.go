package bpf

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/cilium/ebpf/link"

	"github.com/pulse-attest/pulse/bpf/snapshot"
)

// TakeSnapshot lists every program loaded on the host and resolves each pin
// under pinDir to its live program, checking it against expected. With
// expected nil it uses the manifest the agent pinned, if any; without one the
// snapshot is unchecked.
func TakeSnapshot(ctx context.Context, pinDir string, expected map[string]snapshot.Expectation) (snapshot.Snapshot, error) {
	if pinDir == "" {
		pinDir = DefaultPinDir
	}
	snap := snapshot.Snapshot{TakenAt: time.Now().UTC(), PinDir: pinDir}
	rel, err := kernelRelease()
	if err != nil {
		return snap, fmt.Errorf("ebpf snapshot: %w", err)
	}
	snap.KernelRelease = rel

	if expected == nil {
		mf, err := readManifest(pinDir)
		switch {
		case err == nil:
			expected = mf
		case errors.Is(err, os.ErrNotExist):
		default:
			return snap, fmt.Errorf("ebpf snapshot: %w", err)
		}
	}

	progs, err := listPrograms(ctx)
	if err != nil {
		return snap, fmt.Errorf("ebpf snapshot: %w", err)
	}
	snap.Programs = progs

	pins, err := livePins(pinDir)
	if err != nil {
		return snap, fmt.Errorf("ebpf snapshot: %w", err)
	}
	if expected == nil {
		snap.Pinned = snapshot.Unchecked(pins)
		return snap, nil
	}
	links, err := liveLinks(filepath.Join(pinDir, "links"))
	if err != nil {
		return snap, fmt.Errorf("ebpf snapshot: %w", err)
	}
	snap.Checked = true
	snap.Pinned = snapshot.Compare(expected, pins, links)
	return snap, nil
}

// listPrograms walks the kernel's program IDs.
func listPrograms(ctx context.Context) ([]snapshot.Program, error) {
	out := make([]snapshot.Program, 0, 64)
	var id uint32
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		next, err := nextProgramID(id)
		if errors.Is(err, os.ErrNotExist) {
			break
		}
		if err != nil {
			return nil, err
		}
		id = next
		p, err := programByID(next)
		if errors.Is(err, os.ErrNotExist) {
			continue // unloaded meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	snapshot.SortPrograms(out)
	return out, nil
}

// livePins resolves the files directly under pinDir.
func livePins(pinDir string) (map[string]snapshot.LivePin, error) {
	entries, err := os.ReadDir(pinDir)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]snapshot.LivePin{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read pin directory: %w", err)
	}
	pins := make(map[string]snapshot.LivePin, len(entries))
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		pins[e.Name()] = livePin(filepath.Join(pinDir, e.Name()))
	}
	return pins, nil
}

func livePin(path string) snapshot.LivePin {
	p, err := pinnedProgram(path)
	if err != nil {
		return snapshot.LivePin{Err: err}
	}
	return p
}

// liveLinks resolves the link pins under dir.
func liveLinks(dir string) (map[string]snapshot.LiveLink, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]snapshot.LiveLink{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read link directory: %w", err)
	}
	out := make(map[string]snapshot.LiveLink, len(entries))
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		out[e.Name()] = liveLink(filepath.Join(dir, e.Name()))
	}
	return out, nil
}

func liveLink(path string) snapshot.LiveLink {
	l, err := link.LoadPinnedLink(path, nil)
	if err != nil {
		return snapshot.LiveLink{Err: fmt.Errorf("not a readable link: %w", err)}
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil {
		return snapshot.LiveLink{Err: fmt.Errorf("link info: %w", err)}
	}
	ll := snapshot.LiveLink{ProgramID: uint32(info.Program)}
	if t := info.TCX(); t != nil && t.Ifindex == 0 {
		ll.Detached = true
	}
	if x := info.XDP(); x != nil && x.Ifindex == 0 {
		ll.Detached = true
	}
	return ll
}
