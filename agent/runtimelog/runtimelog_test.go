package runtimelog

import (
	"bytes"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/pulse-attest/pulse/internal/testutil"
	"github.com/pulse-attest/pulse/simulator/simtest"
	"github.com/pulse-attest/pulse/tpm"
	"github.com/pulse-attest/pulse/tpm/cel"
)

const fixture = "rhel8-uefi" // its firmware log extends PCR 14 (shim's MokList)

type env struct {
	t       *testing.T
	tpm     *tpm.TPM
	initial []byte
	path    string
	reboot  func()
}

func newEnv(t *testing.T) *env {
	t.Helper()
	sw := simtest.Start(t, fixture)
	tp, err := sw.Open(simtest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tp.Close() })
	fx := testutil.LoadFixture(t, fixture)
	initial, err := FirmwareInitial(fx.Log, 14)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(initial, make([]byte, 32)) {
		t.Fatal("fixture should extend PCR 14")
	}
	return &env{t: t, tpm: tp, initial: initial, path: filepath.Join(t.TempDir(), "run", "runtime.cel"),
		reboot: func() {
			if _, err := sw.Boot(fx.Log); err != nil {
				t.Fatal(err)
			}
		}}
}

func (e *env) open(opts Options) *Log {
	e.t.Helper()
	if opts.PCR == 0 {
		opts.PCR = 14
	}
	if opts.TPM == nil {
		opts.TPM = e.tpm
	}
	if opts.Initial == nil {
		opts.Initial = e.initial
	}
	if opts.BootID == "" {
		opts.BootID = "boot-1"
	}
	opts.Logger = simtest.Logger(e.t)
	l, err := Open(e.path, opts)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { l.Close() })
	return l
}

func (e *env) pcr(alg uint16) []byte {
	e.t.Helper()
	v, err := e.tpm.ReadPCRs(alg, []uint32{14})
	if err != nil {
		e.t.Fatal(err)
	}
	return v[14]
}

// decoded reads the whole log file from disk.
func (e *env) decoded() []cel.Record {
	e.t.Helper()
	raw, err := os.ReadFile(e.path)
	if err != nil {
		e.t.Fatal(err)
	}
	recs, err := cel.Decode(raw)
	if err != nil {
		e.t.Fatal(err)
	}
	return recs
}

func contents(n int) []cel.Content {
	out := []cel.Content{&cel.AgentBinary{Path: "/usr/bin/pulse-agent", SHA256: sha256.Sum256([]byte("agent")), Size: 1234}}
	for i := 1; i < n; i++ {
		switch i % 3 {
		case 0:
			out = append(out, &cel.FortressState{Active: i%2 == 0, Mechanism: "bpf-lsm", Reason: "test"})
		case 1:
			out = append(out, &cel.EBPFProgram{Name: fmt.Sprintf("prog%d", i), ProgramType: "xdp", AttachPoint: "eth0",
				InsnSHA256: sha256.Sum256([]byte{byte(i)}), Tag: [8]byte{1, 2, 3, byte(i)}, KernelRelease: "6.1"})
		default:
			out = append(out, &cel.Generic{Name: "note", Data: []byte{byte(i)}})
		}
	}
	return out
}

