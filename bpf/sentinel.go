package bpf

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
)

// SentinelSlots is the size of the pinned event ring (SENTINEL_SLOTS in
// c/sentinel.h).
const SentinelSlots = 1024

// EventKind says what a Sentinel record is about.
type EventKind string

// Sentinel record kinds (enum sentinel_kind in c/sentinel.h).
const (
	EventSignal         EventKind = "signal"
	EventBPFProgLoad    EventKind = "bpf_prog_load"
	EventFortressDenied EventKind = "fortress_denied"
	EventExit           EventKind = "exit"
)

var eventKinds = map[uint32]EventKind{1: EventSignal, 2: EventBPFProgLoad, 3: EventFortressDenied, 4: EventExit}

// signal_generate's result codes (enum trace_signal_result in the kernel).
var signalResults = map[int32]string{0: "delivered", 1: "ignored", 2: "already_pending", 3: "overflow_fail", 4: "lose_info"}

// Event is one Sentinel record.
type Event struct {
	Seq        uint64    `json:"seq"`
	Kind       EventKind `json:"kind"`
	Time       time.Time `json:"time"`
	SenderPID  int       `json:"sender_pid"`
	SenderTID  int       `json:"sender_tid"`
	SenderUID  uint32    `json:"sender_uid"`
	SenderComm string    `json:"sender_comm"`
	// Signals and Fortress refusals.
	TargetPID  int    `json:"target_pid,omitempty"`
	TargetTID  int    `json:"target_tid,omitempty"`
	TargetComm string `json:"target_comm,omitempty"`
	Signal     int    `json:"signal,omitempty"`
	SignalName string `json:"signal_name,omitempty"`
	// Outcome: for signals what the kernel did with it ("delivered",
	// "ignored", ...); "denied" for Fortress refusals; "attr_unreadable" when
	// a program load's attributes could not be read.
	Outcome string `json:"outcome,omitempty"`
	// ExitCode is the agent's exit code as the kernel keeps it (wait
	// status: the terminating signal in the low 7 bits, else the exit
	// status shifted left by 8), for exits.
	ExitCode int32 `json:"exit_code,omitempty"`
	// Program loads.
	ProgType  string `json:"prog_type,omitempty"`
	ProgName  string `json:"prog_name,omitempty"`
	InsnCount uint32 `json:"insn_count,omitempty"`
}

// SentinelReport is what happened since the last acknowledgement.
type SentinelReport struct {
	Events []Event `json:"events"`
	// Lost counts records overwritten in the ring before they were acknowledged.
	Lost uint64 `json:"lost"`
	// Through is the sequence number to pass to Ack once the report is safe
	// with the verifier.
	Through uint64 `json:"through"`
	// NextSeq is the kernel's sequence counter when the ring was read: the
	// last sequence number handed out.
	NextSeq uint64 `json:"next_seq"`
	// Truncated: more records follow Through (the read was bounded).
	Truncated bool `json:"truncated,omitempty"`
}

// SentinelConfig is the content of the pinned sentinel_cfg map.
type SentinelConfig struct {
	AgentPID   uint32 `json:"agent_pid"`
	ManagerPID uint32 `json:"manager_pid"`
	AckedSeq   uint64 `json:"acked_seq"`
}

// ErrSentinelTampered is matched (errors.Is) by a *SentinelTamperError.
var ErrSentinelTampered = errors.New("sentinel configuration changed behind the agent")

// SentinelTamperError says which field of sentinel_cfg is not what the
// agent wrote.
type SentinelTamperError struct {
	Field     string
	Want, Got uint64
}

func (e *SentinelTamperError) Error() string {
	return fmt.Sprintf("sentinel_cfg %s is %d, the agent wrote %d", e.Field, e.Got, e.Want)
}

// Is makes errors.Is(err, ErrSentinelTampered) hold.
func (e *SentinelTamperError) Is(target error) bool { return target == ErrSentinelTampered }

// Sentinel reads the pinned event ring.
type Sentinel struct {
	log     hclog.Logger
	cfg     *ebpf.Map
	seq     *ebpf.Map
	events  *ebpf.Map
	threads *ebpf.Map
	mu      sync.Mutex
	// want is what this agent wrote into sentinel_cfg (configure, Ack);
	// configured is false until configure ran.
	want       SentinelConfig
	configured bool
	// startupTamper is set when configure found the pinned config blinded
	// (agent_tgid 0 on a ring already used): reported until acknowledged.
	startupTamper *SentinelTamperError
}

