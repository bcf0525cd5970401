package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"syscall"

	"github.com/pulse-attest/pulse/internal/cli"
	"github.com/pulse-attest/pulse/internal/hclconf"
	"github.com/pulse-attest/pulse/internal/logging"
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
	if err := verifier.Run(ctx, cfg, log); err != nil {
		log.Error("verifier failed", "error", err)
		return 1
	}
	return 0
}
