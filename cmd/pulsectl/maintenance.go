package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pulse-attest/pulse/internal/cli"
	"github.com/pulse-attest/pulse/internal/termsafe"
	"github.com/pulse-attest/pulse/verifier/admin"
)

func init() {
	commands.Register(cli.Command{Name: "agents maintenance", Summary: "open a maintenance window: a planned stop of AGENT is expected (--admin URL AGENT --for 30m), or --list", Run: runMaintenance})
}

// maintenanceUsage is the command's synopsis.
const maintenanceUsage = "usage: pulsectl agents maintenance --admin URL AGENT --for DURATION [--reason TEXT]\n       pulsectl agents maintenance --admin URL --list"

func runMaintenance(args []string, stdout, stderr io.Writer) int {
	var (
		window time.Duration
		reason string
		list   bool
	)
	return adminCommand("agents maintenance", flagsFirst(args, "json", "list"), stderr, func(fs *flag.FlagSet) {
		fs.DurationVar(&window, "for", 0, "how long the window stays open from now (e.g. 30m; at most 168h)")
		fs.StringVar(&reason, "reason", "", "why (recorded in the audit log)")
		fs.BoolVar(&list, "list", false, "list the windows open now")
	}, func(ctx context.Context, c *admin.Client, a *adminFlags, rest []string) int {
		if list {
			if len(rest) != 0 || window != 0 {
				fmt.Fprintln(stderr, maintenanceUsage)
				return 2
			}
			return listMaintenance(ctx, c, a, stdout, stderr)
		}
		if len(rest) != 1 || window <= 0 {
			fmt.Fprintln(stderr, maintenanceUsage)
			return 2
		}
		m, err := c.SetMaintenance(ctx, rest[0], admin.MaintenanceRequest{For: window.String(), Reason: reason})
		if err != nil {
			return adminFail(stderr, "agents maintenance", err)
		}
		if a.json {
			return printJSON(stdout, stderr, m)
		}
		fmt.Fprintf(stdout, "maintenance window for %s open until %s (by %s): a planned stop (SIGTERM) of the agent is expected and it stays OFFLINE, not BLINDED, until then\n",
			termsafe.String(m.AgentID), m.Until.UTC().Format(time.RFC3339), termsafe.String(m.By))
		return 0
	})
}

func listMaintenance(ctx context.Context, c *admin.Client, a *adminFlags, stdout, stderr io.Writer) int {
	l, err := c.ListMaintenance(ctx)
	if err != nil {
		return adminFail(stderr, "agents maintenance", err)
	}
	if a.json {
		return printJSON(stdout, stderr, l.Maintenance)
	}
	tw := tabwriter.NewWriter(stdout, 0, 2, 2, ' ', 0)
	fmt.Fprintln(tw, "AGENT\tUNTIL\tBY\tREASON")
	for _, m := range l.Maintenance {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", termsafe.String(m.AgentID), m.Until.UTC().Format(time.RFC3339), termsafe.String(m.By), adminOneLine(m.Reason))
	}
	tw.Flush()
	return 0
}

// flagsFirst moves positional arguments after the flags, so that
// "AGENT --for 30m" parses like "--for 30m AGENT" (the flag package stops
// at the first positional argument). bools names the flags that take no
// value; every other flag takes the next argument unless written -x=v.
func flagsFirst(args []string, bools ...string) []string {
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if arg == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if !strings.HasPrefix(arg, "-") || arg == "-" {
			pos = append(pos, arg)
			continue
		}
		flags = append(flags, arg)
		name := strings.TrimLeft(arg, "-")
		if strings.Contains(name, "=") || contains(bools, name) {
			continue
		}
		if i+1 < len(args) {
			flags = append(flags, args[i+1])
			i++
		}
	}
	if len(pos) == 0 {
		return flags
	}
	return append(append(flags, "--"), pos...)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
