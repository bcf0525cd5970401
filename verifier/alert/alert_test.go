package alert

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pulse-attest/pulse/verifier/audit"
)

var testSecret = Secret("whsec-0123456789abcdef-0123456789abcdef")

// syncBuffer collects log output written by several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newLogger(buf io.Writer) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: "test", Level: hclog.Debug, JSONFormat: true, Output: buf})
}

// fastHook is a webhook config with millisecond backoff.
func fastHook(name, url string) WebhookConfig {
	return WebhookConfig{Name: name, URL: url, Secret: testSecret, InitialBackoff: time.Millisecond, MaxBackoff: 4 * time.Millisecond}
}

func newDispatcher(t *testing.T, logs io.Writer, hooks ...WebhookConfig) *Dispatcher {
	t.Helper()
	d, err := NewDispatcher(Config{Logger: newLogger(logs), Webhooks: hooks})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_ = d.Close(ctx) // no-op when the test closed it
	})
	return d
}

func sampleAlert(agent string) Alert {
	return Alert{
		Kind: KindBinaryChanged, AgentID: agent, Reason: "REASON_BINARY_CHANGED",
		Message: "agent binary changed without approval",
		Data:    map[string]string{"digest": "ab12", "rule": "binaries", "file_line": "fleet.hcl:12"},
	}
}

// received is one request as the receiver saw it.
type received struct {
	delivery Delivery
	body     []byte
	header   http.Header
}

// receiver decodes and signature-checks every request and answers with
// status(n) for the n-th request (1-based).
func receiver(t *testing.T, status func(n int) int) (*httptest.Server, chan received) {
	t.Helper()
	ch := make(chan received, 100)
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("read body: %v", err)
			return
		}
		if err := VerifySignature(testSecret, body, r.Header.Get(HeaderSignature)); err != nil {
			t.Errorf("receiver: %v", err)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var d Delivery
		if err := json.Unmarshal(body, &d); err != nil {
			t.Errorf("receiver: decode: %v", err)
		}
		code := status(int(n.Add(1)))
		ch <- received{delivery: d, body: body, header: r.Header.Clone()}
		w.WriteHeader(code)
	}))
	t.Cleanup(srv.Close)
	return srv, ch
}

