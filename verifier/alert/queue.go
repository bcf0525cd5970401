package alert

import "sync"

// queue is one webhook's bounded backlog. It never blocks the producer and
// sheds by severity when full: the alert dropped is the newest of the least
// severe class queued (4 before 3 before 2), or the incoming alert when it
// is no more severe than everything queued. A severity-1 alert is therefore
// never dropped while a less severe one is queued. The worker takes the
// most severe alert first, in arrival order within a severity.
type queue struct {
	size  int
	ready chan struct{} // capacity 1: a push or close since the worker last looked

	mu     sync.Mutex
	bySev  [SeverityLow + 1][]job // index 1..4; 0 unused
	n      int
	closed bool
}

func newQueue(size int) *queue {
	return &queue{size: size, ready: make(chan struct{}, 1)}
}

// sevIndex maps a job's severity onto the queue's classes (an out-of-range
// severity, which Validate refuses, counts as the least severe).
func sevIndex(sev int) int {
	if sev < SeverityCritical || sev > SeverityLow {
		return SeverityLow
	}
	return sev
}

// push queues j unless the queue is closed (queued false). When the queue
// is full, one alert is shed (dropped true): a queued one or j itself.
func (q *queue) push(j job) (shed job, dropped, queued bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return job{}, false, false
	}
	s := sevIndex(j.severity)
	if q.n >= q.size {
		victim := 0
		for c := SeverityLow; c > s; c-- {
			if len(q.bySev[c]) > 0 {
				victim = c
				break
			}
		}
		if victim == 0 {
			return j, true, false
		}
		last := len(q.bySev[victim]) - 1
		shed = q.bySev[victim][last]
		q.bySev[victim][last] = job{}
		q.bySev[victim] = q.bySev[victim][:last]
		q.n--
		dropped = true
	}
	q.bySev[s] = append(q.bySev[s], j)
	q.n++
	q.signal()
	return shed, dropped, true
}

// pop blocks until an alert is queued, returning the most severe, or until
// the queue is closed and empty (ok false).
func (q *queue) pop() (job, bool) {
	for {
		q.mu.Lock()
		for c := SeverityCritical; c <= SeverityLow; c++ {
			if len(q.bySev[c]) > 0 {
				j := q.bySev[c][0]
				q.bySev[c][0] = job{}
				q.bySev[c] = q.bySev[c][1:]
				q.n--
				q.mu.Unlock()
				return j, true
			}
		}
		closed := q.closed
		q.mu.Unlock()
		if closed {
			return job{}, false
		}
		<-q.ready
	}
}

// close stops accepting alerts; pop still returns the queued ones.
func (q *queue) close() {
	q.mu.Lock()
	q.closed = true
	q.signal()
	q.mu.Unlock()
}

func (q *queue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n
}

// signal wakes the worker; called with mu held.
func (q *queue) signal() {
	select {
	case q.ready <- struct{}{}:
	default:
	}
}
