package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/verifier/store"
)

// TestAgentsListFilters: pulsectl agents list takes the admin API's
// filters, search, sort and paging, and refuses unknown names.
func TestAgentsListFilters(t *testing.T) {
	dir := t.TempDir()
	cfgPath, cfg := writeVerifierConfig(t, dir)
	ctx := context.Background()
	st, err := store.Open(ctx, cfg.Store.Engine, cfg.Store.DSN)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Now().Add(-time.Hour)
	for i := 0; i < 6; i++ {
		id := fmt.Sprintf("edge-%d", i)
		part := "edge"
		if i >= 4 {
			part = "lab"
		}
		if err := st.EnrollAgent(ctx, &store.Agent{ID: id, Partition: part, TPM: i != 5, EnrolledAt: at}); err != nil {
			t.Fatal(err)
		}
		verdict, reason := int32(pulsev1.Verdict_VERDICT_TRUSTED), int32(pulsev1.Reason_REASON_OK)
		if i%2 == 1 {
			verdict, reason = int32(pulsev1.Verdict_VERDICT_UNTRUSTED), int32(pulsev1.Reason_REASON_POLICY_DENIED)
		}
		u := store.PulseUpdate{At: at.Add(time.Duration(i) * time.Minute), Verdict: verdict, Reason: reason, Address: fmt.Sprintf("192.0.2.%d", 10+i)}
		if s, err := st.CommitPulse(ctx, id, 0, u); err != nil || s != store.NonceOK {
			t.Fatalf("%s: %v %v", id, s, err)
		}
	}
	st.Close()
	list := func(args ...string) ([]string, string, int) {
		var out, errb bytes.Buffer
		code := runAgentsList(append([]string{"--config", cfgPath, "--json"}, args...), &out, &errb)
		if code != 0 {
			return nil, errb.String(), code
		}
		var views []agentView
		if err := json.Unmarshal(out.Bytes(), &views); err != nil {
			t.Fatalf("%v: %v: %s", args, err, out.String())
		}
		var ids []string
		for _, v := range views {
			ids = append(ids, v.ID)
		}
		return ids, errb.String(), 0
	}
	cases := []struct {
		args []string
		want string
	}{
		{nil, "[edge-0 edge-1 edge-2 edge-3 edge-4 edge-5]"},
		{[]string{"--verdict", "untrusted"}, "[edge-1 edge-3 edge-5]"},
		{[]string{"--reason", "REASON_POLICY_DENIED", "--partition", "lab"}, "[edge-5]"},
		{[]string{"--trust", "mtls-only"}, "[edge-5]"},
		{[]string{"--search", "192.0.2.12"}, "[edge-2]"},
		{[]string{"--sort", "last_pulse", "--desc", "--verdict", "TRUSTED"}, "[edge-4 edge-2 edge-0]"},
	}
	for _, c := range cases {
		got, stderr, code := list(c.args...)
		if code != 0 || fmt.Sprint(got) != c.want {
			t.Errorf("%v: %v (exit %d %s), want %s", c.args, got, code, stderr, c.want)
		}
	}
	// One page, then the next with the printed cursor.
	got, stderr, _ := list("--limit", "4")
	cur, ok := strings.CutPrefix(strings.TrimSpace(stderr), "more agents: --after ")
	if fmt.Sprint(got) != "[edge-0 edge-1 edge-2 edge-3]" || !ok {
		t.Fatalf("page 1: %v %q", got, stderr)
	}
	if got, stderr, _ = list("--limit", "4", "--after", cur); fmt.Sprint(got) != "[edge-4 edge-5]" || stderr != "" {
		t.Fatalf("page 2: %v %q", got, stderr)
	}
	for _, bad := range [][]string{{"--verdict", "SORT_OF"}, {"--reason", "BECAUSE"}, {"--sort", "ek_public"}, {"--trust", "maybe"}, {"--after", "zz"}} {
		if _, _, code := list(bad...); code == 0 {
			t.Errorf("%v accepted", bad)
		}
	}
}
