package verifier

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/pulse-attest/pulse/internal/pki"
	"github.com/pulse-attest/pulse/internal/tlsconfig"
	"github.com/pulse-attest/pulse/verifier/store"
)

// guardEnv is a certGuard on a real SQLite store, with its own clock and
// agent certificates from a real CA.
type guardEnv struct {
	t     testing.TB
	g     *certGuard
	st    *store.Store
	clock *testClock
	ca    *pki.CA
}

func newGuardEnv(t testing.TB, every time.Duration) *guardEnv {
	t.Helper()
	st, err := store.Open(context.Background(), store.EngineSQLite, filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ca, err := pki.NewCA("guard test CA", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	clock := &testClock{now: time.Now()}
	g, err := newCertGuard(context.Background(), st, clock.Now, every, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &guardEnv{t: t, g: g, st: st, clock: clock, ca: ca}
}

// leaf issues an agent certificate valid for validity.
func (e *guardEnv) leaf(id string, validity time.Duration) *x509.Certificate {
	e.t.Helper()
	c, err := pki.Issue(e.ca, pki.Request{Role: pki.RoleAgent, ID: id, Validity: validity})
	if err != nil {
		e.t.Fatal(err)
	}
	return c.Cert
}

// fakeServerStream is a server stream whose context carries a verified
// TLS peer; nothing is sent or received on it.
type fakeServerStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *fakeServerStream) Context() context.Context { return s.ctx }

// openGuarded runs a stream with leaf as its peer through the guard: the
// handler waits for the stream's context to end, as the Directives
// handler does. It returns once the handler runs, with a cancel that ends
// the stream from the client's side and a channel receiving what the
// stream ended with.
func (e *guardEnv) openGuarded(ctx context.Context, leaf *x509.Certificate) (context.CancelFunc, <-chan error) {
	e.t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	pctx := peer.NewContext(ctx, &peer.Peer{AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{
		PeerCertificates: []*x509.Certificate{leaf}, VerifiedChains: [][]*x509.Certificate{{leaf, e.ca.Cert}}}}})
	running := make(chan struct{})
	ended := make(chan error, 1)
	go func() {
		ended <- e.g.stream(nil, &fakeServerStream{ctx: pctx}, nil, func(_ any, ss grpc.ServerStream) error {
			close(running)
			<-ss.Context().Done()
			return nil
		})
	}()
	select {
	case <-running:
	case err := <-ended:
		e.t.Fatalf("the stream was refused when it opened: %v", err)
	}
	return cancel, ended
}

// wantRefused checks err is the guard's refusal for reason.
func wantRefused(t testing.TB, err, reason error) {
	t.Helper()
	var cr *CertRefusedError
	if !errors.As(err, &cr) || !errors.Is(err, reason) {
		t.Fatalf("stream ended with %v; want a *CertRefusedError for %v", err, reason)
	}
	if st, ok := status.FromError(err); !ok || st.Code() != codes.Unauthenticated || !strings.HasPrefix(st.Message(), CertRefusedMessage) {
		t.Fatalf("status %v; want Unauthenticated %q", st, CertRefusedMessage)
	}
}

func waitEnded(t testing.TB, what string, ended <-chan error, within time.Duration) error {
	t.Helper()
	select {
	case err := <-ended:
		return err
	case <-time.After(within):
		t.Fatalf("%s: the stream stayed open", what)
		return nil
	}
}

// wantOpen checks a stream has not ended.
func wantOpen(t testing.TB, what string, ended <-chan error) {
	t.Helper()
	select {
	case err := <-ended:
		t.Fatalf("%s: the stream ended: %v", what, err)
	default:
	}
}

// TestCertGuardSweep: each way a certificate can stop being acceptable
// while its stream is open ends that stream at the next sweep with its
// own reason, and a stream with a good certificate open beside it stays
// open.
func TestCertGuardSweep(t *testing.T) {
	cases := []struct {
		name   string
		reason error
		// later issues the victim's certificate a second after the
		// bystander's (validity has second resolution).
		later bool
		// refuse makes the victim's certificate unacceptable.
		refuse func(e *guardEnv, victim *x509.Certificate)
	}{
		{"revoked by serial", tlsconfig.ErrRevoked, false, func(e *guardEnv, v *x509.Certificate) {
			e.revoke(tlsconfig.RevokeSerial, tlsconfig.SerialKey(v))
		}},
		{"revoked by key", tlsconfig.ErrRevoked, false, func(e *guardEnv, v *x509.Certificate) {
			e.revoke(tlsconfig.RevokeSPKI, tlsconfig.SPKIKey(v))
		}},
		{"revoked by agent", tlsconfig.ErrRevoked, false, func(e *guardEnv, v *x509.Certificate) {
			id, err := pki.IdentityFromCert(v)
			if err != nil {
				t.Fatal(err)
			}
			e.revoke(tlsconfig.RevokeAgent, id.ID)
		}},
		{"expired by the verifier's clock", tlsconfig.ErrCertExpired, false, func(e *guardEnv, v *x509.Certificate) {
			e.clock.Set(v.NotAfter.Add(time.Second)) // the bystander's certificate is valid for longer
		}},
		{"not yet valid by the verifier's clock", tlsconfig.ErrCertNotYetValid, true, func(e *guardEnv, v *x509.Certificate) {
			e.clock.Set(v.NotBefore.Add(-time.Second)) // the bystander's certificate started earlier
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newGuardEnv(t, time.Hour) // sweeps are called by the test
			bystander := e.leaf("lab-bystander", 2*time.Hour)
			if tc.later {
				time.Sleep(1100 * time.Millisecond)
			}
			victim := e.leaf("lab-victim", time.Hour)
			if tc.later && !victim.NotBefore.After(bystander.NotBefore) {
				t.Fatalf("victim valid from %v, bystander from %v", victim.NotBefore, bystander.NotBefore)
			}
			closeB, endedB := e.openGuarded(context.Background(), bystander)
			defer closeB()
			closeV, endedV := e.openGuarded(context.Background(), victim)
			defer closeV()

			e.g.sweep()
			wantOpen(t, "victim before", endedV)
			wantOpen(t, "bystander before", endedB)

			tc.refuse(e, victim)
			e.g.sweep()
			wantRefused(t, waitEnded(t, "victim", endedV, 10*time.Second), tc.reason)
			e.g.sweep()
			wantOpen(t, "bystander", endedB)
			if n := e.g.openStreams(); n != 1 {
				t.Fatalf("%d streams registered, want the bystander's only", n)
			}
			closeB()
			if err := waitEnded(t, "bystander closed", endedB, 10*time.Second); err != nil {
				t.Fatalf("bystander ended with %v", err)
			}
			if n := e.g.openStreams(); n != 0 {
				t.Fatalf("%d streams still registered after every stream ended", n)
			}
		})
	}
}

func (e *guardEnv) revoke(kind, value string) {
	e.t.Helper()
	if err := e.st.AddRevocation(context.Background(), store.Revocation{Kind: kind, Value: value, By: "test", At: time.Now()}); err != nil {
		e.t.Fatal(err)
	}
	if err := e.g.refresh(context.Background()); err != nil {
		e.t.Fatal(err)
	}
}

// TestCertGuardOpenRefused: a stream whose certificate is already refused
// never reaches its handler and is not registered.
func TestCertGuardOpenRefused(t *testing.T) {
	e := newGuardEnv(t, time.Hour)
	leaf := e.leaf("lab-refused", time.Hour)
	e.revoke(tlsconfig.RevokeSerial, tlsconfig.SerialKey(leaf))
	ctx := peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{
		PeerCertificates: []*x509.Certificate{leaf}, VerifiedChains: [][]*x509.Certificate{{leaf, e.ca.Cert}}}}})
	err := e.g.stream(nil, &fakeServerStream{ctx: ctx}, nil, func(any, grpc.ServerStream) error {
		t.Fatal("the handler ran for a revoked certificate")
		return nil
	})
	wantRefused(t, err, tlsconfig.ErrRevoked)
	var re *tlsconfig.RevokedError
	if !errors.As(err, &re) || re.Kind != tlsconfig.RevokeSerial {
		t.Fatalf("reason %v, want the serial's revocation entry", err)
	}
	if n := e.g.openStreams(); n != 0 {
		t.Fatalf("%d streams registered", n)
	}
	// No verified peer at all: refused before anything else.
	err = e.g.stream(nil, &fakeServerStream{ctx: context.Background()}, nil, func(any, grpc.ServerStream) error {
		t.Fatal("the handler ran without a peer")
		return nil
	})
	if st, _ := status.FromError(err); st.Code() != codes.Unauthenticated {
		t.Fatalf("no peer: %v", err)
	}
}

