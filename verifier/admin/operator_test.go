package admin

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pulse-attest/pulse/internal/pki"
	"github.com/pulse-attest/pulse/verifier/audit"
)

const (
	aliceToken = "alice-token-0123456789abcdef"
	bobToken   = "bob-token-0123456789abcdef00"
)

// newNamedFixture serves sampleBackend with named tokens (alice, bob), the
// unnamed testToken, and a real audit log behind RecordAction.
func newNamedFixture(t *testing.T) (*fixture, string) {
	t.Helper()
	f := newFixture(t, testToken)
	logPath := filepath.Join(t.TempDir(), "audit.jsonl")
	w, err := audit.Open(logPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	f.be.auditLog = w
	h, err := New(Options{Backend: f.be, Registry: prometheus.NewRegistry(), Logger: hclog.New(&hclog.LoggerOptions{Output: f.logs, Level: hclog.Trace}),
		Token: testToken, Tokens: map[string]string{"alice": aliceToken, "bob": bobToken}, Now: func() time.Time { return *f.clock }})
	if err != nil {
		t.Fatal(err)
	}
	f.h = h
	return f, logPath
}

// verifiedRecords checks the whole chain and returns its records.
func verifiedRecords(t *testing.T, path string) []audit.Record {
	t.Helper()
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	var recs []audit.Record
	if _, err := audit.Scan(fh, func(r audit.Record) error { recs = append(recs, r); return nil }); err != nil {
		t.Fatalf("audit chain: %v", err)
	}
	return recs
}

// TestAdminOperatorActionsRecorded: every action lands on the verified
// audit chain with who, how and what; tokens never do.
func TestAdminOperatorActionsRecorded(t *testing.T) {
	f, logPath := newNamedFixture(t)
	digest := strings.Repeat("c0", 32)
	end := f.now.Add(24 * time.Hour).Format(time.RFC3339)
	alice := issueCert(t, pki.RoleOperator, "carol")
	bobSession := f.h.(*handler).tokens.sessionCookie("bob")

	cases := []struct {
		name     string
		method   string
		path     string
		body     string
		opts     []reqOpt
		status   int
		kind     string
		by, auth string
		params   map[string]string
	}{
		{"ack by named token", "POST", "/api/v1/alerts/a-2/ack", "", []reqOpt{bearer(aliceToken)}, 200,
			audit.KindAckAlert, "token:alice", MethodToken, map[string]string{"alert_id": "a-2"}},
		{"approve fleet-wide by certificate", "POST", "/api/v1/updates", `{"digest":"` + digest + `","agents":["*"],"end":"` + end + `"}`,
			[]reqOpt{withTLS(certState(alice, true))}, 201,
			audit.KindApproveUpdate, "carol", MethodCertificate, map[string]string{"digest": digest, "agents": "*", "matched_agents": "3"}},
		{"release by named session", "POST", "/api/v1/release", `{"address":"10.0.0.66"}`, []reqOpt{cookie(bobSession)}, 200,
			audit.KindRelease, "token:bob", MethodSession, map[string]string{"address": "10.0.0.66"}},
		{"approve by unnamed token", "POST", "/api/v1/updates", `{"digest":"` + digest + `","agents":["edge-1","core-*"],"end":"` + end + `"}`,
			[]reqOpt{bearer(testToken)}, 201,
			audit.KindApproveUpdate, TokenPrincipal, MethodToken, map[string]string{"agents": "edge-1,core-*", "matched_agents": "1"}},
		{"refused action is not recorded", "POST", "/api/v1/release", `{"address":"10.9.9.9"}`, []reqOpt{bearer(aliceToken)}, 404, "", "", "", nil},
	}
	want := 0
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := f.do(c.method, c.path, c.body, c.opts...)
			if w.Code != c.status {
				t.Fatalf("status %d, want %d: %s", w.Code, c.status, w.Body)
			}
			recs := verifiedRecords(t, logPath)
			if c.kind == "" {
				if len(recs) != want {
					t.Fatalf("%d records, want %d", len(recs), want)
				}
				return
			}
			want++
			if len(recs) != want {
				t.Fatalf("%d records, want %d", len(recs), want)
			}
			r := recs[len(recs)-1]
			if r.Kind != c.kind || r.Severity != 4 || r.Data[audit.OperatorByKey] != c.by || r.Data[audit.OperatorAuthKey] != c.auth {
				t.Fatalf("record %+v", r)
			}
			for k, v := range c.params {
				if r.Data[k] != v {
					t.Errorf("data %s = %q, want %q (%v)", k, r.Data[k], v, r.Data)
				}
			}
		})
	}
	raw, _ := os.ReadFile(logPath)
	for _, tok := range []string{testToken, aliceToken, bobToken} {
		if strings.Contains(string(raw), tok) || strings.Contains(f.logs.String(), tok) {
			t.Fatal("a token reached the audit log or the log")
		}
	}
	// The approvals carry their recorder and a window ID the record names.
	recs := verifiedRecords(t, logPath)
	if len(f.be.approvals) != 2 || f.be.approvals[0].By != "carol" || f.be.approvals[0].ID == "" ||
		recs[1].Data["window_id"] != f.be.approvals[0].ID || f.be.acks[0] != [2]string{"a-2", "token:alice"} {
		t.Fatalf("approvals %+v acks %v", f.be.approvals, f.be.acks)
	}
}

