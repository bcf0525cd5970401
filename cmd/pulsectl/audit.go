package main

import (
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
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
	segs, err := audit.VerifySegments(*file, func(_ int, r audit.Record) error {
		if anchorSeq != 0 && r.Seq == anchorSeq && r.Hash != anchorHash {
			return fmt.Errorf("%w: record seq %d has hash %s, anchor says %s (the log was rewritten from there on)", errAuditAnchor, r.Seq, r.Hash, anchorHash)
		}
		return nil
	})
	switch {
	case errors.Is(err, errAuditAnchor):
		fmt.Fprintf(stdout, "broken: %s: %s\n", name, termsafe.Line(err.Error()))
		return 1
	case err != nil:
		fmt.Fprintf(stderr, "pulsectl audit verify: %s\n", termsafe.Line(err.Error()))
		return 1
	}
	if len(segs) > 1 {
		return reportSegments(stdout, name, segs, anchorSeq)
	}
	sum := segs[0].Summary
	if be := segs[0].Broken; be != nil {
		fmt.Fprintf(stdout, "broken: %s: first broken record %s\nintact records before it: %d\n", name, brokenAt(be), sum.Records)
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

// brokenAt describes a broken record: "seq N at line L: reason (detail)".
// The reason and detail can quote the log's content, which records
// agent-supplied strings: they are escaped.
func brokenAt(be *audit.BrokenError) string {
	s := fmt.Sprintf("seq %d at line %d: %s", be.Seq, be.Line, termsafe.Line(string(be.Reason)))
	if be.Detail != "" {
		s += " (" + termsafe.Line(be.Detail) + ")"
	}
	return s
}

// reportSegments prints a log of several segments (audit.log, audit.log.1,
// ...): one line per segment, one per broken anchor, then the verdict. A
// log with segments had damage (the writer only starts a segment after
// one), so the exit status is 1 even when every break is recorded and
// anchored: the records after each break are lost as evidence.
func reportSegments(stdout io.Writer, name string, segs []audit.SegmentResult, anchorSeq uint64) int {
	var (
		total           int
		last            audit.Summary
		firstBad        *audit.SegmentResult
		anchorsIntact   = true
		lastSeqVerified uint64
	)
	for i := range segs {
		sr := &segs[i]
		path := termsafe.String(sr.Path)
		if r := sr.Summary.Resumed; r != nil {
			fmt.Fprintf(stdout, "segment %d %s: starts with chain_resumed seq %d (last good seq %s, first broken line %s of %s: %s)\n", sr.N, path, r.Seq,
				termsafe.Line(r.Data[audit.ResumedDataLastSeq]), termsafe.Line(r.Data[audit.ResumedDataBrokenLine]),
				termsafe.Line(r.Data[audit.ResumedDataSegment]), termsafe.Line(r.Data[audit.ResumedDataBrokenReason]))
		}
		if sr.Anchor != nil {
			anchorsIntact = false
			fmt.Fprintf(stdout, "segment %d %s: anchor broken: %s\n", sr.N, path, termsafe.Line(sr.Anchor.Detail))
		} else if sr.N > 0 {
			fmt.Fprintf(stdout, "segment %d %s: anchor ok: follows segment %d's last good record seq %d\n", sr.N, path, sr.N-1, segs[i-1].Summary.LastSeq)
		}
		if sr.Broken != nil {
			fmt.Fprintf(stdout, "segment %d %s: broken: %d intact records, first broken record %s\n", sr.N, path, sr.Summary.Records, brokenAt(sr.Broken))
			if firstBad == nil {
				firstBad = sr
			}
		} else {
			fmt.Fprintf(stdout, "segment %d %s: ok: %d records, chain intact\n", sr.N, path, sr.Summary.Records)
		}
		total += sr.Summary.Records
		if sr.Summary.Records > 0 {
			last = sr.Summary
		}
		lastSeqVerified = max(lastSeqVerified, sr.Summary.LastSeq)
	}
	if anchorSeq > lastSeqVerified {
		fmt.Fprintf(stdout, "broken: %s: anchor record seq %d is missing: the verified records end at seq %d (truncated)\n", name, anchorSeq, lastSeqVerified)
		return 1
	}
	if anchorSeq != 0 {
		fmt.Fprintf(stdout, "anchor seq %d matches\n", anchorSeq)
	}
	switch {
	case firstBad == nil && anchorsIntact:
		fmt.Fprintf(stdout, "ok: %d records in %d segments, chain intact, last hash %s\n", total, len(segs), termsafe.String(last.LastHash))
		return 0
	case firstBad == nil:
		fmt.Fprintf(stdout, "broken: %s: %d segments, a segment's anchor does not match; %d records verified\n", name, len(segs), total)
	case anchorsIntact && segs[len(segs)-1].Broken == nil:
		fmt.Fprintf(stdout, "broken: %s: chain broken in segment %d at line %d (first bad record seq %d); every break is recorded by the next segment's chain_resumed record, which anchors to the last good record; %d records verified across %d segments, last hash %s\n",
			name, firstBad.N, firstBad.Broken.Line, firstBad.Broken.Seq, total, len(segs), termsafe.String(last.LastHash))
	default:
		fmt.Fprintf(stdout, "broken: %s: chain broken in segment %d at line %d (first bad record seq %d); %d records verified across %d segments\n",
			name, firstBad.N, firstBad.Broken.Line, firstBad.Broken.Seq, total, len(segs))
	}
	return 1
}
