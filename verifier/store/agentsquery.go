package store

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The fleet's agent list at size: one page of agents, filtered and sorted
// by the database, with a keyset cursor (a page costs the same at agent
// 10 and agent 100,000), and the fleet's counts in one statement.

// Agent list limits.
const (
	DefaultAgentPage = 100
	MaxAgentPage     = 1000
	// MaxAgentSearch bounds a search term.
	MaxAgentSearch = 256
)

// ErrBadQuery is returned for a query the store cannot run (unknown sort,
// a cursor it did not issue or that belongs to another sort).
var ErrBadQuery = errors.New("bad agent query")

// AgentQuery selects a page of agents. Zero values do not filter.
type AgentQuery struct {
	// Verdicts and Reasons select agents whose last verdict (reason) is one
	// of them.
	Verdicts []int32
	Reasons  []int32
	// Partition and Version select by exact value.
	Partition string
	Version   string
	// Trust is "tpm" or "mtls-only".
	Trust string
	// Quarantined selects agents that are the offender of a quarantined
	// address; OpenAlerts agents with an unacknowledged alert.
	Quarantined bool
	OpenAlerts  bool
	// Search matches a substring of the ID or the address (ASCII case
	// folded).
	Search string
	// Sort is one of AgentSorts ("" is "id"); Desc reverses it.
	Sort string
	Desc bool
	// After is the cursor of the previous page's last agent (AgentPage.Next).
	After string
	// Limit is the page size (DefaultAgentPage when 0, at most MaxAgentPage).
	Limit int
}

// AgentSorts are the columns an agent list sorts by.
var AgentSorts = map[string]string{
	"id":         "a.id",
	"partition":  "a.partition",
	"verdict":    "a.last_verdict",
	"reason":     "a.last_reason",
	"last_pulse": "a.last_pulse_at",
	"address":    "a.address",
	"version":    "a.agent_version",
}

// numericSort says which sorts compare numbers.
var numericSort = map[string]bool{"verdict": true, "reason": true, "last_pulse": true}

// AgentRow is one agent of a page: the row without keys, logs or
// certificates.
type AgentRow struct {
	ID            string
	Partition     string
	TPM           bool
	Verdict       int32
	Reason        int32
	Message       string
	LastPulseAt   time.Time
	Address       string
	PolicyDigest  string
	AgentVersion  string
	StreamReplica string
	OpenAlerts    int
	// Quarantined is true when a quarantined address names the agent as
	// its offender.
	Quarantined bool
}

// AgentPage is one page of agents.
type AgentPage struct {
	Agents []AgentRow
	// Total is how many agents match the filters (all pages).
	Total int
	// Next is the cursor of the next page; "" on the last page.
	Next string
}

type agentCursor struct {
	Sort  string `json:"s"`
	Desc  bool   `json:"d,omitempty"`
	Value string `json:"v"`
	ID    string `json:"i"`
}

func encodeCursor(c agentCursor) string {
	b, _ := json.Marshal(c)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(s string) (agentCursor, error) {
	var c agentCursor
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) > 4096 {
		return c, fmt.Errorf("%w: cursor does not decode", ErrBadQuery)
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("%w: cursor does not decode", ErrBadQuery)
	}
	return c, nil
}

// escapeLike escapes LIKE's wildcards (the escape character is '!').
func escapeLike(s string) string {
	return strings.NewReplacer("!", "!!", "%", "!%", "_", "!_").Replace(s)
}

// where builds the filter's WHERE clause and its arguments.
func (q AgentQuery) where() (string, []any) {
	var conds []string
	var args []any
	in := func(col string, vs []int32) {
		if len(vs) == 0 {
			return
		}
		ph := make([]string, len(vs))
		for i, v := range vs {
			ph[i] = "?"
			args = append(args, int64(v))
		}
		conds = append(conds, col+" IN ("+strings.Join(ph, ", ")+")")
	}
	in("a.last_verdict", q.Verdicts)
	in("a.last_reason", q.Reasons)
	if q.Partition != "" {
		conds = append(conds, "a.partition = ?")
		args = append(args, q.Partition)
	}
	if q.Version != "" {
		conds = append(conds, "a.agent_version = ?")
		args = append(args, q.Version)
	}
	switch q.Trust {
	case "tpm":
		conds = append(conds, "a.tpm = TRUE")
	case "mtls-only":
		conds = append(conds, "a.tpm = FALSE")
	}
	if q.Quarantined {
		conds = append(conds, "EXISTS (SELECT 1 FROM quarantine qu WHERE qu.offender = a.id)")
	}
	if q.OpenAlerts {
		conds = append(conds, "EXISTS (SELECT 1 FROM alerts al WHERE al.agent_id = a.id AND al.acked_at = 0)")
	}
	if q.Search != "" {
		p := "%" + escapeLike(strings.ToLower(q.Search)) + "%"
		conds = append(conds, "(LOWER(a.id) LIKE ? ESCAPE '!' OR LOWER(a.address) LIKE ? ESCAPE '!')")
		args = append(args, p, p)
	}
	if len(conds) == 0 {
		return "", nil
	}
	return " WHERE " + strings.Join(conds, " AND "), args
}

