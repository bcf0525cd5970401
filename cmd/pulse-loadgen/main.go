// Command pulse-loadgen drives a Pulse verifier with a fleet of virtual
// agents (package loadgen) and reports throughput, latency and whether every
// pulse got the verdict it deserved. Load tests only: its agents are written
// straight into the verifier's store (see loadgen's documentation).
package main

import (
	"github.com/pulse-attest/pulse/internal/cli"
	"github.com/pulse-attest/pulse/internal/version"
)

var commands = cli.NewRegistry("pulse-loadgen")

func init() { commands.RegisterVersion(version.Line) }

func main() { commands.Exit() }