// TestAppendReplaysToPCR: after N appends the runtime PCR equals the replay
// of the log from the value the firmware log left in it, in every bank.
func TestAppendReplaysToPCR(t *testing.T) {
	e := newEnv(t)
	if got := e.pcr(tpm.AlgSHA256); !bytes.Equal(got, e.initial) {
		t.Fatalf("booted PCR 14 %x, firmware log says %x", got, e.initial)
	}
	l := e.open(Options{})
	const n = 7
	for i, c := range contents(n) {
		rec, err := l.Append(c)
		if err != nil {
			t.Fatal(err)
		}
		if rec != uint64(i) {
			t.Fatalf("record number %d, want %d", rec, i)
		}
	}
	recs := e.decoded()
	if len(recs) != n {
		t.Fatalf("%d records on disk, want %d", len(recs), n)
	}
	if err := cel.VerifyRecords(recs, 14, e.initial, e.pcr(tpm.AlgSHA256)); err != nil {
		t.Fatalf("sha256 bank: %v", err)
	}
	banks, err := e.tpm.PCRBanks()
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range banks {
		if b != tpm.AlgSHA1 {
			continue
		}
		fx := testutil.LoadFixture(t, fixture)
		init1 := fx.PCRs["sha1"][14]
		if init1 == nil {
			t.Fatal("fixture lacks the sha1 value of PCR 14")
		}
		if err := cel.VerifyRecords(recs, 14, init1, e.pcr(tpm.AlgSHA1)); err != nil {
			t.Fatalf("sha1 bank: %v", err)
		}
		if len(recs[0].Digests) < 2 || len(init1) != sha1.Size {
			t.Fatal("records should carry a digest per allocated bank")
		}
	}

	// Records(from) returns exactly records [from, n).
	for _, from := range []uint64{0, 3, n} {
		b, err := l.Records(from)
		if err != nil {
			t.Fatal(err)
		}
		got, err := cel.Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != int(n-from) || (len(got) > 0 && got[0].RecNum != from) {
			t.Fatalf("Records(%d): %d records starting at %v", from, len(got), got)
		}
	}
	if _, err := l.Records(n + 1); err == nil {
		t.Fatal("Records past the end accepted")
	}
	// A second Open of the same boot keeps the log.
	l2 := e.open(Options{})
	if c, err := l2.Count(); err != nil || c != n {
		t.Fatalf("reopened count %d, %v", c, err)
	}
}

var errCrash = errors.New("simulated crash")

