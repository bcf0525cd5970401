package admin

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

type liveFake struct {
	reads atomic.Int64
	state atomic.Value // map[string]VerdictReason
}

func (f *liveFake) AgentVerdicts(context.Context) (map[string]VerdictReason, error) {
	f.reads.Add(1)
	return f.state.Load().(map[string]VerdictReason), nil
}

// TestLiveHubPollsOnlyWhileListened: the poller runs while a page listens,
// sends only changes, and stops when the last page leaves.
func TestLiveHubPollsOnlyWhileListened(t *testing.T) {
	old := LiveInterval
	LiveInterval = 10 * time.Millisecond
	t.Cleanup(func() { LiveInterval = old })
	h := &handler{backend: &fakeBackend{}, now: time.Now}
	h.log = hclog.NewNullLogger()
	h.live.h = h
	src := &liveFake{}
	src.state.Store(map[string]VerdictReason{"a": {"VERDICT_TRUSTED", "REASON_OK"}, "b": {"VERDICT_TRUSTED", "REASON_OK"}})
	ch := h.live.subscribe(src)
	time.Sleep(60 * time.Millisecond)
	select {
	case ev := <-ch:
		t.Fatalf("event without a change: %+v", ev)
	default:
	}
	src.state.Store(map[string]VerdictReason{"a": {"VERDICT_UNTRUSTED", "REASON_POLICY_DENIED"}})
	select {
	case ev := <-ch:
		if len(ev.Agents) != 2 || ev.Agents[0] != (LiveChange{ID: "a", Verdict: "UNTRUSTED", Reason: "POLICY_DENIED"}) || ev.Agents[1].Verdict != "REMOVED" {
			t.Fatalf("changes %+v", ev.Agents)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("no event")
	}
	h.live.unsubscribe(ch)
	time.Sleep(30 * time.Millisecond)
	n := src.reads.Load()
	time.Sleep(100 * time.Millisecond)
	if m := src.reads.Load(); m != n {
		t.Fatalf("poller still reading with no page: %d then %d reads", n, m)
	}
}
