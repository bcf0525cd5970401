package loadgen

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"os"
	"runtime"
	"runtime/pprof"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pulse-attest/pulse/internal/pki"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/verifier"
	"github.com/pulse-attest/pulse/verifier/store"
)

// Pre-registration moments.
const (
	PreregisterBefore  = "before"  // into the store before the verifier starts (embedded only)
	PreregisterRunning = "running" // into the store of the running verifier
	PreregisterNone    = "none"    // the agents are in the store already
)

// Config is one load test.
type Config struct {
	Agents   int
	Interval time.Duration
	// Duration of the load phase (after setup); the run stops by itself.
	Duration time.Duration
	// Ramp spreads the agents' first connections; their pulses keep the
	// phase they started with (plus jitter), so Ramp = Interval gives an
	// even steady state.
	Ramp time.Duration
	// Jitter is the relative spread of each interval (0.1 = ±5%).
	Jitter float64

	// Shares of the fleet that misbehave (0..1 each).
	ReplayShare, BadSignatureShare, StaleNonceShare, SilentShare float64

	// IDPrefix starts every agent ID; Partition is the agents' partition.
	IDPrefix, Partition string
	// FirmwareLog is the fixture firmware event log the virtual devices booted.
	FirmwareLog string

	// Embedded starts a verifier in this process on Store ("sqlite" or
	// "postgres"); StoreDSN optionally names an existing database.
	Embedded bool
	// Store engine and DSN: the embedded verifier's, or the external
	// verifier's for pre-registration and the final checks.
	StoreEngine, StoreDSN string
	// PostgresDurable makes the embedded throwaway PostgreSQL wait for WAL flushes.
	PostgresDurable bool
	// Preregister is PreregisterBefore, PreregisterRunning or PreregisterNone.
	Preregister string
	// Heartbeat of the embedded verifier's policy (Interval comes from
	// Interval when zero).
	Missed int
	Grace  time.Duration

	// External verifier: address, agent CA (certificate and key, to mint
	// agent certificates), the CA the verifier's certificate chains to
	// (CAFile when empty) and its name.
	VerifierAddr, CAFile, CAKeyFile, ServerCAFile string
	ServerName                                    string
	// Replicas are the verifier replicas' addresses (VerifierAddr when
	// empty); agent i talks to Replicas[i mod len], as a list or a DNS
	// name spreads a fleet.
	Replicas []string
	// VerifierPIDs, when set, are sampled for the verifiers' RSS and CPU
	// (summed) and feed the cost model (Summary.Cost).
	VerifierPIDs []int
	// Baseline is how long the verifiers are sampled before any agent
	// connects (with VerifierPIDs; default 5s).
	Baseline time.Duration
	// Idle is how long, after the load phase, every agent holds its
	// connection without pulsing, for the cost of an idle connection
	// (0: no idle phase). It must end before honest agents' deadlines.
	Idle time.Duration
	// Directives opens a Directives stream per agent, as the real agent
	// does.
	Directives bool
	// Gate, when set, is called once setup is done, just before the
	// baseline and load; the run starts when it returns (several
	// pulse-loadgen processes start together: --ready-file, --go-file).
	Gate func(context.Context) error

	// WaitBlinded extends the load phase (all agents still pulsing) until
	// the silent agents' deadlines have passed, at most MaxWait longer.
	WaitBlinded bool
	MaxWait     time.Duration
	// SLOP99 is the steady-state p99 Pulse latency the run must stay under
	// to count as "holding" (reported, not a correctness failure).
	SLOP99 time.Duration
	// Workers mint certificates and pre-register in parallel.
	Workers int

	// Out receives the per-second report (nil: none). VerifierLog receives
	// the embedded verifier's log (nil: discarded) at VerifierLogLevel.
	Out              io.Writer
	VerifierLog      io.Writer
	VerifierLogLevel string

	// HeapProfile, when set, receives a heap profile taken at the end of
	// the load phase, with every agent still connected.
	HeapProfile string

	// anyBoot skips the Secure Boot pre-check (tests of the checks).
	anyBoot bool
}