func TestAlertWebhookDeliversSignedAlert(t *testing.T) {
	srv, got := receiver(t, func(int) int { return http.StatusNoContent })
	d := newDispatcher(t, io.Discard, fastHook("soc", srv.URL+"/hook"))
	before := time.Now().Unix()
	sent, err := d.Dispatch(context.Background(), sampleAlert("edge-1"))
	if err != nil {
		t.Fatal(err)
	}
	r := <-got
	a := r.delivery.Alert
	if a.ID != sent.ID || len(a.ID) != 32 || a.Kind != KindBinaryChanged || a.Severity != SeverityCritical ||
		a.AgentID != "edge-1" || a.Reason != "REASON_BINARY_CHANGED" || a.Data["file_line"] != "fleet.hcl:12" ||
		!a.Time.Equal(sent.Time) || a.Time.Location() != time.UTC {
		t.Errorf("received %+v, sent %+v", a, sent)
	}
	if r.delivery.Attempt != 1 || r.delivery.Timestamp < before {
		t.Errorf("delivery envelope %+v", r.delivery)
	}
	if ts := r.header.Get(HeaderTimestamp); ts != strconv.FormatInt(r.delivery.Timestamp, 10) {
		t.Errorf("timestamp header %q, body %d", ts, r.delivery.Timestamp)
	}
	if r.header.Get(HeaderAlertID) != sent.ID || r.header.Get("Content-Type") != "application/json" {
		t.Errorf("headers %v", r.header)
	}
	// The signature is over these exact bytes with this secret only.
	if err := VerifySignature([]byte("another-secret-of-32-bytes......"), r.body, r.header.Get(HeaderSignature)); !errors.Is(err, ErrSignatureMismatch) {
		t.Errorf("wrong secret: %v", err)
	}
	if err := d.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := d.Stats().Webhooks["soc"]
	if st.Delivered != 1 || st.Failed != 0 || st.Retried != 0 || st.Dropped != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestAlertWebhookRetriesThenDeliversOnce(t *testing.T) {
	srv, got := receiver(t, func(n int) int {
		if n <= 2 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	d := newDispatcher(t, io.Discard, fastHook("soc", srv.URL))
	sent, err := d.Dispatch(context.Background(), sampleAlert("edge-2"))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	close(got)
	var attempts []int
	for r := range got {
		if r.delivery.Alert.ID != sent.ID {
			t.Errorf("unexpected alert %s", r.delivery.Alert.ID)
		}
		attempts = append(attempts, r.delivery.Attempt)
	}
	if fmt.Sprint(attempts) != "[1 2 3]" {
		t.Errorf("attempts seen by the receiver: %v (the third, accepted, must be the last)", attempts)
	}
	st := d.Stats().Webhooks["soc"]
	if st.Delivered != 1 || st.Retried != 2 || st.Failed != 0 {
		t.Errorf("stats %+v", st)
	}
}

// hangingReceiver blocks every request until release is closed (or the
// client gives up), signalling entered when a request arrives.
func hangingReceiver(t *testing.T) (srv *httptest.Server, entered chan string, releaseFn func(), returned *atomic.Int64) {
	t.Helper()
	entered = make(chan string, 100)
	release := make(chan struct{})
	returned = new(atomic.Int64)
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer returned.Add(1)
		entered <- r.Header.Get(HeaderAlertID)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	var once sync.Once
	releaseFn = func() { once.Do(func() { close(release) }) }
	t.Cleanup(func() {
		releaseFn()
		srv.Close()
	})
	return srv, entered, releaseFn, returned
}

func TestAlertSlowReceiverDoesNotBlockDispatch(t *testing.T) {
	srv, entered, release, returned := hangingReceiver(t)
	d := newDispatcher(t, io.Discard, fastHook("slow", srv.URL))
	first, err := d.Dispatch(context.Background(), sampleAlert("edge-1"))
	if err != nil {
		t.Fatal(err)
	}
	if id := <-entered; id != first.ID { // the receiver now hangs on the first alert
		t.Fatalf("receiver got %s", id)
	}
	done := make(chan error)
	go func() {
		_, err := d.Dispatch(context.Background(), sampleAlert("edge-2"))
		done <- err
	}()
	if err := <-done; err != nil { // returns although the receiver still hangs
		t.Fatal(err)
	}
	if n := returned.Load(); n != 0 {
		t.Fatalf("receiver returned %d times before release", n)
	}
	release()
	if err := d.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := d.Stats().Webhooks["slow"]; st.Delivered != 2 {
		t.Errorf("stats %+v", st)
	}
}

func TestAlertQueueFullDropIsCounted(t *testing.T) {
	srv, entered, release, _ := hangingReceiver(t)
	logs := &syncBuffer{}
	hook := fastHook("small", srv.URL)
	hook.QueueSize = 1
	d := newDispatcher(t, logs, hook)
	a, _ := d.Dispatch(context.Background(), sampleAlert("edge-1"))
	if id := <-entered; id != a.ID { // worker busy with a
		t.Fatalf("receiver got %s", id)
	}
	if _, err := d.Dispatch(context.Background(), sampleAlert("edge-2")); err != nil { // queued
		t.Fatal(err)
	}
	c, err := d.Dispatch(context.Background(), sampleAlert("edge-3")) // queue full: dropped
	if err != nil {
		t.Fatalf("a dropped webhook delivery is not a Dispatch error: %v", err)
	}
	st := d.Stats().Webhooks["small"]
	if st.Dropped != 1 || st.Queued != 1 {
		t.Errorf("stats after overflow %+v", st)
	}
	if !strings.Contains(logs.String(), `"alert_id":"`+c.ID+`"`) || !strings.Contains(logs.String(), "queue full") {
		t.Errorf("drop not logged with the alert id:\n%s", logs)
	}
	release()
	if err := d.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := d.Stats().Webhooks["small"]; st.Delivered != 2 || st.Dropped != 1 {
		t.Errorf("final stats %+v", st)
	}
}

func TestAlertCloseDrainsQueue(t *testing.T) {
	gate := make(chan struct{})
	var delivered atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-gate
		delivered.Add(1)
	}))
	defer srv.Close()
	d := newDispatcher(t, io.Discard, fastHook("soc", srv.URL))
	const n = 6
	for i := 0; i < n; i++ {
		if _, err := d.Dispatch(context.Background(), sampleAlert(fmt.Sprint("edge-", i))); err != nil {
			t.Fatal(err)
		}
	}
	close(gate)
	if err := d.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if delivered.Load() != n || d.Stats().Webhooks["soc"].Delivered != n {
		t.Errorf("after Close: receiver saw %d, stats %+v", delivered.Load(), d.Stats().Webhooks["soc"])
	}
	if _, err := d.Dispatch(context.Background(), sampleAlert("late")); !errors.Is(err, ErrClosed) {
		t.Errorf("dispatch after close = %v", err)
	}
	if err := d.Close(context.Background()); err != nil {
		t.Errorf("second close = %v", err)
	}
}

