package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pulse-attest/pulse/verifier/audit"
)

func runAuditCmd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := commands.Main(append([]string{"audit", "verify"}, args...), &out, &errOut)
	return code, out.String(), errOut.String()
}

// writeAuditLog writes n records with the real writer and returns the path
// and every record's hash.
func writeAuditLog(t *testing.T, n int) (string, []string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	w, err := audit.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	var hashes []string
	for i := 1; i <= n; i++ {
		rec, err := w.Append(context.Background(), audit.Record{Kind: "binary_changed", AgentID: fmt.Sprintf("edge-%d", i), Severity: 1,
			Data: map[string]string{"alert_id": fmt.Sprint("id-", i)}})
		if err != nil {
			t.Fatal(err)
		}
		hashes = append(hashes, rec.Hash)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return path, hashes
}

func TestAuditVerifyCommand(t *testing.T) {
	path, hashes := writeAuditLog(t, 4)
	code, out, errOut := runAuditCmd(t, "--file", path)
	if code != 0 || out != "ok: 4 records, chain intact, last hash "+hashes[3]+"\n" {
		t.Fatalf("intact log: exit %d, %q, %q", code, out, errOut)
	}
	code, out, _ = runAuditCmd(t, "--file", path, "--anchor", "2:"+hashes[1])
	if code != 0 || !strings.Contains(out, "anchor seq 2 matches") {
		t.Errorf("matching anchor: exit %d, %q", code, out)
	}

	// A plain byte edit of record 3 (same length, so nothing else moves).
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	edited := bytes.Replace(raw, []byte(`"agent_id":"edge-3"`), []byte(`"agent_id":"edge-X"`), 1)
	if bytes.Equal(edited, raw) {
		t.Fatal("edit did not apply")
	}
	if err := os.WriteFile(path, edited, 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, _ = runAuditCmd(t, "--file", path)
	if code != 1 || !strings.Contains(out, "first broken record seq 3 at line 3: hash mismatch") || !strings.Contains(out, "intact records before it: 2") {
		t.Errorf("edited log: exit %d, %q", code, out)
	}
}

func TestAuditVerifyCommandAnchors(t *testing.T) {
	path, hashes := writeAuditLog(t, 3)
	tests := []struct {
		name   string
		anchor string
		code   int
		want   string
	}{
		{"other hash for seq", "2:" + hashes[0], 1, "anchor mismatch: record seq 2"},
		{"anchor past the end", "7:" + hashes[2], 1, "anchor record seq 7 is missing"},
		{"upper-case hex", "3:" + strings.ToUpper(hashes[2]), 0, "anchor seq 3 matches"},
		{"no colon", hashes[2], 2, "--anchor wants"},
		{"seq zero", "0:" + hashes[2], 2, "--anchor wants"},
		{"short hash", "1:abcd", 2, "--anchor wants"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runAuditCmd(t, "--file", path, "--anchor", tc.anchor)
			if code != tc.code || !strings.Contains(out+errOut, tc.want) {
				t.Errorf("exit %d, %q %q; want %d and %q", code, out, errOut, tc.code, tc.want)
			}
		})
	}
}

func TestAuditVerifyCommandErrors(t *testing.T) {
	empty := filepath.Join(t.TempDir(), "empty.jsonl")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	truncated, _ := writeAuditLog(t, 2)
	raw, _ := os.ReadFile(truncated)
	if err := os.WriteFile(truncated, raw[:len(raw)-10], 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no file flag", nil, 2, "usage"},
		{"positional argument", []string{"--file", empty, "extra"}, 2, "usage"},
		{"missing file", []string{"--file", filepath.Join(t.TempDir(), "nope")}, 1, "no such file"},
		{"empty log", []string{"--file", empty}, 0, "ok: 0 records"},
		{"truncated log", []string{"--file", truncated}, 1, "seq 2 at line 2: truncated record"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runAuditCmd(t, tc.args...)
			if code != tc.code || !strings.Contains(out+errOut, tc.want) {
				t.Errorf("exit %d, %q %q; want %d and %q", code, out, errOut, tc.code, tc.want)
			}
		})
	}
}

