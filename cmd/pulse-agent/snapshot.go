package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"text/tabwriter"

	"github.com/pulse-attest/pulse/bpf"
	"github.com/pulse-attest/pulse/bpf/snapshot"
	"github.com/pulse-attest/pulse/internal/cli"
)

func init() {
	commands.Register(cli.Command{
		Name:    "snapshot",
		Summary: "print the eBPF snapshot of this host: loaded programs and the agent's pins",
		Run:     runSnapshot,
	})
}

func runSnapshot(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("snapshot", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print JSON: {\"programs\": [{id, name, type, tag}], \"pinned\": {...}}")
	pinDir := fs.String("pin-dir", bpf.DefaultPinDir, "the agent's bpffs pin directory")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: pulse-agent snapshot [--json] [--pin-dir DIR]\n\n"+
			"Lists every eBPF program loaded on this host (as bpftool prog show) and checks\n"+
			"the programs pinned under the agent's directory against the load records the\n"+
			"agent pinned with them. Needs root.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "pulse-agent snapshot: unexpected arguments %q\n", fs.Args())
		fs.Usage()
		return 2
	}
	snap, err := bpf.TakeSnapshot(context.Background(), *pinDir, nil)
	if err != nil {
		fmt.Fprintf(stderr, "pulse-agent snapshot: %v\n", err)
		if os.Geteuid() != 0 {
			fmt.Fprintln(stderr, "pulse-agent snapshot: listing eBPF programs needs root")
		}
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(snap); err != nil {
			fmt.Fprintf(stderr, "pulse-agent snapshot: %v\n", err)
			return 1
		}
		return 0
	}
	printSnapshot(stdout, snap)
	return 0
}

func printSnapshot(w io.Writer, snap snapshot.Snapshot) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "ID\tTYPE\tTAG\tNAME\n")
	for _, p := range snap.Programs {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", p.ID, p.Type, p.Tag, p.Name)
	}
	tw.Flush()
	state := "checked against the agent's load records"
	if !snap.Checked {
		state = "no load records found: not checked"
	}
	fmt.Fprintf(w, "\n%d programs loaded; %d pinned under %s (%s)\n", len(snap.Programs), len(snap.Pinned), snap.PinDir, state)
	if len(snap.Pinned) == 0 {
		return
	}
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "PIN\tID\tTAG\tSTATUS\n")
	for _, name := range snap.Names() {
		p := snap.Pinned[name]
		status := "ok"
		switch {
		case p.Problem != snapshot.ProblemNone:
			status = string(p.Problem)
			if p.Detail != "" {
				status += ": " + p.Detail
			}
		case !snap.Checked && !p.OK:
			status = "unreadable: " + p.Detail
		case !snap.Checked:
			status = "unchecked"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", name, p.ID, p.Tag, status)
	}
	tw.Flush()
}