func TestAlertCloseDeadlineAbandons(t *testing.T) {
	srv, entered, _, _ := hangingReceiver(t)
	d := newDispatcher(t, io.Discard, fastHook("stuck", srv.URL))
	for i := 0; i < 3; i++ {
		if _, err := d.Dispatch(context.Background(), sampleAlert(fmt.Sprint("edge-", i))); err != nil {
			t.Fatal(err)
		}
	}
	<-entered
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := d.Close(ctx)
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "3 webhook deliveries abandoned") {
		t.Fatalf("close = %v", err)
	}
	if st := d.Stats().Webhooks["stuck"]; st.Abandoned != 3 || st.Failed != 3 || st.Delivered != 0 || st.Queued != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestAlertWebhookFailures(t *testing.T) {
	tests := []struct {
		name        string
		status      func(n int) int
		header      http.Header
		tweak       func(*WebhookConfig)
		attempts    int
		retried     uint64
		wantLogging string
	}{
		{"permanent 400 is not retried", func(int) int { return http.StatusBadRequest }, nil, nil, 1, 0, "permanent error"},
		{"redirect is not followed", func(int) int { return http.StatusTemporaryRedirect }, http.Header{"Location": {"http://127.0.0.1:1/"}}, nil, 1, 0, "permanent error"},
		{"5xx until max attempts", func(int) int { return http.StatusInternalServerError }, nil,
			func(c *WebhookConfig) { c.MaxAttempts = 3 }, 3, 2, "max attempts reached"},
		{"backoff past max age", func(int) int { return http.StatusServiceUnavailable }, nil,
			func(c *WebhookConfig) { c.InitialBackoff, c.MaxBackoff, c.MaxAge = time.Hour, time.Hour, time.Minute }, 1, 0, "max age reached"},
		{"429 Retry-After past max age", func(int) int { return http.StatusTooManyRequests }, http.Header{"Retry-After": {"3600"}},
			func(c *WebhookConfig) { c.MaxBackoff, c.MaxAge = 2*time.Hour, time.Minute }, 1, 0, "max age reached"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var n atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				for k, v := range tc.header {
					w.Header()[k] = v
				}
				w.WriteHeader(tc.status(int(n.Add(1))))
			}))
			defer srv.Close()
			logs := &syncBuffer{}
			hook := fastHook("h", srv.URL)
			if tc.tweak != nil {
				tc.tweak(&hook)
			}
			d := newDispatcher(t, logs, hook)
			if _, err := d.Dispatch(context.Background(), sampleAlert("edge-1")); err != nil {
				t.Fatal(err)
			}
			if err := d.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			st := d.Stats().Webhooks["h"]
			if int(n.Load()) != tc.attempts || st.Retried != tc.retried || st.Failed != 1 || st.Delivered != 0 {
				t.Errorf("attempts %d, stats %+v", n.Load(), st)
			}
			if !strings.Contains(logs.String(), tc.wantLogging) {
				t.Errorf("log lacks %q:\n%s", tc.wantLogging, logs)
			}
		})
	}
}

