package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Live updates: GET /api/v1/events is a server-sent event stream of the
// agents whose verdict or reason changed, with the fleet's counts, sent
// only when something changed. One poller per admin handler reads the
// agents' verdicts (three narrow columns) every LiveInterval while at
// least one page listens, and none while none does: an idle explorer
// costs one small query per interval, whatever the number of pages open.

// LiveSource is implemented by backends that feed live updates. It is
// optional: without it GET /api/v1/events answers 404.
type LiveSource interface {
	// AgentVerdicts returns every agent's verdict and reason (names).
	AgentVerdicts(ctx context.Context) (map[string]VerdictReason, error)
}

// VerdictReason is an agent's verdict and reason.
type VerdictReason struct {
	Verdict string `json:"verdict"`
	Reason  string `json:"reason"`
}

// LiveInterval is how often the live poller reads the fleet.
var LiveInterval = 2 * time.Second

// LiveChange is one agent whose verdict or reason changed (Verdict
// "REMOVED" when it left the store).
type LiveChange struct {
	ID      string `json:"id"`
	Verdict string `json:"verdict"`
	Reason  string `json:"reason"`
}

// LiveEvent is the data of one "changes" event.
type LiveEvent struct {
	Seq    uint64       `json:"seq"`
	Now    time.Time    `json:"now"`
	Agents []LiveChange `json:"agents"`
	// Counts are the fleet's counts after the change (when the backend
	// counts the fleet).
	Counts *FleetCounts `json:"counts,omitempty"`
}

// maxLiveChanges bounds the agents one event names; beyond it the event
// says only that the fleet changed (Agents empty, Counts set).
const maxLiveChanges = 1000

type liveHub struct {
	h    *handler
	mu   sync.Mutex
	subs map[chan LiveEvent]struct{}
	stop context.CancelFunc
	seq  uint64
	// polls counts the poller's reads (tests).
	polls uint64
}

func (l *liveHub) subscribe(src LiveSource) chan LiveEvent {
	ch := make(chan LiveEvent, 8)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.subs == nil {
		l.subs = map[chan LiveEvent]struct{}{}
	}
	l.subs[ch] = struct{}{}
	if l.stop == nil {
		ctx, cancel := context.WithCancel(context.Background())
		l.stop = cancel
		go l.poll(ctx, src)
	}
	return ch
}

func (l *liveHub) unsubscribe(ch chan LiveEvent) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.subs, ch)
	if len(l.subs) == 0 && l.stop != nil {
		l.stop()
		l.stop = nil
	}
}

func (l *liveHub) poll(ctx context.Context, src LiveSource) {
	log := l.h.log.Named("live")
	var prev map[string]VerdictReason
	t := time.NewTicker(LiveInterval)
	defer t.Stop()
	for {
		cur, err := src.AgentVerdicts(ctx)
		l.mu.Lock()
		l.polls++
		l.mu.Unlock()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			log.Warn("live update read failed", "error", err)
		} else {
			if prev != nil {
				l.publish(ctx, log, diffVerdicts(prev, cur))
			}
			prev = cur
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func diffVerdicts(prev, cur map[string]VerdictReason) []LiveChange {
	var out []LiveChange
	for id, v := range cur {
		if p, ok := prev[id]; !ok || p != v {
			out = append(out, LiveChange{ID: id, Verdict: VerdictName(v.Verdict), Reason: ReasonName(v.Reason)})
		}
	}
	for id := range prev {
		if _, ok := cur[id]; !ok {
			out = append(out, LiveChange{ID: id, Verdict: "REMOVED"})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func (l *liveHub) publish(ctx context.Context, log hclog.Logger, changes []LiveChange) {
	if len(changes) == 0 {
		return
	}
	ev := LiveEvent{Now: l.h.now().UTC(), Agents: changes}
	if len(changes) > maxLiveChanges {
		ev.Agents = nil
	}
	if fb, ok := l.h.backend.(FleetBackend); ok {
		if c, err := fb.CountFleet(ctx); err == nil && c != nil {
			ev.Counts = normCounts(c, l.h.now())
		} else if err != nil {
			log.Warn("live update counts failed", "error", err)
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seq++
	ev.Seq = l.seq
	for ch := range l.subs {
		select {
		case ch <- ev:
		default:
			// A slow page misses this event; the next one carries the
			// counts, and its seq gap tells it to reload.
		}
	}
}

func (h *handler) events(w http.ResponseWriter, r *http.Request) {
	src, ok := h.backend.(LiveSource)
	if !ok {
		writeError(w, http.StatusNotFound, "this verifier does not stream live updates")
		return
	}
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	// The stream's lifetime is the page's, not the server's write timeout.
	_ = rc.SetWriteDeadline(time.Time{})
	ch := h.live.subscribe(src)
	defer h.live.unsubscribe(ch)
	if _, err := fmt.Fprintf(w, "retry: 5000\nevent: hello\ndata: {}\n\n"); err != nil {
		return
	}
	_ = rc.Flush()
	keep := time.NewTicker(30 * time.Second)
	defer keep.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case ev := <-ch:
			b, err := json.Marshal(ev)
			if err != nil {
				return
			}
			if _, err := fmt.Fprintf(w, "event: changes\ndata: %s\n\n", b); err != nil {
				return
			}
		case <-keep.C:
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return
			}
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}
