package main

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/pulse-attest/pulse/internal/cli"
	"github.com/pulse-attest/pulse/internal/termsafe"
	"github.com/pulse-attest/pulse/policy"
	"github.com/pulse-attest/pulse/tpm/eventlog"
)

func init() {
	commands.Register(cli.Command{Name: "policy check",
		Summary: "validate policy files; diagnostics with file:line:col, exit 1 on error",
		Run:     runPolicyCheck})
	commands.Register(cli.Command{Name: "policy test",
		Summary: "evaluate a directory of evidence files against a policy and compare with NAME.expect",
		Run:     runPolicyTest})
	commands.Register(cli.Command{Name: "policy derive",
		Summary: "write a starting policy from a known-good device's evidence file",
		Run:     runPolicyDerive})
	commands.Register(cli.Command{Name: "policy evidence",
		Summary: "build an evidence file from a firmware event log (and runtime facts)",
		Run:     runPolicyEvidence})
}

// policyParse parses flags that may come before, between or after the
// positional arguments ("policy test FILE --evidence DIR"). It returns the
// positional arguments, or an exit code when parsing stopped.
func policyParse(fs *flag.FlagSet, args []string) ([]string, int, bool) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, 0, false
			}
			return nil, 2, false
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, 0, true
		}
		// flag stops at the first positional argument, or after "--".
		consumed := len(args) - len(rest)
		if consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), 0, true
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

func runPolicyCheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("pulsectl policy check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: pulsectl policy check FILE_OR_DIR...")
		fmt.Fprintln(stderr, "Validates the files as one policy set (as the verifier loads them) and prints")
		fmt.Fprintln(stderr, "diagnostics as file:line:col. Exit status 1 when there is an error. Policies of")
		fmt.Fprintln(stderr, "different files whose matches partly overlap are reported as warnings.")
	}
	files, code, ok := policyParse(fs, args)
	if !ok {
		return code
	}
	if len(files) == 0 {
		fs.Usage()
		return 2
	}
	set, srcs, failed := loadPolicy(files, stderr)
	if failed {
		return 1
	}
	// Policies of different files that partly overlap: which one wins
	// depends only on the file names. Warnings, not errors.
	policy.FormatDiagnostics(stderr, set.Overlaps(), srcs)
	fmt.Fprintf(stdout, "ok: %s in %s, digest %s\n", countOf(len(set.Policies()), "policy", "policies"),
		countOf(len(srcs), "file", "files"), set.Digest())
	for _, p := range set.Policies() {
		fmt.Fprintf(stdout, "  %-24s %s  tpm=%s\n", termsafe.String(p.Name), termsafe.String(fmt.Sprint(p.Pos)), termsafe.String(fmt.Sprint(p.TPM)))
	}
	return 0
}