func TestAuditVerifyCommandSegments(t *testing.T) {
	path, hashes := writeAuditLog(t, 4)
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(orig), "\n")[:4]
	flipped := []byte(lines[3])
	flipped[len(flipped)/2] ^= 0x01
	tests := []struct {
		name   string
		damage string
		want   []string
	}{
		{"truncated last record", string(orig[:len(orig)-15]), []string{
			"segment 0 " + path + ": broken: 3 intact records, first broken record seq 4 at line 4: truncated record",
			"segment 1 " + path + ".1: starts with chain_resumed seq 4 (last good seq 3, first broken line 4 of audit.jsonl: truncated record)",
			"segment 1 " + path + ".1: anchor ok: follows segment 0's last good record seq 3",
			"segment 1 " + path + ".1: ok: 2 records, chain intact",
			"broken: " + path + ": chain broken in segment 0 at line 4 (first bad record seq 4); every break is recorded",
			"5 records verified across 2 segments",
		}},
		{"byte flipped in the middle of the last record", lines[0] + lines[1] + lines[2] + string(flipped), []string{
			"segment 0 " + path + ": broken: 3 intact records, first broken record seq 4 at line 4: hash mismatch",
			"segment 1 " + path + ".1: anchor ok",
			"chain broken in segment 0 at line 4",
		}},
		{"broken chain: record before the last deleted", lines[0] + lines[1] + lines[3], []string{
			"segment 0 " + path + ": broken: 2 intact records, first broken record seq 4 at line 3: seq gap",
			"segment 1 " + path + ".1: starts with chain_resumed seq 3 (last good seq 2",
			"segment 1 " + path + ".1: anchor ok: follows segment 0's last good record seq 2",
			"chain broken in segment 0 at line 3 (first bad record seq 4)",
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(path, []byte(tc.damage), 0o600); err != nil {
				t.Fatal(err)
			}
			os.Remove(path + ".1")
			w, err := audit.Open(path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if w.Recovery() == nil {
				w.Close()
				t.Fatal("no recovery")
			}
			if _, err := w.Append(context.Background(), audit.Record{Kind: "isolated", AgentID: "edge-9", Severity: 4}); err != nil {
				t.Fatal(err)
			}
			w.Close()
			code, out, errOut := runAuditCmd(t, "--file", path)
			if code != 1 || errOut != "" {
				t.Errorf("exit %d, stderr %q", code, errOut)
			}
			for _, want := range tc.want {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
			}
		})
	}

	// Anchors across segments: a record before the break and one in the
	// new segment are both checked.
	t.Run("anchors", func(t *testing.T) {
		if err := os.WriteFile(path, orig[:len(orig)-15], 0o600); err != nil {
			t.Fatal(err)
		}
		os.Remove(path + ".1")
		w, err := audit.Open(path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resumed := w.Recovery().Resumed
		w.Close()
		code, out, _ := runAuditCmd(t, "--file", path, "--anchor", "2:"+hashes[1])
		if code != 1 || !strings.Contains(out, "anchor seq 2 matches") {
			t.Errorf("anchor in segment 0: exit %d, %q", code, out)
		}
		code, out, _ = runAuditCmd(t, "--file", path, "--anchor", fmt.Sprintf("4:%s", hashes[3]))
		if code != 1 || !strings.Contains(out, "anchor mismatch: record seq 4") {
			t.Errorf("seq 4 of the damaged tail against the resumed chain: exit %d, %q", code, out)
		}
		code, out, _ = runAuditCmd(t, "--file", path, "--anchor", fmt.Sprintf("4:%s", resumed.Hash))
		if code != 1 || !strings.Contains(out, "anchor seq 4 matches") {
			t.Errorf("anchor at the chain_resumed record: exit %d, %q", code, out)
		}
	})

	t.Run("damaged segment edited afterwards", func(t *testing.T) {
		f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString("more\n")
		f.Close()
		code, out, _ := runAuditCmd(t, "--file", path)
		if code != 1 || !strings.Contains(out, "segment 1 "+path+".1: anchor broken: segment 0 changed after the chain resumed") {
			t.Errorf("exit %d, %q", code, out)
		}
	})
}
