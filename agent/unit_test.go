package agent

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/internal/pulsesig"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/simulator/simtest"
	"github.com/pulse-attest/pulse/tpm"
	"github.com/pulse-attest/pulse/tpm/quote"
	"google.golang.org/protobuf/proto"
)

func runGo(dir string, args ...string) ([]byte, error) {
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return append(out, stderr.Bytes()...), err
	}
	return out, nil
}

func TestStateSequenceNeverGoesBack(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenState(dir)
	if err != nil {
		t.Fatal(err)
	}
	var last uint64
	for i := 0; i < sequenceBlock+5; i++ {
		n, err := s.NextSequence()
		if err != nil {
			t.Fatal(err)
		}
		if i > 0 && n != last+1 {
			t.Fatalf("sequence %d after %d", n, last)
		}
		last = n
	}
	// A restart (the process died without saying goodbye) resumes above
	// every number handed out.
	for r := 0; r < 3; r++ {
		s, err = OpenState(dir)
		if err != nil {
			t.Fatal(err)
		}
		n, err := s.NextSequence()
		if err != nil {
			t.Fatal(err)
		}
		if n <= last {
			t.Fatalf("after restart %d: sequence %d, last handed out %d", r, n, last)
		}
		last = n
	}
	if err := s.SetEnrollment(&Enrollment{AgentID: "a", TPM: true, AKPublicSHA256: "ab"}); err != nil {
		t.Fatal(err)
	}
	s2, err := OpenState(dir)
	if err != nil {
		t.Fatal(err)
	}
	e := s2.Enrollment()
	if !e.Matches("a", true, "ab") || e.Matches("b", true, "ab") || e.Matches("a", false, "") || e.Matches("a", true, "cd") {
		t.Fatalf("enrollment %+v", e)
	}
	if n, _ := s2.NextSequence(); n <= last {
		t.Fatalf("sequence %d after setting the enrollment, last %d", n, last)
	}
	var nilE *Enrollment
	if nilE.Matches("a", false, "") {
		t.Fatal("nil enrollment matches")
	}
}

func TestStateCorruptIsAnError(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, StateFile), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenState(dir); err == nil {
		t.Fatal("a corrupt state file was silently replaced (the sequence would restart at 0)")
	}
}

func TestBackoff(t *testing.T) {
	b := Backoff{Min: time.Second, Max: 10 * time.Second, rand: func() float64 { return 0.999999 }}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second}
	for i, w := range want {
		if got := b.Next().Round(time.Millisecond); got != w {
			t.Fatalf("failure %d: ceiling %s, want %s", i+1, got, w)
		}
	}
	b.Reset()
	b.rand = func() float64 { return 0 }
	for i := 0; i < 5; i++ {
		if got := b.Next(); got != time.Second {
			t.Fatalf("floor %s", got)
		}
	}
	// Real jitter stays within bounds and varies.
	b = Backoff{Min: 100 * time.Millisecond, Max: time.Second}
	seen := map[time.Duration]bool{}
	for i := 0; i < 50; i++ {
		d := b.Next()
		if d < b.Min || d > b.Max {
			t.Fatalf("wait %s outside [%s, %s]", d, b.Min, b.Max)
		}
		seen[d] = true
	}
	if len(seen) < 10 {
		t.Fatal("no jitter")
	}
}