// TestCertGuardRunLoop: with the guard's loop running, a revocation
// written to the store (by any replica) ends the revoked stream at the
// loop's next interval without anyone refreshing, a revocation loaded by
// another caller's refresh ends it at once, and the loop is the guard's
// only goroutine however many streams are open.
func TestCertGuardRunLoop(t *testing.T) {
	const every = 20 * time.Millisecond
	e := newGuardEnv(t, every)
	before := guardGoroutines(t)
	ctx, stop := context.WithCancel(context.Background())
	loopDone := make(chan struct{})
	go func() { defer close(loopDone); e.g.run(ctx) }()
	defer func() { stop(); <-loopDone }()

	const n = 50
	leaves := make([]*x509.Certificate, n)
	ended := make([]<-chan error, n)
	for i := range leaves {
		leaves[i] = e.leaf(fmt.Sprintf("lab-loop-%d", i), time.Hour)
		var cancel context.CancelFunc
		cancel, ended[i] = e.openGuarded(context.Background(), leaves[i])
		defer cancel()
	}
	if got := e.g.openStreams(); got != n {
		t.Fatalf("%d streams registered, want %d", got, n)
	}
	if got, want := guardGoroutines(t), (guardCount{loops: before.loops + 1, perStream: before.perStream}); got != want {
		t.Fatalf("with %d open streams the guard runs %+v, want %+v: its one loop and no goroutine per stream", n, got, want)
	}

	// Written to the store only: the loop's own refresh finds it.
	if err := e.st.AddRevocation(context.Background(), store.Revocation{Kind: tlsconfig.RevokeSerial, Value: tlsconfig.SerialKey(leaves[0]), By: "other replica", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	wantRefused(t, waitEnded(t, "revoked in the store", ended[0], 10*time.Second), tlsconfig.ErrRevoked)

	// Loaded by another caller (the admin API's refresh): the change
	// wakes the loop, it does not wait for its ticker. The loop's next
	// tick would find it too, so this side is shown by a loop whose
	// interval is longer than the test.
	slow := newGuardEnv(t, time.Hour)
	sctx, sstop := context.WithCancel(context.Background())
	sdone := make(chan struct{})
	go func() { defer close(sdone); slow.g.run(sctx) }()
	defer func() { sstop(); <-sdone }()
	sl := slow.leaf("lab-admin-revoked", time.Hour)
	_, sended := slow.openGuarded(context.Background(), sl)
	slow.revoke(tlsconfig.RevokeSerial, tlsconfig.SerialKey(sl))
	wantRefused(t, waitEnded(t, "revoked by another refresh", sended, 10*time.Second), tlsconfig.ErrRevoked)

	// Expired by the verifier's clock: every stream's certificate.
	e.clock.Set(time.Now().Add(2 * time.Hour))
	for i := 1; i < n; i++ {
		wantRefused(t, waitEnded(t, "expired", ended[i], 10*time.Second), tlsconfig.ErrCertExpired)
	}
	if got := e.g.openStreams(); got != 0 {
		t.Fatalf("%d streams registered after all ended", got)
	}
}

type guardCount struct{ loops, perStream int }

// guardGoroutines counts the goroutines running the guard's loop and
// those the guard started for a stream (the old design's watchers).
func guardGoroutines(t testing.TB) guardCount {
	t.Helper()
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var c guardCount
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "verifier.(*certGuard).run(") {
			c.loops++
		}
		if strings.Contains(g, "created by github.com/pulse-attest/pulse/verifier.(*certGuard)") {
			c.perStream++
		}
	}
	return c
}

