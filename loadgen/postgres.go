package loadgen

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
)

// Postgres is a throwaway PostgreSQL cluster started from Debian's server
// binaries in a temporary directory, listening on a unix socket only.
type Postgres struct {
	Dir   string
	bin   string
	runAs string
}

// PostgresBinDir finds Debian's PostgreSQL server binaries (highest version).
func PostgresBinDir() (string, error) {
	m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(m) == 0 {
		if p, err := exec.LookPath("initdb"); err == nil {
			return filepath.Dir(p), nil
		}
		return "", fmt.Errorf("loadgen: PostgreSQL server binaries not found (apt-get install postgresql)")
	}
	sort.Strings(m)
	return filepath.Dir(m[len(m)-1]), nil
}

// StartPostgres initialises and starts a cluster. Commits do not wait for
// the WAL flush (synchronous_commit=off) unless durable is set: the same
// trade the SQLite store makes with synchronous=NORMAL.
func StartPostgres(durable bool) (*Postgres, error) {
	bin, err := PostgresBinDir()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "pulse-loadgen-pg-")
	if err != nil {
		return nil, fmt.Errorf("loadgen: postgres: %w", err)
	}
	p := &Postgres{Dir: dir, bin: bin}
	if os.Geteuid() == 0 {
		// PostgreSQL refuses to run as root.
		u, err := user.Lookup("postgres")
		if err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("loadgen: postgres as root needs the postgres user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("loadgen: postgres: %w", err)
		}
		p.runAs = "postgres"
	}
	data := filepath.Join(dir, "data")
	if out, err := p.run("initdb", "-D", data, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("loadgen: initdb: %w: %s", err, out)
	}
	sync := "off"
	if durable {
		sync = "on"
	}
	opts := fmt.Sprintf("-c listen_addresses='' -c unix_socket_directories=%s -c port=5432 -c synchronous_commit=%s -c max_connections=100 -c shared_buffers=128MB", dir, sync)
	if out, err := p.run("pg_ctl", "-D", data, "-l", filepath.Join(dir, "log"), "-o", opts, "-w", "-t", "60", "start"); err != nil {
		logText, _ := os.ReadFile(filepath.Join(dir, "log"))
		os.RemoveAll(dir)
		return nil, fmt.Errorf("loadgen: pg_ctl start: %w: %s %s", err, out, logText)
	}
	return p, nil
}

func (p *Postgres) run(tool string, args ...string) ([]byte, error) {
	name := filepath.Join(p.bin, tool)
	var cmd *exec.Cmd
	if p.runAs != "" {
		cmd = exec.Command("runuser", append([]string{"-u", p.runAs, "--", name}, args...)...)
	} else {
		cmd = exec.Command(name, args...)
	}
	return cmd.CombinedOutput()
}

// DSN is a connection string for the cluster's postgres database.
func (p *Postgres) DSN() string {
	return fmt.Sprintf("host=%s port=5432 user=postgres dbname=postgres sslmode=disable", p.Dir)
}

// Stop stops the cluster and removes its directory.
func (p *Postgres) Stop() {
	p.run("pg_ctl", "-D", filepath.Join(p.Dir, "data"), "-m", "fast", "-w", "-t", "30", "stop") //nolint:errcheck // best effort
	os.RemoveAll(p.Dir)
}
