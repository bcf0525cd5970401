package verifier_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pulse-attest/pulse/internal/sentinelrec"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/tpm/cel"
	"github.com/pulse-attest/pulse/verifier/admin"
	"github.com/pulse-attest/pulse/verifier/config"
	"github.com/pulse-attest/pulse/verifier/store"
	"github.com/pulse-attest/pulse/verifier/verifiertest"
)

// sentinelAgent is a test agent whose runtime log measured Sentinel's
// configuration and Fortress's program as the real agent does, and which
// keeps Sentinel's sequence counter.
type sentinelAgent struct {
	*verifiertest.Client
	pid  uint32
	next uint64
	tag  []byte
}

const sentinelTestPID = 31337

var fortressTag = []byte{1, 2, 3, 4, 5, 6, 7, 8}

func newSentinelAgent(e *env, id string) *sentinelAgent {
	e.t.Helper()
	a := e.enroll(id)
	var tag [8]byte
	copy(tag[:], fortressTag)
	a.Measure(&cel.EBPFProgram{Name: "fortress_task_kill", ProgramType: "lsm", AttachPoint: "lsm/task_kill", Tag: tag, KernelRelease: "test"})
	a.Measure(&cel.Generic{Name: sentinelrec.RecordName, Data: sentinelrec.Encode(sentinelrec.Config{AgentTGID: sentinelTestPID, ManagerTGID: 1, MapID: 55})})
	return &sentinelAgent{Client: a, pid: sentinelTestPID, tag: fortressTag}
}

// pulse sends a pulse carrying events (numbered from the agent's counter)
// and a consistent report, after mut changed what it wants to.
func (s *sentinelAgent) pulse(events []*pulsev1.SentinelEvent, mut func(p *pulsev1.PulsePayload)) *pulsev1.PulseResponse {
	for _, ev := range events {
		s.next++
		ev.Seq = s.next
		if ev.Time == nil {
			ev.Time = timestamppb.Now()
		}
	}
	return s.Pulse(func(pp *verifiertest.Parts) {
		p := pp.Payload
		p.SentinelEvents = events
		p.Sentinel = &pulsev1.SentinelReport{NextSeq: s.next, CfgAgentTgid: s.pid, AgentTgid: s.pid}
		p.Fortress = &pulsev1.FortressStatus{Active: true, LsmListed: true, Loaded: true, Attached: true, ProgramId: 900, LinkId: 901, Tag: s.tag}
		if mut != nil {
			mut(p)
		}
	})
}

func signal(sig int32, pid uint32, comm string, uid uint32) *pulsev1.SentinelEvent {
	return &pulsev1.SentinelEvent{Kind: pulsev1.SentinelEvent_KIND_SIGNAL, SenderPid: pid, SenderComm: comm, TargetPid: sentinelTestPID, Signal: sig, Value: uid, Detail: "delivered"}
}

func bpfLoad(pid uint32, comm string) *pulsev1.SentinelEvent {
	return &pulsev1.SentinelEvent{Kind: pulsev1.SentinelEvent_KIND_BPF_LOAD, SenderPid: pid, SenderComm: comm, Detail: "socket_filter probe uid 0"}
}

