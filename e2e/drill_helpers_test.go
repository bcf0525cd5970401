package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/verifier/alert"
	"github.com/pulse-attest/pulse/verifier/audit"
	"github.com/pulse-attest/pulse/verifier/store"
)

// drillHook is a webhook receiver on loopback: it checks each delivery's
// HMAC signature over the exact body before parsing it and keeps the
// deliveries, so a drill can assert that one alert reached it once.
type drillHook struct {
	t      *testing.T
	secret []byte
	url    string

	mu        sync.Mutex
	delivered []alert.Delivery
	badSig    []string
}

func newDrillHook(t *testing.T) *drillHook {
	t.Helper()
	h := &drillHook{t: t, secret: []byte("drill-webhook-secret-" + strconv.Itoa(os.Getpid()))}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(l) //nolint:errcheck // ends with Close
	t.Cleanup(func() { srv.Close() })
	h.url = "http://" + l.Addr().String() + "/pulse"
	return h
}

func (h *drillHook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, "read", http.StatusBadRequest)
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := alert.VerifySignature(h.secret, body, r.Header.Get(alert.HeaderSignature)); err != nil {
		h.badSig = append(h.badSig, err.Error())
		http.Error(w, "signature", http.StatusUnauthorized)
		return
	}
	var d alert.Delivery
	if err := json.Unmarshal(body, &d); err != nil {
		h.badSig = append(h.badSig, "undecodable delivery: "+err.Error())
		http.Error(w, "body", http.StatusBadRequest)
		return
	}
	if r.Header.Get(alert.HeaderAlertID) != d.Alert.ID {
		h.badSig = append(h.badSig, fmt.Sprintf("header alert id %q, body %q", r.Header.Get(alert.HeaderAlertID), d.Alert.ID))
	}
	h.delivered = append(h.delivered, d)
	w.WriteHeader(http.StatusNoContent)
}

// deliveries returns the deliveries of alert id received so far.
func (h *drillHook) deliveries(id string) []alert.Delivery {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.badSig) > 0 {
		h.t.Fatalf("webhook deliveries refused by the receiver: %q", h.badSig)
	}
	var out []alert.Delivery
	for _, d := range h.delivered {
		if d.Alert.ID == id {
			out = append(out, d)
		}
	}
	return out
}

// drill is a fleet whose verifier sends alerts to a webhook and serves an
// admin listener (for /metrics and pulsectl), with the alert IDs a drill
// step already accounted for.
type drill struct {
	*fleet
	hook      *drillHook
	adminURL  string
	adminFlag []string
	operator  tls.Certificate
	seen      map[string]bool
	st        *store.Store
}

// db is one read connection to the verifier's store for the whole drill.
func (d *drill) db() *store.Store {
	if d.st == nil {
		d.st = d.store()
	}
	return d.st
}

// drillProbeAlertAfter is the drill verifier's tls.probe_alert_after: the
// drill's five refused probes from loopback raise one probe alert.
const drillProbeAlertAfter = 5

// newDrill restarts f's verifier with a webhook to a receiver in the test
// and an admin listener (enableAdmin).
func newDrill(t *testing.T, f *fleet) *drill {
	t.Helper()
	d := &drill{fleet: f, hook: newDrillHook(t), seen: map[string]bool{}}
	secretFile := filepath.Join(f.dir, "webhook.secret")
	if err := os.WriteFile(secretFile, d.hook.secret, 0o600); err != nil {
		t.Fatal(err)
	}
	replaceInFile(t, f.vcfg, `audit_log = "audit.log"`, fmt.Sprintf("audit_log = \"audit.log\"\n  webhook \"drill\" {\n    url         = %q\n    secret_file = %q\n  }", d.hook.url, secretFile))
	// A burst of drillProbeAlertAfter refused handshakes from one address
	// raises a probe alert.
	replaceInFile(t, f.vcfg, `agent_ca = "pki/ca.pem"`, fmt.Sprintf("agent_ca = \"pki/ca.pem\"\n  probe_alert_after = %d", drillProbeAlertAfter))
	d.adminFlag = enableAdmin(t, f)
	for i, a := range d.adminFlag {
		switch a {
		case "--admin":
			d.adminURL = d.adminFlag[i+1]
		case "--cert":
			cert, err := tls.LoadX509KeyPair(d.adminFlag[i+1], d.adminFlag[i+3])
			if err != nil {
				t.Fatal(err)
			}
			d.operator = cert
		}
	}
	if d.adminURL == "" || d.operator.Certificate == nil {
		t.Fatalf("enableAdmin flags %q lack --admin or --cert/--key", d.adminFlag)
	}
	return d
}