// BenchmarkCertGuardStreams: what open streams cost the guard while idle,
// at the production interval's ratio scaled down (every = 100 ms, so a
// run shows 10 intervals a second). Reported per open stream: goroutines
// and stack bytes, goroutine wake-ups per second (the runtime samples one
// scheduling in eight; scaled back), OS context switches per second
// summed over the process's threads, and CPU microseconds per second.
// One op is one interval of idleness.
//
//	go test -tags pulse_sim -run '^$' -bench BenchmarkCertGuardStreams -benchtime 20x ./verifier/
func BenchmarkCertGuardStreams(b *testing.B) {
	const every = 100 * time.Millisecond
	for _, n := range []int{1000} {
		b.Run(fmt.Sprintf("streams=%d", n), func(b *testing.B) {
			e := newGuardEnv(b, every)
			ctx, stop := context.WithCancel(context.Background())
			loopDone := make(chan struct{})
			go func() { defer close(loopDone); e.g.run(ctx) }()
			defer func() { stop(); <-loopDone }()
			leaf := e.leaf("lab-bench", time.Hour)

			runtime.GC()
			g0, s0 := runtime.NumGoroutine(), stackBytes()
			cancels := make([]context.CancelFunc, n)
			for i := range cancels {
				cancels[i], _ = e.openGuarded(context.Background(), leaf)
			}
			defer func() {
				for _, c := range cancels {
					c()
				}
			}()
			// The fake streams' handlers are one goroutine each; what the
			// guard adds is what is left.
			g1, s1 := runtime.NumGoroutine(), stackBytes()
			time.Sleep(2 * every) // let every watcher settle into its ticker
			w0, cs0, cpu0, t0 := schedulings(), ctxSwitches(b), cpuTime(b), time.Now()
			b.ResetTimer()
			for range b.N {
				time.Sleep(every)
			}
			b.StopTimer()
			secs := time.Since(t0).Seconds()
			w1, cs1, cpu1 := schedulings(), ctxSwitches(b), cpuTime(b)
			per := float64(n)
			b.ReportMetric(float64(g1-g0-n)/per, "guard-goroutines/stream")
			b.ReportMetric(float64(s1-s0)/per, "stack-B/stream")
			b.ReportMetric(float64(w1-w0)/secs/per, "wakeups/s/stream")
			b.ReportMetric(float64(cs1-cs0)/secs/per, "ctxsw/s/stream")
			b.ReportMetric(float64((cpu1-cpu0).Microseconds())/secs/per, "cpu-µs/s/stream")
		})
	}
}