func (c *Config) defaults() error {
	if c.Agents < 1 {
		return errors.New("loadgen: at least one agent")
	}
	if c.Interval < 100*time.Millisecond {
		return errors.New("loadgen: interval below 100ms")
	}
	if c.Duration <= 0 {
		return errors.New("loadgen: duration must be positive (runs stop by themselves)")
	}
	if c.Ramp < 0 || c.Jitter < 0 || c.Jitter > 1 {
		return errors.New("loadgen: ramp must be ≥ 0 and jitter within 0..1")
	}
	for _, s := range []float64{c.ReplayShare, c.BadSignatureShare, c.StaleNonceShare, c.SilentShare} {
		if s < 0 || s > 1 {
			return errors.New("loadgen: shares must be within 0..1")
		}
	}
	if c.ReplayShare+c.BadSignatureShare+c.StaleNonceShare+c.SilentShare > 1 {
		return errors.New("loadgen: misbehaving shares add up to more than the fleet")
	}
	if c.IDPrefix == "" {
		c.IDPrefix = "lg"
	}
	if err := pki.ValidateID(c.IDPrefix); err != nil {
		return fmt.Errorf("loadgen: id prefix: %w", err)
	}
	if c.Partition == "" {
		c.Partition = "loadgen"
	}
	if c.FirmwareLog == "" {
		return errors.New("loadgen: a firmware event log is required (testdata/eventlogs/rhel8-uefi.bin)")
	}
	if c.Missed == 0 {
		c.Missed = 3
	}
	if c.Grace == 0 {
		c.Grace = 10 * time.Second
	}
	if c.MaxWait == 0 {
		c.MaxWait = 3 * time.Minute
	}
	if c.SLOP99 == 0 {
		c.SLOP99 = 50 * time.Millisecond
	}
	if c.ServerName == "" {
		c.ServerName = "localhost"
	}
	if c.StoreEngine == "" && (c.Embedded || c.StoreDSN != "") {
		c.StoreEngine = store.EngineSQLite
	}
	if c.Preregister == "" {
		c.Preregister = PreregisterBefore
		if !c.Embedded {
			c.Preregister = PreregisterRunning
		}
	}
	switch c.Preregister {
	case PreregisterBefore:
		if !c.Embedded {
			return errors.New("loadgen: pre-registration before the verifier starts needs --embedded")
		}
	case PreregisterRunning, PreregisterNone:
	default:
		return fmt.Errorf("loadgen: preregister %q (want before, running or none)", c.Preregister)
	}
	if c.Idle < 0 || c.Baseline < 0 {
		return errors.New("loadgen: idle and baseline must be ≥ 0")
	}
	if c.Idle > 0 && c.Idle >= c.Interval*time.Duration(c.Missed-1) {
		return fmt.Errorf("loadgen: an idle phase of %s would reach honest agents' deadlines (keep it under interval × (missed − 1) = %s)",
			c.Idle, c.Interval*time.Duration(c.Missed-1))
	}
	if len(c.VerifierPIDs) > 0 && c.Baseline == 0 {
		c.Baseline = 5 * time.Second
	}
	if len(c.Replicas) == 0 && c.VerifierAddr != "" {
		for _, a := range strings.Split(c.VerifierAddr, ",") {
			if a = strings.TrimSpace(a); a != "" {
				c.Replicas = append(c.Replicas, a)
			}
		}
	}
	if !c.Embedded {
		if len(c.Replicas) == 0 || c.CAFile == "" || c.CAKeyFile == "" {
			return errors.New("loadgen: an external verifier needs --verifier, --ca and --ca-key (or use --embedded)")
		}
		if c.Preregister == PreregisterRunning && c.StoreDSN == "" {
			return errors.New("loadgen: pre-registration needs the verifier's store (--store-engine, --store-dsn)")
		}
	}
	return nil
}