func (q AgentQuery) validate() error {
	if _, ok := AgentSorts[q.sort()]; !ok {
		return fmt.Errorf("%w: unknown sort %q", ErrBadQuery, q.Sort)
	}
	if q.Trust != "" && q.Trust != "tpm" && q.Trust != "mtls-only" {
		return fmt.Errorf("%w: trust %q (tpm or mtls-only)", ErrBadQuery, q.Trust)
	}
	if len(q.Search) > MaxAgentSearch {
		return fmt.Errorf("%w: search of %d bytes (at most %d)", ErrBadQuery, len(q.Search), MaxAgentSearch)
	}
	if q.Limit < 0 || q.Limit > MaxAgentPage {
		return fmt.Errorf("%w: limit %d (1 to %d)", ErrBadQuery, q.Limit, MaxAgentPage)
	}
	return nil
}

func (q AgentQuery) sort() string {
	if q.Sort == "" {
		return "id"
	}
	return q.Sort
}

const agentRowColumns = `a.id, a.partition, a.tpm, a.last_verdict, a.last_reason, a.last_message, a.last_pulse_at, a.address,
	a.policy_digest, a.agent_version, a.stream_replica,
	(SELECT COUNT(*) FROM alerts al WHERE al.agent_id = a.id AND al.acked_at = 0),
	EXISTS (SELECT 1 FROM quarantine qu WHERE qu.offender = a.id)`