// TestCrashBetweenAppendAndExtend: a record written and synced but never
// extended (the process died in between) is recognised — the PCR equals
// the replay of all records but the last — and dropped, both by a process
// that opens the log afterwards and by one that already had it open.
func TestCrashBetweenAppendAndExtend(t *testing.T) {
	for _, reopen := range []bool{true, false} {
		t.Run(fmt.Sprintf("reopen=%t", reopen), func(t *testing.T) {
			e := newEnv(t)
			running := e.open(Options{})
			for _, c := range contents(3) {
				if _, err := running.Append(c); err != nil {
					t.Fatal(err)
				}
			}
			before := e.pcr(tpm.AlgSHA256)
			crashing := e.open(Options{afterWrite: func() error { return errCrash }})
			if _, err := crashing.Append(&cel.Generic{Name: "lost", Data: []byte("x")}); !errors.Is(err, errCrash) {
				t.Fatalf("append: %v", err)
			}
			if got := len(e.decoded()); got != 4 {
				t.Fatalf("log has %d records after the crash, want 4 (one ahead)", got)
			}
			if !bytes.Equal(e.pcr(tpm.AlgSHA256), before) {
				t.Fatal("pcr was extended")
			}
			l := running
			if reopen {
				l = e.open(Options{})
			}
			n, err := l.Count()
			if err != nil {
				t.Fatal(err)
			}
			if n != 3 || len(e.decoded()) != 3 {
				t.Fatalf("after repair: count %d, %d on disk; want 3", n, len(e.decoded()))
			}
			if err := cel.VerifyRecords(e.decoded(), 14, e.initial, e.pcr(tpm.AlgSHA256)); err != nil {
				t.Fatal(err)
			}
			// And the log goes on.
			if rec, err := l.Append(&cel.Generic{Name: "next", Data: []byte("y")}); err != nil || rec != 3 {
				t.Fatalf("append after repair: %d, %v", rec, err)
			}
			if err := cel.VerifyRecords(e.decoded(), 14, e.initial, e.pcr(tpm.AlgSHA256)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestExtendBehindTheAgent: a PCR extension with no record is not a crash
// signature; the log is kept as it is (nothing dropped) and no longer
// replays to the PCR, which is what the verifier reports.
func TestExtendBehindTheAgent(t *testing.T) {
	e := newEnv(t)
	l := e.open(Options{})
	for _, c := range contents(3) {
		if _, err := l.Append(c); err != nil {
			t.Fatal(err)
		}
	}
	evil := make([]byte, 32)
	rand.Read(evil)
	if err := e.tpm.Extend(14, map[uint16][]byte{tpm.AlgSHA256: evil}); err != nil {
		t.Fatal(err)
	}
	l2 := e.open(Options{})
	if n, err := l2.Count(); err != nil || n != 3 {
		t.Fatalf("count %d, %v; want the 3 records kept", n, err)
	}
	err := cel.VerifyRecords(e.decoded(), 14, e.initial, e.pcr(tpm.AlgSHA256))
	if !errors.Is(err, cel.ErrReplayMismatch) {
		t.Fatalf("want a replay mismatch, got %v", err)
	}
	// Even with one more record appended the mismatch stays.
	if _, err := l2.Append(&cel.Generic{Name: "after", Data: []byte{1}}); err != nil {
		t.Fatal(err)
	}
	if err := cel.VerifyRecords(e.decoded(), 14, e.initial, e.pcr(tpm.AlgSHA256)); !errors.Is(err, cel.ErrReplayMismatch) {
		t.Fatalf("want a replay mismatch, got %v", err)
	}
}

// TestTornRecord: a partly written last record (never synced, never
// extended) is cut off.
func TestTornRecord(t *testing.T) {
	e := newEnv(t)
	l := e.open(Options{})
	for _, c := range contents(2) {
		if _, err := l.Append(c); err != nil {
			t.Fatal(err)
		}
	}
	rec, err := cel.NewRecord(2, 14, &cel.Generic{Name: "torn", Data: []byte("zzz")})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := rec.Append(nil)
	f, err := os.OpenFile(e.path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(b[:len(b)-4])
	f.Close()
	if n, err := l.Count(); err != nil || n != 2 {
		t.Fatalf("count %d, %v", n, err)
	}
	if err := cel.VerifyRecords(e.decoded(), 14, e.initial, e.pcr(tpm.AlgSHA256)); err != nil {
		t.Fatal(err)
	}
}

// TestTPMReset: after a reboot of the TPM (same kernel boot ID, as with
// swtpm) the PCR is back at its firmware value, and a fresh log starts.
func TestTPMReset(t *testing.T) {
	e := newEnv(t)
	l := e.open(Options{})
	for _, c := range contents(3) {
		if _, err := l.Append(c); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	e.reboot()
	l2 := e.open(Options{})
	if n, err := l2.Count(); err != nil || n != 0 {
		t.Fatalf("count after tpm reset %d, %v; want a fresh log", n, err)
	}
	prev, err := os.ReadFile(e.path + ".prev")
	if err != nil {
		t.Fatal(err)
	}
	if recs, err := cel.Decode(prev); err != nil || len(recs) != 3 {
		t.Fatalf("previous log: %d records, %v", len(recs), err)
	}
	if _, err := l2.Append(contents(1)[0]); err != nil {
		t.Fatal(err)
	}
	if err := cel.VerifyRecords(e.decoded(), 14, e.initial, e.pcr(tpm.AlgSHA256)); err != nil {
		t.Fatal(err)
	}
}

// TestNewBootID: a different kernel boot ID starts a fresh log (no TPM).
func TestNewBootID(t *testing.T) {
	path := filepath.Join(t.TempDir(), "runtime.cel")
	l, err := Open(path, Options{PCR: 14, BootID: "boot-a"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range contents(2) {
		if _, err := l.Append(c); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	same, err := Open(path, Options{PCR: 14, BootID: "boot-a"})
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := same.Count(); n != 2 {
		t.Fatalf("same boot: %d records", n)
	}
	same.Close()
	l2, err := Open(path, Options{PCR: 14, BootID: "boot-b"})
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if n, _ := l2.Count(); n != 0 {
		t.Fatalf("new boot: %d records", n)
	}
	// A different runtime PCR also starts over.
	l3, err := Open(path, Options{PCR: 15, BootID: "boot-b"})
	if err != nil {
		t.Fatal(err)
	}
	defer l3.Close()
	if _, err := l3.Append(contents(1)[0]); err != nil {
		t.Fatal(err)
	}
	recs, _ := cel.Decode(mustRead(t, path))
	if len(recs) != 1 || recs[0].PCR != 15 {
		t.Fatalf("records %v", recs)
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCorruptLog: a log that is not CEL is an error, not silently reset.
func TestCorruptLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "runtime.cel")
	l, err := Open(path, Options{PCR: 14, BootID: "b"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(contents(1)[0]); err != nil {
		t.Fatal(err)
	}
	raw := mustRead(t, path)
	// recnum TLV (13 bytes), pcr TLV (9 bytes), then the digests TLV whose
	// first nested byte is the algorithm: make it unknown.
	raw[13+9+5] = 0x7f
	os.WriteFile(path, raw, 0o600)
	if _, err := l.Count(); !errors.Is(err, cel.ErrMalformed) {
		t.Fatalf("want a decode error, got %v", err)
	}
}

// TestSelfMeasuredSummary: the marker before an agent-binary record marks
// it self-measured; a later launcher record is not.
func TestSelfMeasuredSummary(t *testing.T) {
	path := filepath.Join(t.TempDir(), "runtime.cel")
	l, err := Open(path, Options{PCR: 14, BootID: "b"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	b := &cel.AgentBinary{Path: "/a", SHA256: sha256.Sum256([]byte("a")), Size: 1}
	rec, err := l.AppendSelfMeasured(b)
	if err != nil {
		t.Fatal(err)
	}
	s, err := l.Latest()
	if err != nil {
		t.Fatal(err)
	}
	if !s.SelfMeasured || s.AgentBinaryRecord != rec || rec != 1 || s.Agent.SHA256 != b.SHA256 {
		t.Fatalf("summary %+v", s)
	}
	if _, err := l.Append(&cel.AgentBinary{Path: "/a", SHA256: b.SHA256, Size: 1}); err != nil {
		t.Fatal(err)
	}
	if s, _ = l.Latest(); s.SelfMeasured || s.AgentBinaryRecord != 2 {
		t.Fatalf("summary after launcher record %+v", s)
	}
}

// TestConcurrentWriters: two processes' worth of Log handles (separate
// lock descriptors) appending at once keep the log and the PCR in step.
func TestConcurrentWriters(t *testing.T) {
	e := newEnv(t)
	a, b := e.open(Options{}), e.open(Options{})
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for _, l := range []*Log{a, b} {
		wg.Add(1)
		go func(l *Log) {
			defer wg.Done()
			for i := 0; i < 5; i++ {
				if _, err := l.Append(&cel.Generic{Name: "w", Data: []byte{byte(i)}}); err != nil {
					errs <- err
					return
				}
			}
		}(l)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	recs := e.decoded()
	if len(recs) != 10 {
		t.Fatalf("%d records", len(recs))
	}
	if err := cel.VerifyRecords(recs, 14, e.initial, e.pcr(tpm.AlgSHA256)); err != nil {
		t.Fatal(err)
	}
}

// TestAppendAdjacentKeepsRecordsTogether: records appended together stay
// adjacent while another handle (another process's lock descriptor)
// appends at the same time; Append alone gives no such guarantee.
func TestAppendAdjacentKeepsRecordsTogether(t *testing.T) {
	path := filepath.Join(t.TempDir(), "runtime.cel")
	open := func() *Log {
		l, err := Open(path, Options{PCR: 14, BootID: "b"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		return l
	}
	pairs, noise := open(), open()
	const n = 40
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := 0; i < n; i++ {
			b := &cel.AgentBinary{Path: "/a", SHA256: sha256.Sum256([]byte{byte(i)}), Size: uint64(i)}
			nums, err := pairs.AppendAdjacent(&cel.Generic{Name: "pair", Data: b.SHA256[:]}, b)
			if err != nil {
				errs <- err
				return
			}
			if len(nums) != 2 || nums[1] != nums[0]+1 {
				errs <- fmt.Errorf("pair %d got records %v", i, nums)
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		for i := 0; i < 2*n; i++ {
			if _, err := noise.Append(&cel.Generic{Name: "noise", Data: []byte{byte(i)}}); err != nil {
				errs <- err
				return
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var recs []cel.Record
	if err := pairs.View(func(v *View) error { recs = v.Decoded(); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(recs) != 4*n {
		t.Fatalf("%d records, want %d", len(recs), 4*n)
	}
	for i, r := range recs {
		b, ok := r.Content.(*cel.AgentBinary)
		if !ok {
			continue
		}
		g, ok := recs[i-1].Content.(*cel.Generic)
		if !ok || g.Name != "pair" || !bytes.Equal(g.Data, b.SHA256[:]) {
			t.Fatalf("record %d (binary) follows %+v, not its pair record", i, recs[i-1].Content)
		}
	}
}
