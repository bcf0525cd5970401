package admin

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// FleetBackend is implemented by backends that page, filter and count the
// fleet in the database. It is optional: without it GET /api/v1/agents
// with query parameters and GET /api/v1/fleet answer 404.
type FleetBackend interface {
	// QueryAgents returns one page of agents; ErrInvalid for a query the
	// backend cannot run (unknown verdict or reason name, foreign cursor).
	QueryAgents(ctx context.Context, q AgentQuery) (*AgentPage, error)
	// CountFleet counts the fleet by verdict, reason, partition, version
	// and trust.
	CountFleet(ctx context.Context) (*FleetCounts, error)
}

// Agent page limits.
const (
	DefaultAgentPage = 100
	MaxAgentPage     = 1000
	MaxAgentSearch   = 256
)

// AgentSorts are the sort keys of GET /api/v1/agents.
var AgentSorts = []string{"id", "partition", "verdict", "reason", "last_pulse", "address", "version"}

// AgentQuery is GET /api/v1/agents's query: verdict and reason names
// without their prefix (several: comma-separated or repeated), exact
// partition and version, trust (tpm or mtls-only), quarantined=1,
// open_alerts=1, q (a substring of the ID or address), sort (AgentSorts),
// order (asc or desc), after (the previous page's next cursor), limit.
type AgentQuery struct {
	Verdicts    []string `json:"verdicts,omitempty"`
	Reasons     []string `json:"reasons,omitempty"`
	Partition   string   `json:"partition,omitempty"`
	Version     string   `json:"version,omitempty"`
	Trust       string   `json:"trust,omitempty"`
	Quarantined bool     `json:"quarantined,omitempty"`
	OpenAlerts  bool     `json:"open_alerts,omitempty"`
	Search      string   `json:"q,omitempty"`
	Sort        string   `json:"sort,omitempty"`
	Desc        bool     `json:"desc,omitempty"`
	After       string   `json:"after,omitempty"`
	Limit       int      `json:"limit"`
}

// Values is q as URL query parameters (what the dashboard's URL holds).
func (q AgentQuery) Values() url.Values {
	v := url.Values{}
	if len(q.Verdicts) > 0 {
		v.Set("verdict", strings.Join(q.Verdicts, ","))
	}
	if len(q.Reasons) > 0 {
		v.Set("reason", strings.Join(q.Reasons, ","))
	}
	set := func(k, s string) {
		if s != "" {
			v.Set(k, s)
		}
	}
	set("partition", q.Partition)
	set("version", q.Version)
	set("trust", q.Trust)
	set("q", q.Search)
	set("sort", q.Sort)
	set("after", q.After)
	if q.Quarantined {
		v.Set("quarantined", "1")
	}
	if q.OpenAlerts {
		v.Set("open_alerts", "1")
	}
	if q.Desc {
		v.Set("order", "desc")
	}
	if q.Limit != 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	return v
}

// pageParams are the parameters that make GET /api/v1/agents a paged
// query; without any of them it lists every agent (the original API).
var pageParams = []string{"verdict", "reason", "partition", "version", "trust", "quarantined", "open_alerts", "q", "sort", "order", "after", "limit"}

func isPageQuery(v url.Values) bool {
	for _, p := range pageParams {
		if v.Has(p) {
			return true
		}
	}
	return false
}

func names(v url.Values, key string) ([]string, error) {
	var out []string
	for _, s := range v[key] {
		for _, n := range strings.Split(s, ",") {
			n = strings.ToUpper(strings.TrimSpace(n))
			if n == "" {
				continue
			}
			for _, c := range n {
				if (c < 'A' || c > 'Z') && c != '_' && (c < '0' || c > '9') {
					return nil, fmt.Errorf("%s=%q: names are letters, digits and _", key, n)
				}
			}
			out = append(out, n)
		}
	}
	if len(out) > 64 {
		return nil, fmt.Errorf("%s: %d names (at most 64)", key, len(out))
	}
	return out, nil
}

func flag(v url.Values, key string) (bool, error) {
	switch v.Get(key) {
	case "", "0", "false":
		return false, nil
	case "1", "true":
		return true, nil
	}
	return false, fmt.Errorf("%s=%q: want 1 or 0", key, v.Get(key))
}

