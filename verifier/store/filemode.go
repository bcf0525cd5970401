package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
)

// ErrInsecureFile is wrapped by InsecureFileError.
var ErrInsecureFile = errors.New("store file readable by group or others")

// InsecureFileError refuses a SQLite store file (or its -wal/-shm
// companion) that users other than the verifier's may read: the store holds
// the nonce key, the directive key and webhook secrets.
type InsecureFileError struct {
	Path string
	Mode fs.FileMode
}

func (e *InsecureFileError) Error() string {
	return fmt.Sprintf("store: %s has mode %04o: the store holds the verifier's secrets; make it readable by the verifier only (chmod 600 %s)", e.Path, e.Mode.Perm(), e.Path)
}

func (e *InsecureFileError) Unwrap() error { return ErrInsecureFile }

// prepareSQLiteFile creates a new SQLite store file with mode 0600 before
// SQLite does (SQLite would create it 0644 under the usual umask, and gives
// its -wal and -shm files the database file's mode), and refuses an
// existing one that is group- or world-readable or writable. An in-memory
// or URI dsn is left to SQLite.
func prepareSQLiteFile(dsn string) error {
	path, _, _ := strings.Cut(dsn, "?")
	if path == "" || path == ":memory:" || strings.HasPrefix(path, "file:") {
		return nil
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err == nil {
		if err := f.Close(); err != nil {
			return fmt.Errorf("store: create %s: %w", path, err)
		}
		return nil
	}
	if !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("store: create %s: %w", path, err)
	}
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		st, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) && p != path {
			continue
		}
		if err != nil {
			return fmt.Errorf("store: %w", err)
		}
		if st.Mode().Perm()&0o077 != 0 {
			return &InsecureFileError{Path: p, Mode: st.Mode()}
		}
	}
	return nil
}