// expectAlert waits for an alert of kind for agent (empty: none) that no
// earlier step accounted for, and checks it end to end: its severity and
// reason in the store, the message naming each of want, the hash-chained
// audit record it was written as (same kind, severity, agent, reason and
// message), and exactly one signed webhook delivery carrying the same
// audit anchor.
func (d *drill) expectAlert(t *testing.T, agent, kind string, severity int, reason string, want ...string) *store.Alert {
	t.Helper()
	var got *store.Alert
	deadline := time.Now().Add(30 * time.Second)
	for got == nil {
		all, err := d.db().ListAlerts(context.Background(), store.AlertFilter{AgentID: agent})
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range all {
			if a.Kind == kind && a.AgentID == agent && !d.seen[a.ID] {
				got = a
			}
		}
		if got == nil {
			if time.Now().After(deadline) {
				var kinds []string
				for _, a := range all {
					kinds = append(kinds, fmt.Sprintf("%s/%d/%s", a.Kind, a.Severity, a.Reason))
				}
				t.Fatalf("no new %s alert for %q within 30s; alerts: %v", kind, agent, kinds)
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	d.seen[got.ID] = true
	// A verdict alert is what the reason table (alert.ReasonAlerts, the
	// source of docs/alerts.md) says; a policy denial's kind and severity
	// also depend on its findings, checked by the caller.
	if r, ok := pulsev1.Reason_value[reason]; ok && reason != pulsev1.Reason_REASON_POLICY_DENIED.String() {
		k, sev, raises := alert.ForVerdict(pulsev1.Reason(r), nil)
		if !raises || string(k) != kind || sev != severity {
			t.Errorf("the drill expects %s/%d for %s, the reason table says %q/%d (raises %v)", kind, severity, reason, k, sev, raises)
		}
	}
	if got.Severity != severity {
		t.Errorf("%s alert severity %d, want %d (%s)", kind, got.Severity, severity, got.Message)
	}
	if reason != "" && got.Reason != reason {
		t.Errorf("%s alert reason %q, want %q", kind, got.Reason, reason)
	}
	for _, w := range want {
		if !strings.Contains(got.Message, w) {
			t.Errorf("%s alert %q does not name %q", kind, got.Message, w)
		}
	}

	var rec *audit.Record
	waitFor(t, "the audit record of alert "+got.ID, func() bool {
		rec = d.auditRecord(t, got.ID)
		return rec != nil
	})
	if rec.Kind != kind || rec.Severity != severity || rec.AgentID != agent || rec.Data["reason"] != got.Reason || rec.Data["message"] != got.Message {
		t.Errorf("audit record %+v does not match alert %+v", rec, got)
	}

	var ds []alert.Delivery
	waitFor(t, "the webhook delivery of alert "+got.ID, func() bool {
		ds = d.hook.deliveries(got.ID)
		return len(ds) > 0
	})
	time.Sleep(200 * time.Millisecond) // a duplicate would be on its way
	if ds = d.hook.deliveries(got.ID); len(ds) != 1 {
		t.Errorf("%d webhook deliveries of alert %s, want 1", len(ds), got.ID)
	}
	wa := ds[0].Alert
	if string(wa.Kind) != kind || wa.Severity != severity || wa.AgentID != agent || wa.AuditSeq != rec.Seq || wa.AuditHash != rec.Hash {
		t.Errorf("webhook alert %s/%d/%q anchored at %d:%s, want %s/%d/%q at the audit record %d:%s",
			wa.Kind, wa.Severity, wa.AgentID, wa.AuditSeq, wa.AuditHash, kind, severity, agent, rec.Seq, rec.Hash)
	}
	return got
}

// noNewAlert fails when an alert of kind for agent appeared that no step
// accounted for.
func (d *drill) noNewAlert(t *testing.T, agent, kind string) {
	t.Helper()
	all, err := d.db().ListAlerts(context.Background(), store.AlertFilter{AgentID: agent})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range all {
		if a.Kind == kind && a.AgentID == agent && !d.seen[a.ID] {
			t.Errorf("unexpected %s alert: sev %d %s", kind, a.Severity, a.Message)
		}
	}
}

// auditRecord returns the verified audit record of alert id, reading every
// segment of the log (nil when it is not there yet).
func (d *drill) auditRecord(t *testing.T, id string) *audit.Record {
	t.Helper()
	var found *audit.Record
	_, err := audit.VerifySegments(filepath.Join(d.dir, "audit.log"), func(_ int, r audit.Record) error {
		if r.Data["alert_id"] == id {
			rc := r
			found = &rc
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// adminClient is an HTTPS client with the operator's certificate.
func (d *drill) adminClient(t *testing.T) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(d.caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: pool, Certificates: []tls.Certificate{d.operator}, MinVersion: tls.VersionTLS13}}}
}

// refused reads pulse_refused_total{listener="agent",cause=cause} from the
// admin listener's /metrics.
func (d *drill) refused(t *testing.T, cause string) float64 {
	t.Helper()
	resp, err := d.adminClient(t).Get(d.adminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	prefix := "pulse_refused_total{"
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, prefix) || !strings.Contains(line, `listener="agent"`) || !strings.Contains(line, `cause="`+cause+`"`) {
			continue
		}
		fields := strings.Fields(line)
		v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		return v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	t.Fatalf("no pulse_refused_total{listener=\"agent\",cause=%q} in /metrics", cause)
	return 0
}

// waitRefused waits until the refusal counter of cause reaches want.
func (d *drill) waitRefused(t *testing.T, cause string, want float64) {
	t.Helper()
	var got float64
	deadline := time.Now().Add(10 * time.Second)
	for {
		if got = d.refused(t, cause); got >= want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pulse_refused_total cause %s = %v, want %v", cause, got, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got != want {
		t.Fatalf("pulse_refused_total cause %s = %v, want exactly %v", cause, got, want)
	}
}

// lastPulseAt is when the verifier last recorded a pulse of agent id.
func (d *drill) lastPulseAt(t *testing.T, id string) time.Time {
	t.Helper()
	a, err := d.db().GetAgent(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return a.LastPulseAt
}

// waitReasonIn waits until the agent's last verdict is verdict with one of
// reasons (a step whose reason may come from either of two checks).
func (d *drill) waitReasonIn(t *testing.T, id, verdict string, within time.Duration, reasons ...string) agentView {
	t.Helper()
	deadline := time.Now().Add(within)
	var last agentView
	for time.Now().Before(deadline) {
		if v, ok := d.show(id); ok {
			last = v
			for _, r := range reasons {
				if v.Verdict == verdict && v.Reason == r {
					return v
				}
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("agent %s: verdict %s/%s (%s), want %s with one of %v within %s", id, last.Verdict, last.Reason, last.Message, verdict, reasons, within)
	return last
}

// step starts a drill step: every alert raised so far (by an earlier step,
// or its aftermath such as BLINDED after a long UNTRUSTED spell) is
// accounted for, so the step asserts only what it causes.
func (d *drill) step(t *testing.T) {
	t.Helper()
	all, err := d.db().ListAlerts(context.Background(), store.AlertFilter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range all {
		d.seen[a.ID] = true
	}
}

// quiet waits for two more pulses of agent id and fails when they raised
// another alert of any of kinds: a condition that persists alerts once.
func (d *drill) quiet(t *testing.T, id string, kinds ...string) {
	t.Helper()
	since := d.lastPulseAt(t, id)
	waitFor(t, "two more pulses", func() bool { return d.lastPulseAt(t, id).After(since.Add(3 * time.Second)) })
	for _, k := range kinds {
		d.noNewAlert(t, id, k)
	}
}

// drillStep runs one step of a drill as a subtest; the steps build on each
// other's state, so a failed step ends the drill.
func drillStep(t *testing.T, name string, step func(t *testing.T)) {
	t.Helper()
	if !t.Run(name, step) {
		t.FailNow()
	}
}