// ParseAgentQuery reads GET /api/v1/agents's query parameters.
func ParseAgentQuery(v url.Values) (AgentQuery, error) {
	q := AgentQuery{Limit: DefaultAgentPage}
	var err error
	if q.Verdicts, err = names(v, "verdict"); err != nil {
		return q, err
	}
	for i, n := range q.Verdicts {
		q.Verdicts[i] = VerdictName(n)
	}
	if q.Reasons, err = names(v, "reason"); err != nil {
		return q, err
	}
	for i, n := range q.Reasons {
		q.Reasons[i] = ReasonName(n)
	}
	q.Partition, q.Version, q.Search, q.After = v.Get("partition"), v.Get("version"), v.Get("q"), v.Get("after")
	for k, s := range map[string]string{"partition": q.Partition, "version": q.Version, "q": q.Search, "after": q.After} {
		if len(s) > MaxAgentSearch*2 {
			return q, fmt.Errorf("%s: %d bytes", k, len(s))
		}
	}
	if len(q.Search) > MaxAgentSearch {
		return q, fmt.Errorf("q: %d bytes (at most %d)", len(q.Search), MaxAgentSearch)
	}
	switch q.Trust = v.Get("trust"); q.Trust {
	case "", "tpm", "mtls-only":
	default:
		return q, fmt.Errorf("trust=%q: want tpm or mtls-only", q.Trust)
	}
	if q.Quarantined, err = flag(v, "quarantined"); err != nil {
		return q, err
	}
	if q.OpenAlerts, err = flag(v, "open_alerts"); err != nil {
		return q, err
	}
	if q.Sort = v.Get("sort"); q.Sort != "" {
		known := false
		for _, s := range AgentSorts {
			known = known || s == q.Sort
		}
		if !known {
			return q, fmt.Errorf("sort=%q: want one of %s", q.Sort, strings.Join(AgentSorts, ", "))
		}
	}
	switch v.Get("order") {
	case "", "asc":
	case "desc":
		q.Desc = true
	default:
		return q, fmt.Errorf("order=%q: want asc or desc", v.Get("order"))
	}
	if l := v.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > MaxAgentPage {
			return q, fmt.Errorf("limit=%q: want 1..%d", l, MaxAgentPage)
		}
		q.Limit = n
	}
	return q, nil
}

// AgentRow is one agent of a page.
type AgentRow struct {
	AgentStatus
	AgentVersion string `json:"agent_version"`
	// Quarantined: a quarantined address names this agent its offender.
	Quarantined bool `json:"quarantined"`
}

// AgentPage is the body of a paged GET /api/v1/agents.
type AgentPage struct {
	Now    time.Time  `json:"now"`
	Query  AgentQuery `json:"query"`
	Agents []AgentRow `json:"agents"`
	// Total is how many agents match the filters, over all pages.
	Total int `json:"total"`
	// Next is the cursor of the next page (pass it as after=); empty on
	// the last page.
	Next string `json:"next,omitempty"`
}

// FleetCounts is the body of GET /api/v1/fleet: the fleet counted every
// way the agent list filters, from one statement.
type FleetCounts struct {
	Now         time.Time      `json:"now"`
	Total       int            `json:"total"`
	ByVerdict   map[string]int `json:"by_verdict"`
	ByReason    map[string]int `json:"by_reason"`
	ByPartition map[string]int `json:"by_partition"`
	ByVersion   map[string]int `json:"by_version"`
	ByTrust     map[string]int `json:"by_trust"`
	Quarantined int            `json:"quarantined"`
	OpenAlerts  int            `json:"open_alerts"`
}

func (h *handler) fleetRoutes() {
	h.mux.HandleFunc("GET /api/v1/fleet", h.countFleet)
	h.mux.HandleFunc("GET /api/v1/events", h.events)
}

func (h *handler) queryAgents(w http.ResponseWriter, r *http.Request) {
	fb, ok := h.backend.(FleetBackend)
	if !ok {
		writeError(w, http.StatusNotFound, "this verifier does not page agents")
		return
	}
	q, err := ParseAgentQuery(r.URL.Query())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	p, err := fb.QueryAgents(r.Context(), q)
	if err == nil && p == nil {
		err = ErrNotFound
	}
	if err != nil {
		h.backendError(w, r, err)
		return
	}
	out := *p
	out.Now, out.Query = h.now().UTC(), q
	out.Agents = make([]AgentRow, len(p.Agents))
	for i, a := range p.Agents {
		a.AgentStatus = normStatus(a.AgentStatus)
		out.Agents[i] = a
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *handler) countFleet(w http.ResponseWriter, r *http.Request) {
	fb, ok := h.backend.(FleetBackend)
	if !ok {
		writeError(w, http.StatusNotFound, "this verifier does not count the fleet")
		return
	}
	c, err := fb.CountFleet(r.Context())
	if err == nil && c == nil {
		err = ErrNotFound
	}
	if err != nil {
		h.backendError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, normCounts(c, h.now()))
}

// normCounts is c with enum names without their prefix.
func normCounts(c *FleetCounts, now time.Time) *FleetCounts {
	out := *c
	out.Now = now.UTC()
	norm := func(m map[string]int, f func(string) string) map[string]int {
		o := make(map[string]int, len(m))
		for k, n := range m {
			o[f(k)] += n
		}
		return o
	}
	out.ByVerdict, out.ByReason = norm(c.ByVerdict, VerdictName), norm(c.ByReason, ReasonName)
	same := func(s string) string { return s }
	out.ByPartition, out.ByVersion, out.ByTrust = norm(c.ByPartition, same), norm(c.ByVersion, same), norm(c.ByTrust, same)
	return &out
}
