package admin

import (
	"net/url"
	"reflect"
	"testing"
)

// TestParseAgentQuery: the agent list's query parameters, each refusal
// its own message, and Values round-trips what it parsed.
func TestParseAgentQuery(t *testing.T) {
	ok := []struct {
		raw  string
		want AgentQuery
	}{
		{"limit=5", AgentQuery{Limit: 5}},
		{"verdict=untrusted,VERDICT_BLINDED&verdict=TRUSTED", AgentQuery{Verdicts: []string{"UNTRUSTED", "BLINDED", "TRUSTED"}, Limit: DefaultAgentPage}},
		{"reason=REASON_POLICY_DENIED&partition=lab&version=v1&trust=mtls-only&quarantined=1&open_alerts=true&q=edge&sort=last_pulse&order=desc&after=abc",
			AgentQuery{Reasons: []string{"POLICY_DENIED"}, Partition: "lab", Version: "v1", Trust: "mtls-only", Quarantined: true, OpenAlerts: true,
				Search: "edge", Sort: "last_pulse", Desc: true, After: "abc", Limit: DefaultAgentPage}},
	}
	for _, c := range ok {
		v, _ := url.ParseQuery(c.raw)
		if !isPageQuery(v) {
			t.Fatalf("%s is not a page query", c.raw)
		}
		got, err := ParseAgentQuery(v)
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Fatalf("%s: %+v %v, want %+v", c.raw, got, err, c.want)
		}
		again, err := ParseAgentQuery(got.Values())
		if err != nil || !reflect.DeepEqual(again, got) {
			t.Fatalf("%s: round trip %+v %v", c.raw, again, err)
		}
	}
	bad := []string{"limit=0", "limit=1001", "limit=x", "trust=maybe", "quarantined=yes", "open_alerts=2", "sort=ek_public",
		"order=up", "verdict=UN%27TRUSTED", "reason=a%3Bb", "q=" + string(make([]byte, MaxAgentSearch+1))}
	for _, raw := range bad {
		v, err := url.ParseQuery(raw)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParseAgentQuery(v); err == nil {
			t.Errorf("%s accepted", raw)
		}
	}
	if isPageQuery(url.Values{}) {
		t.Fatal("no parameters is a page query")
	}
}
