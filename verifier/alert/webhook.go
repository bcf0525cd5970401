package alert

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Webhook defaults, used where WebhookConfig leaves a field zero.
const (
	DefaultQueueSize      = 1024
	DefaultMaxAttempts    = 10
	DefaultMaxAge         = 15 * time.Minute
	DefaultInitialBackoff = time.Second
	DefaultMaxBackoff     = 2 * time.Minute
	DefaultTimeout        = 10 * time.Second
)

// MinSecretLen is the shortest webhook secret accepted (32 random bytes
// are recommended).
const MinSecretLen = 16

// WebhookConfig configures one webhook receiver.
type WebhookConfig struct {
	// Name identifies the webhook in logs and Stats (a metric label).
	Name string
	// URL is the http or https endpoint. Only its scheme and host are
	// ever logged (paths and queries often carry tokens).
	URL string
	// Secret is the HMAC-SHA256 key for X-Pulse-Signature.
	Secret Secret
	// QueueSize bounds the alerts waiting for this webhook. When it is
	// full, the least severe alert is dropped for this webhook (counted
	// per severity and logged): a queued one less severe than the new
	// alert, else the new alert itself. A backlog is delivered most severe
	// first.
	QueueSize int
	// MaxAttempts bounds the POSTs per alert, the first included.
	MaxAttempts int
	// MaxAge bounds how long after it was queued an alert may still be
	// attempted; a retry that would start later is not made.
	MaxAge time.Duration
	// InitialBackoff and MaxBackoff shape the exponential backoff between
	// attempts (doubling, with jitter, capped).
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
	// Timeout bounds one attempt (connect, send, response headers, body).
	Timeout time.Duration
	// Client, when set, sends the requests (for custom TLS roots or
	// proxies). Redirects are never followed either way.
	Client *http.Client `json:"-"`
}

