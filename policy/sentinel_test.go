package policy

import (
	"fmt"
	"strings"
	"testing"
)

const sentinelPolicy = `policy "edge" {
  match {
    agents = ["*"]
  }
  tpm = "required"
  sentinel {
    mode           = "warn"
    severity       = 2
    signals        = ["sigkill", "SIGTERM"]
    signal_senders = ["runit-*"]
    bpf_loaders    = ["systemd", "cilium-*"]
    allow_lost     = true
  }
}
`

// TestPolicySentinelParse: the sentinel block's settings, and the defaults
// without one.
func TestPolicySentinelParse(t *testing.T) {
	p := mustParse(t, "edge.hcl", sentinelPolicy).Policies()[0]
	s := p.SentinelRule()
	if s.Default || s.Mode != Warn || s.Severity != 2 || !s.AllowLost || s.Name != "sentinel" || s.Pos.Line != 6 {
		t.Fatalf("rule %+v", s)
	}
	if len(s.Signals) != 2 || s.Signals[0] != "SIGKILL" || s.Signals[1] != "SIGTERM" {
		t.Errorf("signals %v", s.Signals)
	}
	if len(s.SignalSenders) != 1 || len(s.BPFLoaders) != 2 {
		t.Errorf("senders %v loaders %v", s.SignalSenders, s.BPFLoaders)
	}
	d := (*Policy)(nil).SentinelRule()
	if !d.Default || d.Mode != Enforce || d.Severity != SeverityCritical || d.AllowLost || len(d.Signals) != 2 || len(d.BPFLoaders) != 0 {
		t.Errorf("defaults %+v", d)
	}
}

// TestPolicySentinelRejectsIsolate: isolation of a Sentinel violation
// follows on_failure; the block has no isolate of its own.
func TestPolicySentinelRejectsIsolate(t *testing.T) {
	src := strings.Replace(sentinelPolicy, "    allow_lost     = true\n", "    allow_lost     = true\n    isolate        = true\n", 1)
	set, diags := Parse("edge.hcl", []byte(src))
	text := DiagnosticsText(diags, []Source{{Name: "edge.hcl", Bytes: []byte(src)}})
	if set != nil || !strings.Contains(text, `"isolate"`) {
		t.Fatalf("isolate in sentinel accepted (set %v):\n%s", set != nil, text)
	}
}

// TestSentinelJudgeEvents: each event is allowed or a violation of its
// own class, from both sides.
func TestSentinelJudgeEvents(t *testing.T) {
	def := DefaultSentinel()
	custom := mustParse(t, "edge.hcl", sentinelPolicy).Policies()[0].SentinelRule()
	ctx := SentinelContext{AgentPIDs: []uint32{100, 200}, CurrentAgent: 200, ManagerPID: 300}
	kill := func(pid uint32, comm string) SentinelEvent {
		return SentinelEvent{Seq: 1, Kind: "signal", SenderPID: pid, SenderComm: comm, Signal: 9}
	}
	load := func(pid uint32, comm string) SentinelEvent {
		return SentinelEvent{Seq: 2, Kind: "bpf_load", SenderPID: pid, SenderComm: comm, Detail: "xdp x"}
	}
	for _, tc := range []struct {
		name string
		rule Sentinel
		ev   SentinelEvent
		want SentinelClass // 0: allowed
	}{
		{"SIGKILL by a shell", def, kill(4242, "bash"), SentinelSignalled},
		{"SIGKILL by PID 1", def, kill(1, "init"), 0},
		{"SIGKILL by the measured service manager", def, kill(300, "runsv"), 0},
		{"SIGKILL by a process named like the manager", def, kill(301, "systemd"), SentinelSignalled},
		{"SIGSTOP by a shell", def, SentinelEvent{Kind: "signal", SenderPID: 5, SenderComm: "sh", Signal: 19}, SentinelSignalled},
		{"SIGTERM by a shell (not watched by default)", def, SentinelEvent{Kind: "signal", SenderPID: 5, SenderComm: "sh", Signal: 15}, 0},
		{"SIGTERM by a shell (watched)", custom, SentinelEvent{Kind: "signal", SenderPID: 5, SenderComm: "sh", Signal: 15}, SentinelSignalled},
		{"SIGKILL by an allowed sender", custom, kill(77, "runit-sv"), 0},
		{"SIGSTOP (not watched by custom)", custom, SentinelEvent{Kind: "signal", SenderPID: 5, SenderComm: "sh", Signal: 19}, 0},
		{"Fortress refused a SIGKILL", def, SentinelEvent{Kind: "fortress_denied", SenderPID: 9, SenderComm: "sh", Signal: 9}, SentinelSignalled},
		{"bpf load by bpftool", def, load(555, "bpftool"), SentinelForeignLoad},
		{"bpf load by the agent", def, load(200, "pulse-agent"), 0},
		{"bpf load by an allowed loader", custom, load(555, "cilium-agent"), 0},
		{"bpf load by an unlisted loader", custom, load(555, "bpftool"), SentinelForeignLoad},
		{"bpf load with no comm", custom, load(555, ""), SentinelForeignLoad},
		{"exit", def, SentinelEvent{Kind: "exit", SenderPID: 100}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := tc.rule.JudgeEvents([]SentinelEvent{tc.ev}, ctx)
			switch {
			case tc.want == 0 && len(v) != 0:
				t.Fatalf("allowed event judged %+v", v)
			case tc.want != 0 && (len(v) != 1 || v[0].Class != tc.want):
				t.Fatalf("violations %+v, want one of class %d", v, tc.want)
			}
		})
	}
}

