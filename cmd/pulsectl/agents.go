package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pulse-attest/pulse/internal/cli"
	"github.com/pulse-attest/pulse/internal/termsafe"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/verifier/config"
	"github.com/pulse-attest/pulse/verifier/store"
)

func init() {
	commands.Register(cli.Command{Name: "agents list", Summary: "list agents and their last verdicts (--config VERIFIER.hcl)", Run: runAgentsList})
	commands.Register(cli.Command{Name: "agents show", Summary: "show one agent's last verdict (--config VERIFIER.hcl ID)", Run: runAgentsShow})
}

// agentView is the operator's view of an agent.
type agentView struct {
	ID           string    `json:"id"`
	Partition    string    `json:"partition"`
	Trust        string    `json:"trust"`
	Verdict      string    `json:"verdict"`
	Reason       string    `json:"reason"`
	Message      string    `json:"message"`
	LastPulse    time.Time `json:"last_pulse"`
	Sequence     uint64    `json:"sequence"`
	ResetCount   uint32    `json:"tpm_reset_count"`
	PolicyDigest string    `json:"policy_digest"`
	Address      string    `json:"address"`
	EnrolledAt   time.Time `json:"enrolled_at"`
	// AgentVersion is what the agent's last verified pulse reported.
	AgentVersion string `json:"agent_version"`
	// Quarantined is what the agent's Shield reported dropping.
	Quarantined []string `json:"quarantined"`
	// SentinelEvents are the last Sentinel records the agent reported
	// (agents show only), newest first.
	SentinelEvents []store.SentinelEvent `json:"sentinel_events,omitempty"`
}

func viewOf(a *store.Agent) agentView {
	trust := "tpm"
	if !a.TPM {
		trust = "mtls-only"
	}
	return agentView{ID: a.ID, Partition: a.Partition, Trust: trust,
		Verdict: pulsev1.Verdict(a.LastVerdict).String(), Reason: pulsev1.Reason(a.LastReason).String(), Message: a.LastMessage,
		LastPulse: a.LastPulseAt, Sequence: a.LastSeq, ResetCount: a.ResetCount, PolicyDigest: a.PolicyDigest, Address: a.Address, EnrolledAt: a.EnrolledAt,
		AgentVersion: a.AgentVersion, Quarantined: splitList(a.Quarantined)}
}

func openVerifierStore(name string, args []string, stderr io.Writer) (*store.Store, *flag.FlagSet, bool, bool) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := verifierConfigFlag(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return nil, nil, false, false
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		fmt.Fprintf(stderr, "pulsectl: %v\n", err)
		return nil, nil, false, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := store.Open(ctx, cfg.Store.Engine, cfg.Store.DSN)
	if err != nil {
		fmt.Fprintf(stderr, "pulsectl: %v\n", err)
		return nil, nil, false, false
	}
	return st, fs, *asJSON, true
}

func runAgentsShow(args []string, stdout, stderr io.Writer) int {
	st, fs, asJSON, ok := openVerifierStore("agents show", args, stderr)
	if !ok {
		return 1
	}
	defer st.Close()
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: pulsectl agents show --config VERIFIER.hcl [--json] AGENT_ID")
		return 2
	}
	a, err := st.GetAgent(context.Background(), fs.Arg(0))
	if err != nil {
		fmt.Fprintf(stderr, "pulsectl: agent %s: %s\n", termsafe.String(fs.Arg(0)), termsafe.Line(err.Error()))
		return 1
	}
	v := viewOf(a)
	if v.SentinelEvents, err = st.SentinelEvents(context.Background(), a.ID); err != nil {
		fmt.Fprintf(stderr, "pulsectl: agent %s: %s\n", termsafe.String(a.ID), termsafe.Line(err.Error()))
		return 1
	}
	if asJSON {
		return printJSON(stdout, stderr, v)
	}
	fmt.Fprintf(stdout, "agent:     %s (partition %s, %s)\nversion:   %s\nverdict:   %s\nreason:    %s\nmessage:   %s\nlast pulse: %s\nsequence:  %d\npolicy:    %s\nquarantined by this agent: %s\n",
		termsafe.String(v.ID), termsafe.String(v.Partition), v.Trust, termsafe.String(v.AgentVersion), termsafe.String(v.Verdict), termsafe.String(v.Reason), termsafe.Line(v.Message),
		v.LastPulse.Format(time.RFC3339), v.Sequence, termsafe.String(v.PolicyDigest), strings.Join(termsafe.Strings(v.Quarantined), ", "))
	printSentinelEvents(stdout, v.SentinelEvents)
	return 0
}

// printSentinelEvents prints the agent's last Sentinel records: who
// signalled the agent, who loaded eBPF programs, with the verifier's
// finding where there was one. Every agent-reported string is escaped.
func printSentinelEvents(w io.Writer, evs []store.SentinelEvent) {
	if len(evs) == 0 {
		fmt.Fprintln(w, "sentinel:  no records")
		return
	}
	fmt.Fprintf(w, "sentinel:  last %d records, newest first\n", len(evs))
	tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
	fmt.Fprintln(tw, "  SEQ\tTIME\tKIND\tSENDER PID\tCOMM\tUID\tDETAIL\tFINDING")
	for _, e := range evs {
		fmt.Fprintf(tw, "  %d\t%s\t%s\t%d\t%s\t%d\t%s\t%s\n", e.Seq, e.At.UTC().Format(time.RFC3339), termsafe.String(e.Kind),
			e.SenderPID, termsafe.String(e.SenderComm), e.SenderUID, termsafe.Line(e.Detail), termsafe.String(e.Finding))
	}
	tw.Flush()
}

func printJSON(stdout, stderr io.Writer, v any) int {
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		fmt.Fprintf(stderr, "pulsectl: %v\n", err)
		return 1
	}
	return 0
}

func splitList(s string) []string {
	if s == "" {
		return []string{}
	}
	return strings.Split(s, ",")
}
