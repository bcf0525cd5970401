// Command pulse-agent: see README.md. Subcommands register themselves from their own
// files in this directory; this file only dispatches.
//
//go:debug x509negativeserial=1
package main

import (
	"github.com/pulse-attest/pulse/internal/cli"
	"github.com/pulse-attest/pulse/internal/version"
)

var commands = cli.NewRegistry("pulse-agent")

func init() { commands.RegisterVersion(version.Line) }

func main() { commands.Exit() }