func TestSignalName(t *testing.T) {
	for n, want := range map[int]string{9: "SIGKILL", 19: "SIGSTOP", 15: "SIGTERM", 64: "signal 64"} {
		if got := SignalName(n); got != want {
			t.Errorf("SignalName(%d) = %q, want %q", n, got, want)
		}
	}
}

// TestSentinelEarlierAgentPID: an earlier agent's PID is the agent's own
// only before Sentinel recorded that agent's exit in the same batch; after
// it (root handed the dead agent's PID through ns_last_pid), or in a later
// batch, its loads are foreign. The current agent's loads are its own.
func TestSentinelEarlierAgentPID(t *testing.T) {
	def := DefaultSentinel()
	ctx := SentinelContext{AgentPIDs: []uint32{100, 200}, CurrentAgent: 200}
	load := func(seq uint64, pid uint32) SentinelEvent {
		return SentinelEvent{Seq: seq, Kind: "bpf_load", SenderPID: pid, SenderComm: "pulse-agent", Detail: "xdp x"}
	}
	exit := func(seq uint64, pid uint32) SentinelEvent {
		return SentinelEvent{Seq: seq, Kind: "exit", SenderPID: pid, SenderComm: "pulse-agent"}
	}
	for _, tc := range []struct {
		name    string
		evs     []SentinelEvent
		foreign []uint64 // seqs judged foreign loads
	}{
		{"earlier agent's load before its exit", []SentinelEvent{load(1, 100), exit(2, 100), load(3, 200)}, nil},
		{"load under the dead agent's PID after its exit", []SentinelEvent{load(1, 100), exit(2, 100), load(3, 100)}, []uint64{3}},
		{"earlier agent's PID in a later batch", []SentinelEvent{load(7, 100)}, []uint64{7}},
		{"current agent after an exit record of its own PID", []SentinelEvent{exit(1, 200), load(2, 200)}, nil},
		{"PID never measured", []SentinelEvent{load(1, 300)}, []uint64{1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []uint64
			for _, v := range def.JudgeEvents(tc.evs, ctx) {
				if v.Class != SentinelForeignLoad {
					t.Fatalf("violation %+v", v)
				}
				got = append(got, v.Event.Seq)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.foreign) {
				t.Fatalf("foreign loads at %v, want %v", got, tc.foreign)
			}
		})
	}
}