func countOf(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// loadPolicy loads and prints diagnostics; failed is true on any error.
func loadPolicy(files []string, stderr io.Writer) (*policy.Set, []policy.Source, bool) {
	srcs, diags := policy.ReadSources(files...)
	var set *policy.Set
	if !diags.HasErrors() {
		more := diags
		set, diags = policy.Load(srcs)
		diags = append(more, diags...)
	}
	policy.FormatDiagnostics(stderr, diags, srcs)
	if set == nil {
		fmt.Fprintf(stderr, "%s\n", countOf(len(diags.Errs()), "error", "errors"))
		return nil, srcs, true
	}
	return set, srcs, false
}

func runPolicyTest(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("pulsectl policy test", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("evidence", "", "directory of evidence files NAME.json, each with NAME.expect beside it")
	update := fs.Bool("update", false, "write each NAME.expect from the current results (review the diff!)")
	at := fs.String("now", "", "evaluation time (RFC 3339) for evidence without recorded_at; default: now")
	verbose := fs.Bool("v", false, "print every finding, not only mismatches")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: pulsectl policy test FILE_OR_DIR... --evidence DIR [--update] [--now TIME] [-v]")
		fs.PrintDefaults()
	}
	files, code, ok := policyParse(fs, args)
	if !ok {
		return code
	}
	if len(files) == 0 || *dir == "" {
		fs.Usage()
		return 2
	}
	now := time.Now()
	if *at != "" {
		t, err := time.Parse(time.RFC3339, *at)
		if err != nil {
			fmt.Fprintf(stderr, "pulsectl policy test: --now: %v\n", err)
			return 2
		}
		now = t
	}
	set, _, failed := loadPolicy(files, stderr)
	if failed {
		return 1
	}
	cases, err := policy.RunSuite(set, *dir, now)
	if err != nil {
		fmt.Fprintf(stderr, "pulsectl policy test: %v\n", err)
		return 1
	}
	if *update {
		for _, c := range cases {
			if c.Result.PolicyDigest == "" { // the evidence itself did not load
				fmt.Fprintf(stderr, "%s: %v\n", c.Name, c.Err)
				return 1
			}
			if err := os.WriteFile(c.ExpectPath, policy.FormatExpectation(c.Result), 0o644); err != nil {
				fmt.Fprintf(stderr, "pulsectl policy test: %v\n", err)
				return 1
			}
		}
		fmt.Fprintf(stdout, "wrote %d expectation files in %s\n", len(cases), *dir)
		return 0
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CASE\tEXPECT\tGOT\tPOLICY\tFINDINGS\tRESULT")
	bad := 0
	for _, c := range cases {
		expect, result := "-", "ok"
		if c.Expect != nil {
			expect = c.Expect.Verdict
		}
		if !c.OK() {
			result = "FAIL"
			bad++
		}
		pol := c.Result.Policy
		if pol == "" {
			pol = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", termsafe.String(c.Name), termsafe.String(expect), termsafe.String(c.Result.Verdict()),
			termsafe.String(pol), len(c.Result.Findings), result)
	}
	tw.Flush()
	for _, c := range cases {
		if c.OK() && !*verbose {
			continue
		}
		// Evidence, and the findings and diffs quoting it, hold strings an
		// agent reported: escape them.
		fmt.Fprintf(stdout, "\n%s (%s):\n", termsafe.String(c.Name), termsafe.String(c.EvidencePath))
		if c.Err != nil {
			fmt.Fprintf(stdout, "  error: %s\n", termsafe.Line(c.Err.Error()))
		}
		for _, d := range c.Diffs {
			fmt.Fprintf(stdout, "  %s\n", termsafe.Line(d))
		}
		if *verbose {
			for _, f := range c.Result.Findings {
				fmt.Fprintf(stdout, "  finding: %s\n", termsafe.Line(fmt.Sprint(f)))
			}
		}
	}
	fmt.Fprintf(stdout, "\n%d cases, %d failed, policy digest %s\n", len(cases), bad, set.Digest())
	if bad > 0 {
		return 1
	}
	return 0
}

func runPolicyDerive(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("pulsectl policy derive", flag.ContinueOnError)
	fs.SetOutput(stderr)
	evPath := fs.String("evidence", "", "evidence file (JSON) of a known-good device")
	name := fs.String("name", "", "policy name (default derived-AGENT_ID)")
	out := fs.String("o", "", "write the policy to this file instead of stdout")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: pulsectl policy derive --evidence FILE [--name NAME] [-o OUT.hcl]")
		fs.PrintDefaults()
	}
	if code, ok := parseFlagsNoArgs(fs, args); !ok {
		return code
	}
	if *evPath == "" {
		fs.Usage()
		return 2
	}
	ev, err := policy.LoadEvidence(*evPath)
	if err != nil {
		fmt.Fprintf(stderr, "pulsectl policy derive: %v\n", err)
		return 1
	}
	text, err := policy.Derive(*ev, policy.DeriveOptions{Name: *name, Source: filepath.Base(*evPath)})
	if err != nil {
		fmt.Fprintf(stderr, "pulsectl policy derive: %v\n", err)
		return 1
	}
	return writeOut(*out, text, stdout, stderr)
}

func parseFlagsNoArgs(fs *flag.FlagSet, args []string) (int, bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, false
		}
		return 2, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		fs.Usage()
		return 2, false
	}
	return 0, true
}

func writeOut(path string, data []byte, stdout, stderr io.Writer) int {
	if path == "" {
		if _, err := stdout.Write(data); err != nil {
			return 1
		}
		return 0
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		fmt.Fprintf(stderr, "pulsectl: %v\n", err)
		return 1
	}
	return 0
}

type bpfFlag map[string]string

