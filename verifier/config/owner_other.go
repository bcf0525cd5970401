//go:build !unix

package config

import "os"

// fileOwner: file ownership is not checked on this platform.
func fileOwner(os.FileInfo) (int, bool) { return 0, false }
