package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pulse-attest/pulse/internal/termsafe"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/verifier/config"
	"github.com/pulse-attest/pulse/verifier/store"
)

// runAgentsList lists agents with the filters, search and sort of the
// admin API's /api/v1/agents (store.QueryAgents): every matching agent,
// or one page with --limit (the next page's cursor goes to stderr).
func runAgentsList(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("agents list", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := verifierConfigFlag(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	verdicts := fs.String("verdict", "", "only these verdicts (comma-separated names: UNTRUSTED,BLINDED)")
	reasons := fs.String("reason", "", "only these reasons (comma-separated names: POLICY_DENIED)")
	partition := fs.String("partition", "", "only this partition")
	version := fs.String("version", "", "only agents whose last verified pulse reported this version")
	trust := fs.String("trust", "", "only tpm or mtls-only agents")
	quarantined := fs.Bool("quarantined", false, "only agents that are the offender of a quarantined address")
	openAlerts := fs.Bool("open-alerts", false, "only agents with an unacknowledged alert")
	search := fs.String("search", "", "only agents whose ID or address contains this")
	sortBy := fs.String("sort", "id", "sort by id, partition, verdict, reason, last_pulse, address or version")
	desc := fs.Bool("desc", false, "sort descending")
	limit := fs.Int("limit", 0, "print one page of this many agents (0: every matching agent)")
	after := fs.String("after", "", "the cursor a previous page printed")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 0 {
		fmt.Fprintln(stderr, "usage: pulsectl agents list --config VERIFIER.hcl [--json] [filters] [--sort KEY [--desc]] [--limit N [--after CURSOR]]")
		return 2
	}
	q := store.AgentQuery{Partition: *partition, Version: *version, Trust: *trust, Quarantined: *quarantined, OpenAlerts: *openAlerts,
		Search: *search, Sort: *sortBy, Desc: *desc, After: *after, Limit: *limit}
	for _, n := range splitNames(*verdicts) {
		v, ok := pulsev1.Verdict_value["VERDICT_"+strings.TrimPrefix(n, "VERDICT_")]
		if !ok {
			fmt.Fprintf(stderr, "pulsectl: unknown verdict %s\n", termsafe.String(n))
			return 2
		}
		q.Verdicts = append(q.Verdicts, v)
	}
	for _, n := range splitNames(*reasons) {
		v, ok := pulsev1.Reason_value["REASON_"+strings.TrimPrefix(n, "REASON_")]
		if !ok {
			fmt.Fprintf(stderr, "pulsectl: unknown reason %s\n", termsafe.String(n))
			return 2
		}
		q.Reasons = append(q.Reasons, v)
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		fmt.Fprintf(stderr, "pulsectl: %v\n", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	st, err := store.Open(ctx, cfg.Store.Engine, cfg.Store.DSN)
	if err != nil {
		fmt.Fprintf(stderr, "pulsectl: %v\n", err)
		return 1
	}
	defer st.Close()
	views, next, err := queryViews(ctx, st, q)
	if err != nil {
		fmt.Fprintf(stderr, "pulsectl: %s\n", termsafe.Line(err.Error()))
		return 1
	}
	if next != "" {
		fmt.Fprintf(stderr, "more agents: --after %s\n", next)
	}
	if *asJSON {
		return printJSON(stdout, stderr, views)
	}
	// Text output escapes every stored string (agent IDs, messages and
	// addresses come from agents): see internal/termsafe.
	tw := tabwriter.NewWriter(stdout, 0, 2, 2, ' ', 0)
	fmt.Fprintln(tw, "AGENT\tTRUST\tVERDICT\tREASON\tLAST PULSE")
	for _, v := range views {
		age := "never"
		if !v.LastPulse.IsZero() {
			age = time.Since(v.LastPulse).Round(time.Second).String() + " ago"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", termsafe.String(v.ID), v.Trust, termsafe.String(v.Verdict), termsafe.String(v.Reason), age)
	}
	tw.Flush()
	return 0
}

func splitNames(s string) []string {
	var out []string
	for _, n := range strings.Split(s, ",") {
		if n = strings.ToUpper(strings.TrimSpace(n)); n != "" {
			out = append(out, n)
		}
	}
	return out
}

// queryViews runs q: one page when q.Limit is set (and the next cursor),
// else every page.
func queryViews(ctx context.Context, st *store.Store, q store.AgentQuery) ([]agentView, string, error) {
	one := q.Limit > 0
	if !one {
		q.Limit = store.MaxAgentPage
	}
	views := []agentView{}
	for {
		p, err := st.QueryAgents(ctx, q)
		if err != nil {
			return nil, "", err
		}
		for _, r := range p.Agents {
			a, err := st.GetAgent(ctx, r.ID)
			if err != nil {
				// Removed since the page was read.
				continue
			}
			views = append(views, viewOf(a))
		}
		if one || p.Next == "" {
			return views, p.Next, nil
		}
		q.After = p.Next
	}
}