// Summary is what a run measured and which expectations held.
type Summary struct {
	Mode        string              `json:"mode"`
	StoreEngine string              `json:"store_engine"`
	Agents      int                 `json:"agents"`
	Roles       map[Role]int        `json:"roles"`
	IntervalS   float64             `json:"interval_s"`
	DurationS   float64             `json:"duration_s"`
	RampS       float64             `json:"ramp_s"`
	Jitter      float64             `json:"jitter"`
	FirmwareLog string              `json:"firmware_log"`
	Preregister string              `json:"preregister"`
	StartedAt   time.Time           `json:"started_at"`
	LoadSeconds float64             `json:"load_seconds"`
	ExtendedS   float64             `json:"extended_for_silent_s"`
	Setup       SetupTimes          `json:"setup"`
	Connected   int                 `json:"connected"`
	Pulses      uint64              `json:"pulses"`
	SteadyPPS   float64             `json:"steady_pulses_per_s"`
	Verdicts    map[string]uint64   `json:"verdicts"`
	Kinds       map[Kind]*KindCount `json:"kinds"`
	Errors      map[string]uint64   `json:"errors"`
	ErrorCount  uint64              `json:"error_count"`
	// SteadyErrors are the errors seen in the steady state (the rest were
	// in the ramp).
	SteadyErrors  uint64     `json:"steady_errors"`
	ErrorExamples []string   `json:"error_examples,omitempty"`
	Mismatches    []Mismatch `json:"mismatches,omitempty"`
	MismatchCount uint64     `json:"mismatch_count"`

	// Latency is the client-observed Pulse RPC latency over the whole load
	// phase; SteadyLatency of the pulses sent once the ramp had drained
	// (SteadyRule; the SLO's figure), RampLatency of those sent before.
	Latency          LatencySummary `json:"latency"`
	SteadyLatency    LatencySummary `json:"steady_latency"`
	RampLatency      LatencySummary `json:"ramp_latency"`
	ChallengeLatency LatencySummary `json:"challenge_latency"`
	SteadyRule       string         `json:"steady_rule"`
	// RampDrained is false when some agent never had its first pulse
	// answered: then there is no steady state. SteadyFrom is when it
	// began; LastFirstPulse when the last agent's first pulse was
	// answered (FirstAnswered agents in all).
	RampDrained    bool      `json:"ramp_drained"`
	SteadyFrom     time.Time `json:"steady_from"`
	SteadyFromS    float64   `json:"steady_from_s"`
	LastFirstPulse time.Time `json:"last_first_pulse"`
	FirstAnswered  int       `json:"first_answered"`
	RampEnd        time.Time `json:"ramp_end"`
	// LatencyBySecond is every pulse's latency by the second it was sent,
	// for MergeSummaries.
	LatencyBySecond []SecondHist `json:"latency_by_second"`
	// Replicas the agents were spread over; DirectiveStreams open at the
	// end of the load phase; ConnectedAtEnd agents holding a connection
	// then (silent agents have gone).
	Replicas         []string `json:"replicas,omitempty"`
	DirectiveStreams int64    `json:"directive_streams"`
	DirectivesRecv   int64    `json:"directives_received"`
	ConnectedAtEnd   int      `json:"connected_at_end"`
	// Phases, the verifiers' samples and the cost model (external
	// verifiers with VerifierPIDs only).
	Phases          Phases   `json:"phases"`
	VerifierPIDs    []int    `json:"verifier_pids,omitempty"`
	VerifierSamples []Sample `json:"verifier_samples,omitempty"`
	Cost            *Cost    `json:"cost,omitempty"`
	// Wire is proto.Size of Pulse requests: steady state (digest only, no
	// new records), carrying runtime records, carrying the firmware log.
	Wire struct {
		Steady          WireBytes `json:"steady"`
		WithRecords     WireBytes `json:"with_records"`
		WithFirmwareLog WireBytes `json:"with_firmware_log"`
	} `json:"wire_bytes"`

	Silent      SilentCheck    `json:"silent"`
	HonestStore StoreCheck     `json:"honest_in_store"`
	Process     ProcessUse     `json:"process"`
	Verifier    *ProcessUse    `json:"verifier,omitempty"`
	Series      []SecondReport `json:"series"`
	SLOP99Ms    float64        `json:"slo_p99_ms"`
	SLOMet      bool           `json:"slo_met"`
	Pass        bool           `json:"pass"`
	Failures    []string       `json:"failures,omitempty"`
}