func newSentinel(log hclog.Logger, coll *ebpf.Collection) (*Sentinel, error) {
	s := &Sentinel{
		log:     log,
		cfg:     coll.Maps["sentinel_cfg"],
		seq:     coll.Maps["sentinel_seq"],
		events:  coll.Maps["sentinel_events"],
		threads: coll.Maps["sentinel_threads"],
	}
	if s.cfg == nil || s.seq == nil || s.events == nil || s.threads == nil {
		return nil, errors.New("sentinel: object lacks its maps")
	}
	if s.events.MaxEntries() != SentinelSlots {
		return nil, fmt.Errorf("sentinel: ring has %d slots, want %d", s.events.MaxEntries(), SentinelSlots)
	}
	return s, nil
}

// configure points the pinned config at this agent (keeping the
// acknowledged sequence number) and records its threads.
func (s *Sentinel) configure(agentPID, managerPID int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	cfg, err := s.config()
	if err != nil {
		return err
	}
	prev := cfg.AgentTgid
	var next uint64
	if err := s.seq.Lookup(uint32(0), &next); err != nil {
		return fmt.Errorf("sentinel: read sequence: %w", err)
	}
	if prev == 0 && (cfg.AckedSeq > 0 || next > 0) {
		// A ring that has recorded and been read before always names the
		// agent that configured it: zero means someone blinded Sentinel
		// while no agent ran.
		s.startupTamper = &SentinelTamperError{Field: "agent_tgid", Want: 1, Got: 0}
		s.log.Warn("sentinel was blinded while no agent ran", "acked_seq", cfg.AckedSeq, "next_seq", next)
	}
	cfg.AgentTgid = uint32(agentPID)
	cfg.ManagerTgid = uint32(managerPID)
	if err := s.cfg.Put(uint32(0), &cfg); err != nil {
		return fmt.Errorf("sentinel: write config: %w", err)
	}
	s.want = SentinelConfig{AgentPID: cfg.AgentTgid, ManagerPID: cfg.ManagerTgid, AckedSeq: cfg.AckedSeq}
	s.configured = true
	n, err := s.seedThreads(agentPID)
	if err != nil {
		return err
	}
	s.log.Info("sentinel configured", "agent_pid", agentPID, "previous_agent_pid", prev,
		"service_manager_pid", managerPID, "acked_seq", cfg.AckedSeq, "agent_threads", n)
	return nil
}

func (s *Sentinel) config() (sentinelSentinelConfig, error) {
	var cfg sentinelSentinelConfig
	if err := s.cfg.Lookup(uint32(0), &cfg); err != nil {
		return cfg, fmt.Errorf("sentinel: read config: %w", err)
	}
	return cfg, nil
}

// seedThreads records the agent's existing threads in sentinel_threads; the
// task_newtask program adds the ones it starts later. The map is for
// diagnostics only: root can write it, so no program decides from it whether
// a signal targets the agent (sentinel_signal reads the target's
// task_struct).
func (s *Sentinel) seedThreads(pid int) (int, error) {
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0, fmt.Errorf("sentinel: list agent threads: %w", err)
	}
	n := 0
	for _, e := range entries {
		tid, err := strconv.ParseUint(e.Name(), 10, 32)
		if err != nil {
			continue
		}
		if err := s.threads.Put(uint32(tid), uint32(pid)); err != nil {
			return n, fmt.Errorf("sentinel: record agent thread %d: %w", tid, err)
		}
		n++
	}
	return n, nil
}

// sentinelAttachments are Sentinel's tracepoints. sentinel_signal is a BTF
// tracepoint program (tp_btf): it is measured at the tracepoint it runs on,
// like the others, and its link is a tracing link.
func sentinelAttachments() []attachment {
	tp := func(prog, group, name string) attachment {
		return attachment{
			program:  prog,
			point:    "tracepoint/" + group + "/" + name,
			linkName: prog,
			attach: func(p *ebpf.Program) (link.Link, error) {
				return link.Tracepoint(group, name, p, nil)
			},
		}
	}
	return []attachment{
		tp("sentinel_newtask", "task", "task_newtask"),
		tp("sentinel_exit", "sched", "sched_process_exit"),
		{
			program:  "sentinel_signal",
			point:    "tracepoint/signal/signal_generate",
			linkName: "sentinel_signal",
			attach: func(p *ebpf.Program) (link.Link, error) {
				return link.AttachTracing(link.TracingOptions{Program: p, AttachType: ebpf.AttachTraceRawTp})
			},
		},
		tp("sentinel_bpf", "syscalls", "sys_enter_bpf"),
	}
}

