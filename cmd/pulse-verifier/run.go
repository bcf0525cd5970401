package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/hashicorp/go-hclog"

	"github.com/pulse-attest/pulse/internal/cli"
	"github.com/pulse-attest/pulse/internal/hclconf"
	"github.com/pulse-attest/pulse/internal/logging"
	"github.com/pulse-attest/pulse/internal/sdnotify"
	"github.com/pulse-attest/pulse/verifier"
	"github.com/pulse-attest/pulse/verifier/config"
)

func init() {
	commands.Register(cli.Command{Name: "run", Summary: "run the verifier (--config FILE)", Run: runVerifier})
	commands.Register(cli.Command{Name: "validate", Summary: "check a configuration file without starting", Run: validate})
}

func loadConfig(name string, args []string, stderr io.Writer) (*config.Config, bool) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "/etc/pulse/verifier.hcl", "configuration file")
	if err := fs.Parse(args); err != nil {
		return nil, false
	}
	cfg, err := config.Load(*path)
	if err != nil {
		var he *hclconf.Error
		if errors.As(err, &he) {
			fmt.Fprint(stderr, he.Pretty())
		}
		fmt.Fprintf(stderr, "pulse-verifier: invalid configuration:\n%v\n", err)
		return nil, false
	}
	return cfg, true
}

func validate(args []string, stdout, stderr io.Writer) int {
	cfg, ok := loadConfig("validate", args, stderr)
	if !ok {
		return 1
	}
	fmt.Fprintf(stdout, "configuration ok: %s\n", cfg)
	return 0
}

func runVerifier(args []string, _, stderr io.Writer) int {
	cfg, ok := loadConfig("run", args, stderr)
	if !ok {
		return 1
	}
	log := logging.New("pulse-verifier", cfg.LogLevel, cfg.LogJSON, stderr)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	d, err := verifier.Start(ctx, cfg, log)
	if err != nil {
		log.Error("verifier failed", "error", err)
		return 1
	}
	// systemd (Type=notify) learns the verifier serves once its store,
	// policy and listeners are up; SIGHUP (ExecReload) re-reads the
	// certificates, policy and revocations at once.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	notify(log, sdnotify.Ready+"\n"+sdnotify.Status("serving agents on "+d.Addr()))
	for {
		select {
		case <-hup:
			notify(log, sdnotify.ReloadingNow())
			d.Reload(ctx) //nolint:errcheck // logged by Reload; what did not load keeps the previous files in force
			notify(log, sdnotify.Ready)
		case <-ctx.Done():
			notify(log, sdnotify.Stopping)
			log.Info("verifier stopping")
			d.Stop()
			return 0
		}
	}
}

func notify(log hclog.Logger, state string) {
	if _, err := sdnotify.Notify(state); err != nil {
		log.Warn("service manager notification failed", "error", err)
	}
}