// SetupTimes are the setup phases' durations.
type SetupTimes struct {
	MintS        float64 `json:"mint_certificates_s"`
	PreregisterS float64 `json:"preregister_s"`
	VerifierS    float64 `json:"verifier_start_s"`
}

// SilentCheck is what the verifier made of the silent agents.
type SilentCheck struct {
	Agents  int      `json:"agents"`
	Blinded int      `json:"blinded"`
	Pending int      `json:"pending"`
	Failed  int      `json:"failed"`
	Details []string `json:"details,omitempty"`
}

// StoreCheck is the honest agents' final state in the verifier's store.
type StoreCheck struct {
	Checked    int      `json:"checked"`
	Trusted    int      `json:"trusted"`
	NotTrusted []string `json:"not_trusted,omitempty"`
}

// ProcessUse is a process's resources over the load phase.
type ProcessUse struct {
	Note          string  `json:"note"`
	End           Usage   `json:"end"`
	CPUSeconds    float64 `json:"cpu_seconds_during_load"`
	AvgCPUPercent float64 `json:"avg_cpu_percent"`
	MaxRSSMiB     float64 `json:"max_rss_mib_sampled"`
}

// Run runs one load test and returns its summary. The error is for runs
// that could not be carried out; a run whose expectations failed returns a
// Summary with Pass false.
func Run(ctx context.Context, cfg Config) (*Summary, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	boot, err := LoadBoot(cfg.FirmwareLog)
	if err != nil {
		return nil, err
	}
	if !boot.SecureBoot && !cfg.anyBoot {
		return nil, fmt.Errorf("loadgen: %s does not show Secure Boot on; the benchmark policy requires it", cfg.FirmwareLog)
	}
	// One descriptor per agent connection, two when the verifier shares the
	// process, plus the store, listeners and slack.
	perAgent := uint64(1)
	if cfg.Embedded {
		perAgent = 2
	}
	need := uint64(cfg.Agents)*perAgent + 64
	if got, err := RaiseFileLimit(need + 192); err != nil && got < need {
		return nil, fmt.Errorf("%w (the hard limit caps the fleet; an external verifier halves the need)", err)
	}

	roles := assignRoles(&cfg)
	ids := make([]string, cfg.Agents)
	for i, r := range roles {
		ids[i] = fmt.Sprintf("%s-%s-%06d", cfg.IDPrefix, roleTag(r), i)
	}
	sum := &Summary{Agents: cfg.Agents, Roles: map[Role]int{}, IntervalS: cfg.Interval.Seconds(), DurationS: cfg.Duration.Seconds(),
		RampS: cfg.Ramp.Seconds(), Jitter: cfg.Jitter, FirmwareLog: cfg.FirmwareLog, Preregister: cfg.Preregister,
		StoreEngine: cfg.StoreEngine, SLOP99Ms: ms(cfg.SLOP99)}
	for _, r := range roles {
		sum.Roles[r]++
	}

	var (
		idents []*Identity
		emb    *Embedded
		st     *store.Store
		addrs  []string
		roots  *x509.CertPool
	)
	mint := func(ca *pki.CA) error {
		t := time.Now()
		var err error
		idents, err = MintIdentities(ctx, ca, ids, cfg.Workers)
		sum.Setup.MintS = time.Since(t).Seconds()
		return err
	}
	prereg := func(ctx context.Context, s *store.Store) error {
		t := time.Now()
		w := 1
		if s.Engine() == store.EnginePostgres {
			w = 8
		}
		err := Preregister(ctx, s, idents, cfg.Partition, w)
		sum.Setup.PreregisterS = time.Since(t).Seconds()
		return err
	}
	if cfg.Embedded {
		sum.Mode = "embedded"
		vlog := hclog.NewNullLogger()
		if cfg.VerifierLog != nil {
			lvl := cfg.VerifierLogLevel
			if lvl == "" {
				lvl = "warn"
			}
			vlog = hclog.New(&hclog.LoggerOptions{Name: "pulse-verifier", Level: hclog.LevelFromString(lvl), Output: cfg.VerifierLog})
		}
		o := EmbeddedOptions{Engine: cfg.StoreEngine, DSN: cfg.StoreDSN, PostgresDurable: cfg.PostgresDurable,
			Heartbeat: Heartbeat{Interval: cfg.Interval, Missed: cfg.Missed, Grace: cfg.Grace}, Logger: vlog}
		var setup *Setup
		o.BeforeStart = func(ctx context.Context, s *Setup, stb *store.Store) error {
			setup = s
			if err := mint(s.CA); err != nil {
				return err
			}
			if cfg.Preregister == PreregisterBefore {
				return prereg(ctx, stb)
			}
			return nil
		}
		t := time.Now()
		emb, err = StartEmbedded(ctx, o)
		if err != nil {
			return nil, err
		}
		defer emb.Stop()
		sum.Setup.VerifierS = time.Since(t).Seconds() - sum.Setup.MintS - sum.Setup.PreregisterS
		st = emb.Daemon.Store
		addrs = []string{emb.Addr()}
		roots = setup.CA.Pool()
		if cfg.Preregister == PreregisterRunning {
			if err := prereg(ctx, st); err != nil {
				return nil, err
			}
		}
	} else {
		sum.Mode = "external"
		ca, err := pki.LoadCA(cfg.CAFile, cfg.CAKeyFile)
		if err != nil {
			return nil, err
		}
		serverCA := cfg.ServerCAFile
		if serverCA == "" {
			serverCA = cfg.CAFile
		}
		if roots, err = pki.ReadCertPool(serverCA); err != nil {
			return nil, err
		}
		addrs = cfg.Replicas
		if cfg.StoreDSN != "" {
			if st, err = store.Open(ctx, cfg.StoreEngine, cfg.StoreDSN); err != nil {
				return nil, err
			}
			defer st.Close()
		}
		if err := mint(ca); err != nil {
			return nil, err
		}
		if cfg.Preregister == PreregisterRunning {
			if err := prereg(ctx, st); err != nil {
				return nil, err
			}
		}
	}

	agents := make([]*vagent, cfg.Agents)
	for i, id := range idents {
		dev, err := NewDevice(id, boot, cfg.Partition)
		if err != nil {
			return nil, err
		}
		agents[i] = &vagent{role: roles[i], dev: dev, addr: addrs[i%len(addrs)]}
	}
	sum.Replicas = addrs
	sum.VerifierPIDs = cfg.VerifierPIDs
	order := startOrder(roles)

	if cfg.Gate != nil {
		if err := cfg.Gate(ctx); err != nil {
			return nil, fmt.Errorf("loadgen: waiting for the start: %w", err)
		}
	}
	r := &runner{cfg: &cfg, roots: roots}
	rep := newReporter(r, cfg.VerifierPIDs, cfg.Out)
	sum.Phases.BaselineAt = rep.mark()
	if cfg.Baseline > 0 && len(cfg.VerifierPIDs) > 0 {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(cfg.Baseline):
		}
	}
	start := rep.mark()
	sum.Phases.LoadAt = start
	rampEnd := start.Add(cfg.Ramp)
	r.col = NewCollector(start, rampEnd)
	sum.StartedAt = start
	quiet, stop := make(chan struct{}), make(chan struct{})
	var wg, pulsing sync.WaitGroup
	for k, i := range order {
		at := start
		if cfg.Ramp > 0 {
			slot := cfg.Ramp / time.Duration(cfg.Agents)
			at = start.Add(time.Duration(k)*slot + time.Duration(mrand.Int64N(int64(slot)+1)))
		}
		wg.Add(1)
		pulsing.Add(1)
		go func(a *vagent, at time.Time) {
			defer wg.Done()
			a.run(quiet, stop, pulsing.Done, r, at)
		}(agents[i], at)
	}

	repStop := make(chan struct{})
	repDone := make(chan struct{})
	go func() { rep.loop(repStop); close(repDone) }()

	end := start.Add(cfg.Duration)
	wait := func(until time.Time) bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(time.Until(until)):
			return true
		}
	}
	completed := wait(end)
	if completed && cfg.WaitBlinded && st != nil && sum.Roles[RoleSilent] > 0 {
		if until, ok := silentDue(ctx, st, agents, emb, cfg.Grace); ok && until.After(end) {
			limit := end.Add(cfg.MaxWait)
			if until.After(limit) {
				until = limit
			}
			if cfg.Out != nil {
				fmt.Fprintf(cfg.Out, "# waiting %s more for the silent agents' deadlines\n", time.Until(until).Round(time.Second))
			}
			sum.ExtendedS = until.Sub(end).Seconds()
			completed = wait(until)
		}
	}
	if cfg.HeapProfile != "" {
		if err := writeHeapProfile(cfg.HeapProfile); err != nil {
			r.col.Error("heap profile", err)
		}
	}
	// Quiet: agents finish the pulse in flight and stop pulsing, holding
	// their connections.
	close(quiet)
	quietDone := make(chan struct{})
	go func() { pulsing.Wait(); close(quietDone) }()
	select {
	case <-quietDone:
	case <-time.After(rpcTimeout + 5*time.Second):
		r.col.Error("shutdown", errors.New("agents still in RPCs after the deadline"))
	}
	sum.Phases.QuietAt = rep.mark()
	sum.DirectiveStreams = r.streams.Load()
	sum.DirectivesRecv = r.directives.Load()
	sum.ConnectedAtEnd = int(r.connected.Load())
	if completed && cfg.Idle > 0 {
		if cfg.Out != nil {
			fmt.Fprintf(cfg.Out, "# idle phase: %d agents connected, none pulsing, for %s\n", sum.ConnectedAtEnd, cfg.Idle)
		}
		wait(time.Now().Add(cfg.Idle))
	}
	sum.Phases.IdleEnd = rep.mark()
	close(repStop)
	<-repDone
	close(stop)
	agentsDone := make(chan struct{})
	go func() { wg.Wait(); close(agentsDone) }()
	select {
	case <-agentsDone:
	case <-time.After(10 * time.Second):
		r.col.Error("shutdown", errors.New("agents did not close their connections"))
	}
	loadEnd := sum.Phases.QuietAt
	sum.LoadSeconds = loadEnd.Sub(start).Seconds()

	// Final checks against the verifier's store.
	if st != nil {
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		checkStore(cctx, st, agents, sum, emb, cfg.Grace)
		cancel()
	}
	rep.finish(sum, start, loadEnd, emb != nil)
	r.col.fill(sum, loadEnd)
	for _, a := range agents {
		if a.connected {
			sum.Connected++
		}
	}
	sum.VerifierSamples = rep.sampled()
	sum.Cost = ComputeCost(sum.VerifierSamples, sum.Phases, sum.SteadyFrom, sum.RampDrained, sum.SteadyLatency.Count,
		sum.ConnectedAtEnd, len(addrs), cfg.Interval)
	judge(sum, &cfg)
	return sum, nil
}