// checkSentinelTracepoints verifies, before anything is attached, that the
// running kernel's tracepoint layouts match the structs in c/sentinel.c and
// that signal_generate's arguments are the ones sentinel_signal reads.
func checkSentinelTracepoints() error {
	kernel, err := btf.LoadKernelSpec()
	if err != nil {
		return fmt.Errorf("load kernel btf: %w", err)
	}
	if err := checkSignalGenerateProto(kernel); err != nil {
		return err
	}
	checks := []struct {
		group, name string
		fields      map[string]tpField
	}{
		{"task", "task_newtask", map[string]tpField{"pid": {8, 4}, "clone_flags": {32, 8}}},
		{"syscalls", "sys_enter_bpf", map[string]tpField{"cmd": {16, 8}, "uattr": {24, 8}}},
	}
	for _, c := range checks {
		if err := checkTracepointLayout(TraceFSPath, c.group, c.name, c.fields); err != nil {
			return err
		}
	}
	return nil
}

// ErrSignalProto is matched (errors.Is) when the kernel's signal_generate
// tracepoint does not take the arguments sentinel_signal reads.
var ErrSignalProto = errors.New("signal_generate arguments are not the ones sentinel_signal reads")

// signalGenerateParams is trace_signal_generate's prototype as the BTF
// tracepoint program sees it (the first parameter is the tracepoint's
// private data): sentinel_signal reads sig (1), task (3) and result (5).
var signalGenerateParams = []string{"ptr:void", "int", "ptr:kernel_siginfo", "ptr:task_struct", "int", "int"}

// checkSignalGenerateProto checks the kernel's btf_trace_signal_generate
// prototype against signalGenerateParams. The kernel's verifier already
// refuses the program unless the target argument is a task_struct pointer;
// this also pins the positions of the signal number and the result.
func checkSignalGenerateProto(kernel *btf.Spec) error {
	var td *btf.Typedef
	if err := kernel.TypeByName("btf_trace_signal_generate", &td); err != nil {
		return fmt.Errorf("%w: %w", ErrSignalProto, err)
	}
	ptr, ok := btf.UnderlyingType(td.Type).(*btf.Pointer)
	if !ok {
		return fmt.Errorf("%w: btf_trace_signal_generate is %v, not a function pointer", ErrSignalProto, td.Type)
	}
	proto, ok := btf.UnderlyingType(ptr.Target).(*btf.FuncProto)
	if !ok {
		return fmt.Errorf("%w: btf_trace_signal_generate points to %v, not a function", ErrSignalProto, ptr.Target)
	}
	return checkSignalParams(proto)
}

// checkSignalParams compares a prototype's parameters with
// signalGenerateParams.
func checkSignalParams(proto *btf.FuncProto) error {
	got := make([]string, len(proto.Params))
	for i, p := range proto.Params {
		got[i] = btfParamKind(p.Type)
	}
	if !slices.Equal(got, signalGenerateParams) {
		return fmt.Errorf("%w: parameters %v, want %v", ErrSignalProto, got, signalGenerateParams)
	}
	return nil
}

// btfParamKind names a parameter type the way signalGenerateParams does:
// "int" for a signed 32-bit integer, "ptr:NAME" for a pointer to a named
// struct (or void), the type itself otherwise.
func btfParamKind(t btf.Type) string {
	switch u := btf.UnderlyingType(t).(type) {
	case *btf.Int:
		if u.Size == 4 && u.Encoding&btf.Signed != 0 {
			return "int"
		}
		return fmt.Sprintf("int%d", u.Size*8)
	case *btf.Pointer:
		switch target := btf.UnderlyingType(u.Target).(type) {
		case *btf.Void:
			return "ptr:void"
		case *btf.Struct:
			return "ptr:" + target.Name
		default:
			return fmt.Sprintf("ptr:%T", target)
		}
	default:
		return fmt.Sprintf("%T", u)
	}
}

// Events returns the records after the last acknowledged one: signals the
// agent received (including the ones that killed a previous agent process),
// Fortress refusals and eBPF program loads by other processes.
func (s *Sentinel) Events() (SentinelReport, error) {
	return s.EventsUpTo(0)
}