func stackBytes() int64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/stacks:bytes"}}
	metrics.Read(s)
	return int64(s[0].Value.Uint64())
}

// schedulings estimates how many times goroutines were scheduled to run:
// the runtime records one in eight in /sched/latencies.
func schedulings() uint64 {
	s := []metrics.Sample{{Name: "/sched/latencies:seconds"}}
	metrics.Read(s)
	var n uint64
	for _, c := range s[0].Value.Float64Histogram().Counts {
		n += c
	}
	return 8 * n
}

// ctxSwitches sums the context switches of the process's threads.
func ctxSwitches(tb testing.TB) int64 {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		tb.Skipf("no /proc/self/task: %v", err)
	}
	var sum int64
	for _, task := range tasks {
		f, err := os.Open(filepath.Join("/proc/self/task", task.Name(), "status"))
		if err != nil {
			continue // the thread exited
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var v int64
			if _, err := fmt.Sscanf(sc.Text(), "voluntary_ctxt_switches: %d", &v); err == nil {
				sum += v
			} else if _, err := fmt.Sscanf(sc.Text(), "nonvoluntary_ctxt_switches: %d", &v); err == nil {
				sum += v
			}
		}
		f.Close()
	}
	return sum
}

func cpuTime(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkCertGuardSweep: one sweep over 10,000 open streams, in the
// steady state (the revocation list unchanged since the last sweep: only
// validity by the clock is checked) and after a change (every leaf is
// looked up in the new list, which holds one entry for another agent).
//
//	go test -tags pulse_sim -run '^$' -bench BenchmarkCertGuardSweep ./verifier/
func BenchmarkCertGuardSweep(b *testing.B) {
	const n = 10000
	e := newGuardEnv(b, time.Hour)
	leaf := e.leaf("lab-sweep", time.Hour)
	for range n {
		e.g.watch(&watchedStream{leaf: leaf, cancel: func() {}})
	}
	other := []tlsconfig.RevocationEntry{{Kind: tlsconfig.RevokeAgent, Value: "lab-someone-else"}}
	for _, changed := range []bool{false, true} {
		b.Run(fmt.Sprintf("streams=%d/list-changed=%v", n, changed), func(b *testing.B) {
			e.g.sweep()
			b.ReportAllocs()
			for b.Loop() {
				if changed {
					e.g.set.Store(tlsconfig.NewRevocationSet(other))
				}
				e.g.sweep()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/stream")
			if got := e.g.openStreams(); got != n {
				b.Fatalf("%d streams left open, want %d", got, n)
			}
		})
	}
}
