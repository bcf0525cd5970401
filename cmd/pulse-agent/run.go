package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/pulse-attest/pulse/agent"
	"github.com/pulse-attest/pulse/agent/config"
	"github.com/pulse-attest/pulse/agent/ebpf"
	"github.com/pulse-attest/pulse/agent/launcher"
	"github.com/pulse-attest/pulse/internal/cli"
	"github.com/pulse-attest/pulse/internal/hclconf"
	"github.com/pulse-attest/pulse/internal/logging"
)

// DefaultConfigPath is where the agent looks for its configuration.
const DefaultConfigPath = "/etc/pulse/agent.hcl"

func init() {
	commands.Register(cli.Command{Name: "run", Summary: "run the agent (--config FILE)", Run: runAgent})
}

// loadAgentConfig parses --config from args and loads the file, printing
// diagnostics (file:line:col, with the source line) on failure.
func loadAgentConfig(fs *flag.FlagSet, args []string, stderr io.Writer) (*config.Config, bool) {
	fs.SetOutput(stderr)
	path := fs.String("config", DefaultConfigPath, "configuration file")
	if err := fs.Parse(args); err != nil {
		return nil, false
	}
	// Started by the launcher, this reads the sealed copy of the bytes the
	// launcher measured, not the file (see agent/launcher.LoadConfig).
	cfg, err := launcher.LoadConfig(*path)
	if err != nil {
		var he *hclconf.Error
		if errors.As(err, &he) {
			fmt.Fprint(stderr, he.Pretty())
		}
		fmt.Fprintf(stderr, "pulse-agent: invalid configuration:\n%v\n", err)
		return nil, false
	}
	return cfg, true
}

func runAgent(args []string, _, stderr io.Writer) int {
	cfg, ok := loadAgentConfig(flag.NewFlagSet("run", flag.ContinueOnError), args, stderr)
	if !ok {
		return 2
	}
	log := logging.New("pulse-agent", cfg.LogLevel, cfg.LogJSON, stderr)
	// Shield never drops the verifier's addresses nor protected_addresses.
	protected := agent.ProtectedAddresses(context.Background(), cfg, log.Named("agent"))
	a, err := agent.New(agent.Options{Config: cfg, Logger: log, BPFFactory: ebpf.Factory(cfg.BPF.PinDir, cfg.BPF.Interfaces, log, protected...)})
	if err != nil {
		log.Error("agent failed to start", "error", err)
		return 1
	}
	defer a.Close()
	// Start-up (configuration, the kernel's BTF for eBPF CO-RE, the first
	// log reads) leaves garbage the steady state never reuses: collect it
	// and hand the pages back now rather than over the scavenger's minutes.
	debug.FreeOSMemory()
	// SIGTERM and SIGINT stop the agent in an orderly way: a final pulse
	// marked as a planned stop (docs/agent.md, "Planned stops").
	ctx, stop := agent.NotifyStop(context.Background(), a, log.Named("agent"))
	defer stop()
	// SIGHUP re-reads the certificate and key at once.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			if err := a.ReloadCertificate(); err != nil {
				log.Error("certificate reload refused", "error", err)
			}
		}
	}()
	if err := a.Run(ctx); err != nil {
		log.Error("agent failed", "error", err)
		return 1
	}
	return 0
}
