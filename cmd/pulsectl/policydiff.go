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
	"github.com/pulse-attest/pulse/policy"
	"github.com/pulse-attest/pulse/verifier"
	"github.com/pulse-attest/pulse/verifier/config"
	"github.com/pulse-attest/pulse/verifier/store"
)

func init() {
	commands.Register(cli.Command{Name: "policy diff",
		Summary: "which agents' verdicts a candidate policy would change, from their stored evidence (--config VERIFIER.hcl CANDIDATE_DIR)",
		Run:     runPolicyDiff})
}

// loadPolicySet loads policy files, printing diagnostics to stderr.
func loadPolicySet(stderr io.Writer, what string, paths ...string) (*policy.Set, bool) {
	srcs, diags := policy.ReadSources(paths...)
	if diags.HasErrors() {
		fmt.Fprintf(stderr, "pulsectl: %s:\n", what)
		policy.FormatDiagnostics(stderr, diags, srcs)
		return nil, false
	}
	set, diags := policy.Load(srcs)
	if diags.HasErrors() {
		fmt.Fprintf(stderr, "pulsectl: %s:\n", what)
		policy.FormatDiagnostics(stderr, diags, srcs)
		return nil, false
	}
	return set, true
}

// runPolicyDiff evaluates a candidate policy set against every agent's
// stored evidence of its last verified pulse, beside the set in force
// (the configuration's policy files), and lists the agents whose verdict
// would change. Exit status 0 when none would, 3 when some would, 1 on
// error.
func runPolicyDiff(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("pulsectl policy diff", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := verifierConfigFlag(fs)
	asJSON := fs.Bool("json", false, "print the report as JSON")
	at := fs.String("at", "", "evaluate at this time (RFC 3339; default now): update windows depend on it")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: pulsectl policy diff --config VERIFIER.hcl [--json] [--at TIME] CANDIDATE_FILE_OR_DIR...")
		fmt.Fprintln(stderr, "Evaluates the candidate policy set and the set in force against every agent's stored")
		fmt.Fprintln(stderr, "evidence of its last verified pulse and lists the agents whose verdict would change.")
		fmt.Fprintln(stderr, "Exit status 0: no verdict changes; 3: some would; 1: error.")
	}
	paths, code, ok := policyParse(fs, args)
	if !ok {
		return code
	}
	if len(paths) == 0 {
		fs.Usage()
		return 2
	}
	now := time.Now()
	if *at != "" {
		t, err := time.Parse(time.RFC3339, *at)
		if err != nil {
			fmt.Fprintf(stderr, "pulsectl: --at: %v\n", err)
			return 2
		}
		now = t
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		fmt.Fprintf(stderr, "pulsectl: %v\n", err)
		return 1
	}
	inForce, ok := loadPolicySet(stderr, "policy in force ("+*cfgPath+")", cfg.Policy...)
	if !ok {
		return 1
	}
	candidate, ok := loadPolicySet(stderr, "candidate policy", paths...)
	if !ok {
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	st, err := store.Open(ctx, cfg.Store.Engine, cfg.Store.DSN)
	if err != nil {
		fmt.Fprintf(stderr, "pulsectl: %v\n", err)
		return 1
	}
	defer st.Close()
	rep, err := verifier.DryRun(ctx, st, inForce, candidate, now)
	if err != nil {
		fmt.Fprintf(stderr, "pulsectl: %s\n", termsafe.Line(err.Error()))
		return 1
	}
	exit := 0
	if len(rep.Changed) > 0 {
		exit = 3
	}
	if *asJSON {
		if code := printJSON(stdout, stderr, rep); code != 0 {
			return code
		}
		return exit
	}
	fmt.Fprintf(stdout, "in force %s, candidate %s: %d agents evaluated, %d would change, %d unchanged",
		short12(rep.InForceDigest), short12(rep.CandidateDigest), rep.Evaluated, len(rep.Changed), rep.Unchanged)
	if rep.WithoutEvidence > 0 {
		fmt.Fprintf(stdout, ", %d without stored evidence", rep.WithoutEvidence)
	}
	if rep.Incomplete > 0 {
		fmt.Fprintf(stdout, ", %d with incomplete boot evidence", rep.Incomplete)
	}
	if rep.Unreadable > 0 {
		fmt.Fprintf(stdout, ", %d with unreadable evidence", rep.Unreadable)
	}
	fmt.Fprintln(stdout)
	if len(rep.Changed) == 0 {
		return exit
	}
	// Agent IDs, partitions and finding messages hold agent-supplied text:
	// escaped (internal/termsafe).
	tw := tabwriter.NewWriter(stdout, 0, 2, 2, ' ', 0)
	fmt.Fprintln(tw, "AGENT\tPARTITION\tNOW\tIN FORCE\tCANDIDATE\tWHY")
	for _, c := range rep.Changed {
		why := ""
		for _, f := range c.Candidate.Findings {
			if f.Mode == policy.Enforce {
				why = f.String()
				break
			}
		}
		if c.Incomplete {
			why += " (boot evidence incomplete)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s/%s\t%s/%s\t%s\n", termsafe.String(c.AgentID), termsafe.String(c.Partition), c.Current,
			c.InForce.Verdict, c.InForce.Reason, c.Candidate.Verdict, c.Candidate.Reason, termsafe.Line(why))
	}
	tw.Flush()
	return exit
}

func short12(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}
