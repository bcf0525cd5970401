package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pulse-attest/pulse/internal/cli"
	"github.com/pulse-attest/pulse/internal/termsafe"
	"github.com/pulse-attest/pulse/verifier/admin"
)

// Commands talking to the verifier's admin API (docs/operations.md).
func init() {
	commands.Register(cli.Command{Name: "alerts list", Summary: "list alerts from the admin API (--admin URL [--open] [--agent ID])", Run: runAlertsList})
	commands.Register(cli.Command{Name: "alerts ack", Summary: "acknowledge alerts (--admin URL ALERT_ID...)", Run: runAlertsAck})
	commands.Register(cli.Command{Name: "agents approve-update", Summary: "allow an agent binary digest on agents for a window (--admin URL)", Run: runApproveUpdate})
	commands.Register(cli.Command{Name: "agents release", Summary: "lift the quarantine of an address (--admin URL ADDRESS)", Run: runRelease})
	commands.Register(cli.Command{Name: "agents quarantine", Summary: "list quarantined addresses (--admin URL)", Run: runQuarantine})
}

// adminFlags are the connection flags every admin command takes.
type adminFlags struct {
	url, ca, serverName, cert, key, token, tokenFile string
	timeout                                          time.Duration
	json                                             bool
}

func newAdminFlags(name string, stderr io.Writer) (*flag.FlagSet, *adminFlags) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	a := &adminFlags{}
	fs.StringVar(&a.url, "admin", os.Getenv("PULSE_ADMIN_URL"), "admin listener URL, https://HOST:PORT (env PULSE_ADMIN_URL)")
	fs.StringVar(&a.ca, "ca", os.Getenv("PULSE_ADMIN_CA"), "CA file the admin listener's certificate chains to (env PULSE_ADMIN_CA; default: system roots)")
	fs.StringVar(&a.serverName, "server-name", "", "name to verify in the admin listener's certificate (default: the URL's host)")
	fs.StringVar(&a.cert, "cert", "", "operator certificate file")
	fs.StringVar(&a.key, "key", "", "operator private key file")
	fs.StringVar(&a.token, "token", "", "admin bearer token (prefer PULSE_ADMIN_TOKEN or --token-file: flags show in ps)")
	fs.StringVar(&a.tokenFile, "token-file", "", "file holding the admin bearer token")
	fs.DurationVar(&a.timeout, "timeout", 30*time.Second, "request timeout")
	fs.BoolVar(&a.json, "json", false, "print JSON")
	return fs, a
}

func (a *adminFlags) client() (*admin.Client, error) {
	tok := a.token
	if tok == "" && a.tokenFile != "" {
		b, err := os.ReadFile(a.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("token file: %w", err)
		}
		tok = strings.TrimSpace(string(b))
	}
	if tok == "" {
		tok = os.Getenv("PULSE_ADMIN_TOKEN")
	}
	return admin.NewClient(admin.ClientOptions{URL: a.url, CAFile: a.ca, ServerName: a.serverName,
		CertFile: a.cert, KeyFile: a.key, Token: tok, Timeout: a.timeout})
}

