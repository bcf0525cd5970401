// Package pgtest starts a throwaway PostgreSQL cluster from Debian's binaries
// for tests: one cluster per test binary, started on first use, listening on a
// unix socket only, removed when the tests end. Each caller gets its own
// database. Use Main from TestMain so the cluster is stopped.
package pgtest

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // driver for the admin connection

	"github.com/pulse-attest/pulse/internal/testutil"
)

var (
	mu      sync.Mutex
	cluster *Cluster
	dbSeq   atomic.Int64
)

// Cluster is a running throwaway PostgreSQL.
type Cluster struct {
	Dir    string
	Socket string
	Port   int
	bin    string
	runAs  string
}

// Main runs the tests and stops the cluster afterwards, if one was started.
func Main(m *testing.M) int {
	code := m.Run()
	mu.Lock()
	defer mu.Unlock()
	if cluster != nil {
		cluster.Stop()
		cluster = nil
	}
	return code
}

// BinDir finds Debian's PostgreSQL server binaries (the highest version).
func BinDir() (string, error) {
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(matches) == 0 {
		if p, err := exec.LookPath("initdb"); err == nil {
			return filepath.Dir(p), nil
		}
		return "", fmt.Errorf("pgtest: PostgreSQL server binaries not found (apt-get install postgresql)")
	}
	sort.Strings(matches)
	return filepath.Dir(matches[len(matches)-1]), nil
}

// Shared returns the per-process cluster, starting it on first use. It fails
// the test in CI, and skips it outside, when PostgreSQL is not installed.
func Shared(t testing.TB) *Cluster {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	if cluster != nil {
		return cluster
	}
	bin, err := BinDir()
	if err != nil {
		testutil.Unavailable(t, "%v", err)
		return nil
	}
	c, err := Start(bin)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	cluster = c
	return c
}

// Start initialises and starts a new cluster in a temporary directory.
// PostgreSQL refuses to run as root, so as root it runs as user postgres.
func Start(bin string) (*Cluster, error) {
	dir, err := os.MkdirTemp("", "pulse-pg-")
	if err != nil {
		return nil, fmt.Errorf("pgtest: temp dir: %w", err)
	}
	c := &Cluster{Dir: dir, Socket: dir, Port: 5432, bin: bin}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("pgtest: running as root needs the postgres user: %w", err)
		}
		c.runAs = "postgres"
		if err := chownAll(dir, u); err != nil {
			return nil, err
		}
	}
	data := filepath.Join(dir, "data")
	if out, err := c.run(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"); err != nil {
		return nil, fmt.Errorf("pgtest: initdb: %w: %s", err, out)
	}
	opts := fmt.Sprintf("-c listen_addresses='' -c unix_socket_directories=%s -c port=%d -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200", dir, c.Port)
	if out, err := c.run(filepath.Join(bin, "pg_ctl"), "-D", data, "-l", filepath.Join(dir, "log"), "-o", opts, "-w", "-t", "60", "start"); err != nil {
		logText, _ := os.ReadFile(filepath.Join(dir, "log"))
		return nil, fmt.Errorf("pgtest: start: %w: %s %s", err, out, logText)
	}
	return c, nil
}

func chownAll(dir string, u *user.User) error {
	var uid, gid int
	fmt.Sscan(u.Uid, &uid)
	fmt.Sscan(u.Gid, &gid)
	if err := os.Chown(dir, uid, gid); err != nil {
		return fmt.Errorf("pgtest: chown: %w", err)
	}
	return nil
}

func (c *Cluster) run(name string, args ...string) ([]byte, error) {
	var cmd *exec.Cmd
	if c.runAs != "" {
		cmd = exec.Command("runuser", append([]string{"-u", c.runAs, "--", name}, args...)...)
	} else {
		cmd = exec.Command(name, args...)
	}
	return cmd.CombinedOutput()
}

// Stop stops the cluster and removes its directory.
func (c *Cluster) Stop() {
	c.run(filepath.Join(c.bin, "pg_ctl"), "-D", filepath.Join(c.Dir, "data"), "-m", "immediate", "-w", "stop") //nolint:errcheck // best effort
	os.RemoveAll(c.Dir)
}

// DSN returns a connection string for database name.
func (c *Cluster) DSN(name string) string {
	return fmt.Sprintf("host=%s port=%d user=postgres dbname=%s sslmode=disable", c.Socket, c.Port, name)
}

// NewDatabase creates a fresh database on the shared cluster and returns its
// DSN. The database is dropped when the test ends.
func NewDatabase(t testing.TB) string {
	t.Helper()
	c := Shared(t)
	if c == nil {
		return ""
	}
	name := fmt.Sprintf("t%d_%d", os.Getpid(), dbSeq.Add(1))
	admin, err := sql.Open("pgx", c.DSN("postgres"))
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	defer admin.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	t.Cleanup(func() {
		a, err := sql.Open("pgx", c.DSN("postgres"))
		if err != nil {
			return
		}
		defer a.Close()
		a.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)") //nolint:errcheck // best effort
	})
	return strings.TrimSpace(c.DSN(name))
}