func (b bpfFlag) String() string { return fmt.Sprint(map[string]string(b)) }

func (b bpfFlag) Set(v string) error {
	name, digest, ok := strings.Cut(v, "=")
	if !ok || name == "" {
		return fmt.Errorf("want NAME=SHA256HEX, got %q", v)
	}
	b[name] = strings.ToLower(digest)
	return nil
}

func runPolicyEvidence(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("pulsectl policy evidence", flag.ContinueOnError)
	fs.SetOutput(stderr)
	logPath := fs.String("log", "", "firmware event log (binary_bios_measurements format)")
	pcrsPath := fs.String("pcrs", "", "JSON with the PCR values the TPM reported ({\"pcrs\": {\"sha256\": {\"0\": \"hex\", ...}}}); default: the log's own replay")
	bank := fs.String("bank", "auto", "PCR bank to replay: sha256, sha1, sha384, sha512 or auto (sha256 when the log has it)")
	runtimePCR := fs.Int("runtime-pcr", 14, "the device's runtime PCR (11-15): its pre-OS events in the log are recorded as runtime_pcr_history")
	agentID := fs.String("agent-id", "", "agent ID to record")
	partition := fs.String("partition", "", "partition to record")
	noTPM := fs.Bool("no-tpm", false, "record mTLS-only evidence (no quote)")
	binary := fs.String("agent-binary", "", "SHA-256 (hex) of the agent binary, for runtime evidence")
	prevBinary := fs.String("previous-agent-binary", "", "last-known-good agent binary SHA-256 (hex)")
	fortress := fs.Bool("fortress", false, "record Fortress as active")
	recorded := fs.String("recorded-at", "", "evidence time (RFC 3339), used by policy test")
	out := fs.String("o", "", "write the evidence to this file instead of stdout")
	bpf := bpfFlag{}
	fs.Var(bpf, "bpf", "pinned eBPF program NAME=SHA256HEX (repeatable)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: pulsectl policy evidence [--log FILE [--pcrs JSON] [--bank B] [--runtime-pcr N]] [--agent-binary HEX] [--bpf NAME=HEX]... [--fortress] [-o OUT.json]")
		fmt.Fprintln(stderr, "Without --pcrs the log is verified against its own replay: the result is only as")
		fmt.Fprintln(stderr, "trustworthy as the log file, so use it for test suites and derive, not as proof.")
		fs.PrintDefaults()
	}
	if code, ok := parseFlagsNoArgs(fs, args); !ok {
		return code
	}
	if *runtimePCR < 11 || *runtimePCR > 15 {
		fmt.Fprintf(stderr, "pulsectl policy evidence: --runtime-pcr %d: use one of 11-15, as the verifier does\n", *runtimePCR)
		return 2
	}
	ev := policy.Evidence{AgentID: *agentID, Partition: *partition, TPM: !*noTPM}
	if *recorded != "" {
		t, err := time.Parse(time.RFC3339, *recorded)
		if err != nil {
			fmt.Fprintf(stderr, "pulsectl policy evidence: --recorded-at: %v\n", err)
			return 2
		}
		ev.RecordedAt = t
	}
	if *logPath != "" {
		raw, err := os.ReadFile(*logPath)
		if err != nil {
			fmt.Fprintf(stderr, "pulsectl policy evidence: %v\n", err)
			return 1
		}
		var reported map[string]map[int][]byte
		if *pcrsPath != "" {
			reported, err = readReportedPCRs(*pcrsPath)
			if err != nil {
				fmt.Fprintf(stderr, "pulsectl policy evidence: %v\n", err)
				return 1
			}
			ev.Source = fmt.Sprintf("%s verified against %s", filepath.Base(*logPath), filepath.Base(*pcrsPath))
		} else {
			ev.Source = fmt.Sprintf("%s verified against its own replay (not a quote)", filepath.Base(*logPath))
		}
		boot, err := bootEvidenceFromLog(raw, *bank, reported, uint32(*runtimePCR))
		if err != nil {
			fmt.Fprintf(stderr, "pulsectl policy evidence: %s: %v\n", *logPath, err)
			return 1
		}
		ev.Boot = boot
	}
	if *binary != "" || *prevBinary != "" || len(bpf) > 0 || *fortress {
		ev.Runtime = &policy.RuntimeEvidence{
			AgentBinarySHA256:         strings.ToLower(*binary),
			PreviousAgentBinarySHA256: strings.ToLower(*prevBinary),
			BPFPrograms:               map[string]string(bpf),
			FortressActive:            *fortress,
		}
	}
	if ev.Boot == nil && ev.Runtime == nil {
		fmt.Fprintln(stderr, "pulsectl policy evidence: give --log and/or runtime facts (--agent-binary, --bpf, --fortress)")
		return 2
	}
	data, err := policy.MarshalEvidence(ev)
	if err != nil {
		fmt.Fprintf(stderr, "pulsectl policy evidence: %v\n", err)
		return 1
	}
	return writeOut(*out, data, stdout, stderr)
}