// assignRoles gives each agent its role by the configured shares.
func assignRoles(c *Config) []Role {
	roles := make([]Role, c.Agents)
	i := 0
	for _, rs := range []struct {
		r     Role
		share float64
	}{{RoleSilent, c.SilentShare}, {RoleReplay, c.ReplayShare}, {RoleBadSignature, c.BadSignatureShare}, {RoleStaleNonce, c.StaleNonceShare}} {
		n := int(math.Round(rs.share * float64(c.Agents)))
		if rs.share > 0 && n == 0 {
			n = 1
		}
		for j := 0; j < n && i < c.Agents; j++ {
			roles[i] = rs.r
			i++
		}
	}
	for ; i < c.Agents; i++ {
		roles[i] = RoleHonest
	}
	return roles
}

func roleTag(r Role) string {
	switch r {
	case RoleReplay:
		return "replay"
	case RoleBadSignature:
		return "badsig"
	case RoleStaleNonce:
		return "stale"
	case RoleSilent:
		return "silent"
	}
	return "ok"
}

// startOrder puts silent agents first (their deadlines come earliest) and
// shuffles the others so attackers spread over the ramp.
func startOrder(roles []Role) []int {
	var silent, rest []int
	for i, r := range roles {
		if r == RoleSilent {
			silent = append(silent, i)
		} else {
			rest = append(rest, i)
		}
	}
	mrand.Shuffle(len(rest), func(i, j int) { rest[i], rest[j] = rest[j], rest[i] })
	return append(silent, rest...)
}