// EventsUpTo is Events returning at most max records (all when max is 0);
// the report says Truncated when more follow. The records start after the
// acknowledgement this agent wrote (not whatever sentinel_cfg now holds:
// a cursor moved behind the agent hides nothing from it).
func (s *Sentinel) EventsUpTo(max int) (SentinelReport, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cfg, err := s.config()
	if err != nil {
		return SentinelReport{}, err
	}
	if s.configured {
		cfg.AckedSeq = s.want.AckedSeq
	}
	var next uint64
	if err := s.seq.Lookup(uint32(0), &next); err != nil {
		return SentinelReport{}, fmt.Errorf("sentinel: read sequence: %w", err)
	}
	clk, err := readClocks()
	if err != nil {
		return SentinelReport{}, err
	}
	from, lost := ringWindow(cfg.AckedSeq, next, SentinelSlots)
	rep := SentinelReport{Lost: lost, Through: cfg.AckedSeq, NextSeq: next}
	for seq := from; seq <= next && seq != 0; seq++ {
		if max > 0 && len(rep.Events) >= max {
			rep.Truncated = true
			return rep, nil
		}
		raw, err := s.readSlot(seq)
		if err != nil {
			return SentinelReport{}, err
		}
		if raw.Seq == seq {
			rep.Events = append(rep.Events, decodeEvent(raw, clk))
		} else {
			// Overwritten by a newer record since we read the sequence,
			// or a slot whose writer never finished: either way the
			// record is gone.
			rep.Lost++
		}
		rep.Through = seq
	}
	return rep, nil
}

// slotRetries and slotRetryWait bound the wait for a record whose writer
// took its sequence number but has not stored it yet (a few instructions
// on another CPU).
const (
	slotRetries   = 20
	slotRetryWait = 50 * time.Microsecond
)

// readSlot reads the slot of seq, waiting briefly while its record is
// still being written (slot seq older than seq).
func (s *Sentinel) readSlot(seq uint64) (sentinelSentinelEvent, error) {
	var raw sentinelSentinelEvent
	for i := 0; ; i++ {
		if err := s.events.Lookup(uint32(seq%SentinelSlots), &raw); err != nil {
			return raw, fmt.Errorf("sentinel: read slot: %w", err)
		}
		if raw.Seq >= seq || i == slotRetries {
			return raw, nil
		}
		time.Sleep(slotRetryWait)
	}
}

// ringWindow returns the first sequence number still in the ring after acked
// (1-based) and how many unacknowledged records were overwritten.
func ringWindow(acked, next, slots uint64) (from, lost uint64) {
	if next <= acked {
		return next + 1, 0
	}
	from = acked + 1
	if next-acked > slots {
		lost = next - acked - slots
		from = next - slots + 1
	}
	return from, lost
}

// Ack drops the records up to and including through from future reports. The
// acknowledgement is kept in the pinned map, so it survives restarts.
func (s *Sentinel) Ack(through uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var next uint64
	if err := s.seq.Lookup(uint32(0), &next); err != nil {
		return fmt.Errorf("sentinel: read sequence: %w", err)
	}
	if through > next {
		return fmt.Errorf("sentinel: ack %d beyond last record %d", through, next)
	}
	cfg, err := s.config()
	if err != nil {
		return err
	}
	if !s.configured {
		if through <= cfg.AckedSeq {
			return nil
		}
		cfg.AckedSeq = through
		if err := s.cfg.Put(uint32(0), &cfg); err != nil {
			return fmt.Errorf("sentinel: write ack: %w", err)
		}
		return nil
	}
	// The acknowledgement follows a pulse the verifier committed, which
	// carried Check's result: whatever was changed behind the agent has
	// been reported, and the configuration is restored with the cursor.
	s.startupTamper = nil
	want := s.want
	if through > want.AckedSeq {
		want.AckedSeq = through
	}
	if cfg.AgentTgid == want.AgentPID && cfg.ManagerTgid == want.ManagerPID && cfg.AckedSeq == want.AckedSeq {
		s.want = want
		return nil
	}
	cfg.AgentTgid, cfg.ManagerTgid, cfg.AckedSeq = want.AgentPID, want.ManagerPID, want.AckedSeq
	if err := s.cfg.Put(uint32(0), &cfg); err != nil {
		return fmt.Errorf("sentinel: write ack: %w", err)
	}
	s.want = want
	return nil
}

// Config reads the pinned sentinel_cfg map as the kernel holds it.
func (s *Sentinel) Config() (SentinelConfig, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cfg, err := s.config()
	if err != nil {
		return SentinelConfig{}, err
	}
	return SentinelConfig{AgentPID: cfg.AgentTgid, ManagerPID: cfg.ManagerTgid, AckedSeq: cfg.AckedSeq}, nil
}

// Wanted returns what this agent wrote into sentinel_cfg.
func (s *Sentinel) Wanted() SentinelConfig {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.want
}

