package main

import (
	_ "embed"
	"io"

	"github.com/pulse-attest/pulse/internal/cli"
)

// exampleConfig is the commented configuration that `pulse-agent config
// example` prints and the .deb package installs as /etc/pulse/agent.hcl
// (packaging/nfpm takes this very file). Tests hold it to every key the configuration
// accepts and check that it validates.
//
//go:embed config_example.hcl
var exampleConfig string

func init() {
	commands.Register(cli.Command{Name: "config example", Summary: "print a complete, commented configuration (/etc/pulse/agent.hcl)", Run: printExampleConfig})
}

func printExampleConfig(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		io.WriteString(stderr, "pulse-agent: config example takes no arguments\n") //nolint:errcheck // best effort on a usage error
		return 2
	}
	io.WriteString(stdout, exampleConfig) //nolint:errcheck // nothing to do when stdout is gone
	return 0
}