// adminCommand parses flags, builds the client and runs fn with the
// remaining arguments, printing errors.
func adminCommand(name string, args []string, stderr io.Writer, extra func(*flag.FlagSet),
	fn func(ctx context.Context, c *admin.Client, a *adminFlags, rest []string) int) int {
	fs, a := newAdminFlags(name, stderr)
	if extra != nil {
		extra(fs)
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	c, err := a.client()
	if err != nil {
		fmt.Fprintf(stderr, "pulsectl %s: %v\n", name, err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), a.timeout)
	defer cancel()
	return fn(ctx, c, a, fs.Args())
}

func adminFail(stderr io.Writer, name string, err error) int {
	// The error may quote the server's answer: escape it.
	fmt.Fprintf(stderr, "pulsectl %s: %s\n", name, termsafe.Line(err.Error()))
	return 1
}

func runAlertsList(args []string, stdout, stderr io.Writer) int {
	var f admin.AlertFilter
	return adminCommand("alerts list", args, stderr, func(fs *flag.FlagSet) {
		fs.BoolVar(&f.OpenOnly, "open", false, "only alerts not yet acknowledged")
		fs.StringVar(&f.AgentID, "agent", "", "only this agent's alerts")
		fs.IntVar(&f.Limit, "limit", 0, fmt.Sprintf("at most this many (server default %d, max %d)", admin.DefaultAlertLimit, admin.MaxAlertLimit))
	}, func(ctx context.Context, c *admin.Client, a *adminFlags, rest []string) int {
		if len(rest) != 0 {
			fmt.Fprintln(stderr, "usage: pulsectl alerts list --admin URL [--open] [--agent ID] [--limit N] [--json]")
			return 2
		}
		l, err := c.ListAlerts(ctx, f)
		if err != nil {
			return adminFail(stderr, "alerts list", err)
		}
		if a.json {
			return printJSON(stdout, stderr, l.Alerts)
		}
		tw := tabwriter.NewWriter(stdout, 0, 2, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tAGENT\tSEV\tKIND\tREASON\tRAISED\tACKED\tMESSAGE")
		for _, al := range l.Alerts {
			acked := "-"
			if !al.AckedAt.IsZero() {
				acked = termsafe.String(al.AckedBy) + " " + al.AckedAt.UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", termsafe.String(al.ID), termsafe.String(al.AgentID), al.Severity,
				termsafe.String(al.Kind), termsafe.String(al.Reason),
				al.CreatedAt.UTC().Format(time.RFC3339), acked, adminOneLine(al.Message))
		}
		tw.Flush()
		return 0
	})
}

func runAlertsAck(args []string, stdout, stderr io.Writer) int {
	return adminCommand("alerts ack", args, stderr, nil, func(ctx context.Context, c *admin.Client, a *adminFlags, ids []string) int {
		if len(ids) == 0 {
			fmt.Fprintln(stderr, "usage: pulsectl alerts ack --admin URL ALERT_ID...")
			return 2
		}
		code := 0
		var results []*admin.ActionResult
		for _, id := range ids {
			r, err := c.AckAlert(ctx, id)
			if err != nil {
				fmt.Fprintf(stderr, "pulsectl alerts ack: %s: %s\n", termsafe.String(id), termsafe.Line(err.Error()))
				code = 1
				continue
			}
			results = append(results, r)
			if !a.json {
				fmt.Fprintf(stdout, "acknowledged %s (by %s)\n", termsafe.String(r.ID), termsafe.String(r.By))
			}
		}
		if a.json {
			if c := printJSON(stdout, stderr, results); c != 0 {
				return c
			}
		}
		return code
	})
}

// globList collects --agents values: repeatable and comma-separated.
type globList []string

func (g *globList) String() string { return strings.Join(*g, ",") }

func (g *globList) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*g = append(*g, s)
		}
	}
	return nil
}

