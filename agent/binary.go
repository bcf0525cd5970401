package agent

import (
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
)

// SelfExe is the kernel's link to the running program's file.
const SelfExe = "/proc/self/exe"

// HashFile returns the SHA-256 of the file at path.
func HashFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return HashOpenFile(f)
}

// HashOpenFile returns the SHA-256 of f's content from offset 0, reading
// through the descriptor (not the path), so the digest is of the file that
// descriptor holds even if the path was replaced since it was opened.
func HashOpenFile(f *os.File) ([]byte, error) {
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, 1<<62)); err != nil {
		return nil, fmt.Errorf("hash %s: %w", f.Name(), err)
	}
	return h.Sum(nil), nil
}

// ExecutablePath returns the path the running binary was started from,
// without the " (deleted)" suffix the kernel adds once the path no longer
// names that file.
func ExecutablePath() (string, error) {
	p, err := os.Readlink(SelfExe)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", SelfExe, err)
	}
	return strings.TrimSuffix(p, " (deleted)"), nil
}

// fileID identifies a version of a file well enough to know when to hash
// it again: any write changes ctime, a replacement changes the inode.
type fileID struct {
	dev, ino, size   uint64
	mtimeNs, ctimeNs int64
	missing          bool
}

func statID(path string) (fileID, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		if os.IsNotExist(err) {
			return fileID{missing: true}, nil
		}
		return fileID{}, fmt.Errorf("stat %s: %w", path, err)
	}
	return fileID{
		dev: st.Dev, ino: st.Ino, size: uint64(st.Size),
		mtimeNs: st.Mtim.Nano(), ctimeNs: st.Ctim.Nano(),
	}, nil
}

// diskBinary tracks the file now at the agent binary's path, hashing it
// only when its stat changed.
type diskBinary struct {
	path string

	mu     sync.Mutex
	id     fileID
	digest []byte
	known  bool
}

// Digest returns the SHA-256 of the file now at the path (nil when the path
// no longer exists), rehashing only when the file's stat changed.
func (d *diskBinary) Digest() ([]byte, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	id, err := statID(d.path)
	if err != nil {
		return nil, err
	}
	if d.known && id == d.id {
		return d.digest, nil
	}
	var digest []byte
	if !id.missing {
		if digest, err = HashFile(d.path); err != nil {
			if os.IsNotExist(err) {
				digest = nil
			} else {
				return nil, err
			}
		}
	}
	d.id, d.digest, d.known = id, digest, true
	return digest, nil
}

// Changed reports whether the file's stat differs from the one last hashed.
func (d *diskBinary) Changed() bool {
	id, err := statID(d.path)
	if err != nil {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return !d.known || id != d.id
}

// fixComm names the process after its binary when the launcher started it
// through /proc/self/fd/N, which makes the kernel call it "N" (what ps,
// top, the journal and Sentinel's records of the agent's own eBPF loads
// show). Every thread is renamed: the Go runtime's threads already exist,
// and threads created later inherit the name of the thread creating them.
func fixComm(exePath string) {
	base := filepath.Base(exePath)
	if len(base) > 15 { // TASK_COMM_LEN - 1
		base = base[:15]
	}
	tasks, _ := filepath.Glob("/proc/self/task/*/comm")
	for _, p := range append([]string{"/proc/self/comm"}, tasks...) {
		b, err := os.ReadFile(p)
		name := strings.TrimSpace(string(b))
		if err != nil || name == "" || strings.Trim(name, "0123456789") != "" {
			continue
		}
		_ = os.WriteFile(p, []byte(base), 0)
	}
}

// runningBinary hashes the running program's file (/proc/self/exe) for each
// pulse's claim, but only when the file's identity (device, inode, size,
// mtime, ctime) changed since the last full hash or when every pulses have
// passed since it (1: every pulse). docs/threat-model.md ("Agent binary
// re-hashing") says what each setting detects and what it does not.
type runningBinary struct {
	path  string // SelfExe; a test may point it elsewhere
	every int

	mu     sync.Mutex
	id     fileID
	digest []byte
	since  int // pulses served from the cache since the last full hash
	hashes uint64
}

// Digest returns the SHA-256 of the running binary's file.
func (r *runningBinary) Digest() ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	id, err := statID(r.path)
	if err != nil {
		return nil, err
	}
	if r.digest != nil && id == r.id && !id.missing && r.since+1 < r.every {
		r.since++
		return r.digest, nil
	}
	digest, err := HashFile(r.path)
	if err != nil {
		return nil, err
	}
	r.id, r.digest, r.since = id, digest, 0
	r.hashes++
	return digest, nil
}

// Hashes is how many full hashes Digest has made.
func (r *runningBinary) Hashes() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.hashes
}
