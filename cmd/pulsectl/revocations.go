package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/pulse-attest/pulse/internal/cli"
	"github.com/pulse-attest/pulse/internal/termsafe"
	"github.com/pulse-attest/pulse/verifier/admin"
)

func init() {
	commands.Register(cli.Command{Name: "revocations list", Summary: "list revoked agent certificates, keys and IDs (--admin URL)", Run: runRevocationsList})
	commands.Register(cli.Command{Name: "revocations add", Summary: "revoke an agent certificate, key or ID (--admin URL [--reason TEXT] serial|spki|agent VALUE)", Run: runRevocationsAdd})
	commands.Register(cli.Command{Name: "revocations remove", Summary: "lift a revocation (--admin URL serial|spki|agent VALUE)", Run: runRevocationsRemove})
}

const revocationValues = `serial: decimal (as the verifier logs it), 0x-prefixed hex or colon-separated hex (openssl)
  spki:   SHA-256 of the certificate's SubjectPublicKeyInfo, 64 hex digits
  agent:  an agent ID (every certificate naming it)`

func runRevocationsList(args []string, stdout, stderr io.Writer) int {
	return adminCommand("revocations list", args, stderr, nil, func(ctx context.Context, c *admin.Client, a *adminFlags, rest []string) int {
		if len(rest) != 0 {
			fmt.Fprintln(stderr, "usage: pulsectl revocations list --admin URL [--json]")
			return 2
		}
		l, err := c.ListRevocations(ctx)
		if err != nil {
			return adminFail(stderr, "revocations list", err)
		}
		if a.json {
			return printJSON(stdout, stderr, l)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "KIND\tVALUE\tBY\tAT\tREASON")
		for _, r := range l.Revocations {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", termsafe.String(r.Kind), termsafe.String(r.Value), termsafe.String(r.By),
				r.At.UTC().Format(time.RFC3339), termsafe.String(r.Reason))
		}
		tw.Flush()
		return 0
	})
}

func runRevocationsAdd(args []string, stdout, stderr io.Writer) int {
	var reason string
	return adminCommand("revocations add", args, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&reason, "reason", "", "why (recorded with the revocation and in the audit log)")
	}, func(ctx context.Context, c *admin.Client, a *adminFlags, rest []string) int {
		if len(rest) != 2 {
			fmt.Fprintln(stderr, "usage: pulsectl revocations add --admin URL [--reason TEXT] serial|spki|agent VALUE\n  "+revocationValues)
			return 2
		}
		r, err := c.Revoke(ctx, admin.RevocationRequest{Kind: rest[0], Value: rest[1], Reason: reason})
		if err != nil {
			return adminFail(stderr, "revocations add", err)
		}
		if a.json {
			return printJSON(stdout, stderr, r)
		}
		fmt.Fprintf(stdout, "revoked %s %s (by %s); every verifier refuses it within its revocation refresh\n",
			termsafe.String(r.Kind), termsafe.String(r.Value), termsafe.String(r.By))
		return 0
	})
}

func runRevocationsRemove(args []string, stdout, stderr io.Writer) int {
	return adminCommand("revocations remove", args, stderr, nil, func(ctx context.Context, c *admin.Client, a *adminFlags, rest []string) int {
		if len(rest) != 2 {
			fmt.Fprintln(stderr, "usage: pulsectl revocations remove --admin URL serial|spki|agent VALUE\n  "+revocationValues)
			return 2
		}
		r, err := c.Unrevoke(ctx, rest[0], rest[1])
		if err != nil {
			return adminFail(stderr, "revocations remove", err)
		}
		if a.json {
			return printJSON(stdout, stderr, r)
		}
		fmt.Fprintf(stdout, "revocation %s removed (by %s)\n", termsafe.String(r.ID), termsafe.String(r.By))
		return 0
	})
}
