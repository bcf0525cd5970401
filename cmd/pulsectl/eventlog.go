package main

import (
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"

	"github.com/pulse-attest/pulse/internal/cli"
	"github.com/pulse-attest/pulse/internal/termsafe"
	"github.com/pulse-attest/pulse/tpm/eventlog"
)

func init() {
	commands.Register(cli.Command{Name: "eventlog replay",
		Summary: "replay a firmware event log: PCR values per bank and Secure Boot state",
		Run:     runEventlogReplay})
}

type sbJSON struct {
	Known        bool        `json:"known"`
	Enabled      bool        `json:"enabled"`
	SetupMode    *bool       `json:"setup_mode,omitempty"`
	DeployedMode *bool       `json:"deployed_mode,omitempty"`
	AuditMode    *bool       `json:"audit_mode,omitempty"`
	Variables    []sbVarJSON `json:"variables"`
	Authorities  []authJSON  `json:"authorities"`
}

type sbVarJSON struct {
	Name    string `json:"name"`
	SHA256  string `json:"sha256"`
	Entries int    `json:"entries"`
}

type authJSON struct {
	Variable string `json:"variable"`
	Subject  string `json:"subject,omitempty"`
	SHA256   string `json:"sha256"`
}

type replayJSON struct {
	PCRs       map[string]map[string]string `json:"pcrs"`
	SecureBoot sbJSON                       `json:"secure_boot"`
}

func optBool(known, v bool) *bool {
	if !known {
		return nil
	}
	return &v
}

func runEventlogReplay(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("pulsectl eventlog replay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	logPath := fs.String("log", "", "firmware event log (binary_bios_measurements format)")
	asJSON := fs.Bool("json", false, `print {"pcrs": {bank: {pcr: hex}}, "secure_boot": {...}}`)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *logPath == "" || fs.NArg() != 0 {
		fmt.Fprintln(stderr, "usage: pulsectl eventlog replay --log FILE [--json]")
		return 2
	}
	raw, err := os.ReadFile(*logPath)
	if err != nil {
		fmt.Fprintf(stderr, "pulsectl: read event log: %v\n", err)
		return 1
	}
	l, err := eventlog.Parse(raw)
	if err != nil {
		fmt.Fprintf(stderr, "pulsectl: %s is not a valid firmware event log: %s\n", termsafe.String(*logPath), termsafe.Line(err.Error()))
		return 1
	}
	out := replayJSON{PCRs: map[string]map[string]string{}}
	var banks []eventlog.HashAlg
	for _, alg := range l.Banks() {
		vals, err := l.Replay(alg)
		if err != nil {
			fmt.Fprintf(stderr, "pulsectl: skipping bank %s: %v\n", alg, err)
			continue
		}
		m := map[string]string{}
		for pcr, v := range vals {
			m[strconv.FormatUint(uint64(pcr), 10)] = hex.EncodeToString(v)
		}
		out.PCRs[alg.String()] = m
		banks = append(banks, alg)
	}
	sb := l.SecureBoot()
	out.SecureBoot = sbJSON{Known: sb.Known, Enabled: sb.Enabled,
		SetupMode:    optBool(sb.SetupModeKnown, sb.SetupMode),
		DeployedMode: optBool(sb.DeployedModeKnown, sb.DeployedMode),
		AuditMode:    optBool(sb.AuditModeKnown, sb.AuditMode),
		Variables:    []sbVarJSON{}, Authorities: []authJSON{}}
	for _, v := range sb.Variables {
		out.SecureBoot.Variables = append(out.SecureBoot.Variables,
			sbVarJSON{Name: v.Name, SHA256: hex.EncodeToString(v.SHA256), Entries: len(v.Entries)})
	}
	for _, a := range sb.Authorities {
		aj := authJSON{Variable: a.Variable, SHA256: hex.EncodeToString(a.SHA256)}
		if a.Cert != nil {
			aj.Subject = a.Cert.Subject
		}
		out.SecureBoot.Authorities = append(out.SecureBoot.Authorities, aj)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			fmt.Fprintf(stderr, "pulsectl: %v\n", err)
			return 1
		}
		return 0
	}
	// The log's strings (variable names, certificate subjects) come from
	// the machine that produced it: escape them.
	fmt.Fprintf(stdout, "log: %s (%s, %d events", termsafe.String(*logPath), l.Format, len(l.Events))
	if l.StartupLocality != 0 {
		fmt.Fprintf(stdout, ", startup locality %d", l.StartupLocality)
	}
	fmt.Fprintln(stdout, ")")
	for _, alg := range banks {
		fmt.Fprintf(stdout, "%s:\n", alg)
		m := out.PCRs[alg.String()]
		idx := make([]int, 0, len(m))
		for k := range m {
			n, _ := strconv.Atoi(k)
			idx = append(idx, n)
		}
		sort.Ints(idx)
		for _, n := range idx {
			fmt.Fprintf(stdout, "  PCR %-2d %s\n", n, m[strconv.Itoa(n)])
		}
	}
	state := "unknown (SecureBoot variable not measured)"
	if sb.Known && sb.Enabled {
		state = "enabled"
	} else if sb.Known {
		state = "disabled"
	}
	fmt.Fprintf(stdout, "secure boot: %s (as the log states it; not checked against a TPM quote)\n", state)
	for _, v := range sb.Variables {
		fmt.Fprintf(stdout, "  %-10s sha256 %s, %d entries\n", termsafe.String(v.Name), hex.EncodeToString(v.SHA256), len(v.Entries))
	}
	for _, a := range sb.Authorities {
		subj := "(not a certificate)"
		if a.Cert != nil {
			subj = a.Cert.Subject
		}
		fmt.Fprintf(stdout, "  authority from %s: %s\n", termsafe.String(a.Variable), termsafe.String(subj))
	}
	return 0
}