func TestAlertNetworkErrorRetriedAndURLRedacted(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL + "/services/T0/B0/path-token-XYZ?key=query-token-ABC"
	srv.Close() // connection refused from now on
	logs := &syncBuffer{}
	hook := fastHook("gone", url)
	hook.MaxAttempts = 2
	d := newDispatcher(t, logs, hook)
	if _, err := d.Dispatch(context.Background(), sampleAlert("edge-1")); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := d.Stats().Webhooks["gone"]; st.Retried != 1 || st.Failed != 1 {
		t.Errorf("stats %+v", st)
	}
	out := logs.String()
	if !strings.Contains(out, "will retry") || !strings.Contains(out, "giving up") {
		t.Errorf("retry not logged:\n%s", out)
	}
	for _, s := range []string{"path-token-XYZ", "query-token-ABC", string(testSecret)} {
		if strings.Contains(out, s) {
			t.Errorf("log leaks %q:\n%s", s, out)
		}
	}
}

func TestAlertSecretNeverPrinted(t *testing.T) {
	cfg := fastHook("h", "https://example.invalid/x")
	for _, s := range []string{
		fmt.Sprint(cfg.Secret), fmt.Sprintf("%s %v %x %X %q %d %+v %#v", cfg.Secret, cfg.Secret, cfg.Secret, cfg.Secret, cfg.Secret, cfg.Secret, cfg, cfg),
	} {
		if strings.Contains(s, string(testSecret)) || strings.Contains(s, fmt.Sprintf("%x", []byte(testSecret))) {
			t.Errorf("secret printed: %s", s)
		}
	}
	j, _ := json.Marshal(cfg)
	if bytes.Contains(j, []byte(testSecret)) {
		t.Errorf("secret in JSON: %s", j)
	}
	logs := &syncBuffer{}
	newLogger(logs).Info("config", "webhook", cfg, "secret", cfg.Secret)
	if strings.Contains(logs.String(), string(testSecret)) {
		t.Errorf("secret logged: %s", logs)
	}
}

func TestAlertVerifySignature(t *testing.T) {
	body := []byte(`{"timestamp":1,"attempt":1,"alert":{}}`)
	good := Sign(testSecret, body)
	if !strings.HasPrefix(good, "sha256=") || len(good) != len("sha256=")+64 {
		t.Fatalf("signature %q", good)
	}
	tests := []struct {
		name   string
		secret []byte
		body   []byte
		header string
		want   error
	}{
		{"good", testSecret, body, good, nil},
		{"surrounding space", testSecret, body, " " + good + " ", nil},
		{"wrong secret", []byte("some-other-secret-value"), body, good, ErrSignatureMismatch},
		{"tampered body", testSecret, append(bytes.Clone(body), ' '), good, ErrSignatureMismatch},
		{"missing", testSecret, body, "", ErrSignatureMissing},
		{"no prefix", testSecret, body, strings.TrimPrefix(good, "sha256="), ErrSignatureMalformed},
		{"sha1 prefix", testSecret, body, "sha1=" + strings.TrimPrefix(good, "sha256="), ErrSignatureMalformed},
		{"bad hex", testSecret, body, "sha256=zz" + good[9:], ErrSignatureMalformed},
		{"short", testSecret, body, good[:40], ErrSignatureMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := VerifySignature(tc.secret, tc.body, tc.header)
			if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
				t.Errorf("err = %v, want %v", err, tc.want)
			}
		})
	}
	if err := VerifySignature(nil, body, good); err == nil {
		t.Error("empty secret accepted")
	}
}

func TestAlertKindsDefaultSeverity(t *testing.T) {
	for _, k := range Kinds() {
		if k.DefaultSeverity() < SeverityCritical || k.DefaultSeverity() > SeverityLow {
			t.Errorf("%s default severity %d", k, k.DefaultSeverity())
		}
	}
	if len(Kinds()) != len(defaultSeverity) {
		t.Error("Kinds() and defaultSeverity disagree")
	}
}

