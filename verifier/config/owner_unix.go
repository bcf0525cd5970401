//go:build unix

package config

import (
	"os"
	"syscall"
)

// fileOwner returns the uid owning a file, when the platform says.
func fileOwner(st os.FileInfo) (int, bool) {
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return int(sys.Uid), true
}