// TestSentinelAndFortressJudged: a real verifier over mTLS and a swtpm
// agent. The honest agent (Fortress in force per the kernel's IDs, a clean
// Sentinel report) is TRUSTED; each attack is UNTRUSTED with its own
// reason, and the agent's next honest pulse is TRUSTED again.
func TestSentinelAndFortressJudged(t *testing.T) {
	const token = "sentinel-admin-0123456789abcdef"
	pol := fleetPolicy(t, "  fortress {}\n  sentinel {\n    bpf_loaders = [\"systemd\"]\n  }\n")
	e := newEnvCfg(t, "rhel8-uefi", func(c *config.Config) {
		pol(c)
		c.AdminListen = "127.0.0.1:0"
		c.AdminTokenFile = filepath.Join(filepath.Dir(c.TLS.AgentCA), "admin-token")
		if err := os.WriteFile(c.AdminTokenFile, []byte("alice:"+token+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	})
	if e == nil {
		return
	}
	a := newSentinelAgent(e, "edge-sentinel")
	honest := func() {
		t.Helper()
		wantVerdict(t, a.pulse(nil, nil), trusted, pulsev1.Reason_REASON_OK)
	}
	honest()

	cases := []struct {
		name    string
		events  []*pulsev1.SentinelEvent
		mut     func(p *pulsev1.PulsePayload)
		reason  pulsev1.Reason
		message []string
	}{
		{name: "SIGKILL by a shell", events: []*pulsev1.SentinelEvent{signal(9, 4242, "bash", 0)},
			reason: pulsev1.Reason_REASON_AGENT_SIGNALLED, message: []string{"pid 4242", `"bash"`, "uid 0", "SIGKILL"}},
		{name: "SIGSTOP by another user", events: []*pulsev1.SentinelEvent{signal(19, 777, "evil", 1000)},
			reason: pulsev1.Reason_REASON_AGENT_SIGNALLED, message: []string{"pid 777", "uid 1000", "SIGSTOP"}},
		{name: "foreign bpf load", events: []*pulsev1.SentinelEvent{bpfLoad(5555, "bpftool")},
			reason: pulsev1.Reason_REASON_FOREIGN_BPF_LOAD, message: []string{"pid 5555", `"bpftool"`}},
		{name: "agent_tgid zeroed in sentinel_cfg", mut: func(p *pulsev1.PulsePayload) { p.Sentinel.CfgAgentTgid = 0 },
			reason: pulsev1.Reason_REASON_SENTINEL_TAMPERED, message: []string{"agent tgid 0"}},
		{name: "agent reports its own check failing", mut: func(p *pulsev1.PulsePayload) {
			p.Sentinel.Error = "sentinel_cfg acked_seq is 99, the agent wrote 3"
		}, reason: pulsev1.Reason_REASON_SENTINEL_TAMPERED},
		{name: "lost records", mut: func(p *pulsev1.PulsePayload) { p.Sentinel.Lost = 4 },
			reason: pulsev1.Reason_REASON_SENTINEL_TAMPERED, message: []string{"lost 4"}},
		{name: "records hidden (counter ahead of the records)", mut: func(p *pulsev1.PulsePayload) { p.Sentinel.NextSeq += 2 },
			reason: pulsev1.Reason_REASON_SENTINEL_TAMPERED},
		{name: "sentinel report missing", mut: func(p *pulsev1.PulsePayload) { p.Sentinel = nil },
			reason: pulsev1.Reason_REASON_KERNEL_EVIDENCE_MISSING},
		{name: "fortress claims active without kernel IDs", mut: func(p *pulsev1.PulsePayload) { p.Fortress.ProgramId, p.Fortress.LinkId = 0, 0 },
			reason: pulsev1.Reason_REASON_POLICY_DENIED, message: []string{"Fortress is not active"}},
		{name: "fortress runs another program", mut: func(p *pulsev1.PulsePayload) { p.Fortress.Tag = []byte{9, 9, 9, 9, 9, 9, 9, 9} },
			reason: pulsev1.Reason_REASON_POLICY_DENIED, message: []string{"Fortress is not active"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp := a.pulse(tc.events, tc.mut)
			wantVerdict(t, resp, untrusted, tc.reason)
			for _, m := range tc.message {
				if !strings.Contains(resp.GetMessage(), m) {
					t.Errorf("message %q does not name %q", resp.GetMessage(), m)
				}
			}
			if tc.name == "records hidden (counter ahead of the records)" {
				a.next += 2 // the counter the report named is the kernel's
			}
			honest()
		})
	}

	t.Run("allowed senders and the agent's own loads", func(t *testing.T) {
		resp := a.pulse([]*pulsev1.SentinelEvent{signal(9, 1, "init", 0), signal(15, 4242, "bash", 0), bpfLoad(sentinelTestPID, "pulse-agent"), bpfLoad(88, "systemd")}, nil)
		wantVerdict(t, resp, trusted, pulsev1.Reason_REASON_OK)
	})

	t.Run("forged Fortress record in the runtime log", func(t *testing.T) {
		// Root extends the runtime PCR with a record saying Fortress is
		// active while the kernel lists no Fortress link: not active.
		a.Measure(&cel.FortressState{Active: true, Mechanism: "bpf-lsm", Reason: "forged"})
		resp := a.pulse(nil, func(p *pulsev1.PulsePayload) {
			p.Fortress = &pulsev1.FortressStatus{Active: false, Reason: "kernel refused to load the BPF-LSM program: operation not permitted (EPERM)"}
		})
		wantVerdict(t, resp, untrusted, pulsev1.Reason_REASON_POLICY_DENIED)
		if !strings.Contains(resp.GetMessage(), "Fortress is not active") {
			t.Errorf("denial %q is not the fortress rule's", resp.GetMessage())
		}
		honest()
	})

	st := openStore(t, e)
	ctx := context.Background()
	evs, err := st.SentinelEvents(ctx, "edge-sentinel")
	if err != nil {
		t.Fatal(err)
	}
	var kill *store.SentinelEvent
	for i := range evs {
		if evs[i].SenderPID == 4242 && evs[i].Signal == 9 {
			kill = &evs[i]
		}
	}
	if kill == nil || kill.SenderComm != "bash" || kill.Finding != "REASON_AGENT_SIGNALLED" {
		t.Fatalf("stored events do not hold the SIGKILL by bash as a finding: %+v", evs)
	}
	alerts, err := st.ListAlerts(ctx, store.AlertFilter{AgentID: "edge-sentinel"})
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, al := range alerts {
		kinds[al.Kind]++
	}
	for _, k := range []string{"agent_signalled", "foreign_bpf_load", "sentinel_tampered"} {
		if kinds[k] == 0 {
			t.Errorf("no %s alert; alerts by kind %v", k, kinds)
		}
	}

	// The admin API's agent detail shows the records, newest first.
	cl, err := admin.NewClient(admin.ClientOptions{URL: "https://" + e.daemon.AdminAddr(), CAFile: e.caFile, ServerName: "localhost", Token: token})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := cl.GetAgent(ctx, "edge-sentinel")
	if err != nil {
		t.Fatal(err)
	}
	d := resp.Agent
	var shown bool
	for i, ev := range d.SentinelEvents {
		if i > 0 && ev.Seq > d.SentinelEvents[i-1].Seq {
			t.Errorf("admin records not newest first: %+v", d.SentinelEvents)
		}
		if ev.SenderPID == 4242 && ev.SenderComm == "bash" && ev.Signal == "SIGKILL" && ev.Finding == "REASON_AGENT_SIGNALLED" {
			shown = true
		}
	}
	if !shown || len(d.SentinelEvents) > store.MaxSentinelEvents {
		t.Fatalf("admin agent detail records %+v", d.SentinelEvents)
	}
}

// TestFortressDefaultWarns: without a fortress block, Fortress refused by
// the kernel is a warning finding on a TRUSTED pulse, never a denial.
func TestFortressDefaultWarns(t *testing.T) {
	e := newEnvCfg(t, "rhel8-uefi", fleetPolicy(t, ""))
	if e == nil {
		return
	}
	a := newSentinelAgent(e, "edge-nofortress")
	resp := a.pulse(nil, func(p *pulsev1.PulsePayload) {
		p.Fortress = &pulsev1.FortressStatus{Reason: "kernel refused to load the BPF-LSM program: operation not permitted (EPERM)"}
	})
	wantVerdict(t, resp, trusted, pulsev1.Reason_REASON_OK)
	var warned bool
	for _, f := range resp.GetFindings() {
		if f.GetRule() == "fortress" && !f.GetEnforce() && strings.Contains(f.GetMessage(), "EPERM") {
			warned = true
		}
	}
	if !warned {
		t.Fatalf("no fortress warning among %v", resp.GetFindings())
	}
	// The default sentinel rule still enforces: a SIGKILL by a shell.
	wantVerdict(t, a.pulse([]*pulsev1.SentinelEvent{signal(9, 4242, "sh", 0)}, nil), untrusted, pulsev1.Reason_REASON_AGENT_SIGNALLED)
}

// TestComebackAlertNamesSignal: an agent killed by its service manager
// (PID 1, allowed) goes silent and BLINDED; the pulse it comes back with
// carries Sentinel's record, is TRUSTED, and the alert that follows names
// the signal and its sender. The same allowed signal from an agent that
// was never BLINDED raises nothing.
func TestComebackAlertNamesSignal(t *testing.T) {
	e := newEnvCfg(t, "rhel8-uefi", fleetPolicy(t, "  heartbeat {\n    interval = \"1s\"\n    missed   = 2\n    grace    = \"0s\"\n  }\n"))
	if e == nil {
		return
	}
	st := openStore(t, e)
	a := newSentinelAgent(e, "edge-comeback")
	wantVerdict(t, a.pulse(nil, nil), trusted, pulsev1.Reason_REASON_OK)
	comebacks := func() []*store.Alert {
		t.Helper()
		all, err := st.ListAlerts(context.Background(), store.AlertFilter{AgentID: "edge-comeback"})
		if err != nil {
			t.Fatal(err)
		}
		var out []*store.Alert
		for _, al := range all {
			if al.Kind == "agent_signalled" {
				out = append(out, al)
			}
		}
		return out
	}
	// Honest side: PID 1's SIGKILL while the agent was never BLINDED.
	wantVerdict(t, a.pulse([]*pulsev1.SentinelEvent{signal(9, 1, "init", 0)}, nil), trusted, pulsev1.Reason_REASON_OK)
	if got := comebacks(); len(got) != 0 {
		t.Fatalf("alerts without a comeback: %+v", got)
	}
	waitFor(t, "BLINDED", func() bool {
		ag, err := st.GetAgent(context.Background(), "edge-comeback")
		return err == nil && pulsev1.Verdict(ag.LastVerdict) == pulsev1.Verdict_VERDICT_BLINDED
	})
	a.Challenge()
	exit := &pulsev1.SentinelEvent{Kind: pulsev1.SentinelEvent_KIND_EXIT, SenderPid: sentinelTestPID, SenderComm: "pulse-agent", Signal: 9, Value: 9, Detail: "killed by SIGKILL"}
	wantVerdict(t, a.pulse([]*pulsev1.SentinelEvent{signal(9, 1, "init", 0), exit}, nil), trusted, pulsev1.Reason_REASON_OK)
	got := comebacks()
	if len(got) != 1 {
		t.Fatalf("comeback alerts %+v, want one", got)
	}
	for _, w := range []string{"BLINDED", "SIGKILL", "pid 1", `"init"`, "uid 0", "exited (killed by SIGKILL)"} {
		if !strings.Contains(got[0].Message, w) {
			t.Errorf("comeback alert %q does not name %q", got[0].Message, w)
		}
	}
	if got[0].Severity != 4 {
		t.Errorf("comeback alert severity %d, want 4 (the signal was allowed)", got[0].Severity)
	}
}