func TestDiskBinaryHashesOnlyOnChange(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bin")
	os.WriteFile(p, []byte("one"), 0o755)
	d := &diskBinary{path: p}
	got, err := d.Digest()
	want := sha256.Sum256([]byte("one"))
	if err != nil || !bytes.Equal(got, want[:]) {
		t.Fatalf("digest %x, %v", got, err)
	}
	if d.Changed() {
		t.Fatal("changed without a change")
	}
	// Same stat: the cached digest is returned (prove it by poisoning it).
	d.digest = []byte("cached")
	if got, _ := d.Digest(); string(got) != "cached" {
		t.Fatal("rehashed an unchanged file")
	}
	os.WriteFile(p+".2", []byte("two!"), 0o755)
	os.Rename(p+".2", p)
	if !d.Changed() {
		t.Fatal("replacement not seen")
	}
	got, _ = d.Digest()
	want = sha256.Sum256([]byte("two!"))
	if !bytes.Equal(got, want[:]) {
		t.Fatalf("digest after replacement %x", got)
	}
	os.Remove(p)
	if got, err := d.Digest(); err != nil || got != nil {
		t.Fatalf("missing file: %x, %v", got, err)
	}
}

func testSigner(t testing.TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func samplePayloadInput(t testing.TB, signerKey *ecdsa.PrivateKey) *PayloadInput {
	leaf, err := pulsesig.PublicKeyDigest(signerKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	exe := sha256.Sum256([]byte("agent"))
	nonce := make([]byte, 32)
	rand.Read(nonce)
	return &PayloadInput{
		AgentID: "edge-1", Partition: "p", Version: "test", Time: time.Now(), VerifierNonce: nonce, Sequence: 42,
		LeafKeySHA256: leaf[:], AgentBinarySHA256: exe[:], AgentBinaryPath: "/usr/bin/pulse-agent", AgentBinaryDiskSHA256: exe[:],
		TPM: true, RuntimePCR: 14, RuntimeBank: tpm.AlgSHA256, RuntimeFirstRecord: 3, RuntimeRecords: bytes.Repeat([]byte{7}, 400),
		FirmwareLogSHA256: exe[:],
		BPF: &pulsev1.BPFSnapshot{Pinned: []*pulsev1.PinnedProgram{{Name: "shield", Id: 1, Tag: make([]byte, 8), InsnSha256: exe[:]},
			{Name: "sentinel", Id: 2, Tag: make([]byte, 8), InsnSha256: exe[:]}}, HostProgramsSha256: exe[:], HostProgramCount: 31},
		Fortress:       &pulsev1.FortressStatus{LsmListed: true, Reason: "refused"},
		SentinelEvents: []*pulsev1.SentinelEvent{{Kind: pulsev1.SentinelEvent_KIND_SIGNAL, SenderPid: 1, Signal: 15}},
		Quarantined:    []string{"10.0.0.1"},
		Health:         (&counters{}).health(time.Now().Add(-time.Hour)),
	}
}

// TestBuildSigned: every field lands in the payload, the bytes are
// deterministic, and the signature verifies with pulsesig.Verify (and not
// over altered bytes).
func TestBuildSigned(t *testing.T) {
	key := testSigner(t)
	in := samplePayloadInput(t, key)
	sp, err := BuildSigned(in, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := pulsesig.Verify(key.Public(), sp.Payload, sp.Signature); err != nil {
		t.Fatal(err)
	}
	tampered := bytes.Clone(sp.Payload)
	tampered[len(tampered)-1] ^= 1
	if err := pulsesig.Verify(key.Public(), tampered, sp.Signature); !errors.Is(err, pulsesig.ErrBadSignature) {
		t.Fatalf("tampered payload: %v", err)
	}
	var p pulsev1.PulsePayload
	if err := proto.Unmarshal(sp.Payload, &p); err != nil {
		t.Fatal(err)
	}
	switch {
	case p.GetAgentId() != "edge-1", p.GetPartition() != "p", p.GetAgentVersion() != "test", p.GetSequence() != 42,
		!bytes.Equal(p.GetVerifierNonce(), in.VerifierNonce), len(p.GetPulseNonce()) != PulseNonceSize,
		!bytes.Equal(p.GetLeafKeySha256(), in.LeafKeySHA256), !bytes.Equal(p.GetAgentBinarySha256(), in.AgentBinarySHA256),
		p.GetAgentBinaryPath() != in.AgentBinaryPath, !bytes.Equal(p.GetAgentBinaryDiskSha256(), in.AgentBinaryDiskSHA256),
		!p.GetTpm(), p.GetRuntimePcr() != 14, p.GetRuntimeBank() != 0x000b, p.GetRuntimeFirstRecord() != 3,
		!bytes.Equal(p.GetRuntimeRecords(), in.RuntimeRecords), !bytes.Equal(p.GetFirmwareLogSha256(), in.FirmwareLogSHA256),
		len(p.GetBpf().GetPinned()) != 2, p.GetFortress().GetReason() != "refused", len(p.GetSentinelEvents()) != 1,
		len(p.GetQuarantined()) != 1, p.GetHealth().GetUptime().AsDuration() < time.Hour,
		!p.GetTime().AsTime().Equal(in.Time.UTC()) || p.GetTime().AsTime().Location() != time.UTC:
		t.Fatalf("payload %v", &p)
	}
	// Deterministic: the same message serialises to the same bytes, and
	// re-serialising the parsed payload gives the signed bytes back.
	again, err := marshalOptions.Marshal(sp.Message)
	if err != nil || !bytes.Equal(again, sp.Payload) {
		t.Fatal("serialisation is not deterministic")
	}
	if re, _ := marshalOptions.Marshal(&p); !bytes.Equal(re, sp.Payload) {
		t.Fatal("parsed payload re-serialises differently")
	}
	// Two pulses from the same input differ by their pulse nonce.
	sp2, _ := BuildSigned(in, key)
	if bytes.Equal(sp2.Message.GetPulseNonce(), sp.Message.GetPulseNonce()) {
		t.Fatal("pulse nonce repeated")
	}
}

// TestQuoteOverPayload: the agent's quote on swtpm has extraData =
// SHA-256(payload), verifies with tpm/quote.Verify against the AK and the
// PCR values sent, and covers PCRs 0-9 and the runtime PCR.
func TestQuoteOverPayload(t *testing.T) {
	h := newHarness(t, harnessOpts{tpm: true})
	a := h.newAgent()
	defer a.Close()
	key := testSigner(t)
	sp, err := BuildSigned(samplePayloadInput(t, key), key)
	if err != nil {
		t.Fatal(err)
	}
	q, err := a.quote(sp.Payload)
	if err != nil {
		t.Fatal(err)
	}
	pcrs := map[uint32][]byte{}
	for _, v := range q.GetPcrs() {
		pcrs[v.GetIndex()] = v.GetDigest()
	}
	if len(pcrs) != 11 || pcrs[14] == nil || q.GetPcrBank() != uint32(tpm.AlgSHA256) {
		t.Fatalf("quoted pcrs %v bank %#x", pcrs, q.GetPcrBank())
	}
	sum := sha256.Sum256(sp.Payload)
	res, err := quote.Verify(a.ak.Public(), q.GetAttest(), q.GetSignature(), sum[:], pcrs)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(res.ExtraData, sum[:]) {
		t.Fatal("extraData is not SHA-256(payload)")
	}
	other := sha256.Sum256(append(bytes.Clone(sp.Payload), 0))
	if _, err := quote.Verify(a.ak.Public(), q.GetAttest(), q.GetSignature(), other[:], pcrs); !errors.Is(err, quote.ErrQualifyingData) {
		t.Fatalf("quote accepted for other payload bytes: %v", err)
	}
	// A PCR extended after the values were read changes the digest: the
	// verifier would say PCR_DIGEST, and the agent's own check catches it.
	pcrs[14] = make([]byte, 32)
	if _, err := quote.Verify(a.ak.Public(), q.GetAttest(), q.GetSignature(), sum[:], pcrs); !errors.Is(err, quote.ErrPCRDigest) {
		t.Fatalf("wrong pcr value accepted: %v", err)
	}
	if !a.resetKnown {
		t.Fatal("reset count not noted from the quote")
	}
}

// TestSentinelEventsKeptUntilDelivered: events drained from Sentinel stay
// pending until a pulse carrying them is answered.
func TestSentinelEventsKeptUntilDelivered(t *testing.T) {
	fb := &fakeBPF{events: []*pulsev1.SentinelEvent{{SenderPid: 1}, {SenderPid: 2}}}
	a := &Agent{bpf: fb, log: simtest.Logger(t)}
	ev := a.takeEvents(t.Context())
	if len(ev) != 2 {
		t.Fatalf("%d events", len(ev))
	}
	// The pulse failed: nothing acknowledged, the next pulse carries them
	// and the new one.
	fb.events = []*pulsev1.SentinelEvent{{SenderPid: 3}}
	ev = a.takeEvents(t.Context())
	if len(ev) != 3 || ev[2].GetSenderPid() != 3 {
		t.Fatalf("events %v", ev)
	}
	a.ackEvents(len(ev))
	if ev = a.takeEvents(t.Context()); len(ev) != 0 {
		t.Fatalf("delivered events sent again: %v", ev)
	}
}

// BenchmarkBuildPulse measures building, serialising and signing one pulse
// payload with an ECDSA P-256 key (the TPM quote excluded), and reports the
// 99th percentile of the per-pulse durations.
func BenchmarkBuildPulse(b *testing.B) {
	key := testSigner(b)
	in := samplePayloadInput(b, key)
	durations := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		in.Sequence++
		in.Time = time.Now()
		if _, err := BuildSigned(in, key); err != nil {
			b.Fatal(err)
		}
		durations = append(durations, time.Since(start))
	}
	b.StopTimer()
	reportPercentiles(b, durations)
}

// BenchmarkHashSelf measures re-hashing the running binary, which every
// pulse does before building the payload (outside BuildPulse's budget).
func BenchmarkHashSelf(b *testing.B) {
	st, err := os.Stat(SelfExe)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(st.Size())
	for i := 0; i < b.N; i++ {
		if _, err := HashFile(SelfExe); err != nil {
			b.Fatal(err)
		}
	}
}

func reportPercentiles(b *testing.B, ds []time.Duration) {
	if len(ds) == 0 {
		return
	}
	sorted := slices.Clone(ds)
	slices.Sort(sorted)
	at := func(q float64) time.Duration { return sorted[min(len(sorted)-1, int(q*float64(len(sorted))))] }
	b.ReportMetric(float64(at(0.50).Nanoseconds())/1e3, "p50-µs")
	b.ReportMetric(float64(at(0.99).Nanoseconds())/1e3, "p99-µs")
}

// TestRetryBounds: while the verifier is unreachable no wait, of the
// agent's own retries or of gRPC's reconnect backoff (jitter included),
// exceeds a quarter of the interval (two minutes at most), however many
// failures came before.
func TestRetryBounds(t *testing.T) {
	for _, tc := range []struct {
		interval   time.Duration
		wantLo     time.Duration
		wantHi     time.Duration
		minConnect time.Duration
	}{
		{interval: time.Second, wantLo: 62500 * time.Microsecond, wantHi: 250 * time.Millisecond, minConnect: time.Second},
		{interval: 2 * time.Second, wantLo: 125 * time.Millisecond, wantHi: 500 * time.Millisecond, minConnect: time.Second},
		{interval: 30 * time.Second, wantLo: time.Second, wantHi: 7500 * time.Millisecond, minConnect: 7500 * time.Millisecond},
		{interval: time.Minute, wantLo: time.Second, wantHi: 15 * time.Second, minConnect: 15 * time.Second},
		{interval: 8 * time.Minute, wantLo: time.Second, wantHi: 2 * time.Minute, minConnect: 20 * time.Second},
		{interval: 24 * time.Hour, wantLo: time.Second, wantHi: 2 * time.Minute, minConnect: 20 * time.Second},
		{interval: 0, wantLo: minRetryWait / 4, wantHi: minRetryWait, minConnect: time.Second},
	} {
		t.Run(tc.interval.String(), func(t *testing.T) {
			lo, hi := retryBounds(tc.interval)
			if lo != tc.wantLo || hi != tc.wantHi {
				t.Fatalf("retryBounds(%s) = [%s, %s], want [%s, %s]", tc.interval, lo, hi, tc.wantLo, tc.wantHi)
			}
			if tc.interval > 0 && hi > tc.interval/4 {
				t.Fatalf("cap %s above a quarter of the interval %s", hi, tc.interval)
			}
			// The agent's own waits: at the cap after many failures,
			// whatever the jitter draws.
			for _, r := range []float64{0, 0.5, 0.999999} {
				b := Backoff{Min: 10 * time.Second, Max: time.Hour, rand: func() float64 { return r }}
				for range 20 {
					b.Next()
				}
				b.limit(lo, hi)
				for i := range 20 {
					if d := b.Next(); d < lo || d > hi {
						t.Fatalf("rand %v, wait %d after limit: %s outside [%s, %s]", r, i, d, lo, hi)
					}
				}
				if b.Failures() != 40 {
					t.Fatalf("limit forgot the failures: %d", b.Failures())
				}
			}
			// gRPC's reconnect backoff: MaxDelay plus its ±20 % jitter
			// stays within the cap; one attempt gets 1 s to 20 s.
			p := connectParams(tc.interval)
			if p.Backoff.BaseDelay != lo {
				t.Fatalf("grpc base delay %s, want %s", p.Backoff.BaseDelay, lo)
			}
			if worst := time.Duration(float64(p.Backoff.MaxDelay) * (1 + p.Backoff.Jitter)); worst > hi {
				t.Fatalf("grpc reconnect delay up to %s, above the cap %s", worst, hi)
			}
			if p.MinConnectTimeout != tc.minConnect {
				t.Fatalf("min connect timeout %s, want %s", p.MinConnectTimeout, tc.minConnect)
			}
		})
	}
}

func TestRunningBinaryRehash(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bin")
	if err := os.WriteFile(p, []byte("one"), 0o755); err != nil {
		t.Fatal(err)
	}
	one, two := sha256.Sum256([]byte("one")), sha256.Sum256([]byte("two"))
	for _, tc := range []struct {
		name  string
		every int
		// hashes is how many full hashes 7 pulses of an unchanged file make.
		hashes uint64
	}{
		{"every pulse", 1, 7},
		{"unset is every pulse", 0, 7},
		{"every 3rd", 3, 3},
		{"every 10th", 10, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &runningBinary{path: p, every: tc.every}
			for range 7 {
				got, err := r.Digest()
				if err != nil || !bytes.Equal(got, one[:]) {
					t.Fatalf("digest %x, %v", got, err)
				}
			}
			if r.Hashes() != tc.hashes {
				t.Fatalf("%d full hashes, want %d", r.Hashes(), tc.hashes)
			}
		})
	}
	// A write in place (same inode) changes mtime/ctime: hashed at once,
	// whatever the setting.
	r := &runningBinary{path: p, every: 1000}
	if _, err := r.Digest(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond)
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("two"), 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if got, _ := r.Digest(); !bytes.Equal(got, two[:]) {
		t.Fatalf("in-place write not seen: %x", got)
	}
	// A rewrite that restores the file's mtime (root's touch -d): ctime
	// moves with any write or chtimes and cannot be set back, so the
	// identity still changes and the new bytes are hashed now.
	r = &runningBinary{path: p, every: 3}
	if _, err := r.Digest(); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(p)
	if err := os.WriteFile(p, []byte("one"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p, st.ModTime(), st.ModTime()); err != nil {
		t.Fatal(err)
	}
	if got, _ := r.Digest(); !bytes.Equal(got, one[:]) {
		t.Fatalf("rewrite with restored mtime not seen: %x", got)
	}
}