// TestAdminActionNotRecorded: a failing audit log turns the answer into a
// 500 saying the action took effect unrecorded.
func TestAdminActionNotRecorded(t *testing.T) {
	f, _ := newNamedFixture(t)
	f.be.recordFail = errors.New("disk full")
	w := f.do("POST", "/api/v1/alerts/a-2/ack", "", bearer(aliceToken))
	if w.Code != 500 || !strings.Contains(w.Body.String(), "could not be recorded") || strings.Contains(w.Body.String(), "disk full") {
		t.Fatalf("ack with a failing audit log: %d %s", w.Code, w.Body)
	}
	if !strings.Contains(f.logs.String(), "operator action not recorded") {
		t.Fatal("failure not logged")
	}
}

// TestAdminApproveNoMatch: an approval no enrolled agent matches succeeds
// and says so; one that matches has no note.
func TestAdminApproveNoMatch(t *testing.T) {
	f, _ := newNamedFixture(t)
	digest := strings.Repeat("d1", 32)
	end := f.now.Add(time.Hour).Format(time.RFC3339)
	cases := []struct {
		globs   string
		matched int
		note    bool
	}{
		{`["core-*"]`, 0, true},
		{`["edge-?"]`, 3, false},
		{`["edge-3","nope"]`, 1, false},
	}
	for _, c := range cases {
		w := f.do("POST", "/api/v1/updates", `{"digest":"`+digest+`","agents":`+c.globs+`,"end":"`+end+`"}`, bearer(bobToken))
		if w.Code != 201 {
			t.Fatalf("%s: %d %s", c.globs, w.Code, w.Body)
		}
		u := decodeBody[UpdateApproval](t, w)
		if u.MatchedAgents != c.matched || (u.Note != "") != c.note || (c.note && !strings.Contains(u.Note, "no enrolled agent matches core-*")) {
			t.Errorf("%s: matched %d note %q", c.globs, u.MatchedAgents, u.Note)
		}
	}
}

// TestAdminListUpdates: windows not yet ended, by start, with who approved
// and how many agents match; ended ones are left out.
func TestAdminListUpdates(t *testing.T) {
	f, _ := newNamedFixture(t)
	f.be.approvals = []UpdateApproval{
		{ID: "w-later", Digest: "bb", Agents: []string{"*"}, Start: f.now.Add(time.Hour), End: f.now.Add(2 * time.Hour), By: "token:alice"},
		{ID: "w-ended", Digest: "aa", Agents: []string{"*"}, Start: f.now.Add(-2 * time.Hour), End: f.now.Add(-time.Hour), By: "bob"},
		{ID: "w-open", Digest: "cc", Agents: []string{"edge-1"}, Start: f.now.Add(-time.Minute), End: f.now.Add(time.Minute), By: "carol"},
	}
	w := f.do("GET", "/api/v1/updates", "", bearer(aliceToken))
	if w.Code != 200 {
		t.Fatalf("list: %d %s", w.Code, w.Body)
	}
	l := decodeBody[UpdateList](t, w)
	if len(l.Updates) != 2 || l.Updates[0].ID != "w-open" || l.Updates[0].MatchedAgents != 1 || l.Updates[1].ID != "w-later" ||
		l.Updates[1].By != "token:alice" || l.Updates[1].MatchedAgents != 3 {
		t.Fatalf("updates %+v", l.Updates)
	}
	if w := f.do("GET", "/api/v1/updates", ""); w.Code != 401 {
		t.Fatalf("unauthenticated list: %d", w.Code)
	}
}

