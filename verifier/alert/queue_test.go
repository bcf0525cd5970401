package alert

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// TestAlertQueueShedsBySeverity: a full queue drops the newest of its least
// severe class when a more severe alert arrives, else the arriving alert;
// a severity-1 alert is never dropped while a less severe one is queued;
// the worker takes the most severe first, in arrival order within one.
func TestAlertQueueShedsBySeverity(t *testing.T) {
	type push struct {
		id  string
		sev int
	}
	cases := []struct {
		name     string
		size     int
		pushes   []push
		wantShed []string // in push order; "" for pushes that shed nothing
		wantPop  []string
	}{
		{
			name:     "room left: nothing shed",
			size:     3,
			pushes:   []push{{"a", 4}, {"b", 1}, {"c", 2}},
			wantShed: []string{"", "", ""},
			wantPop:  []string{"b", "c", "a"},
		},
		{
			name:     "severity 1 displaces the newest severity 4",
			size:     3,
			pushes:   []push{{"a", 4}, {"b", 4}, {"c", 3}, {"d", 1}},
			wantShed: []string{"", "", "", "b"},
			wantPop:  []string{"d", "c", "a"},
		},
		{
			name:     "4 goes before 3 before 2",
			size:     3,
			pushes:   []push{{"a", 2}, {"b", 3}, {"c", 4}, {"d", 1}, {"e", 1}, {"f", 1}},
			wantShed: []string{"", "", "", "c", "b", "a"},
			wantPop:  []string{"d", "e", "f"},
		},
		{
			name:     "arriving alert no more severe than any queued is the one dropped",
			size:     2,
			pushes:   []push{{"a", 2}, {"b", 2}, {"c", 2}, {"d", 4}},
			wantShed: []string{"", "", "c", "d"},
			wantPop:  []string{"a", "b"},
		},
		{
			name:     "full of severity 1: a new severity 1 is dropped, never a queued one",
			size:     2,
			pushes:   []push{{"a", 1}, {"b", 1}, {"c", 1}},
			wantShed: []string{"", "", "c"},
			wantPop:  []string{"a", "b"},
		},
		{
			name:     "flood of severity 4 cannot push out severity 1 or 2",
			size:     3,
			pushes:   []push{{"a", 1}, {"b", 2}, {"c", 4}, {"d", 4}, {"e", 4}, {"f", 3}},
			wantShed: []string{"", "", "", "d", "e", "c"},
			wantPop:  []string{"a", "b", "f"},
		},
		{
			name:     "out-of-range severity counts as least severe",
			size:     1,
			pushes:   []push{{"a", 9}, {"b", 4}},
			wantShed: []string{"", "b"},
			wantPop:  []string{"a"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			q := newQueue(tc.size)
			var shed []string
			for _, p := range tc.pushes {
				s, dropped, queued := q.push(job{id: p.id, severity: p.sev})
				switch {
				case !dropped:
					shed = append(shed, "")
				case s.id == p.id && queued:
					t.Fatalf("push %s: reported queued and dropped", p.id)
				default:
					shed = append(shed, s.id)
				}
				if !dropped && !queued {
					t.Fatalf("push %s: neither queued nor dropped on an open queue", p.id)
				}
				if n := q.len(); n > tc.size {
					t.Fatalf("queue holds %d, size %d", n, tc.size)
				}
			}
			if !slices.Equal(shed, tc.wantShed) {
				t.Errorf("shed %q, want %q", shed, tc.wantShed)
			}
			q.close()
			var popped []string
			for {
				j, ok := q.pop()
				if !ok {
					break
				}
				popped = append(popped, j.id)
			}
			if !slices.Equal(popped, tc.wantPop) {
				t.Errorf("popped %q, want %q", popped, tc.wantPop)
			}
		})
	}
}

// TestAlertQueueClosed: a closed queue refuses new alerts without calling
// them dropped, and still hands out what it held.
func TestAlertQueueClosed(t *testing.T) {
	q := newQueue(2)
	q.push(job{id: "a", severity: 3})
	q.close()
	if _, dropped, queued := q.push(job{id: "b", severity: 1}); dropped || queued {
		t.Fatalf("push after close: dropped %v queued %v", dropped, queued)
	}
	if j, ok := q.pop(); !ok || j.id != "a" {
		t.Fatalf("pop after close: %+v %v", j, ok)
	}
	if _, ok := q.pop(); ok {
		t.Fatal("pop on a closed empty queue returned a job")
	}
}

// TestAlertQueueWakesWorker: pop waits for a push from another goroutine.
func TestAlertQueueWakesWorker(t *testing.T) {
	q := newQueue(4)
	got := make(chan string)
	go func() {
		for {
			j, ok := q.pop()
			if !ok {
				close(got)
				return
			}
			got <- j.id
		}
	}()
	for i := range 3 {
		id := fmt.Sprint("j", i)
		q.push(job{id: id, severity: 2})
		if g := <-got; g != id {
			t.Fatalf("worker got %s, want %s", g, id)
		}
	}
	q.close()
	if _, ok := <-got; ok {
		t.Fatal("worker kept running after close")
	}
}

// TestAlertDispatcherShedsLeastSevere: through the dispatcher, with the
// worker stuck on a receiver, a critical alert displaces a queued low one;
// the drop is counted under the dropped alert's severity and logged with
// both alert IDs, and the critical alert is delivered.
func TestAlertDispatcherShedsLeastSevere(t *testing.T) {
	srv, entered, release, _ := hangingReceiver(t)
	logs := &syncBuffer{}
	hook := fastHook("pager", srv.URL)
	hook.QueueSize = 2
	d := newDispatcher(t, logs, hook)
	ctx := context.Background()
	withSev := func(agent string, sev int) Alert {
		a := sampleAlert(agent)
		a.Severity = sev
		return a
	}
	first, _ := d.Dispatch(ctx, withSev("edge-0", SeverityHigh))
	if id := <-entered; id != first.ID {
		t.Fatalf("receiver got %s", id)
	}
	low, _ := d.Dispatch(ctx, withSev("edge-1", SeverityLow))
	medium, _ := d.Dispatch(ctx, withSev("edge-2", SeverityMedium))
	crit, err := d.Dispatch(ctx, withSev("edge-3", SeverityCritical))
	if err != nil {
		t.Fatalf("a shed delivery is not a Dispatch error: %v", err)
	}
	st := d.Stats().Webhooks["pager"]
	want := map[int]uint64{1: 0, 2: 0, 3: 0, 4: 1}
	if st.Dropped != 1 || st.Queued != 2 || !mapsEqual(st.DroppedBySeverity, want) {
		t.Errorf("stats after overflow %+v", st)
	}
	out := logs.String()
	if !strings.Contains(out, `"alert_id":"`+low.ID+`"`) || !strings.Contains(out, `"displaced_by":"`+crit.ID+`"`) {
		t.Errorf("drop not logged with both alert ids:\n%s", out)
	}
	release()
	// The backlog goes most severe first; the low alert never arrives.
	order := []string{<-entered, <-entered}
	if err := d.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(order, []string{crit.ID, medium.ID}) {
		t.Errorf("delivered %q after the first, want %q", order, []string{crit.ID, medium.ID})
	}
	if st := d.Stats().Webhooks["pager"]; st.Delivered != 3 || st.Dropped != 1 {
		t.Errorf("final stats %+v", st)
	}
}

func mapsEqual(a, b map[int]uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
