package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/pulse-attest/pulse/agent/launcher"
	"github.com/pulse-attest/pulse/internal/cli"
	"github.com/pulse-attest/pulse/internal/hclconf"
	"github.com/pulse-attest/pulse/internal/logging"
)

func init() {
	commands.Register(cli.Command{
		Name:    "launch",
		Summary: "measure the agent binary, configuration, arguments and environment into the runtime PCR, then exec it (--config FILE [--binary PATH] [--keep-env NAME] -- ARGS)",
		Run:     launchAgent,
	})
}

// envNames collects --keep-env values: repeatable and comma-separated.
type envNames []string

func (e *envNames) String() string { return strings.Join(*e, ",") }

func (e *envNames) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*e = append(*e, s)
		}
	}
	return nil
}

func launchAgent(args []string, _, stderr io.Writer) int {
	fs := flag.NewFlagSet("launch", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", DefaultConfigPath, "configuration file (read once: the agent gets the measured bytes)")
	binary := fs.String("binary", "", "agent binary to measure and run (default: this executable)")
	var keep envNames
	fs.Var(&keep, "keep-env", "pass this environment variable to the agent besides the default allow-list (repeatable, comma-separated; its value is measured)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	// The launcher reads the file itself, once: the bytes it parses are the
	// bytes it measures and hands over (never a path the agent re-reads).
	cf, err := launcher.ReadConfig(*path)
	if err != nil {
		var he *hclconf.Error
		if errors.As(err, &he) {
			fmt.Fprint(stderr, he.Pretty())
		}
		fmt.Fprintf(stderr, "pulse-agent: invalid configuration:\n%v\n", err)
		return 2
	}
	log := logging.New("pulse-agent", cf.Config.LogLevel, cf.Config.LogJSON, stderr)
	// Launch returns only when it could not exec.
	err = launcher.Launch(launcher.Options{Config: cf, Binary: *binary, Args: fs.Args(), KeepEnv: keep, Logger: log})
	log.Error("launch failed", "error", err)
	return 1
}