func (c *WebhookConfig) setDefaults() {
	if c.QueueSize <= 0 {
		c.QueueSize = DefaultQueueSize
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.MaxAge <= 0 {
		c.MaxAge = DefaultMaxAge
	}
	if c.InitialBackoff <= 0 {
		c.InitialBackoff = DefaultInitialBackoff
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = DefaultMaxBackoff
	}
	if c.MaxBackoff < c.InitialBackoff {
		c.MaxBackoff = c.InitialBackoff
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
}

// target returns the URL reduced to scheme and host, for logs.
func (c *WebhookConfig) target() (string, error) {
	u, err := url.Parse(c.URL)
	if err != nil {
		return "", errors.New("unparsable URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("URL scheme %q (want http or https)", u.Scheme)
	}
	if u.Host == "" {
		return "", errors.New("URL without host")
	}
	return u.Scheme + "://" + u.Host, nil
}

// Delivery is a webhook request body. The signature covers the whole body,
// so Timestamp and Attempt are authenticated along with the alert.
type Delivery struct {
	// Timestamp is the Unix time (seconds) this attempt was signed; it
	// equals the X-Pulse-Timestamp header.
	Timestamp int64 `json:"timestamp"`
	// Attempt counts from 1; the same alert may arrive more than once.
	Attempt int   `json:"attempt"`
	Alert   Alert `json:"alert"`
}

type deliveryWire struct {
	Timestamp int64           `json:"timestamp"`
	Attempt   int             `json:"attempt"`
	Alert     json.RawMessage `json:"alert"`
}

type job struct {
	id       string
	kind     Kind
	severity int
	alert    json.RawMessage
	queued   time.Time
}

// webhook is one receiver with its queue and worker.
type webhook struct {
	cfg    WebhookConfig
	target string
	log    hclog.Logger
	client *http.Client
	now    func() time.Time
	queue  *queue
	ctx    context.Context // cancelled when Close gives up draining
	cancel context.CancelFunc
	done   chan struct{}

	delivered, failed, dropped, retried, abandoned atomic.Uint64
	// droppedBySev splits dropped by the dropped alert's severity (1..4).
	droppedBySev [SeverityLow + 1]atomic.Uint64
}

func newWebhook(cfg WebhookConfig, log hclog.Logger, now func() time.Time) (*webhook, error) {
	if cfg.Name == "" {
		return nil, errors.New("webhook without a name")
	}
	target, err := cfg.target()
	if err != nil {
		return nil, fmt.Errorf("webhook %q: %w", cfg.Name, err)
	}
	if len(cfg.Secret) < MinSecretLen {
		return nil, fmt.Errorf("webhook %q: secret shorter than %d bytes", cfg.Name, MinSecretLen)
	}
	cfg.Secret = bytes.Clone(cfg.Secret)
	cfg.setDefaults()
	client := &http.Client{}
	if cfg.Client != nil {
		c := *cfg.Client
		client = &c
	}
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	ctx, cancel := context.WithCancel(context.Background())
	h := &webhook{
		cfg:    cfg,
		target: target,
		log:    log.With("webhook", cfg.Name, "target", target),
		client: client,
		now:    now,
		queue:  newQueue(cfg.QueueSize),
		ctx:    ctx,
		cancel: cancel,
		done:   make(chan struct{}),
	}
	go h.run()
	return h, nil
}

// enqueue never blocks: a full queue sheds its least severe alert (which
// may be j) for this webhook.
func (h *webhook) enqueue(j job) {
	shed, dropped, _ := h.queue.push(j)
	if !dropped {
		return
	}
	h.dropped.Add(1)
	h.droppedBySev[sevIndex(shed.severity)].Add(1)
	args := []any{"alert_id", shed.id, "kind", shed.kind, "severity", shed.severity, "queue_size", h.cfg.QueueSize}
	if shed.id != j.id {
		args = append(args, "displaced_by", j.id, "displaced_by_severity", j.severity)
	}
	h.log.Error("webhook queue full; least severe alert dropped for this webhook", args...)
}

func (h *webhook) run() {
	defer close(h.done)
	for {
		j, ok := h.queue.pop()
		if !ok {
			return
		}
		h.deliver(j)
	}
}

// deliver makes the attempts for one alert.
func (h *webhook) deliver(j job) {
	fail := func(why string, attempts int, err error) {
		h.failed.Add(1)
		args := []any{"alert_id", j.id, "kind", j.kind, "attempts", attempts, "reason", why}
		if err != nil {
			args = append(args, "error", err)
		}
		h.log.Error("webhook delivery failed; giving up", args...)
	}
	if h.ctx.Err() != nil {
		h.abandoned.Add(1)
		fail("dispatcher closed before delivery", 0, nil)
		return
	}
	if age := h.now().Sub(j.queued); age > h.cfg.MaxAge {
		fail("expired in queue", 0, fmt.Errorf("queued %s ago, max age %s", age.Round(time.Millisecond), h.cfg.MaxAge))
		return
	}
	for attempt := 1; ; attempt++ {
		retryAfter, retryable, err := h.attempt(j, attempt)
		if err == nil {
			h.delivered.Add(1)
			h.log.Debug("webhook delivered", "alert_id", j.id, "kind", j.kind, "attempt", attempt)
			return
		}
		switch {
		case h.ctx.Err() != nil:
			h.abandoned.Add(1)
			fail("dispatcher closed during delivery", attempt, err)
			return
		case !retryable:
			fail("permanent error", attempt, err)
			return
		case attempt >= h.cfg.MaxAttempts:
			fail("max attempts reached", attempt, err)
			return
		}
		delay := h.backoff(attempt, retryAfter)
		if h.now().Sub(j.queued)+delay > h.cfg.MaxAge {
			fail("max age reached", attempt, err)
			return
		}
		h.retried.Add(1)
		h.log.Warn("webhook delivery failed; will retry", "alert_id", j.id, "kind", j.kind,
			"attempt", attempt, "retry_in", delay.Round(time.Millisecond), "error", err)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-h.ctx.Done():
			t.Stop()
			h.abandoned.Add(1)
			fail("dispatcher closed during backoff", attempt, err)
			return
		}
	}
}

// backoff is the delay after the given failed attempt: InitialBackoff
// doubled per attempt, capped at MaxBackoff, with "equal jitter" (a random
// point in the upper half), and never shorter than a Retry-After the
// receiver asked for (itself capped at MaxBackoff).
func (h *webhook) backoff(attempt int, retryAfter time.Duration) time.Duration {
	d := h.cfg.InitialBackoff
	for i := 1; i < attempt && d < h.cfg.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, h.cfg.MaxBackoff)
	d = d/2 + rand.N(d/2+1)
	return max(d, min(retryAfter, h.cfg.MaxBackoff))
}

// statusError is a non-2xx response.
type statusError struct{ code int }

func (e *statusError) Error() string {
	return fmt.Sprintf("receiver answered %d %s", e.code, http.StatusText(e.code))
}

// attempt makes one POST. It returns the receiver's Retry-After, whether a
// failure may be retried, and the failure (nil on a 2xx answer).
func (h *webhook) attempt(j job, n int) (retryAfter time.Duration, retryable bool, err error) {
	ts := h.now().Unix()
	body, err := json.Marshal(deliveryWire{Timestamp: ts, Attempt: n, Alert: j.alert})
	if err != nil {
		return 0, false, fmt.Errorf("encode delivery: %w", err)
	}
	ctx, cancel := context.WithTimeout(h.ctx, h.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return 0, false, errors.New("build request: invalid URL")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "pulse-verifier")
	req.Header.Set(HeaderSignature, Sign(h.cfg.Secret, body))
	req.Header.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
	req.Header.Set(HeaderAlertID, j.id)
	resp, err := h.client.Do(req)
	if err != nil {
		return 0, true, h.redact(err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	code := resp.StatusCode
	switch {
	case code >= 200 && code < 300:
		return 0, false, nil
	case code == http.StatusTooManyRequests || code == http.StatusRequestTimeout || code >= 500:
		return parseRetryAfter(resp.Header.Get("Retry-After"), h.now()), true, &statusError{code}
	default:
		return 0, false, &statusError{code}
	}
}

// redact rewrites the URL inside a client error to the logged target, so a
// token in the webhook's path or query never reaches the logs.
func (h *webhook) redact(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return &url.Error{Op: ue.Op, URL: h.target, Err: ue.Err}
	}
	return err
}

func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

func (h *webhook) stats() WebhookStats {
	bySev := make(map[int]uint64, SeverityLow)
	for sev := SeverityCritical; sev <= SeverityLow; sev++ {
		bySev[sev] = h.droppedBySev[sev].Load()
	}
	return WebhookStats{
		Delivered:         h.delivered.Load(),
		Failed:            h.failed.Load(),
		Dropped:           h.dropped.Load(),
		DroppedBySeverity: bySev,
		Retried:           h.retried.Load(),
		Abandoned:         h.abandoned.Load(),
		Queued:            h.queue.len(),
	}
}