// blindAt is when the verifier may mark an agent with this deadline
// BLINDED: after the deadline and after the verifier's startup grace, plus
// two sweeps.
func blindAt(deadline time.Time, emb *Embedded, grace time.Duration) time.Time {
	t := deadline
	if emb != nil && emb.Started.Add(grace).After(t) {
		t = emb.Started.Add(grace)
	}
	return t.Add(2*verifier.SweepInterval + time.Second)
}

// silentDue is when the last silent agent can be BLINDED.
func silentDue(ctx context.Context, st *store.Store, agents []*vagent, emb *Embedded, grace time.Duration) (time.Time, bool) {
	var last time.Time
	for _, a := range agents {
		if a.role != RoleSilent || a.silentSince.IsZero() {
			continue
		}
		ops, err := st.GetAgentOps(ctx, a.dev.ID.ID)
		if err != nil || ops.Deadline.IsZero() {
			continue
		}
		if t := blindAt(ops.Deadline, emb, grace); t.After(last) {
			last = t
		}
	}
	return last, !last.IsZero()
}

func checkStore(ctx context.Context, st *store.Store, agents []*vagent, sum *Summary, emb *Embedded, grace time.Duration) {
	now := time.Now()
	detail := func(s *SilentCheck, f string, args ...any) {
		if len(s.Details) < 20 {
			s.Details = append(s.Details, fmt.Sprintf(f, args...))
		}
	}
	for _, a := range agents {
		id := a.dev.ID.ID
		switch a.role {
		case RoleSilent:
			s := &sum.Silent
			s.Agents++
			if a.silentSince.IsZero() {
				s.Failed++
				detail(s, "%s never got a trusted pulse in before going silent", id)
				continue
			}
			ag, err1 := st.GetAgent(ctx, id)
			ops, err2 := st.GetAgentOps(ctx, id)
			if err := errors.Join(err1, err2); err != nil {
				s.Failed++
				detail(s, "%s: %v", id, err)
				continue
			}
			blinded := pulsev1.Verdict(ag.LastVerdict) == pulsev1.Verdict_VERDICT_BLINDED &&
				pulsev1.Reason(ag.LastReason) == pulsev1.Reason_REASON_SILENT && !ops.BlindedAt.IsZero()
			switch {
			case blinded && ops.BlindedAt.Before(ops.Deadline):
				s.Failed++
				detail(s, "%s BLINDED at %s, before its deadline %s", id, ops.BlindedAt.Format(time.RFC3339), ops.Deadline.Format(time.RFC3339))
			case blinded:
				s.Blinded++
			case now.Before(blindAt(ops.Deadline, emb, grace)):
				s.Pending++
				detail(s, "%s not yet due: deadline %s (run ended first)", id, ops.Deadline.Format(time.RFC3339))
			default:
				s.Failed++
				detail(s, "%s silent since %s, deadline %s passed, but its verdict is %s/%s", id,
					a.silentSince.Format(time.RFC3339), ops.Deadline.Format(time.RFC3339),
					pulsev1.Verdict(ag.LastVerdict), pulsev1.Reason(ag.LastReason))
			}
		case RoleHonest:
			h := &sum.HonestStore
			h.Checked++
			ag, err := st.GetAgent(ctx, id)
			if err == nil && pulsev1.Verdict(ag.LastVerdict) == pulsev1.Verdict_VERDICT_TRUSTED {
				h.Trusted++
				continue
			}
			if len(h.NotTrusted) < 20 {
				if err != nil {
					h.NotTrusted = append(h.NotTrusted, fmt.Sprintf("%s: %v", id, err))
				} else {
					h.NotTrusted = append(h.NotTrusted, fmt.Sprintf("%s: %s/%s %s", id, pulsev1.Verdict(ag.LastVerdict), pulsev1.Reason(ag.LastReason), ag.LastMessage))
				}
			}
		}
	}
}

