package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

func testLogger(t testing.TB) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: t.Name(), Level: hclog.Debug, Output: testWriter{t}})
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// writeLog writes n records through a Writer and returns the path and the
// file's lines (without newlines).
func writeLog(t *testing.T, n int) (string, [][]byte) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	w, err := Open(path, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for i := 1; i <= n; i++ {
		_, err := w.Append(context.Background(), Record{
			Time:     base.Add(time.Duration(i) * 1500 * time.Millisecond),
			Kind:     "binary_changed",
			AgentID:  fmt.Sprintf("edge-%d", i),
			Severity: 2,
			Data:     map[string]string{"alert_id": fmt.Sprintf("a%d", i), "reason": "REASON_BINARY_CHANGED", "note": "quote \" backslash \\ tab \t ünï"},
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, splitLines(raw)
}

func splitLines(raw []byte) [][]byte {
	lines := bytes.Split(bytes.TrimSuffix(raw, []byte("\n")), []byte("\n"))
	for i := range lines {
		lines[i] = bytes.Clone(lines[i])
	}
	return lines
}

func joinLines(lines [][]byte) []byte {
	var b bytes.Buffer
	for _, l := range lines {
		b.Write(l)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// forge builds a record line with a correct hash for the given fields.
func forge(seq uint64, prev string, agent string) []byte {
	w := wireRecord{Seq: seq, Time: "2026-03-01T12:00:04Z", Kind: "released", AgentID: agent, Severity: 4, Data: map[string]string{}, Prev: prev}
	w.Hash = w.contentHash()
	return w.encode(nil, true)
}

func TestAuditVerifyGoodChain(t *testing.T) {
	path, lines := writeLog(t, 5)
	raw, _ := os.ReadFile(path)
	s, err := Scan(bytes.NewReader(raw), nil)
	if err != nil {
		t.Fatalf("good chain: %v", err)
	}
	if s.Records != 5 || s.LastSeq != 5 {
		t.Fatalf("summary = %+v", s)
	}
	if s.LastLineHash != lineHash(lines[4]) {
		t.Errorf("last line hash = %s", s.LastLineHash)
	}
	// Field order, first link and canonical time as documented.
	first := string(lines[0])
	if !strings.HasPrefix(first, `{"seq":1,"time":"2026-03-01T12:00:01.5Z","kind":"binary_changed","agent_id":"edge-1","severity":2,"data":{"alert_id":"a1","note":"quote \" backslash \\ tab \t ünï","reason":"REASON_BINARY_CHANGED"},"prev":"`+GenesisPrev+`","hash":"`) {
		t.Errorf("first line not in the documented form:\n%s", first)
	}
	n, err := Verify(bytes.NewReader(nil))
	if n != 0 || err != nil {
		t.Errorf("empty log: %d, %v", n, err)
	}
	var seqs []uint64
	if _, err := Scan(bytes.NewReader(raw), func(r Record) error { seqs = append(seqs, r.Seq); return nil }); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(seqs) != "[1 2 3 4 5]" {
		t.Errorf("scan saw %v", seqs)
	}
	stop := errors.New("stop")
	if _, err := Scan(bytes.NewReader(raw), func(Record) error { return stop }); err != stop {
		t.Errorf("scan callback error = %v", err)
	}
}

func TestAuditVerifyDetectsTampering(t *testing.T) {
	_, orig := writeLog(t, 5)
	clone := func() [][]byte {
		out := make([][]byte, len(orig))
		for i := range orig {
			out[i] = bytes.Clone(orig[i])
		}
		return out
	}
	type want struct {
		n      int
		seq    uint64
		line   int
		reason Reason
	}
	tests := []struct {
		name   string
		mutate func() []byte
		want   want
	}{
		{"edit severity of a middle record", func() []byte {
			l := clone()
			l[2] = bytes.Replace(l[2], []byte(`"severity":2`), []byte(`"severity":1`), 1)
			return joinLines(l)
		}, want{2, 3, 3, ReasonHashMismatch}},
		{"edit agent of a middle record", func() []byte {
			l := clone()
			l[2] = bytes.Replace(l[2], []byte(`edge-3`), []byte(`edge-9`), 1)
			return joinLines(l)
		}, want{2, 3, 3, ReasonHashMismatch}},
		{"edit a middle record and recompute its hash", func() []byte {
			l := clone()
			w, err := parseLine(l[2])
			if err != nil {
				t.Fatal(err)
			}
			w.AgentID = "edge-9"
			w.Hash = w.contentHash()
			l[2] = w.encode(nil, true)
			return joinLines(l)
		}, want{3, 4, 4, ReasonPrevMismatch}},
		{"delete a middle record", func() []byte {
			l := clone()
			return joinLines(append(l[:2], l[3:]...))
		}, want{2, 4, 3, ReasonSeqGap}},
		{"delete the first record", func() []byte {
			return joinLines(clone()[1:])
		}, want{0, 2, 1, ReasonSeqGap}},
		{"reorder two records", func() []byte {
			l := clone()
			l[1], l[2] = l[2], l[1]
			return joinLines(l)
		}, want{1, 3, 2, ReasonSeqGap}},
		{"truncate mid-line at the end", func() []byte {
			raw := joinLines(clone())
			return raw[:len(raw)-len(orig[4])/2]
		}, want{4, 5, 5, ReasonTruncated}},
		{"truncate only the final newline", func() []byte {
			raw := joinLines(clone())
			return raw[:len(raw)-1]
		}, want{4, 5, 5, ReasonTruncated}},
		{"cut a middle record in half", func() []byte {
			l := clone()
			l[2] = l[2][:len(l[2])/2]
			return joinLines(l)
		}, want{2, 3, 3, ReasonMalformed}},
		{"insert a forged record with recomputed hash and wrong prev", func() []byte {
			l := clone()
			forged := forge(3, lineHash(l[0]), "intruder")
			return joinLines(append(l[:2], append([][]byte{forged}, l[2:]...)...))
		}, want{2, 3, 3, ReasonPrevMismatch}},
		{"insert a forged record with the right prev", func() []byte {
			l := clone()
			forged := forge(3, lineHash(l[1]), "intruder")
			return joinLines(append(l[:2], append([][]byte{forged}, l[2:]...)...))
		}, want{3, 3, 4, ReasonSeqGap}},
		{"forged genesis with a non-zero prev", func() []byte {
			l := clone()
			l[0] = forge(1, lineHash([]byte("x")), "intruder")
			return joinLines(l)
		}, want{0, 1, 1, ReasonPrevMismatch}},
		{"reformat a record with spaces", func() []byte {
			l := clone()
			l[1] = bytes.Replace(l[1], []byte(`"seq":2,`), []byte(`"seq": 2, `), 1)
			return joinLines(l)
		}, want{1, 2, 2, ReasonMalformed}},
		{"escape a character differently", func() []byte {
			l := clone()
			l[1] = bytes.Replace(l[1], []byte(`ü`), []byte(`\u00fc`), 1)
			return joinLines(l)
		}, want{1, 2, 2, ReasonMalformed}},
		{"upper-case a key", func() []byte {
			l := clone()
			l[1] = bytes.Replace(l[1], []byte(`"kind"`), []byte(`"KIND"`), 1)
			return joinLines(l)
		}, want{1, 2, 2, ReasonMalformed}},
		{"duplicate a key", func() []byte {
			l := clone()
			l[1] = bytes.Replace(l[1], []byte(`"seq":2,`), []byte(`"seq":2,"seq":2,`), 1)
			return joinLines(l)
		}, want{1, 2, 2, ReasonMalformed}},
		{"unknown field", func() []byte {
			l := clone()
			l[1] = bytes.Replace(l[1], []byte(`"seq":2,`), []byte(`"seq":2,"x":1,`), 1)
			return joinLines(l)
		}, want{1, 2, 2, ReasonMalformed}},
		{"time with an offset", func() []byte {
			l := clone()
			l[1] = bytes.Replace(l[1], []byte(`12:00:03Z`), []byte(`12:00:03+00:00`), 1)
			return joinLines(l)
		}, want{1, 2, 2, ReasonMalformed}},
		{"blank line", func() []byte {
			l := clone()
			return joinLines(append(l[:3], append([][]byte{{}}, l[3:]...)...))
		}, want{3, 4, 4, ReasonMalformed}},
		{"garbage line", func() []byte {
			l := clone()
			l[3] = []byte("not json")
			return joinLines(l)
		}, want{3, 4, 4, ReasonMalformed}},
		{"invalid UTF-8", func() []byte {
			l := clone()
			l[3] = bytes.Replace(l[3], []byte(`ü`), []byte{0xff}, 1)
			return joinLines(l)
		}, want{3, 4, 4, ReasonMalformed}},
		{"over-long line", func() []byte {
			l := clone()
			l = append(l, bytes.Repeat([]byte("x"), MaxLineSize+10))
			return joinLines(l)
		}, want{5, 6, 6, ReasonMalformed}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n, err := Verify(bytes.NewReader(tc.mutate()))
			var be *BrokenError
			if !errors.As(err, &be) {
				t.Fatalf("err = %v, want *BrokenError", err)
			}
			if !errors.Is(err, ErrBroken) {
				t.Error("errors.Is(err, ErrBroken) is false")
			}
			got := want{n, be.Seq, be.Line, be.Reason}
			if got != tc.want {
				t.Errorf("got %+v (%v), want %+v", got, err, tc.want)
			}
		})
	}
}

func TestAuditResumeAfterReopen(t *testing.T) {
	path, _ := writeLog(t, 3)
	w, err := Open(path, testLogger(t))
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	if seq, _ := w.Head(); seq != 3 {
		t.Fatalf("head seq after reopen = %d", seq)
	}
	for i := 0; i < 2; i++ {
		rec, err := w.Append(context.Background(), Record{Kind: "isolated", AgentID: "edge-x", Severity: 4})
		if err != nil {
			t.Fatal(err)
		}
		if rec.Seq != uint64(4+i) || rec.Hash == "" || rec.Time.IsZero() {
			t.Fatalf("appended %+v", rec)
		}
	}
	_, headHash := w.Head()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s, err := Scan(f, nil)
	if err != nil || s.Records != 5 || s.LastHash != headHash {
		t.Fatalf("after resume: %+v, %v (head %s)", s, err, headHash)
	}
	if _, err := w.Append(context.Background(), Record{Kind: "x"}); !errors.Is(err, ErrClosed) {
		t.Errorf("append after close = %v", err)
	}
}

func TestAuditOpenEmptyAndLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	w, err := Open(path, testLogger(t))
	if err != nil {
		t.Fatalf("empty file: %v", err)
	}
	if _, err := Open(path, testLogger(t)); !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "another writer") {
		t.Fatalf("second writer: %v", err)
	}
	rec, err := w.Append(context.Background(), Record{Kind: "isolated", AgentID: "a"})
	if err != nil || rec.Seq != 1 || rec.Prev != GenesisPrev {
		t.Fatalf("first append: %+v, %v", rec, err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w2, err := Open(path, testLogger(t)) // lock released by Close
	if err != nil {
		t.Fatal(err)
	}
	w2.Close()
	if _, err := Open(filepath.Join(t.TempDir(), "missing-dir", "a.jsonl"), nil); err == nil {
		t.Error("open in a missing directory succeeded")
	}
}

func TestAuditConcurrentAppends(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	w, err := Open(path, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	const workers, each = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for g := 0; g < workers; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				_, err := w.Append(context.Background(), Record{Kind: "untrusted", AgentID: fmt.Sprintf("g%d", g), Severity: 2,
					Data: map[string]string{"i": fmt.Sprint(i)}})
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	seen := map[string]bool{}
	s, err := Scan(f, func(r Record) error {
		seen[r.AgentID+"/"+r.Data["i"]] = true
		return nil
	})
	if err != nil || s.Records != workers*each || len(seen) != workers*each {
		t.Fatalf("concurrent chain: %+v, %v, %d distinct", s, err, len(seen))
	}
}

func TestAuditAppendContextAndValidation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	w, err := Open(path, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.Append(context.Background(), Record{}); err == nil {
		t.Error("empty kind accepted")
	}
	// Hold the writer so a second Append has to wait, then cancel it.
	w.sem <- struct{}{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := w.Append(ctx, Record{Kind: "isolated"})
		done <- err
	}()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("append with cancelled context = %v", err)
	}
	<-w.sem
	if seq, _ := w.Head(); seq != 0 {
		t.Errorf("cancelled append wrote a record (head %d)", seq)
	}
}

func TestAuditAppendRedactsSecretsAndSanitises(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	w, err := Open(path, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	rec, err := w.Append(context.Background(), Record{Kind: "policy_reload_failed", Severity: 3, Data: map[string]string{
		"webhook_secret": "s3cr3t-value", "DB_Password": "hunter2", "bearer_token": "tok-123", "rule": "r\x00\n\x1f\x7f", "bad_utf8": "a\xffb",
	}})
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	raw, _ := os.ReadFile(path)
	for _, s := range []string{"s3cr3t-value", "hunter2", "tok-123"} {
		if bytes.Contains(raw, []byte(s)) {
			t.Errorf("secret %q written to the audit log", s)
		}
	}
	if rec.Data["webhook_secret"] != RedactedValue || rec.Data["bad_utf8"] != "a\uFFFDb" {
		t.Errorf("returned record data = %q", rec.Data)
	}
	if !bytes.Contains(raw, []byte(`"rule":"r\u0000\n\u001f`+"\x7f"+`"`)) {
		t.Errorf("control characters not escaped canonically: %s", raw)
	}
	if n, err := Verify(bytes.NewReader(raw)); n != 1 || err != nil {
		t.Fatalf("verify: %d, %v", n, err)
	}
}

func FuzzVerify(f *testing.F) {
	dir := f.TempDir()
	path := filepath.Join(dir, "seed.jsonl")
	w, err := Open(path, nil)
	if err != nil {
		f.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, err := w.Append(context.Background(), Record{Kind: "untrusted", AgentID: fmt.Sprint("a", i), Severity: i, Data: map[string]string{"k": "v\"\\\n"}}); err != nil {
			f.Fatal(err)
		}
	}
	w.Close()
	good, _ := os.ReadFile(path)
	f.Add(good)
	f.Add(good[:len(good)-7])
	f.Add([]byte("\n"))
	f.Add([]byte("{}\n"))
	f.Add([]byte(`{"seq":1,"time":"2026-01-01T00:00:00Z","kind":"k","agent_id":"","severity":0,"data":{},"prev":"` + GenesisPrev + `","hash":""}` + "\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var recs []Record
		s, err := Scan(bytes.NewReader(data), func(r Record) error { recs = append(recs, r); return nil })
		if err != nil {
			var be *BrokenError
			if !errors.As(err, &be) || !errors.Is(err, ErrBroken) || be.Line != s.Records+1 {
				t.Fatalf("error %v is not a BrokenError at line %d", err, s.Records+1)
			}
			return
		}
		// An accepted log is exactly the canonical encoding of its records.
		var out []byte
		for _, r := range recs {
			wr := wireRecord{Seq: r.Seq, Time: r.Time.Format(time.RFC3339Nano), Kind: r.Kind, AgentID: r.AgentID,
				Severity: r.Severity, Data: r.Data, Prev: r.Prev, Hash: r.Hash}
			out = append(wr.encode(out, true), '\n')
		}
		if !bytes.Equal(out, data) || s.Records != len(recs) {
			t.Fatalf("accepted a log that does not re-encode to itself:\n%q\n%q", data, out)
		}
	})
}
