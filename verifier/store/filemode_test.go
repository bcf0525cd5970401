package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestSQLiteFileMode: a new store is created 0600 whatever the umask; an
// existing store or WAL file that others may read is refused with
// *InsecureFileError; one readable by the verifier only opens.
func TestSQLiteFileMode(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	ctx := context.Background()

	t.Run("created 0600", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "verifier.db")
		s, err := Open(ctx, EngineSQLite, path)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{path, path + "-wal", path + "-shm"} {
			st, err := os.Stat(p)
			if errors.Is(err, os.ErrNotExist) && p != path {
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			if perm := st.Mode().Perm(); perm != 0o600 {
				t.Errorf("%s created with mode %04o, want 0600", filepath.Base(p), perm)
			}
		}
		// Reopening the verifier's own store works.
		s, err = Open(ctx, EngineSQLite, path)
		if err != nil {
			t.Fatalf("reopen: %v", err)
		}
		s.Close()
	})

	for _, tc := range []struct {
		name   string
		file   string // "" the database, else its suffix ("-wal")
		mode   os.FileMode
		refuse bool
	}{
		{"database 0644", "", 0o644, true},
		{"database 0640", "", 0o640, true},
		{"database 0604", "", 0o604, true},
		{"database 0620 (group-writable)", "", 0o620, true},
		{"wal 0644", "-wal", 0o644, true},
		{"database 0600", "", 0o600, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "verifier.db")
			s, err := Open(ctx, EngineSQLite, path)
			if err != nil {
				t.Fatal(err)
			}
			s.Close()
			target := path + tc.file
			if tc.file != "" {
				if err := os.WriteFile(target, nil, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.Chmod(target, tc.mode); err != nil {
				t.Fatal(err)
			}
			s, err = Open(ctx, EngineSQLite, path)
			var ie *InsecureFileError
			if !tc.refuse {
				if err != nil {
					t.Fatalf("mode %04o refused: %v", tc.mode, err)
				}
				s.Close()
				return
			}
			if s != nil {
				s.Close()
			}
			if !errors.As(err, &ie) || !errors.Is(err, ErrInsecureFile) {
				t.Fatalf("mode %04o on %s: %v, want *InsecureFileError", tc.mode, filepath.Base(target), err)
			}
			if ie.Path != target || ie.Mode.Perm() != tc.mode {
				t.Fatalf("error names %s %04o, want %s %04o", ie.Path, ie.Mode.Perm(), target, tc.mode)
			}
		})
	}

	t.Run("in-memory store untouched", func(t *testing.T) {
		s, err := Open(ctx, EngineSQLite, "")
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
	})
}
