package main

import (
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/hashicorp/go-hclog"

	"github.com/pulse-attest/pulse/internal/cli"
	"github.com/pulse-attest/pulse/simulator"
)

func init() {
	commands.Register(cli.Command{
		Name:    "sim start",
		Summary: "start a detached swtpm simulator (--state DIR [--boot-log FILE])",
		Run:     runSimStart,
	})
	commands.Register(cli.Command{
		Name:    "sim stop",
		Summary: "stop the swtpm simulator of a state directory (--state DIR)",
		Run:     runSimStop,
	})
	commands.Register(cli.Command{
		Name:    "sim reboot",
		Summary: "reboot the swtpm simulator (orderly, or --unclean for a power loss), optionally booting a firmware log (--state DIR [--boot-log FILE] [--unclean])",
		Run:     runSimReboot,
	})
}

type simFlags struct {
	fs      *flag.FlagSet
	state   string
	bootLog string
	verbose bool
}

func newSimFlags(name string, withBootLog bool, stderr io.Writer) *simFlags {
	f := &simFlags{fs: flag.NewFlagSet("pulsectl "+name, flag.ContinueOnError)}
	f.fs.SetOutput(stderr)
	f.fs.StringVar(&f.state, "state", "", "simulator state directory (required)")
	if withBootLog {
		f.fs.StringVar(&f.bootLog, "boot-log", "", "firmware event log to boot into the TPM (binary_bios_measurements format)")
	}
	f.fs.BoolVar(&f.verbose, "v", false, "debug logging")
	return f
}

// parse parses args and returns the exit code to use when it fails (2), or 0.
func (f *simFlags) parse(args []string) int {
	if err := f.fs.Parse(args); err != nil {
		return 2 // the flag package printed the error or the usage
	}
	if f.fs.NArg() != 0 {
		fmt.Fprintf(f.fs.Output(), "%s: unexpected arguments %q\n", f.fs.Name(), f.fs.Args())
		return 2
	}
	if f.state == "" {
		fmt.Fprintf(f.fs.Output(), "%s: --state is required\n", f.fs.Name())
		f.fs.Usage()
		return 2
	}
	return 0
}

func (f *simFlags) logger(stderr io.Writer) hclog.Logger {
	level := hclog.Warn
	if f.verbose {
		level = hclog.Debug
	}
	return hclog.New(&hclog.LoggerOptions{Name: "pulsectl", Output: stderr, Level: level})
}

func runSimStart(args []string, stdout, stderr io.Writer) int {
	f := newSimFlags("sim start", true, stderr)
	if code := f.parse(args); code != 0 {
		return code
	}
	var raw []byte
	if f.bootLog != "" {
		var err error
		if raw, err = os.ReadFile(f.bootLog); err != nil {
			fmt.Fprintf(stderr, "pulsectl sim start: %v\n", err)
			return 1
		}
	}
	sw, err := simulator.Start(simulator.Options{StateDir: f.state, Detach: true, Logger: f.logger(stderr)})
	if err != nil {
		fmt.Fprintf(stderr, "pulsectl sim start: %v\n", err)
		return 1
	}
	if raw != nil {
		if _, err := sw.Boot(raw); err != nil {
			fmt.Fprintf(stderr, "pulsectl sim start: %v (stopping the simulator)\n", err)
			if serr := sw.Stop(); serr != nil {
				fmt.Fprintf(stderr, "pulsectl sim start: stop: %v\n", serr)
			}
			return 1
		}
	}
	printSim(stdout, sw)
	return 0
}

func runSimStop(args []string, stdout, stderr io.Writer) int {
	f := newSimFlags("sim stop", false, stderr)
	if code := f.parse(args); code != 0 {
		return code
	}
	sw, err := simulator.Attach(f.state, f.logger(stderr))
	if err != nil {
		fmt.Fprintf(stderr, "pulsectl sim stop: %v\n", err)
		return 1
	}
	pid := sw.PID()
	if err := sw.Stop(); err != nil {
		fmt.Fprintf(stderr, "pulsectl sim stop: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "stopped=%d\n", pid)
	return 0
}

func runSimReboot(args []string, stdout, stderr io.Writer) int {
	f := newSimFlags("sim reboot", true, stderr)
	unclean := f.fs.Bool("unclean", false, "power loss: reset without TPM2_Shutdown first (the default is an orderly reboot)")
	if code := f.parse(args); code != 0 {
		return code
	}
	var raw []byte
	if f.bootLog != "" {
		var err error
		if raw, err = os.ReadFile(f.bootLog); err != nil {
			fmt.Fprintf(stderr, "pulsectl sim reboot: %v\n", err)
			return 1
		}
	}
	sw, err := simulator.Attach(f.state, f.logger(stderr))
	if err != nil {
		fmt.Fprintf(stderr, "pulsectl sim reboot: %v\n", err)
		return 1
	}
	if !*unclean {
		if err := sw.Shutdown(); err != nil {
			fmt.Fprintf(stderr, "pulsectl sim reboot: %v\n", err)
			return 1
		}
	}
	if raw != nil {
		_, err = sw.Boot(raw)
	} else {
		err = sw.Reboot()
	}
	if err != nil {
		fmt.Fprintf(stderr, "pulsectl sim reboot: %v\n", err)
		return 1
	}
	printSim(stdout, sw)
	return 0
}

// printSim prints the simulator's facts as key=value lines.
func printSim(w io.Writer, sw *simulator.Swtpm) {
	st := sw.State()
	fmt.Fprintf(w, "tpm_spec=%s\n", st.TPMSpec)
	fmt.Fprintf(w, "firmware_log=%s\n", st.BootLog)
	fmt.Fprintf(w, "localca_cert=%s\n", st.LocalCACert)
	fmt.Fprintf(w, "pid=%d\n", st.PID)
}