func runApproveUpdate(args []string, stdout, stderr io.Writer) int {
	var (
		digest     string
		agents     globList
		start, end string
		window     time.Duration
	)
	return adminCommand("agents approve-update", args, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&digest, "digest", "", "SHA-256 of the new agent binary (64 hex characters)")
		fs.Var(&agents, "agents", "agent ID globs the approval covers (comma-separated, repeatable), e.g. 'edge-*'")
		fs.StringVar(&start, "start", "", "window start, RFC 3339 (default: now)")
		fs.StringVar(&end, "end", "", "window end, RFC 3339")
		fs.DurationVar(&window, "for", 0, "window length from the start, instead of --end (e.g. 48h)")
	}, func(ctx context.Context, c *admin.Client, a *adminFlags, rest []string) int {
		usage := "usage: pulsectl agents approve-update --admin URL --digest SHA256 --agents GLOB[,GLOB] (--end RFC3339 | --for DURATION) [--start RFC3339]"
		if len(rest) != 0 || digest == "" || len(agents) == 0 || (end == "") == (window == 0) {
			fmt.Fprintln(stderr, usage)
			return 2
		}
		req := admin.UpdateRequest{Digest: digest, Agents: agents}
		if start != "" {
			t, err := time.Parse(time.RFC3339, start)
			if err != nil {
				fmt.Fprintf(stderr, "pulsectl agents approve-update: --start: %v\n", err)
				return 2
			}
			req.Start = t
		}
		if end != "" {
			t, err := time.Parse(time.RFC3339, end)
			if err != nil {
				fmt.Fprintf(stderr, "pulsectl agents approve-update: --end: %v\n", err)
				return 2
			}
			req.End = t
		} else {
			from := req.Start
			if from.IsZero() {
				from = time.Now()
			}
			req.End = from.Add(window)
		}
		u, err := c.ApproveUpdate(ctx, req)
		if err != nil {
			return adminFail(stderr, "agents approve-update", err)
		}
		if a.json {
			return printJSON(stdout, stderr, u)
		}
		fmt.Fprintf(stdout, "approved %s for %s from %s until %s (by %s)\n", termsafe.String(u.Digest), strings.Join(termsafe.Strings(u.Agents), ","),
			u.Start.UTC().Format(time.RFC3339), u.End.UTC().Format(time.RFC3339), termsafe.String(u.By))
		fmt.Fprintf(stdout, "window %s: %d enrolled agents match\n", termsafe.String(u.ID), u.MatchedAgents)
		if u.Note != "" {
			fmt.Fprintf(stderr, "pulsectl agents approve-update: note: %s\n", adminOneLine(u.Note))
		}
		return 0
	})
}

func runRelease(args []string, stdout, stderr io.Writer) int {
	return adminCommand("agents release", args, stderr, nil, func(ctx context.Context, c *admin.Client, a *adminFlags, rest []string) int {
		if len(rest) != 1 {
			fmt.Fprintln(stderr, "usage: pulsectl agents release --admin URL ADDRESS")
			return 2
		}
		r, err := c.Release(ctx, rest[0])
		if err != nil {
			return adminFail(stderr, "agents release", err)
		}
		if a.json {
			return printJSON(stdout, stderr, r)
		}
		fmt.Fprintf(stdout, "released %s (by %s)\n", termsafe.String(r.Address), termsafe.String(r.By))
		return 0
	})
}

func runQuarantine(args []string, stdout, stderr io.Writer) int {
	return adminCommand("agents quarantine", args, stderr, nil, func(ctx context.Context, c *admin.Client, a *adminFlags, rest []string) int {
		if len(rest) != 0 {
			fmt.Fprintln(stderr, "usage: pulsectl agents quarantine --admin URL [--json]")
			return 2
		}
		l, err := c.Quarantined(ctx)
		if err != nil {
			return adminFail(stderr, "agents quarantine", err)
		}
		if a.json {
			return printJSON(stdout, stderr, l.Quarantine)
		}
		if len(l.Quarantine) == 0 {
			fmt.Fprintln(stdout, "nothing quarantined")
			return 0
		}
		tw := tabwriter.NewWriter(stdout, 0, 2, 2, ' ', 0)
		fmt.Fprintln(tw, "ADDRESS\tOFFENDER\tSINCE\tREASON")
		for _, q := range l.Quarantine {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", termsafe.String(q.Address), termsafe.String(q.Offender), q.Since.UTC().Format(time.RFC3339), adminOneLine(q.Reason))
		}
		tw.Flush()
		return 0
	})
}

// adminOneLine keeps table rows on one line whatever a message holds: the
// layout of a multi-line message folds into spaces, and control
// characters, escape sequences and invalid UTF-8 are escaped (an alert
// message can quote what an agent sent).
func adminOneLine(s string) string { return termsafe.Line(s) }