// QueryAgents returns one page of agents matching q, sorted by q.Sort then
// ID, after q.After.
func (s *Store) QueryAgents(ctx context.Context, q AgentQuery) (*AgentPage, error) {
	if err := q.validate(); err != nil {
		return nil, fmt.Errorf("store: query agents: %w", err)
	}
	limit := q.Limit
	if limit == 0 {
		limit = DefaultAgentPage
	}
	sortName := q.sort()
	col := AgentSorts[sortName]
	where, args := q.where()
	page := &AgentPage{}
	if err := s.db.QueryRowContext(ctx, s.q(`SELECT COUNT(*) FROM agents a`+where), args...).Scan(&page.Total); err != nil {
		return nil, fmt.Errorf("store: query agents: count: %w", err)
	}
	dir, cmp := "ASC", ">"
	if q.Desc {
		dir, cmp = "DESC", "<"
	}
	if q.After != "" {
		c, err := decodeCursor(q.After)
		if err != nil {
			return nil, fmt.Errorf("store: query agents: %w", err)
		}
		if c.Sort != sortName || c.Desc != q.Desc {
			return nil, fmt.Errorf("store: query agents: %w: cursor of sort %q, query sorts by %q", ErrBadQuery, c.Sort, sortName)
		}
		var v any = c.Value
		if numericSort[sortName] {
			n, err := strconv.ParseInt(c.Value, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("store: query agents: %w: cursor value", ErrBadQuery)
			}
			v = n
		}
		keyset := fmt.Sprintf("(%s %s ? OR (%s = ? AND a.id %s ?))", col, cmp, col, cmp)
		if sortName == "id" {
			keyset = "a.id " + cmp + " ?"
			args = append(args, c.ID)
		} else {
			args = append(args, v, v, c.ID)
		}
		if where == "" {
			where = " WHERE " + keyset
		} else {
			where += " AND " + keyset
		}
	}
	order := fmt.Sprintf(" ORDER BY %s %s, a.id %s", col, dir, dir)
	if sortName == "id" {
		order = " ORDER BY a.id " + dir
	}
	args = append(args, limit+1)
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT `+agentRowColumns+` FROM agents a`+where+order+` LIMIT ?`), args...)
	if err != nil {
		return nil, fmt.Errorf("store: query agents: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			r           AgentRow
			vd, rs, at  int64
			open        int64
			quarantined bool
		)
		if err := rows.Scan(&r.ID, &r.Partition, &r.TPM, &vd, &rs, &r.Message, &at, &r.Address, &r.PolicyDigest,
			&r.AgentVersion, &r.StreamReplica, &open, &quarantined); err != nil {
			return nil, fmt.Errorf("store: query agents: %w", err)
		}
		r.Verdict, r.Reason, r.LastPulseAt, r.OpenAlerts, r.Quarantined = int32(vd), int32(rs), fromNanos(at), int(open), quarantined
		page.Agents = append(page.Agents, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: query agents: %w", err)
	}
	if len(page.Agents) > limit {
		page.Agents = page.Agents[:limit]
		last := page.Agents[limit-1]
		page.Next = encodeCursor(agentCursor{Sort: sortName, Desc: q.Desc, Value: sortValue(sortName, last), ID: last.ID})
	}
	return page, nil
}

func sortValue(sort string, r AgentRow) string {
	switch sort {
	case "partition":
		return r.Partition
	case "verdict":
		return strconv.FormatInt(int64(r.Verdict), 10)
	case "reason":
		return strconv.FormatInt(int64(r.Reason), 10)
	case "last_pulse":
		return strconv.FormatInt(nanos(r.LastPulseAt), 10)
	case "address":
		return r.Address
	case "version":
		return r.AgentVersion
	}
	return r.ID
}

// FleetCounts are the fleet's agents counted by verdict, reason,
// partition, version and trust, plus how many are quarantined offenders
// and how many have open alerts.
type FleetCounts struct {
	Total       int
	ByVerdict   map[int32]int
	ByReason    map[int32]int
	ByPartition map[string]int
	ByVersion   map[string]int
	ByTrust     map[string]int
	Quarantined int
	OpenAlerts  int
}

// CountFleet returns the fleet's counts from one statement.
func (s *Store) CountFleet(ctx context.Context) (*FleetCounts, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT 'v', CAST(last_verdict AS TEXT), COUNT(*) FROM agents GROUP BY last_verdict
		UNION ALL SELECT 'r', CAST(last_reason AS TEXT), COUNT(*) FROM agents GROUP BY last_reason
		UNION ALL SELECT 'p', partition, COUNT(*) FROM agents GROUP BY partition
		UNION ALL SELECT 'n', agent_version, COUNT(*) FROM agents GROUP BY agent_version
		UNION ALL SELECT 't', CASE WHEN tpm THEN 'tpm' ELSE 'mtls-only' END, COUNT(*) FROM agents GROUP BY tpm
		UNION ALL SELECT 'q', '', COUNT(DISTINCT offender) FROM quarantine
		UNION ALL SELECT 'a', '', COUNT(DISTINCT agent_id) FROM alerts WHERE acked_at = 0`)
	if err != nil {
		return nil, fmt.Errorf("store: count fleet: %w", err)
	}
	defer rows.Close()
	c := &FleetCounts{ByVerdict: map[int32]int{}, ByReason: map[int32]int{}, ByPartition: map[string]int{},
		ByVersion: map[string]int{}, ByTrust: map[string]int{}}
	for rows.Next() {
		var kind, key string
		var n int
		if err := rows.Scan(&kind, &key, &n); err != nil {
			return nil, fmt.Errorf("store: count fleet: %w", err)
		}
		switch kind {
		case "v", "r":
			v, err := strconv.ParseInt(key, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("store: count fleet: %q: %w", key, err)
			}
			if kind == "v" {
				c.ByVerdict[int32(v)] = n
				c.Total += n
			} else {
				c.ByReason[int32(v)] = n
			}
		case "p":
			c.ByPartition[key] = n
		case "n":
			c.ByVersion[key] = n
		case "t":
			c.ByTrust[key] = n
		case "q":
			c.Quarantined = n
		case "a":
			c.OpenAlerts = n
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: count fleet: %w", err)
	}
	return c, nil
}

// AgentVerdict is an agent's current verdict and reason.
type AgentVerdict struct {
	Verdict, Reason int32
}

// AgentVerdicts returns every agent's verdict and reason (three narrow
// columns: what a live view diffs to find the agents that changed).
func (s *Store) AgentVerdicts(ctx context.Context) (map[string]AgentVerdict, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, last_verdict, last_reason FROM agents`)
	if err != nil {
		return nil, fmt.Errorf("store: agent verdicts: %w", err)
	}
	defer rows.Close()
	out := map[string]AgentVerdict{}
	for rows.Next() {
		var id string
		var v, r int64
		if err := rows.Scan(&id, &v, &r); err != nil {
			return nil, fmt.Errorf("store: agent verdicts: %w", err)
		}
		out[id] = AgentVerdict{Verdict: int32(v), Reason: int32(r)}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: agent verdicts: %w", err)
	}
	return out, nil
}
