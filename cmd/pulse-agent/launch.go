package main

import (
	"flag"
	"io"

	"github.com/pulse-attest/pulse/agent/launcher"
	"github.com/pulse-attest/pulse/internal/cli"
	"github.com/pulse-attest/pulse/internal/logging"
)

func init() {
	commands.Register(cli.Command{
		Name:    "launch",
		Summary: "measure the agent binary into the runtime PCR, then exec it (--config FILE [--binary PATH] -- ARGS)",
		Run:     launchAgent,
	})
}

func launchAgent(args []string, _, stderr io.Writer) int {
	fs := flag.NewFlagSet("launch", flag.ContinueOnError)
	binary := fs.String("binary", "", "agent binary to measure and run (default: this executable)")
	cfg, ok := loadAgentConfig(fs, args, stderr)
	if !ok {
		return 2
	}
	log := logging.New("pulse-agent", cfg.LogLevel, cfg.LogJSON, stderr)
	// Launch returns only when it could not exec.
	err := launcher.Launch(launcher.Options{Config: cfg, Binary: *binary, Args: fs.Args(), Logger: log})
	log.Error("launch failed", "error", err)
	return 1
}
