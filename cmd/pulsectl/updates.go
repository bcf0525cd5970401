package main

import (
	"context"
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
	commands.Register(cli.Command{Name: "updates list", Summary: "list agent update approval windows not yet ended (--admin URL)", Run: runUpdatesList})
}

func runUpdatesList(args []string, stdout, stderr io.Writer) int {
	return adminCommand("updates list", args, stderr, nil, func(ctx context.Context, c *admin.Client, a *adminFlags, rest []string) int {
		if len(rest) != 0 {
			fmt.Fprintln(stderr, "usage: pulsectl updates list --admin URL [--json]")
			return 2
		}
		l, err := c.ListUpdates(ctx)
		if err != nil {
			return adminFail(stderr, "updates list", err)
		}
		if a.json {
			return printJSON(stdout, stderr, l.Updates)
		}
		tw := tabwriter.NewWriter(stdout, 0, 2, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tDIGEST\tAGENTS\tMATCHED\tSTART\tEND\tSTATE\tBY")
		for _, u := range l.Updates {
			state := "open"
			if u.Start.After(l.Now) {
				state = "scheduled"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", termsafe.String(u.ID), termsafe.String(u.Digest),
				strings.Join(termsafe.Strings(u.Agents), ","), u.MatchedAgents,
				u.Start.UTC().Format(time.RFC3339), u.End.UTC().Format(time.RFC3339), state, termsafe.String(u.By))
		}
		tw.Flush()
		return 0
	})
}
