package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/pulse-attest/pulse/internal/cli"
)

func init() {
	commands.Register(cli.Command{Name: "validate", Summary: "check a configuration file without starting (--config FILE)", Run: validateConfig})
}

func validateConfig(args []string, stdout, stderr io.Writer) int {
	cfg, ok := loadAgentConfig(flag.NewFlagSet("validate", flag.ContinueOnError), args, stderr)
	if !ok {
		return 1
	}
	fmt.Fprintf(stdout, "configuration ok: %s\n", cfg)
	return 0
}