func TestAlertDispatchValidation(t *testing.T) {
	d := newDispatcher(t, io.Discard)
	tests := []struct {
		name string
		a    Alert
		want error
	}{
		{"unknown kind", Alert{Kind: "tampered", AgentID: "a"}, ErrUnknownKind},
		{"unknown reason", Alert{Kind: KindUntrusted, AgentID: "a", Reason: "REASON_NOPE"}, ErrUnknownReason},
		{"clock desync as compromised", Alert{Kind: KindCompromised, AgentID: "a", Reason: "REASON_CLOCK_DESYNC"}, ErrInvalidAlert},
		{"clock desync as untrusted", Alert{Kind: KindUntrusted, AgentID: "a", Reason: "REASON_CLOCK_DESYNC"}, ErrInvalidAlert},
		{"no agent", Alert{Kind: KindUntrusted}, ErrInvalidAlert},
		{"negative severity", Alert{Kind: KindUntrusted, AgentID: "a", Severity: -1}, ErrInvalidAlert},
		{"severity past low", Alert{Kind: KindUntrusted, AgentID: "a", Severity: 5}, ErrInvalidAlert},
		{"reserved data key", Alert{Kind: KindUntrusted, AgentID: "a", Data: map[string]string{"alert_id": "x"}}, ErrInvalidAlert},
	}
	for _, tc := range tests {
		if _, err := d.Dispatch(context.Background(), tc.a); !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
	}
	if got := d.Stats().Rejected; got != uint64(len(tests)) {
		t.Errorf("rejected = %d", got)
	}
	ok := []Alert{
		{Kind: KindClockDesync, AgentID: "a", Reason: "REASON_CLOCK_DESYNC"},
		{Kind: KindPolicyReloadFailed, Message: "fleet.hcl:3:1: unknown key"},
		{Kind: KindIsolated, AgentID: "a", Severity: 2, Time: time.Date(2026, 1, 1, 1, 0, 0, 0, time.FixedZone("x", 3600))},
	}
	for _, a := range ok {
		got, err := d.Dispatch(context.Background(), a)
		if err != nil {
			t.Errorf("%s: %v", a.Kind, err)
			continue
		}
		if got.ID == "" || got.Time.Location() != time.UTC || got.Severity < 1 {
			t.Errorf("defaults not applied: %+v", got)
		}
		if a.Severity == 0 && got.Severity != a.Kind.DefaultSeverity() {
			t.Errorf("%s severity %d", a.Kind, got.Severity)
		}
	}
	st := d.Stats()
	if st.Dispatched[KindClockDesync] != 1 || st.Dispatched[KindCompromised] != 0 || st.Dispatched[KindIsolated] != 1 || len(st.Dispatched) != len(Kinds()) {
		t.Errorf("dispatched %v", st.Dispatched)
	}
}

var snakeCase = regexp.MustCompile(`^(@[a-z]+|[a-z][a-z0-9_]*)$`)

func TestAlertDispatchWritesAuditAndLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	logs := &syncBuffer{}
	root := newLogger(logs)
	aw, err := audit.Open(path, root)
	if err != nil {
		t.Fatal(err)
	}
	d, err := NewDispatcher(Config{Logger: root, Audit: aw})
	if err != nil {
		t.Fatal(err)
	}
	var sent []Alert
	for i, k := range []Kind{KindBinaryChanged, KindClockDesync, KindReleased} {
		a, err := d.Dispatch(context.Background(), Alert{Kind: k, AgentID: fmt.Sprint("edge-", i), Message: "m", Data: map[string]string{"n": fmt.Sprint(i)}})
		if err != nil {
			t.Fatal(err)
		}
		if a.AuditSeq != uint64(i+1) || len(a.AuditHash) != 64 {
			t.Errorf("audit anchor %d %q", a.AuditSeq, a.AuditHash)
		}
		sent = append(sent, a)
	}
	if err := d.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := aw.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	i := 0
	s, err := audit.Scan(f, func(r audit.Record) error {
		a := sent[i]
		if r.Kind != string(a.Kind) || r.AgentID != a.AgentID || r.Severity != a.Severity || r.Data["alert_id"] != a.ID ||
			r.Data["n"] != a.Data["n"] || r.Data["message"] != "m" || r.Hash != a.AuditHash || !r.Time.Equal(a.Time) {
			t.Errorf("audit record %+v for alert %+v", r, a)
		}
		i++
		return nil
	})
	if err != nil || s.Records != 3 {
		t.Fatalf("audit log: %+v, %v", s, err)
	}

	var alertLines int
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		for k := range m {
			if !snakeCase.MatchString(k) {
				t.Errorf("log key %q is not snake_case", k)
			}
		}
		if m["@message"] != "alert" {
			continue
		}
		alertLines++
		if m["@module"] != "test.alert" || m["alert_id"] == nil || m["kind"] == nil || m["agent_id"] == nil || m["audit_hash"] == nil {
			t.Errorf("alert log line %v", m)
		}
		if m["kind"] == string(KindBinaryChanged) && m["@level"] != "error" {
			t.Errorf("severity 1 logged at %v", m["@level"])
		}
	}
	if alertLines != 3 {
		t.Errorf("%d alert log lines:\n%s", alertLines, logs)
	}
}

