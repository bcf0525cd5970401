package audit

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
)

// damagedTails are audit logs written as four good records (orig) and then
// damaged; line and reason name the first broken record a full scan finds,
// lastGood the seq of the record before it.
func damagedTails(orig [][]byte) []struct {
	name     string
	raw      []byte
	line     int
	reason   Reason
	lastGood uint64
} {
	edit := func(i int, from, to string) []byte {
		l := append([][]byte(nil), orig...)
		l[i] = bytes.Replace(l[i], []byte(from), []byte(to), 1)
		return joinLines(l)
	}
	flip := func(i int) []byte {
		l := append([][]byte(nil), orig...)
		l[i] = bytes.Clone(l[i])
		l[i][len(l[i])/2] ^= 0x01
		return joinLines(l)
	}
	truncated := joinLines(orig)
	truncated = truncated[:len(truncated)-20]
	return []struct {
		name     string
		raw      []byte
		line     int
		reason   Reason
		lastGood uint64
	}{
		{"truncated last record", truncated, 4, ReasonTruncated, 3},
		{"byte flipped in the middle of the last record", flip(3), 4, ReasonMalformed, 3},
		{"edited last record", edit(3, "edge-4", "edge-0"), 4, ReasonHashMismatch, 3},
		{"edited record before the last", edit(2, "edge-3", "edge-0"), 3, ReasonHashMismatch, 2},
		{"broken hash link: forged last record", joinLines(append(append([][]byte(nil), orig...), forge(5, GenesisPrev, "intruder"))), 5, ReasonPrevMismatch, 4},
		{"record deleted before the last", joinLines([][]byte{orig[0], orig[1], orig[3]}), 3, ReasonSeqGap, 2},
		{"single record that is not a genesis", joinLines([][]byte{orig[1]}), 1, ReasonSeqGap, 0},
		{"garbage at the end", append(joinLines(orig), "{}\n"...), 5, ReasonMalformed, 4},
		{"damage in the middle and at the tail", func() []byte {
			raw := flip(1)
			return raw[:len(raw)-1]
		}(), 2, ReasonMalformed, 1},
	}
}

func TestAuditOpenResumesAfterDamagedTail(t *testing.T) {
	_, orig := writeLog(t, 4)
	for _, tc := range damagedTails(orig) {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "audit.log")
			if err := os.WriteFile(path, tc.raw, 0o600); err != nil {
				t.Fatal(err)
			}
			w, err := Open(path, testLogger(t))
			if err != nil {
				t.Fatalf("Open refused a damaged log: %v", err)
			}
			rc := w.Recovery()
			if rc == nil {
				w.Close()
				t.Fatal("no recovery reported")
			}
			if rc.Broken.Line != tc.line || rc.Broken.Reason != tc.reason || rc.LastGoodSeq != tc.lastGood {
				t.Errorf("recovery %+v (broken %v), want line %d %s after seq %d", rc, rc.Broken, tc.line, tc.reason, tc.lastGood)
			}
			if rc.Damaged != path || rc.Segment != path+".1" {
				t.Errorf("segments %s -> %s", rc.Damaged, rc.Segment)
			}
			r := rc.Resumed
			if r.Kind != KindChainResumed || r.Severity != 1 || r.Seq != tc.lastGood+1 || r.Data[ResumedDataBrokenReason] != string(tc.reason) ||
				r.Data[ResumedDataBrokenLine] != strconv.Itoa(tc.line) || r.Data[ResumedDataLastSeq] != strconv.FormatUint(tc.lastGood, 10) {
				t.Errorf("chain_resumed record %+v", r)
			}
			if tc.lastGood > 0 && r.Data[ResumedDataLastHash] == "" {
				t.Error("no last good hash")
			}
			rec, err := w.Append(context.Background(), Record{Kind: "isolated", AgentID: "edge-9", Severity: 4})
			if err != nil || rec.Seq != tc.lastGood+2 {
				t.Fatalf("append after recovery: %+v, %v", rec, err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if after, _ := os.ReadFile(path); !bytes.Equal(after, tc.raw) {
				t.Error("the damaged segment was changed")
			}

			// Reopened: no new damage, appends continue in segment 1.
			w, err = Open(path, testLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			if w.Recovery() != nil {
				t.Errorf("second open recovered again: %+v", w.Recovery())
			}
			if rec, err := w.Append(context.Background(), Record{Kind: "released", AgentID: "edge-9", Severity: 4}); err != nil || rec.Seq != tc.lastGood+3 {
				t.Fatalf("append after reopen: %+v, %v", rec, err)
			}
			w.Close()

			res, err := VerifySegments(path, nil)
			if err != nil || len(res) != 2 {
				t.Fatalf("VerifySegments = %+v, %v", res, err)
			}
			if b := res[0].Broken; b == nil || b.Line != tc.line || b.Reason != tc.reason || res[0].Summary.LastSeq != tc.lastGood {
				t.Errorf("segment 0: %+v", res[0])
			}
			if res[1].Broken != nil || res[1].Anchor != nil || res[1].Summary.Records != 3 || res[1].Summary.LastSeq != tc.lastGood+3 {
				t.Errorf("segment 1: %+v (broken %v, anchor %v)", res[1], res[1].Broken, res[1].Anchor)
			}
		})
	}
}

