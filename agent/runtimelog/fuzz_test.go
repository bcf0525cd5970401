package runtimelog

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/pulse-attest/pulse/tpm/cel"
)

// FuzzLogFile feeds arbitrary bytes as the on-disk log: reading it never
// panics, a torn tail is cut, and whatever is accepted decodes as CEL with
// consecutive record numbers.
func FuzzLogFile(f *testing.F) {
	var valid []byte
	for i, c := range contents(4) {
		r, err := cel.NewRecord(uint64(i), 14, c)
		if err != nil {
			f.Fatal(err)
		}
		valid, _ = r.Append(valid)
	}
	f.Add(valid)
	f.Add(valid[:len(valid)-7])
	f.Add([]byte{})
	f.Add([]byte{0, 0, 0, 0, 8})
	f.Add(bytes.Repeat([]byte{0xff}, 64))
	f.Fuzz(func(t *testing.T, raw []byte) {
		dir := fastTempDir(t)
		path := filepath.Join(dir, "runtime.cel")
		l, err := Open(path, Options{PCR: 14, BootID: "fuzz"})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		if err := os.WriteFile(path, raw, 0o600); err != nil {
			t.Fatal(err)
		}
		n, err := l.Count()
		if err != nil {
			return
		}
		b, err := l.Records(0)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(raw, b) {
			t.Fatal("records are not a prefix of the file")
		}
		recs, err := cel.Decode(b)
		if err != nil || uint64(len(recs)) != n {
			t.Fatalf("accepted log does not decode: %d records, %v", len(recs), err)
		}
		// The log goes on after whatever was cut.
		if rec, err := l.Append(&cel.Generic{Name: "after", Data: []byte{1}}); err != nil || rec != n {
			t.Fatalf("append after reading: %d, %v", rec, err)
		}
	})
}

// fastTempDir is a temporary directory on tmpfs when there is one: the log
// fsyncs every write, which a disk makes slow enough to starve the fuzzer.
func fastTempDir(t *testing.T) string {
	d, err := os.MkdirTemp("/dev/shm", "runtimelog-fuzz-")
	if err != nil {
		return t.TempDir()
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}
