package verifier_test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/verifier/admin"
)

// TestLiveEvents: a real verifier's state stream sends the agent whose
// verdict changed, with the fleet's counts, and nothing while nothing
// changes; a caller without credentials gets 401.
func TestLiveEvents(t *testing.T) {
	old := admin.LiveInterval
	admin.LiveInterval = 100 * time.Millisecond
	t.Cleanup(func() { admin.LiveInterval = old })
	e, a, _ := explainEnv(t, "edge-live")
	if e == nil {
		return
	}
	pool := x509.NewCertPool()
	pem, err := os.ReadFile(e.caFile)
	if err != nil || !pool.AppendCertsFromPEM(pem) {
		t.Fatal("CA")
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}}
	url := "https://" + e.daemon.AdminAddr() + "/api/v1/events"
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("anonymous stream: %d", resp.StatusCode)
	}
	req, _ := http.NewRequestWithContext(ctx(t), http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+explainToken)
	resp, err = hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("stream: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	events := make(chan admin.LiveEvent, 16)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		kind := ""
		for sc.Scan() {
			line := sc.Text()
			if k, ok := strings.CutPrefix(line, "event: "); ok {
				kind = k
			}
			if d, ok := strings.CutPrefix(line, "data: "); ok && kind == "changes" {
				var ev admin.LiveEvent
				if json.Unmarshal([]byte(d), &ev) == nil {
					events <- ev
				}
			}
		}
		close(events)
	}()
	// Nothing changes: nothing is sent (the poller has read at least twice).
	select {
	case ev := <-events:
		t.Fatalf("event without a change: %+v", ev)
	case <-time.After(500 * time.Millisecond):
	}
	a.Binary[0] ^= 0xff
	a.MeasureBinary()
	a.Challenge()
	wantVerdict(t, a.Pulse(nil), untrusted, pulsev1.Reason_REASON_POLICY_DENIED)
	select {
	case ev := <-events:
		if len(ev.Agents) != 1 || ev.Agents[0].ID != "edge-live" || ev.Agents[0].Verdict != "UNTRUSTED" || ev.Agents[0].Reason != "POLICY_DENIED" ||
			ev.Counts == nil || ev.Counts.ByVerdict["UNTRUSTED"] != 1 {
			t.Fatalf("change event %+v", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no event for the change")
	}
}