func TestAlertAuditFailureStillFansOut(t *testing.T) {
	aw, err := audit.Open(filepath.Join(t.TempDir(), "audit.jsonl"), nil)
	if err != nil {
		t.Fatal(err)
	}
	aw.Close() // appends now fail
	srv, got := receiver(t, func(int) int { return http.StatusOK })
	logs := &syncBuffer{}
	hook := fastHook("soc", srv.URL)
	d, err := NewDispatcher(Config{Logger: newLogger(logs), Audit: aw, Webhooks: []WebhookConfig{hook}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close(context.Background())
	a, err := d.Dispatch(context.Background(), sampleAlert("edge-1"))
	if !errors.Is(err, audit.ErrClosed) {
		t.Fatalf("dispatch = %v", err)
	}
	if r := <-got; r.delivery.Alert.ID != a.ID || r.delivery.Alert.AuditHash != "" {
		t.Errorf("webhook got %+v", r.delivery.Alert)
	}
	if d.Stats().AuditFailed != 1 || !strings.Contains(logs.String(), "not written to the audit log") {
		t.Errorf("audit failure not counted/logged: %+v", d.Stats())
	}
}

func TestAlertNewDispatcherRefusesBadWebhooks(t *testing.T) {
	good := fastHook("a", "https://hooks.example.com/x")
	tests := map[string]func(c *WebhookConfig){
		"no name":      func(c *WebhookConfig) { c.Name = "" },
		"bad scheme":   func(c *WebhookConfig) { c.URL = "ftp://example.com/" },
		"no host":      func(c *WebhookConfig) { c.URL = "https:///x" },
		"unparsable":   func(c *WebhookConfig) { c.URL = "http://[::1" },
		"short secret": func(c *WebhookConfig) { c.Secret = Secret("short") },
	}
	for name, mutate := range tests {
		c := good
		mutate(&c)
		if _, err := NewDispatcher(Config{Webhooks: []WebhookConfig{c}}); err == nil {
			t.Errorf("%s accepted", name)
		} else if strings.Contains(err.Error(), string(testSecret)) {
			t.Errorf("%s: error leaks the secret: %v", name, err)
		}
	}
	if _, err := NewDispatcher(Config{Webhooks: []WebhookConfig{good, good}}); err == nil {
		t.Error("duplicate names accepted")
	}
}

func TestAlertBackoffBounds(t *testing.T) {
	h := &webhook{cfg: WebhookConfig{InitialBackoff: 100 * time.Millisecond, MaxBackoff: time.Second}}
	for attempt := 1; attempt <= 10; attempt++ {
		full := min(100*time.Millisecond<<(attempt-1), time.Second)
		for range 50 {
			d := h.backoff(attempt, 0)
			if d < full/2 || d > full {
				t.Fatalf("attempt %d: backoff %s outside [%s, %s]", attempt, d, full/2, full)
			}
		}
	}
	if d := h.backoff(1, 5*time.Second); d != time.Second {
		t.Errorf("Retry-After not capped at MaxBackoff: %s", d)
	}
	if d := h.backoff(1, 700*time.Millisecond); d != 700*time.Millisecond {
		t.Errorf("Retry-After not respected: %s", d)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if got := parseRetryAfter(now.Add(90*time.Second).Format(http.TimeFormat), now); got != 90*time.Second {
		t.Errorf("HTTP-date Retry-After = %s", got)
	}
	if got := parseRetryAfter("soon", now); got != 0 {
		t.Errorf("bad Retry-After = %s", got)
	}
}
