package main

import (
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/pulse-attest/pulse/internal/cli"
	"github.com/pulse-attest/pulse/internal/termsafe"
	"github.com/pulse-attest/pulse/verifier/audit"
)

func init() {
	commands.Register(cli.Command{Name: "audit verify",
		Summary: "verify an audit log's hash chain; name the first broken record, exit 1 when broken",
		Run:     runAuditVerify})
}

// errAuditAnchor marks an --anchor that the log does not match.
var errAuditAnchor = errors.New("anchor mismatch")

func runAuditVerify(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("pulsectl audit verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("file", "", "audit log (JSON Lines) to verify")
	anchor := fs.String("anchor", "", "SEQ:HASH of a record kept elsewhere (alert log line, webhook audit_seq/audit_hash); the log must hold it")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 || *file == "" {
		fmt.Fprintln(stderr, "pulsectl audit verify: usage: --file PATH [--anchor SEQ:HASH]")
		return 2
	}
	var anchorSeq uint64
	var anchorHash string
	if *anchor != "" {
		s, h, ok := strings.Cut(*anchor, ":")
		n, err := strconv.ParseUint(s, 10, 64)
		if _, herr := hex.DecodeString(h); !ok || err != nil || n == 0 || herr != nil || len(h) != 64 {
			fmt.Fprintln(stderr, "pulsectl audit verify: --anchor wants SEQ:HASH (seq from 1, 64 hex digits)")
			return 2
		}
		anchorSeq, anchorHash = n, strings.ToLower(h)
	}

	name := termsafe.String(*file)
	f, err := os.Open(*file)
	if err != nil {
		fmt.Fprintf(stderr, "pulsectl audit verify: %s\n", termsafe.Line(err.Error()))
		return 1
	}
	defer f.Close()
	sum, err := audit.Scan(f, func(r audit.Record) error {
		if anchorSeq != 0 && r.Seq == anchorSeq && r.Hash != anchorHash {
			return fmt.Errorf("%w: record seq %d has hash %s, anchor says %s (the log was rewritten from there on)", errAuditAnchor, r.Seq, r.Hash, anchorHash)
		}
		return nil
	})
	var be *audit.BrokenError
	switch {
	case errors.As(err, &be):
		// The reason and detail can quote the log's content, which records
		// agent-supplied strings: escape them.
		fmt.Fprintf(stdout, "broken: %s: first broken record seq %d at line %d: %s", name, be.Seq, be.Line, termsafe.Line(string(be.Reason)))
		if be.Detail != "" {
			fmt.Fprintf(stdout, " (%s)", termsafe.Line(be.Detail))
		}
		fmt.Fprintf(stdout, "\nintact records before it: %d\n", sum.Records)
		return 1
	case errors.Is(err, errAuditAnchor):
		fmt.Fprintf(stdout, "broken: %s: %s\n", name, termsafe.Line(err.Error()))
		return 1
	case err != nil:
		fmt.Fprintf(stderr, "pulsectl audit verify: %s\n", termsafe.Line(err.Error()))
		return 1
	}
	if anchorSeq > sum.LastSeq {
		fmt.Fprintf(stdout, "broken: %s: anchor record seq %d is missing: the log ends at seq %d (truncated)\n", name, anchorSeq, sum.LastSeq)
		return 1
	}
	if sum.Records == 0 {
		fmt.Fprintln(stdout, "ok: 0 records, chain intact (empty log)")
		return 0
	}
	fmt.Fprintf(stdout, "ok: %d records, chain intact, last hash %s\n", sum.Records, termsafe.String(sum.LastHash))
	if anchorSeq != 0 {
		fmt.Fprintf(stdout, "anchor seq %d matches\n", anchorSeq)
	}
	return 0
}
