package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/pulse-attest/pulse/internal/cli"
	"github.com/pulse-attest/pulse/verifier/audit"
	"github.com/pulse-attest/pulse/verifier/config"
	"github.com/pulse-attest/pulse/verifier/store"
)

func init() {
	commands.Register(cli.Command{Name: "store backup", Summary: "online, consistent backup of the verifier's SQLite store and its audit log (--config VERIFIER.hcl --out FILE)", Run: runStoreBackup})
	commands.Register(cli.Command{Name: "store restore", Summary: "restore a backup into the verifier's store and audit log, verifier stopped (--config VERIFIER.hcl --from FILE)", Run: runStoreRestore})
}

// errVerifierRunning: a restore was asked while a verifier holds the audit
// log (its flock): stop the verifier first.
var errVerifierRunning = errors.New("a verifier holds the audit log: stop it before restoring")

// auditBackupPath is where a backup's copy of the audit log goes: beside
// the store's copy.
func auditBackupPath(out string) string { return out + ".audit.log" }

// verifierConfigFlag is --config, defaulting to $PULSE_VERIFIER_CONFIG (the
// demo's source line sets it) and then /etc/pulse/verifier.hcl.
func verifierConfigFlag(fs *flag.FlagSet) *string {
	def := os.Getenv("PULSE_VERIFIER_CONFIG")
	if def == "" {
		def = "/etc/pulse/verifier.hcl"
	}
	return fs.String("config", def, "the verifier's configuration (env PULSE_VERIFIER_CONFIG)")
}

type backupReport struct {
	Store      store.BackupInfo `json:"store"`
	AuditLog   string           `json:"audit_log,omitempty"`
	AuditCount int              `json:"audit_records,omitempty"`
	AuditHead  string           `json:"audit_head,omitempty"`
}