// TestAdminNamedTokens: each token authenticates as its own name, by
// bearer or session; a session names the token it came from and cannot be
// moved to another name.
func TestAdminNamedTokens(t *testing.T) {
	f, _ := newNamedFixture(t)
	ta := f.h.(*handler).tokens
	bob := ta.sessionCookie("bob")
	moved := *bob
	moved.Value = "alice" + strings.TrimPrefix(bob.Value, "bob")
	unnamed := ta.sessionCookie("")
	cases := []struct {
		name     string
		opts     []reqOpt
		status   int
		who      string
		method   string
		tokenFor string
	}{
		{"alice bearer", []reqOpt{bearer(aliceToken)}, 200, "token:alice", MethodToken, "alice"},
		{"bob bearer", []reqOpt{bearer(bobToken)}, 200, "token:bob", MethodToken, "bob"},
		{"unnamed bearer", []reqOpt{bearer(testToken)}, 200, TokenPrincipal, MethodToken, ""},
		{"bob session", []reqOpt{cookie(bob)}, 200, "token:bob", MethodSession, "bob"},
		{"unnamed session", []reqOpt{cookie(unnamed)}, 200, TokenPrincipal, MethodSession, ""},
		{"bob's session renamed alice", []reqOpt{cookie(&moved)}, 401, "", "", ""},
		{"unknown token", []reqOpt{bearer("carol-token-0123456789abcdef")}, 401, "", "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := f.do("GET", "/api/v1/session", "", c.opts...)
			if w.Code != c.status {
				t.Fatalf("status %d, want %d", w.Code, c.status)
			}
			if c.status != 200 {
				return
			}
			p := decodeBody[Principal](t, w)
			if p.Name != c.who || p.Method != c.method || p.TokenName != c.tokenFor {
				t.Fatalf("principal %+v", p)
			}
		})
	}
	// The dashboard bootstrap opens a session for the token given.
	w := f.do("GET", "/?token="+bobToken, "")
	if w.Code != 303 || !strings.HasPrefix(w.Result().Cookies()[0].Value, "bob:") {
		t.Fatalf("bootstrap: %d %v", w.Code, w.Result().Cookies())
	}
}

func TestAdminNamedTokensValidate(t *testing.T) {
	cases := map[string]struct {
		unnamed string
		named   map[string]string
	}{
		"reserved name":       {"", map[string]string{"token": aliceToken}},
		"bad name":            {"", map[string]string{"al ice": aliceToken}},
		"short token":         {"", map[string]string{"alice": "short"}},
		"shared token":        {"", map[string]string{"alice": aliceToken, "bob": aliceToken}},
		"unnamed shared":      {aliceToken, map[string]string{"alice": aliceToken}},
		"two unnamed differ":  {aliceToken, map[string]string{"": bobToken}},
		"whitespace in token": {"", map[string]string{"alice": "alice token 0123456789"}},
	}
	for name, c := range cases {
		if _, err := New(Options{Backend: &fakeBackend{}, Token: c.unnamed, Tokens: c.named}); err == nil {
			t.Errorf("%s: accepted", name)
		} else if strings.Contains(err.Error(), aliceToken) || strings.Contains(err.Error(), bobToken) {
			t.Errorf("%s: error leaks a token: %v", name, err)
		}
	}
}

func TestAdminTokenFileNamed(t *testing.T) {
	cases := []struct {
		name    string
		content string
		want    map[string]string
	}{
		{"unnamed", testToken + "\n", map[string]string{"": testToken}},
		{"named with comments", "# operators\nalice:" + aliceToken + "\n\nbob:" + bobToken + "\r\n", map[string]string{"alice": aliceToken, "bob": bobToken}},
		{"one named", "alice:" + aliceToken, map[string]string{"alice": aliceToken}},
		{"two lines unnamed", testToken + "\n" + aliceToken + "\n", nil},
		{"duplicate name", "alice:" + aliceToken + "\nalice:" + bobToken + "\n", nil},
		{"bad name", "al/ice:" + aliceToken + "\n", nil},
		{"reserved name", "token:" + aliceToken + "\n", nil},
		{"short named", "alice:short\n", nil},
		{"empty", "# nothing\n\n", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := parseTokenFile("tokens", c.content)
			if c.want == nil {
				if err == nil {
					t.Fatalf("accepted: %v", got)
				}
				for _, tok := range []string{testToken, aliceToken, bobToken} {
					if strings.Contains(err.Error(), tok) {
						t.Fatalf("error leaks a token: %v", err)
					}
				}
				return
			}
			if err != nil || len(got) != len(c.want) {
				t.Fatalf("got %d tokens, %v", len(got), err)
			}
			for k, v := range c.want {
				if got[k] != v {
					t.Fatalf("token %q wrong", k)
				}
			}
		})
	}
}
