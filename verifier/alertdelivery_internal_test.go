package verifier

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/verifier/alert"
	"github.com/pulse-attest/pulse/verifier/audit"
	"github.com/pulse-attest/pulse/verifier/config"
	"github.com/pulse-attest/pulse/verifier/store"
)

// webhookSink records the alerts a webhook receiver was sent.
type webhookSink struct {
	mu  sync.Mutex
	got []alert.Alert
}

func (s *webhookSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var env struct {
		Alert alert.Alert `json:"alert"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	s.got = append(s.got, env.Alert)
	s.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (s *webhookSink) of(agentID string) []alert.Alert {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []alert.Alert
	for _, a := range s.got {
		if a.AgentID == agentID {
			out = append(out, a)
		}
	}
	return out
}

// verdictOf is the verdict a failure with this reason carries.
func verdictOf(r pulsev1.Reason) pulsev1.Verdict {
	switch r {
	case pulsev1.Reason_REASON_CLOCK_DESYNC, pulsev1.Reason_REASON_CLOCK_DESYNC_PERSISTENT:
		return pulsev1.Verdict_VERDICT_CLOCK_DESYNC
	case pulsev1.Reason_REASON_SILENT:
		return pulsev1.Verdict_VERDICT_BLINDED
	}
	return pulsev1.Verdict_VERDICT_UNTRUSTED
}

// TestEveryReasonDelivered: for every Reason value, a committed failing
// pulse with that reason goes through the real delivery path (store
// outbox, dispatcher, hash-chained audit log, webhook): a reason the table
// says raises an alert produces exactly one alert of its kind and
// severity, one audit record and one webhook delivery — also when the
// same failure repeats — and a reason that raises none (its row says why)
// produces none of the three.
func TestEveryReasonDelivered(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := store.Open(ctx, store.EngineSQLite, filepath.Join(dir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	sink := &webhookSink{}
	srv := httptest.NewServer(sink)
	defer srv.Close()
	secret := filepath.Join(dir, "webhook.secret")
	if err := os.WriteFile(secret, []byte("s3cret-for-the-test"), 0o600); err != nil {
		t.Fatal(err)
	}
	auditPath := filepath.Join(dir, "audit.log")
	al, err := newDispatchAlerter(config.Alerts{AuditLog: auditPath, Webhooks: []config.Webhook{{Name: "siem", URL: srv.URL, SecretFile: secret}}}, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	clock := &testClock{now: time.Now()}
	v := newOutboxVerifier(t, st, "r1", clock, al)

	type want struct {
		id   string
		row  alert.ReasonAlert
		name string
	}
	var cases []want
	for n, name := range pulsev1.Reason_name {
		r := pulsev1.Reason(n)
		row, known := alert.Lookup(r)
		if !known {
			t.Errorf("%s: no row in alert.ReasonAlerts", name)
			continue
		}
		id := "edge-" + name
		if err := st.EnrollAgent(ctx, &store.Agent{ID: id, EnrolledAt: clock.Now()}); err != nil {
			t.Fatal(err)
		}
		cases = append(cases, want{id: id, row: row, name: name})
		for range 2 {
			a, err := st.GetAgent(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			o := &Outcome{Verdict: verdictOf(r), Reason: r, Message: "the evidence says " + name, agent: a}
			v.afterPulse(ctx, Peer{AgentID: id}, o)
		}
	}
	al.close() // drains the webhook queue and closes the audit log

	perAgent := map[string][]audit.Record{}
	f, err := os.Open(auditPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := audit.Scan(f, func(r audit.Record) error {
		perAgent[r.AgentID] = append(perAgent[r.AgentID], r)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		stored, err := st.ListAlerts(ctx, store.AlertFilter{AgentID: c.id})
		if err != nil {
			t.Fatal(err)
		}
		hooks := sink.of(c.id)
		records := perAgent[c.id]
		if !c.row.Raises {
			if len(stored)+len(hooks)+len(records) != 0 {
				t.Errorf("%s raises nothing (%s), yet %d alerts, %d webhook deliveries, %d audit records", c.name, c.row.Why, len(stored), len(hooks), len(records))
			}
			continue
		}
		if len(stored) != 1 || len(hooks) != 1 || len(records) != 1 {
			t.Errorf("%s: %d alerts, %d webhook deliveries, %d audit records; want one each", c.name, len(stored), len(hooks), len(records))
			continue
		}
		if stored[0].Kind != string(c.row.Kind) || stored[0].Severity != c.row.Severity {
			t.Errorf("%s: stored alert %s severity %d, want %s severity %d", c.name, stored[0].Kind, stored[0].Severity, c.row.Kind, c.row.Severity)
		}
		if hooks[0].Kind != c.row.Kind || hooks[0].Severity != c.row.Severity || hooks[0].Reason != c.name {
			t.Errorf("%s: webhook got %s severity %d reason %s", c.name, hooks[0].Kind, hooks[0].Severity, hooks[0].Reason)
		}
		if records[0].Kind != string(c.row.Kind) || records[0].Severity != c.row.Severity {
			t.Errorf("%s: audit record %s severity %d", c.name, records[0].Kind, records[0].Severity)
		}
	}
}