// fill copies the collector's totals into the summary and cuts the steady
// state from the ramp (SteadyRule).
func (c *Collector) fill(sum *Summary, end time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	sum.Pulses = c.pulses
	sum.Verdicts = c.verdicts
	sum.Kinds = c.kinds
	sum.Errors = c.errors
	sum.ErrorCount = c.errorsN
	sum.ErrorExamples = c.errorExamples
	sum.Mismatches = c.mismatches
	sum.MismatchCount = c.mismatchN
	sum.Latency = c.all.Summary()
	sum.ChallengeLatency = c.challenge.Summary()
	sum.Wire.Steady, sum.Wire.WithRecords, sum.Wire.WithFirmwareLog = c.steadyBytes, c.withRecords, c.withLog
	sum.Series = c.series
	sum.RampEnd, sum.LastFirstPulse, sum.FirstAnswered = c.rampEnd, c.lastFirst, c.firstAnswered
	sum.LatencyBySecond = secondsData(c.bySecond)
	sum.SteadyRule = SteadyRule
	from, ok := SteadyStart(c.rampEnd, c.lastFirst, c.firstAnswered, sum.Agents)
	steady, ramp := splitLatency(c.bySecond, from, ok)
	setSteady(sum, from, ok, steady, ramp, c.start, end)
}

