package bpf

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
)

// Where the kernel's pseudo filesystems the agent needs are mounted.
const (
	BPFFSPath      = "/sys/fs/bpf"
	SecurityFSPath = "/sys/kernel/security"
	TraceFSPath    = "/sys/kernel/tracing"
)

type pseudoFS struct {
	path, fstype string
	magic        int64
}

var pseudoFilesystems = []pseudoFS{
	{BPFFSPath, "bpf", unix.BPF_FS_MAGIC},
	{SecurityFSPath, "securityfs", unix.SECURITYFS_MAGIC},
	{TraceFSPath, "tracefs", unix.TRACEFS_MAGIC},
}

// EnsureFilesystems mounts bpffs, securityfs and tracefs at their usual places
// when they are not mounted yet (the agent runs as root; minimal hosts and
// containers often lack them). Mounting needs CAP_SYS_ADMIN.
func EnsureFilesystems(logger hclog.Logger) error {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	var errs []error
	for _, fs := range pseudoFilesystems {
		mounted, err := isMounted(fs.path, fs.magic)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
			continue
		}
		if mounted {
			continue
		}
		if err := os.MkdirAll(fs.path, 0o755); err != nil {
			errs = append(errs, fmt.Errorf("create %s: %w", fs.path, err))
			continue
		}
		if err := unix.Mount(fs.fstype, fs.path, fs.fstype, unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			errs = append(errs, fmt.Errorf("mount %s at %s: %w", fs.fstype, fs.path, err))
			continue
		}
		logger.Info("mounted pseudo filesystem", "fstype", fs.fstype, "path", fs.path)
	}
	return errors.Join(errs...)
}

func isMounted(path string, magic int64) (bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false, fmt.Errorf("statfs %s: %w", path, err)
	}
	return int64(st.Type) == magic, nil
}

// checkOnBPFFS returns an error unless dir (or its closest existing parent)
// lives on a bpf filesystem, where pins can be created.
func checkOnBPFFS(dir string) error {
	p := filepath.Clean(dir)
	for {
		var st unix.Statfs_t
		err := unix.Statfs(p, &st)
		if err == nil {
			if int64(st.Type) != unix.BPF_FS_MAGIC {
				return fmt.Errorf("pin directory %s is not on a bpf filesystem (mount bpffs at %s)", dir, BPFFSPath)
			}
			return nil
		}
		if !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("statfs %s: %w", p, err)
		}
		parent := filepath.Dir(p)
		if parent == p {
			return fmt.Errorf("pin directory %s: no existing parent", dir)
		}
		p = parent
	}
}
