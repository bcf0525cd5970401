package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pulse-attest/pulse/internal/cli"
	"github.com/pulse-attest/pulse/loadgen"
)

func init() {
	commands.Register(cli.Command{Name: "run", Summary: "run a load test (--embedded, or --verifier ADDR --ca --ca-key --store-dsn)", Run: runLoad})
	commands.Register(cli.Command{Name: "prepare", Summary: "write CA, verifier certificate, policy and verifier.hcl for an external verifier (--dir)", Run: runPrepare})
}

func runLoad(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c loadgen.Config
	fs.IntVar(&c.Agents, "agents", 100, "virtual agents")
	fs.DurationVar(&c.Interval, "interval", 30*time.Second, "pulse interval")
	fs.DurationVar(&c.Duration, "duration", 60*time.Second, "load phase length (the run stops by itself)")
	fs.DurationVar(&c.Ramp, "ramp", -1, "spread of the agents' first connections (default: the interval)")
	fs.Float64Var(&c.Jitter, "jitter", 0.1, "relative jitter of each interval (0.1 = ±5%)")
	fs.Float64Var(&c.ReplayShare, "replay-share", 0, "share of agents replaying a captured pulse")
	fs.Float64Var(&c.BadSignatureShare, "bad-signature-share", 0, "share of agents signing with a wrong key")
	fs.Float64Var(&c.StaleNonceShare, "stale-nonce-share", 0, "share of agents reusing a spent nonce")
	fs.Float64Var(&c.SilentShare, "silent-share", 0, "share of agents going silent after one pulse")
	fs.StringVar(&c.IDPrefix, "id-prefix", "lg", "agent ID prefix")
	fs.StringVar(&c.Partition, "partition", "loadgen", "agents' partition")
	fs.StringVar(&c.FirmwareLog, "firmware-log", "testdata/eventlogs/rhel8-uefi.bin", "firmware event log the virtual devices booted (Secure Boot on)")
	fs.BoolVar(&c.Embedded, "embedded", false, "start a verifier in this process")
	fs.StringVar(&c.StoreEngine, "store", "sqlite", "store engine: sqlite or postgres (embedded: a throwaway cluster unless --store-dsn)")
	fs.StringVar(&c.StoreEngine, "store-engine", "sqlite", "alias of --store")
	fs.StringVar(&c.StoreDSN, "store-dsn", "", "store DSN (external verifier: its store, for pre-registration and checks)")
	fs.BoolVar(&c.PostgresDurable, "pg-durable", false, "throwaway PostgreSQL waits for WAL flushes (synchronous_commit=on)")
	fs.StringVar(&c.Preregister, "preregister", "", "write agents into the store: before (verifier start, embedded), running, none")
	fs.IntVar(&c.Missed, "missed", 3, "embedded policy: missed pulses before BLINDED")
	fs.DurationVar(&c.Grace, "grace", 10*time.Second, "embedded policy: grace after verifier start")
	fs.StringVar(&c.VerifierAddr, "verifier", "", "external verifier address (127.0.0.1:PORT); a comma-separated list spreads the agents over replicas")
	fs.StringVar(&c.VerifierAddr, "replicas", "", "alias of --verifier: comma-separated verifier replica addresses")
	fs.StringVar(&c.CAFile, "ca", "", "external: the verifier's agent CA certificate")
	fs.StringVar(&c.CAKeyFile, "ca-key", "", "external: the agent CA's key (mints agent certificates)")
	fs.StringVar(&c.ServerCAFile, "server-ca", "", "external: CA of the verifier's certificate (default --ca)")
	fs.StringVar(&c.ServerName, "server-name", "localhost", "verifier certificate name")
	pids := fs.String("verifier-pid", "", "external: sample these processes' RSS and CPU (comma-separated pids, summed) and report the cost model")
	fs.DurationVar(&c.Baseline, "baseline", 0, "with --verifier-pid: sample the verifiers this long before any agent connects (default 5s)")
	fs.DurationVar(&c.Idle, "idle", 0, "after the load, hold every connection this long without pulsing (idle-connection cost)")
	fs.BoolVar(&c.Directives, "directives", true, "each agent holds a Directives stream open, as the real agent does")
	readyFile := fs.String("ready-file", "", "multi-process: create this file when set up, then wait for --go-file")
	goFile := fs.String("go-file", "", "multi-process: start the load when this file exists")
	fs.BoolVar(&c.WaitBlinded, "wait-blinded", true, "extend the run until silent agents are due to be BLINDED (bounded by --max-wait)")
	fs.DurationVar(&c.MaxWait, "max-wait", 3*time.Minute, "longest extension for silent agents")
	fs.DurationVar(&c.SLOP99, "slo-p99", 50*time.Millisecond, "steady-state p99 Pulse latency that counts as holding")
	fs.IntVar(&c.Workers, "workers", 0, "certificate minting goroutines (default: CPUs)")
	fs.StringVar(&c.HeapProfile, "heapprofile", "", "write a heap profile at the end of the load phase (agents still connected)")
	summary := fs.String("summary", "", "write the JSON summary to this file")
	vlog := fs.String("verifier-log", "", "embedded: append the verifier's log to this file")
	fs.StringVar(&c.VerifierLogLevel, "verifier-log-level", "warn", "embedded: verifier log level")
	quiet := fs.Bool("quiet", false, "no per-second report")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the load phase's process (embedded: verifier included)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if c.Ramp < 0 {
		c.Ramp = c.Interval
	}
	var err error
	if c.VerifierPIDs, err = parsePIDs(*pids); err != nil {
		fmt.Fprintf(stderr, "pulse-loadgen: %v\n", err)
		return 2
	}
	if *goFile != "" {
		c.Gate = func(ctx context.Context) error { return gate(ctx, *readyFile, *goFile) }
	}
	if !*quiet {
		c.Out = stdout
	}
	if *vlog != "" {
		f, err := os.OpenFile(*vlog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			fmt.Fprintf(stderr, "pulse-loadgen: %v\n", err)
			return 1
		}
		defer f.Close()
		c.VerifierLog = f
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fmt.Fprintf(stderr, "pulse-loadgen: %v\n", err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(stderr, "pulse-loadgen: %v\n", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	sum, err := loadgen.Run(ctx, c)
	if err != nil {
		fmt.Fprintf(stderr, "pulse-loadgen: %v\n", err)
		return 1
	}
	if *summary != "" {
		js, err := json.MarshalIndent(sum, "", "  ")
		if err == nil {
			err = os.WriteFile(*summary, append(js, '\n'), 0o644)
		}
		if err != nil {
			fmt.Fprintf(stderr, "pulse-loadgen: summary: %v\n", err)
			return 1
		}
	}
	loadgen.PrintSummary(stdout, sum)
	if !sum.Pass {
		return 1
	}
	return 0
}

func runPrepare(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("prepare", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "directory to write (required)")
	engine := fs.String("store", "sqlite", "store engine: sqlite or postgres")
	dsn := fs.String("store-dsn", "", "store DSN (sqlite: default DIR/state.db)")
	listen := fs.String("listen", "127.0.0.1:7443", "verifier listen address; a comma-separated list writes one configuration per replica (verifier-N.hcl, replica loadgen-N) sharing CA, certificate, policy and store")
	adminListen := fs.String("admin-listen", "", "admin listener (metrics, pprof) of the first replica, bearer token in CONFIG.token; further replicas on the following ports")
	interval := fs.Duration("interval", 30*time.Second, "policy heartbeat interval")
	missed := fs.Int("missed", 3, "policy missed pulses before BLINDED")
	grace := fs.Duration("grace", 10*time.Second, "policy grace after verifier start")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *dir == "" {
		fmt.Fprintln(stderr, "pulse-loadgen prepare: --dir is required")
		return 2
	}
	listens := strings.Split(*listen, ",")
	s, err := loadgen.Prepare(*dir, *engine, *dsn, listens[0], loadgen.Heartbeat{Interval: *interval, Missed: *missed, Grace: *grace})
	if err != nil {
		fmt.Fprintf(stderr, "pulse-loadgen prepare: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "ca=%s\nca_key=%s\nstore_engine=%s\nstore_dsn=%s\n", s.CAFile, s.CAKeyFile, s.Engine, s.DSN)
	for i, l := range listens {
		path, replica := s.ConfigFile, ""
		if len(listens) > 1 {
			path, replica = filepath.Join(*dir, fmt.Sprintf("verifier-%d.hcl", i)), fmt.Sprintf("loadgen-%d", i)
		}
		admin := ""
		if *adminListen != "" {
			host, port, err := net.SplitHostPort(*adminListen)
			p, perr := strconv.Atoi(port)
			if err != nil || perr != nil {
				fmt.Fprintf(stderr, "pulse-loadgen prepare: --admin-listen %q: want HOST:PORT\n", *adminListen)
				return 2
			}
			admin = net.JoinHostPort(host, strconv.Itoa(p+i))
		}
		if err := s.WriteConfig(path, l, replica, admin); err != nil {
			fmt.Fprintf(stderr, "pulse-loadgen prepare: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "config_%d=%s\nlisten_%d=%s\n", i, path, i, l)
		if i == 0 {
			fmt.Fprintf(stdout, "config=%s\nlisten=%s\n", path, l)
		}
		if admin != "" {
			fmt.Fprintf(stdout, "admin_%d=%s\nadmin_token_%d=%s.token\n", i, admin, i, path)
		}
	}
	return 0
}

func parsePIDs(list string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(list, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		pid, err := strconv.Atoi(f)
		if err != nil || pid <= 0 {
			return nil, fmt.Errorf("--verifier-pid: %q is not a pid", f)
		}
		out = append(out, pid)
	}
	return out, nil
}

// gate creates ready (when set) and waits for goFile to exist: the
// processes of a multi-process run start their load together.
func gate(ctx context.Context, ready, goFile string) error {
	if ready != "" {
		if err := os.WriteFile(ready, nil, 0o644); err != nil {
			return err
		}
	}
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if _, err := os.Stat(goFile); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}
