package verifier

import (
	"crypto/rand"
	"encoding/hex"
	"sync"

	"google.golang.org/protobuf/types/known/timestamppb"

	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
)

// hub holds the directive streams of the agents connected to this replica.
// One stream per agent: a newer stream replaces the older one.
type hub struct {
	mu   sync.Mutex
	subs map[string]*subscription
}

type subscription struct {
	ch chan *pulsev1.Directive
}

func newHub() *hub { return &hub{subs: map[string]*subscription{}} }

func (h *hub) subscribe(agentID string) (<-chan *pulsev1.Directive, func()) {
	s := &subscription{ch: make(chan *pulsev1.Directive, 64)}
	h.mu.Lock()
	if old, ok := h.subs[agentID]; ok {
		close(old.ch)
	}
	h.subs[agentID] = s
	h.mu.Unlock()
	return s.ch, func() {
		h.mu.Lock()
		if h.subs[agentID] == s {
			delete(h.subs, agentID)
			close(s.ch)
		}
		h.mu.Unlock()
	}
}

// send delivers without blocking; a full queue drops the directive (the
// agent's next pulse resynchronises) and reports false.
func (h *hub) send(agentID string, d *pulsev1.Directive) bool {
	if d.Id == "" {
		b := make([]byte, 8)
		rand.Read(b) //nolint:errcheck // crypto/rand does not fail
		d.Id = hex.EncodeToString(b)
	}
	if d.Issued == nil {
		d.Issued = timestamppb.Now()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	s, ok := h.subs[agentID]
	if !ok {
		return false
	}
	select {
	case s.ch <- d:
		return true
	default:
		return false
	}
}

// connected lists agents with an open stream.
func (h *hub) connected() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]string, 0, len(h.subs))
	for id := range h.subs {
		out = append(out, id)
	}
	return out
}

// isCurrent reports whether ch is still the agent's live stream.
func (h *hub) isCurrent(agentID string, ch <-chan *pulsev1.Directive) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	s, ok := h.subs[agentID]
	return ok && (<-chan *pulsev1.Directive)(s.ch) == ch
}