// readReportedPCRs reads PCR values in the fixture format of
// testdata/eventlogs/NAME.json.
func readReportedPCRs(path string) (map[string]map[int][]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var doc struct {
		PCRs map[string]map[string]string `json:"pcrs"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(doc.PCRs) == 0 {
		return nil, fmt.Errorf("%s: no \"pcrs\" object", path)
	}
	out := map[string]map[int][]byte{}
	for bank, vals := range doc.PCRs {
		out[bank] = map[int][]byte{}
		for k, v := range vals {
			i, err := strconv.Atoi(k)
			if err != nil {
				return nil, fmt.Errorf("%s: bad PCR index %q", path, k)
			}
			d, err := hex.DecodeString(v)
			if err != nil {
				return nil, fmt.Errorf("%s: PCR %s: %w", path, k, err)
			}
			out[bank][i] = d
		}
	}
	return out, nil
}

// bootEvidenceFromLog verifies a firmware log with eventlog.Verify (against
// the reported PCR values, or the log's own replay when reported is nil) and
// converts the replayed events into policy evidence, with the log's pre-OS
// history of the runtime PCR.
func bootEvidenceFromLog(raw []byte, bankName string, reported map[string]map[int][]byte, runtimePCR uint32) (*policy.BootEvidence, error) {
	l, err := eventlog.Parse(raw)
	if err != nil {
		return nil, err
	}
	var alg eventlog.HashAlg
	if bankName == "auto" {
		for _, cand := range []eventlog.HashAlg{eventlog.AlgSHA256, eventlog.AlgSHA384, eventlog.AlgSHA512, eventlog.AlgSHA1} {
			if hasAlg(l.Algs, cand) && (reported == nil || reported[cand.String()] != nil) {
				alg = cand
				break
			}
		}
		if alg == 0 {
			return nil, fmt.Errorf("no replayable bank in both the log (%v) and the reported PCRs", l.Algs)
		}
	} else {
		alg, err = eventlog.ParseHashAlg(bankName)
		if err != nil {
			return nil, err
		}
	}
	pcrs := map[uint32][]byte{}
	if reported != nil {
		vals, ok := reported[alg.String()]
		if !ok {
			return nil, fmt.Errorf("the reported PCRs have no %s bank", alg)
		}
		for i, v := range vals {
			pcrs[uint32(i)] = v
		}
	} else {
		pcrs, err = l.Replay(alg)
		if err != nil {
			return nil, err
		}
	}
	v, err := l.Verify(alg, pcrs)
	if err != nil {
		return nil, err
	}
	history, err := runtimePCRHistory(l, runtimePCR)
	if err != nil {
		return nil, err
	}
	be := &policy.BootEvidence{Bank: alg.String(), PCRs: map[int]string{}, Events: []policy.BootEvent{}, RuntimePCRHistory: history}
	for i, d := range v.PCRs {
		be.PCRs[int(i)] = hex.EncodeToString(d)
	}
	if v.SecureBoot.Known {
		on := v.SecureBoot.Enabled
		be.SecureBoot = &on
	}
	for _, e := range v.Events {
		be.Events = append(be.Events, policy.BootEvent{
			Seq:    e.Seq,
			PCR:    int(e.PCR),
			Type:   e.Type.String(),
			Digest: hex.EncodeToString(e.Digest(alg)),
			Note:   eventNote(e.Type, e.Data),
		})
	}
	return be, nil
}

// runtimePCRHistory names the log's events in the runtime PCR: shim's MOK
// measurements (EV_IPL, data the NUL-terminated variable name), in log order;
// empty when there are none. Like the verifier, it refuses any other event
// there and a variable measured twice. The verifier binds these events by
// replaying the runtime log onto them; this command has no runtime log, so
// they are the log's word unless the runtime PCR was among the --pcrs.
func runtimePCRHistory(l *eventlog.Log, pcr uint32) ([]string, error) {
	names := []string{}
	for _, e := range l.Events {
		if e.PCR != pcr {
			continue
		}
		name, nul := strings.CutSuffix(string(e.Data), "\x00")
		if e.Type != eventlog.EvIPL || !nul || !policy.IsMOKVariable(name) {
			return nil, fmt.Errorf("event %d (%s) in runtime PCR %d is not a measurement of shim's MOK state, so the verifier would refuse this log", e.Seq, e.Type, pcr)
		}
		if slices.Contains(names, name) {
			return nil, fmt.Errorf("event %d measures %s into runtime PCR %d a second time, so the verifier would refuse this log", e.Seq, name, pcr)
		}
		names = append(names, name)
	}
	return names, nil
}

func hasAlg(algs []eventlog.HashAlg, a eventlog.HashAlg) bool {
	for _, x := range algs {
		if x == a {
			return true
		}
	}
	return false
}

// eventNote extracts a short human hint from event data: text (UTF-8 or
// UTF-16LE) for version strings, boot loader commands and file paths, or the
// longest UTF-16 text inside an image load event's device path. It is a
// note for reviewers, never evidence.
func eventNote(t eventlog.EventType, data []byte) string {
	switch t {
	case eventlog.EvEFIBootServicesApplication, eventlog.EvEFIBootServicesDriver, eventlog.EvEFIRuntimeServicesDriver:
		return clip(imagePath(data))
	case eventlog.EvIPL, eventlog.EvEFIAction, eventlog.EvAction, eventlog.EvSCRTMVersion, eventlog.EvPostCode,
		eventlog.EvSeparator, eventlog.EvEventTag:
		s := strings.TrimRight(string(data), "\x00")
		if s != "" && utf8.ValidString(s) && printableText(s) {
			return clip(s)
		}
		if u := longestUTF16(data); len(u) >= 2*len(data)/5 {
			return clip(u)
		}
	}
	return ""
}

// imagePath returns the file path of a UEFI_IMAGE_LOAD_EVENT: the text of
// the media file path nodes (type 4, subtype 4) of its device path, which
// follows four 64-bit fields. It returns "" when there is none.
func imagePath(data []byte) string {
	const header = 32
	if len(data) < header {
		return ""
	}
	dpLen := binary.LittleEndian.Uint64(data[24:32])
	dp := data[header:]
	if dpLen < uint64(len(dp)) {
		dp = dp[:dpLen]
	}
	var parts []string
	for len(dp) >= 4 {
		typ, sub := dp[0], dp[1]
		n := int(binary.LittleEndian.Uint16(dp[2:4]))
		if n < 4 || n > len(dp) || typ == 0x7f {
			break
		}
		if typ == 4 && sub == 4 {
			body := dp[4:n]
			u := make([]uint16, 0, len(body)/2)
			for i := 0; i+1 < len(body); i += 2 {
				c := uint16(body[i]) | uint16(body[i+1])<<8
				if c == 0 {
					break
				}
				u = append(u, c)
			}
			if s := string(utf16.Decode(u)); printableText(s) {
				parts = append(parts, s)
			}
		}
		dp = dp[n:]
	}
	return strings.Join(parts, "")
}

func printableText(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

// longestUTF16 returns the longest run of printable UTF-16LE characters (at
// least 4) in b.
func longestUTF16(b []byte) string {
	best := ""
	for start := 0; start < 2; start++ {
		var run []uint16
		flush := func() {
			if len(run) >= 4 {
				if s := string(utf16.Decode(run)); len(s) > len(best) {
					best = s
				}
			}
			run = run[:0]
		}
		for i := start; i+1 < len(b); i += 2 {
			c := uint16(b[i]) | uint16(b[i+1])<<8
			if c >= 0x20 && c < 0x7f {
				run = append(run, c)
			} else {
				flush()
			}
		}
		flush()
	}
	return best
}

func clip(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 100 {
		return s[:100] + "..."
	}
	return s
}