func runStoreBackup(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("store backup", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := verifierConfigFlag(fs)
	out := fs.String("out", "", "backup file to write (the audit log goes to FILE.audit.log)")
	force := fs.Bool("force", false, "overwrite an existing backup")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *out == "" || fs.NArg() != 0 {
		fmt.Fprintln(stderr, "pulsectl store backup: --out FILE is required")
		return 2
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		fmt.Fprintf(stderr, "pulsectl store backup: %v\n", err)
		return 1
	}
	if cfg.Store.Engine != store.EngineSQLite {
		fmt.Fprintf(stderr, "pulsectl store backup: %v (docs/operations.md)\n", store.ErrBackupEngine)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	// The store first, then the audit log: every record the store's copy
	// says was dispatched is then in the log's copy (alerts dispatched
	// after the snapshot are dispatched again after a restore: at least
	// once, never lost).
	info, err := store.BackupSQLite(ctx, cfg.Store.DSN, *out, *force)
	if err != nil {
		fmt.Fprintf(stderr, "pulsectl store backup: %v\n", err)
		return 1
	}
	rep := backupReport{Store: info}
	if cfg.Alerts.AuditLog != "" {
		if _, err := os.Stat(cfg.Alerts.AuditLog); err == nil {
			dst := auditBackupPath(*out)
			n, head, err := copyAuditLog(cfg.Alerts.AuditLog, dst, *force)
			if err != nil {
				fmt.Fprintf(stderr, "pulsectl store backup: audit log: %v\n", err)
				return 1
			}
			rep.AuditLog, rep.AuditCount, rep.AuditHead = dst, n, head
		}
	}
	if *asJSON {
		b, _ := json.MarshalIndent(rep, "", "  ")
		fmt.Fprintln(stdout, string(b))
		return 0
	}
	fmt.Fprintf(stdout, "store: %s (%d bytes, schema %d, %d agents, sha256 %s)\n", info.Path, info.Bytes, info.SchemaVersion, info.Agents, info.SHA256)
	if rep.AuditLog != "" {
		fmt.Fprintf(stdout, "audit log: %s (%d records, chain verified, head %s)\n", rep.AuditLog, rep.AuditCount, rep.AuditHead)
	}
	return 0
}

func runStoreRestore(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("store restore", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := verifierConfigFlag(fs)
	from := fs.String("from", "", "backup file written by pulsectl store backup")
	force := fs.Bool("force", false, "replace an existing store and audit log")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *from == "" || fs.NArg() != 0 {
		fmt.Fprintln(stderr, "pulsectl store restore: --from FILE is required")
		return 2
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		fmt.Fprintf(stderr, "pulsectl store restore: %v\n", err)
		return 1
	}
	if cfg.Store.Engine != store.EngineSQLite {
		fmt.Fprintf(stderr, "pulsectl store restore: %v (docs/operations.md)\n", store.ErrBackupEngine)
		return 1
	}
	if cfg.Alerts.AuditLog != "" {
		if err := ensureUnlocked(cfg.Alerts.AuditLog); err != nil {
			fmt.Fprintf(stderr, "pulsectl store restore: %v\n", err)
			return 1
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	// Check the audit copy before touching anything.
	auditFrom := auditBackupPath(*from)
	haveAudit := false
	if _, err := os.Stat(auditFrom); err == nil && cfg.Alerts.AuditLog != "" {
		if _, _, err := verifyAuditChain(auditFrom); err != nil {
			fmt.Fprintf(stderr, "pulsectl store restore: audit log copy: %v\n", err)
			return 1
		}
		if !*force {
			if _, err := os.Lstat(cfg.Alerts.AuditLog); err == nil {
				fmt.Fprintf(stderr, "pulsectl store restore: %s: %v (--force replaces it)\n", cfg.Alerts.AuditLog, store.ErrBackupExists)
				return 1
			}
		}
		haveAudit = true
	}
	info, err := store.RestoreSQLite(ctx, *from, cfg.Store.DSN, *force)
	if err != nil {
		fmt.Fprintf(stderr, "pulsectl store restore: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "store: restored %s to %s (schema %d, %d agents)\n", *from, info.Path, info.SchemaVersion, info.Agents)
	if haveAudit {
		if err := removeAuditSegments(cfg.Alerts.AuditLog); err != nil {
			fmt.Fprintf(stderr, "pulsectl store restore: %v\n", err)
			return 1
		}
		n, head, err := copyAuditLog(auditFrom, cfg.Alerts.AuditLog, true)
		if err != nil {
			fmt.Fprintf(stderr, "pulsectl store restore: audit log: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "audit log: restored %s (%d records, chain verified, head %s)\n", cfg.Alerts.AuditLog, n, head)
	}
	if info.SchemaVersion < store.KnownSchemaVersion() {
		fmt.Fprintf(stdout, "the backup's schema is %d: pulse-verifier migrate --apply (or the verifier's start) brings it to %d\n", info.SchemaVersion, store.KnownSchemaVersion())
	}
	return 0
}

// ensureUnlocked fails with errVerifierRunning while a writer holds the
// audit log's flock (audit.Writer holds it for its lifetime).
func ensureUnlocked(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return fmt.Errorf("%s: %w", path, errVerifierRunning)
		}
		return fmt.Errorf("lock %s: %w", path, err)
	}
	return syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
}

// copyAuditLog copies every segment of the audit log at src to dst (same
// segment numbering), each cut after its last complete line (the writer
// may be appending), then verifies the copy's chain. It returns the number
// of records and the last record's hash.
func copyAuditLog(src, dst string, overwrite bool) (int, string, error) {
	for n := 0; ; n++ {
		from := audit.SegmentPath(src, n)
		b, err := os.ReadFile(from)
		if errors.Is(err, fs.ErrNotExist) {
			if n == 0 {
				return 0, "", err
			}
			break
		}
		if err != nil {
			return 0, "", err
		}
		if i := lastNewline(b); i >= 0 {
			b = b[:i+1]
		} else {
			b = nil
		}
		to := audit.SegmentPath(dst, n)
		flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
		if overwrite {
			flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
		}
		if err := os.MkdirAll(filepath.Dir(to), 0o700); err != nil {
			return 0, "", err
		}
		f, err := os.OpenFile(to, flags, 0o600)
		if err != nil {
			return 0, "", err
		}
		if _, err := f.Write(b); err != nil {
			f.Close()
			return 0, "", err
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return 0, "", err
		}
		if err := f.Close(); err != nil {
			return 0, "", err
		}
	}
	return verifyAuditChain(dst)
}

func lastNewline(b []byte) int {
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == '\n' {
			return i
		}
	}
	return -1
}

// verifyAuditChain verifies every segment and anchor of the log at base.
func verifyAuditChain(base string) (int, string, error) {
	res, err := audit.VerifySegments(base, nil)
	if err != nil {
		return 0, "", err
	}
	n, head := 0, ""
	for _, r := range res {
		if r.Broken != nil {
			return 0, "", fmt.Errorf("%s: %w", r.Path, r.Broken)
		}
		if r.Anchor != nil {
			return 0, "", fmt.Errorf("%s: %w", r.Path, r.Anchor)
		}
		n += r.Summary.Records
		if r.Summary.LastHash != "" {
			head = r.Summary.LastHash
		}
	}
	return n, head, nil
}

// removeAuditSegments removes the audit log's segments (before a restore
// puts the backup's in their place).
func removeAuditSegments(base string) error {
	for n := 0; ; n++ {
		err := os.Remove(audit.SegmentPath(base, n))
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
