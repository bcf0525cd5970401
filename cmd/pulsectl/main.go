// Command pulsectl: see README.md. Subcommands register themselves from their own
// files in this directory; this file only dispatches.
//
//go:debug x509negativeserial=1
package main

import "github.com/pulse-attest/pulse/internal/cli"

var commands = cli.NewRegistry("pulsectl")

func main() { commands.Exit() }
