package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Errors of Backup and Restore. Match with errors.Is.
var (
	// ErrBackupEngine: only an embedded SQLite store is backed up by Pulse;
	// PostgreSQL is backed up with pg_dump (docs/operations.md).
	ErrBackupEngine = errors.New("online backup is for the sqlite engine (use pg_dump for postgres)")
	// ErrBackupExists: the backup or restore target exists and overwriting
	// was not asked for.
	ErrBackupExists = errors.New("target exists")
	// ErrBackupCorrupt: the file is not an intact Pulse store (integrity
	// check failed, or no schema_migrations table).
	ErrBackupCorrupt = errors.New("not an intact pulse store")
)

// BackupInfo describes a backup file.
type BackupInfo struct {
	Path          string `json:"path"`
	Bytes         int64  `json:"bytes"`
	SHA256        string `json:"sha256"`
	SchemaVersion int    `json:"schema_version"`
	Agents        int    `json:"agents"`
}

// BackupSQLite writes a consistent copy of the SQLite store at src to out
// while other processes (the verifier) keep reading and writing it: VACUUM
// INTO reads one snapshot in a single read transaction, which in WAL mode
// blocks no writer. The copy is written to a temporary file beside out,
// made 0600 (it holds the nonce key and webhook secrets), synced, checked
// (CheckBackup) and renamed into place. An existing out is refused with
// ErrBackupExists unless overwrite is set. The source is never migrated.
func BackupSQLite(ctx context.Context, src, out string, overwrite bool) (BackupInfo, error) {
	if src == "" {
		return BackupInfo{}, fmt.Errorf("store: backup: an in-memory store: %w", ErrBackupEngine)
	}
	if _, err := os.Stat(src); err != nil {
		return BackupInfo{}, fmt.Errorf("store: backup: %w", err)
	}
	if !overwrite {
		if _, err := os.Lstat(out); err == nil {
			return BackupInfo{}, fmt.Errorf("store: backup: %s: %w", out, ErrBackupExists)
		}
	}
	tmp, err := backupTempPath(out)
	if err != nil {
		return BackupInfo{}, fmt.Errorf("store: backup: %w", err)
	}
	defer os.Remove(tmp)
	db, err := sql.Open("sqlite", "file:"+src+"?_pragma=busy_timeout(10000)")
	if err != nil {
		return BackupInfo{}, fmt.Errorf("store: backup: open %s: %w", src, err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if _, err := db.ExecContext(ctx, `VACUUM INTO ?`, tmp); err != nil {
		return BackupInfo{}, fmt.Errorf("store: backup: vacuum into: %w", err)
	}
	if err := backupSyncFile(tmp, 0o600); err != nil {
		return BackupInfo{}, fmt.Errorf("store: backup: %w", err)
	}
	if _, err := CheckBackup(ctx, tmp); err != nil {
		return BackupInfo{}, fmt.Errorf("store: backup: the copy: %w", err)
	}
	if err := os.Rename(tmp, out); err != nil {
		return BackupInfo{}, fmt.Errorf("store: backup: %w", err)
	}
	if err := backupSyncDir(filepath.Dir(out)); err != nil {
		return BackupInfo{}, fmt.Errorf("store: backup: %w", err)
	}
	return CheckBackup(ctx, out)
}

// CheckBackup opens a store file read-only and checks it: SQLite's
// integrity check passes and it carries Pulse's schema_migrations. It
// returns the file's digest, schema version and number of agents.
func CheckBackup(ctx context.Context, path string) (BackupInfo, error) {
	info := BackupInfo{Path: path}
	st, err := os.Stat(path)
	if err != nil {
		return info, fmt.Errorf("store: check backup: %w", err)
	}
	info.Bytes = st.Size()
	sum, err := backupFileSHA256(path)
	if err != nil {
		return info, fmt.Errorf("store: check backup: %w", err)
	}
	info.SHA256 = sum
	// immutable=1: no lock, no WAL or -shm beside a backup file.
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro&immutable=1")
	if err != nil {
		return info, fmt.Errorf("store: check backup: %w", err)
	}
	defer db.Close()
	var res string
	if err := db.QueryRowContext(ctx, `PRAGMA integrity_check`).Scan(&res); err != nil {
		return info, fmt.Errorf("store: check backup: %s: %w: %v", path, ErrBackupCorrupt, err)
	}
	if res != "ok" {
		return info, fmt.Errorf("store: check backup: %s: %w: integrity check: %s", path, ErrBackupCorrupt, res)
	}
	applied, err := appliedVersions(ctx, db, sqliteDialect)
	if err != nil {
		return info, fmt.Errorf("store: check backup: %s: %w: %v", path, ErrBackupCorrupt, err)
	}
	if len(applied) == 0 {
		return info, fmt.Errorf("store: check backup: %s: %w: no schema versions", path, ErrBackupCorrupt)
	}
	info.SchemaVersion = applied[len(applied)-1]
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM agents`).Scan(&info.Agents); err != nil {
		return info, fmt.Errorf("store: check backup: %s: %w: %v", path, ErrBackupCorrupt, err)
	}
	return info, nil
}

// RestoreSQLite puts a backup in place as the SQLite store dst, with the
// verifier stopped: the backup is checked first (CheckBackup), copied to a
// temporary file beside dst (0600), synced and renamed over dst, and dst's
// stale -wal and -shm files are removed (a WAL left from the store being
// replaced would otherwise be replayed into the restored one). An existing
// dst is refused with ErrBackupExists unless overwrite is set. The restored
// store keeps the backup's schema; the verifier migrates it when it opens
// it (or pulse-verifier migrate --apply).
func RestoreSQLite(ctx context.Context, backup, dst string, overwrite bool) (BackupInfo, error) {
	info, err := CheckBackup(ctx, backup)
	if err != nil {
		return info, fmt.Errorf("store: restore: %w", err)
	}
	if !overwrite {
		for _, p := range []string{dst, dst + "-wal"} {
			if _, err := os.Lstat(p); err == nil {
				return info, fmt.Errorf("store: restore: %s: %w", p, ErrBackupExists)
			}
		}
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return info, fmt.Errorf("store: restore: %w", err)
	}
	tmp, err := backupTempPath(dst)
	if err != nil {
		return info, fmt.Errorf("store: restore: %w", err)
	}
	defer os.Remove(tmp)
	if err := backupCopyFile(backup, tmp); err != nil {
		return info, fmt.Errorf("store: restore: %w", err)
	}
	if err := backupSyncFile(tmp, 0o600); err != nil {
		return info, fmt.Errorf("store: restore: %w", err)
	}
	for _, p := range []string{dst + "-wal", dst + "-shm"} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return info, fmt.Errorf("store: restore: %w", err)
		}
	}
	if err := os.Rename(tmp, dst); err != nil {
		return info, fmt.Errorf("store: restore: %w", err)
	}
	if err := backupSyncDir(filepath.Dir(dst)); err != nil {
		return info, fmt.Errorf("store: restore: %w", err)
	}
	info.Path = dst
	return info, nil
}

// backupTempPath returns an unused path beside target (the file is not left
// behind: VACUUM INTO refuses an existing file).
func backupTempPath(target string) (string, error) {
	f, err := os.CreateTemp(filepath.Dir(target), "."+filepath.Base(target)+".tmp-*")
	if err != nil {
		return "", err
	}
	name := f.Name()
	f.Close()
	if err := os.Remove(name); err != nil {
		return "", err
	}
	return name, nil
}

func backupCopyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// backupSyncFile sets the file's mode and fsyncs it.
func backupSyncFile(path string, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Chmod(mode); err != nil {
		return err
	}
	return f.Sync()
}

func backupSyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !strings.Contains(err.Error(), "invalid argument") {
		return err
	}
	return nil
}

func backupFileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
