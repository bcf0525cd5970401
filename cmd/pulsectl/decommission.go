package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/pulse-attest/pulse/internal/cli"
	"github.com/pulse-attest/pulse/internal/termsafe"
	"github.com/pulse-attest/pulse/verifier/admin"
)

func init() {
	commands.Register(cli.Command{Name: "agents remove", Summary: "decommission an agent: remove it from the store and revoke its ID, audit-logged (--admin URL [--reason TEXT] [--keep-certificate] ID)", Run: runAgentsRemove})
}

func runAgentsRemove(args []string, stdout, stderr io.Writer) int {
	var (
		reason string
		keep   bool
	)
	return adminCommand("agents remove", args, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&reason, "reason", "", "why (recorded in the audit log)")
		fs.BoolVar(&keep, "keep-certificate", false, "do not revoke the agent ID: the device may enroll again with its certificate")
	}, func(ctx context.Context, c *admin.Client, a *adminFlags, rest []string) int {
		if len(rest) != 1 {
			fmt.Fprintln(stderr, "usage: pulsectl agents remove --admin URL [--reason TEXT] [--keep-certificate] AGENT_ID")
			return 2
		}
		r, err := c.RemoveAgent(ctx, rest[0], admin.RemoveRequest{Revoke: !keep, Reason: reason})
		if err != nil {
			return adminFail(stderr, "agents remove", err)
		}
		if a.json {
			return printJSON(stdout, stderr, r)
		}
		revoked := "its ID is revoked"
		if !r.Revoked {
			revoked = "its certificate was kept"
		}
		fmt.Fprintf(stdout, "removed %s (partition %s, enrolled %s) by %s; %s\n", termsafe.String(r.Agent.ID), termsafe.String(r.Agent.Partition),
			r.Agent.EnrolledAt.Format("2006-01-02T15:04:05Z07:00"), termsafe.String(r.By), revoked)
		return 0
	})
}