// Check re-reads sentinel_cfg and compares it with what this agent wrote:
// the agent's tgid (0 blinds Sentinel and Fortress), the service manager
// Fortress lets through, and the acknowledgement cursor (moved ahead, it
// would hide records from a restarted agent). A difference is a
// *SentinelTamperError (errors.Is ErrSentinelTampered); got is the map's
// content either way.
func (s *Sentinel) Check() (SentinelConfig, error) {
	got, err := s.Config()
	if err != nil {
		return got, err
	}
	s.mu.Lock()
	want, ok := s.want, s.configured
	s.mu.Unlock()
	if !ok {
		return got, errors.New("sentinel: not configured")
	}
	if err := compareSentinelConfig(want, got); err != nil {
		return got, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.startupTamper != nil {
		return got, s.startupTamper
	}
	return got, nil
}

// compareSentinelConfig returns the first field of got that differs from want.
func compareSentinelConfig(want, got SentinelConfig) error {
	switch {
	case got.AgentPID != want.AgentPID:
		return &SentinelTamperError{Field: "agent_tgid", Want: uint64(want.AgentPID), Got: uint64(got.AgentPID)}
	case got.ManagerPID != want.ManagerPID:
		return &SentinelTamperError{Field: "manager_tgid", Want: uint64(want.ManagerPID), Got: uint64(got.ManagerPID)}
	case got.AckedSeq != want.AckedSeq:
		return &SentinelTamperError{Field: "acked_seq", Want: want.AckedSeq, Got: got.AckedSeq}
	}
	return nil
}

// ConfigMapID is the kernel's ID of the sentinel_cfg map this agent
// configured (0 when unknown).
func (s *Sentinel) ConfigMapID() uint32 {
	info, err := s.cfg.Info()
	if err != nil {
		return 0
	}
	id, _ := info.ID()
	return uint32(id)
}

// clocks pairs the wall clock with CLOCK_BOOTTIME, which the records use.
type clocks struct {
	wall time.Time
	boot time.Duration
}

func readClocks() (clocks, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return clocks{}, fmt.Errorf("sentinel: clock_gettime(CLOCK_BOOTTIME): %w", err)
	}
	return clocks{wall: time.Now(), boot: time.Duration(ts.Nano())}, nil
}

// wallTime converts a CLOCK_BOOTTIME reading to wall-clock time.
func (c clocks) wallTime(bootNS uint64) time.Time {
	return c.wall.Add(time.Duration(bootNS) - c.boot).UTC()
}

// decodeEvent turns a raw ring record into an Event.
func decodeEvent(raw sentinelSentinelEvent, clk clocks) Event {
	ev := Event{
		Seq:        raw.Seq,
		Kind:       eventKinds[raw.Kind],
		Time:       clk.wallTime(raw.BootNs),
		SenderPID:  int(raw.SenderTgid),
		SenderTID:  int(raw.SenderTid),
		SenderUID:  raw.SenderUid,
		SenderComm: cString(raw.SenderComm[:]),
	}
	if ev.Kind == "" {
		ev.Kind = EventKind("unknown_" + strconv.FormatUint(uint64(raw.Kind), 10))
	}
	switch ev.Kind {
	case EventSignal, EventFortressDenied:
		ev.TargetPID = int(raw.TargetTgid)
		ev.TargetTID = int(raw.TargetTid)
		ev.TargetComm = cString(raw.TargetComm[:])
		ev.Signal = int(raw.Signal)
		ev.SignalName = unix.SignalName(syscall.Signal(raw.Signal))
		if ev.Kind == EventFortressDenied {
			ev.Outcome = "denied"
		} else if r, ok := signalResults[raw.Result]; ok {
			ev.Outcome = r
		} else {
			ev.Outcome = "result_" + strconv.Itoa(int(raw.Result))
		}
	case EventExit:
		ev.TargetPID = int(raw.TargetTgid)
		ev.TargetTID = int(raw.TargetTid)
		ev.ExitCode = raw.Result
		if sig := raw.Result & 0x7f; sig != 0 {
			ev.Signal = int(sig)
			ev.SignalName = unix.SignalName(syscall.Signal(sig))
			ev.Outcome = "killed by " + ev.SignalName
		} else {
			ev.Outcome = "exited " + strconv.Itoa(int(raw.Result>>8&0xff))
		}
	case EventBPFProgLoad:
		ev.ProgType = ProgramTypeName(raw.ProgType)
		ev.ProgName = cString(raw.ProgName[:])
		ev.InsnCount = raw.InsnCnt
		if raw.Result != 0 {
			ev.Outcome = "attr_unreadable"
			ev.ProgType = ""
		}
	}
	return ev
}

func cString(b []int8) string {
	out := make([]byte, 0, len(b))
	for _, c := range b {
		if c == 0 {
			break
		}
		out = append(out, byte(c))
	}
	return string(out)
}
