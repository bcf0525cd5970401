package policy

import (
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
	ctx := SentinelContext{AgentPIDs: []uint32{100, 200}, ManagerPID: 300}
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