func setSteady(sum *Summary, from time.Time, ok bool, steady, ramp Histogram, start, end time.Time) {
	sum.RampDrained = ok
	sum.SteadyLatency, sum.RampLatency = steady.Summary(), ramp.Summary()
	// Errors by phase, from the per-second series (by the second they
	// were seen): load shed during the ramp is told apart from errors in
	// the steady state. Any error still fails the run (judge).
	sum.SteadyErrors = 0
	for _, r := range sum.Series {
		if ok && float64(r.T) > from.Sub(start).Seconds() {
			sum.SteadyErrors += r.Errors
		}
	}
	sum.SteadyFrom, sum.SteadyFromS, sum.SteadyPPS = time.Time{}, 0, 0
	if ok {
		sum.SteadyFrom = from
		sum.SteadyFromS = round(from.Sub(start).Seconds(), 1)
		if d := end.Sub(from).Seconds(); d > 0 {
			sum.SteadyPPS = round(float64(steady.Count())/d, 1)
		}
	}
}

// judge decides Pass and SLOMet.
func judge(sum *Summary, cfg *Config) {
	fail := func(f string, args ...any) { sum.Failures = append(sum.Failures, fmt.Sprintf(f, args...)) }
	if sum.ErrorCount > 0 {
		fail("%d errors", sum.ErrorCount)
	}
	if sum.MismatchCount > 0 {
		fail("%d pulses did not get the verdict they deserved", sum.MismatchCount)
	}
	if sum.Connected < sum.Agents {
		fail("%d of %d agents never connected", sum.Agents-sum.Connected, sum.Agents)
	}
	kinds := make([]string, 0, len(sum.Kinds))
	for k := range sum.Kinds {
		kinds = append(kinds, string(k))
	}
	sort.Strings(kinds)
	for _, r := range []Role{RoleReplay, RoleBadSignature, RoleStaleNonce} {
		if sum.Roles[r] > 0 && (sum.Kinds[Kind(r)] == nil || sum.Kinds[Kind(r)].AsExpected == 0) {
			fail("no %s attack was sent and caught (kinds seen: %v)", r, kinds)
		}
	}
	if cfg.Directives && sum.DirectiveStreams < int64(sum.ConnectedAtEnd) {
		fail("%d of %d connected agents hold no directive stream", int64(sum.ConnectedAtEnd)-sum.DirectiveStreams, sum.ConnectedAtEnd)
	}
	if sum.Silent.Failed > 0 {
		fail("%d silent agents not handled as they should be", sum.Silent.Failed)
	}
	if n := sum.HonestStore.Checked - sum.HonestStore.Trusted; n > 0 {
		fail("%d honest agents are not TRUSTED in the store at the end", n)
	}
	sum.Pass = len(sum.Failures) == 0
	sum.SLOMet = sum.Pass && sum.SteadyLatency.Count > 0 && sum.SteadyLatency.P99Ms < ms(cfg.SLOP99)
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	runtime.GC()
	if err := pprof.WriteHeapProfile(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