func TestAuditOpenIntactTailKeepsSegment(t *testing.T) {
	// Open checks the tail only: damage further back is for Verify to find.
	path, orig := writeLog(t, 4)
	l := append([][]byte(nil), orig...)
	l[1] = bytes.Replace(l[1], []byte("edge-2"), []byte("edge-0"), 1)
	if err := os.WriteFile(path, joinLines(l), 0o600); err != nil {
		t.Fatal(err)
	}
	w, err := Open(path, testLogger(t))
	if err != nil || w.Recovery() != nil {
		t.Fatalf("open: %v, recovery %+v", err, w.Recovery())
	}
	w.Close()
	if _, err := os.Stat(path + ".1"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a segment was started: %v", err)
	}
}

func TestAuditSegmentsChainTwice(t *testing.T) {
	path, _ := writeLog(t, 3)
	damage := func(p string) {
		t.Helper()
		raw, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, raw[:len(raw)-5], 0o600); err != nil {
			t.Fatal(err)
		}
	}
	appendOne := func() *Recovery {
		t.Helper()
		w, err := Open(path, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		if _, err := w.Append(context.Background(), Record{Kind: "isolated", AgentID: "edge-1"}); err != nil {
			t.Fatal(err)
		}
		return w.Recovery()
	}
	damage(path)
	if rc := appendOne(); rc == nil || rc.Segment != path+".1" || rc.Resumed.Seq != 3 {
		t.Fatalf("first recovery %+v", rc)
	}
	appendOne()                  // segment 1: chain_resumed 3, 4, 5
	damage(SegmentPath(path, 1)) // record 5 cut
	if rc := appendOne(); rc == nil || rc.Segment != path+".2" || rc.Resumed.Seq != 5 || rc.Damaged != path+".1" {
		t.Fatalf("second recovery %+v", rc)
	}
	var seqs []uint64
	res, err := VerifySegments(path, func(seg int, r Record) error {
		seqs = append(seqs, r.Seq)
		return nil
	})
	if err != nil || len(res) != 3 {
		t.Fatalf("VerifySegments = %+v, %v", res, err)
	}
	for i, want := range []struct {
		records int
		broken  bool
	}{{2, true}, {2, true}, {2, false}} {
		if r := res[i]; r.Summary.Records != want.records || (r.Broken != nil) != want.broken || r.Anchor != nil {
			t.Errorf("segment %d: %+v (broken %v, anchor %v)", i, r, r.Broken, r.Anchor)
		}
	}
	if want := []uint64{1, 2, 3, 4, 5, 6}; !slices.Equal(seqs, want) {
		t.Errorf("verified seqs %v, want %v", seqs, want)
	}

	// The kept damaged segment edited afterwards: the anchor says so.
	raw, _ := os.ReadFile(path)
	if err := os.WriteFile(path, append(raw, 'x'), 0o600); err != nil {
		t.Fatal(err)
	}
	res, err = VerifySegments(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	var ae *AnchorError
	if a := res[1].Anchor; a == nil || !errors.As(error(a), &ae) || !errors.Is(a, ErrAnchorMismatch) || ae.Segment != 1 {
		t.Errorf("anchor after editing segment 0: %v", res[1].Anchor)
	}
}

func TestAuditVerifySegmentsAnchors(t *testing.T) {
	fresh := func(seq uint64, prev string) []byte {
		w := wireRecord{Seq: seq, Time: "2026-03-01T12:00:04Z", Kind: KindChainResumed, Severity: 1, Data: map[string]string{}, Prev: prev}
		w.Hash = w.contentHash()
		return append(w.encode(nil, true), '\n')
	}
	tests := []struct {
		name string
		seg1 func(orig [][]byte) []byte
	}{
		{"a fresh chain instead of chain_resumed", func(orig [][]byte) []byte { return joinLines(orig[:1]) }},
		{"chain_resumed not following the last good record", func(orig [][]byte) []byte { return fresh(3, GenesisPrev) }},
		{"chain_resumed after an intact segment", func(orig [][]byte) []byte { return fresh(5, lineHash(orig[3])) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path, orig := writeLog(t, 4)
			if err := os.WriteFile(path+".1", tc.seg1(orig), 0o600); err != nil {
				t.Fatal(err)
			}
			res, err := VerifySegments(path, nil)
			if err != nil || len(res) != 2 {
				t.Fatalf("VerifySegments = %+v, %v", res, err)
			}
			if !errors.Is(res[1].Anchor, ErrAnchorMismatch) {
				t.Errorf("anchor = %v", res[1].Anchor)
			}
		})
	}
}

func TestAuditOpenRemovesEmptySegment(t *testing.T) {
	path, _ := writeLog(t, 2)
	if err := os.WriteFile(path+".1", nil, 0o600); err != nil {
		t.Fatal(err)
	}
	w, err := Open(path, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if seq, _ := w.Head(); seq != 2 || w.Recovery() != nil {
		t.Errorf("head %d, recovery %+v", seq, w.Recovery())
	}
	if _, err := os.Stat(path + ".1"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("empty segment kept: %v", err)
	}
}

// lockHelperEnv makes the test binary, run as a child, open the audit log
// named by the variable and exit: 0 when it got the log, 3 when another
// writer holds it, 1 on any other failure.
const lockHelperEnv = "PULSE_AUDIT_LOCK_HELPER"

func TestMain(m *testing.M) {
	if path := os.Getenv(lockHelperEnv); path != "" {
		w, err := Open(path, nil)
		switch {
		case errors.Is(err, ErrLocked):
			os.Exit(3)
		case err != nil:
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(1)
		}
		if err := w.Close(); err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func openFromChild(t *testing.T, path string) int {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), lockHelperEnv+"="+path)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		if ee.ExitCode() == 1 {
			t.Logf("child: %s", out)
		}
		return ee.ExitCode()
	default:
		t.Fatalf("run child: %v", err)
		return -1
	}
}

func TestAuditCloseReleasesLock(t *testing.T) {
	for _, damaged := range []bool{false, true} {
		t.Run("damaged="+strconv.FormatBool(damaged), func(t *testing.T) {
			path, _ := writeLog(t, 2)
			if damaged { // the writer then appends to segment 1 and locks segment 0
				raw, _ := os.ReadFile(path)
				if err := os.WriteFile(path, raw[:len(raw)-3], 0o600); err != nil {
					t.Fatal(err)
				}
			}
			w, err := Open(path, testLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			if (w.Recovery() != nil) != damaged {
				t.Fatalf("recovery %+v", w.Recovery())
			}
			if _, err := Open(path, nil); !errors.Is(err, ErrLocked) {
				t.Fatalf("second writer in this process: %v", err)
			}
			if code := openFromChild(t, path); code != 3 {
				t.Fatalf("second writer in another process: exit %d, want 3 (locked)", code)
			}
			// Closed with nothing appended since Open (no flush of ours
			// pending): the lock goes with it.
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			w2, err := Open(path, nil)
			if err != nil {
				t.Fatalf("reopen in this process right after Close: %v", err)
			}
			if w2.Recovery() != nil {
				t.Errorf("reopen recovered again: %+v", w2.Recovery())
			}
			if err := w2.Close(); err != nil {
				t.Fatal(err)
			}
			if code := openFromChild(t, path); code != 0 {
				t.Fatalf("reopen in another process right after Close: exit %d", code)
			}
		})
	}
}
