package bpf

import (
	"errors"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/pulse-attest/pulse/internal/testutil"
)

// pinnedConfig opens the pinned sentinel_cfg map as another root process
// would.
func pinnedConfig(t *testing.T, dir string) *ebpf.Map {
	t.Helper()
	m, err := ebpf.LoadPinnedMap(filepath.Join(dir, "maps", "sentinel_cfg"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func writeConfig(t *testing.T, m *ebpf.Map, edit func(*sentinelSentinelConfig)) {
	t.Helper()
	var c sentinelSentinelConfig
	if err := m.Lookup(uint32(0), &c); err != nil {
		t.Fatal(err)
	}
	edit(&c)
	if err := m.Put(uint32(0), &c); err != nil {
		t.Fatal(err)
	}
}

// TestSentinelConfigTamper: the agent's per-pulse check passes on an
// untouched configuration and names each field root changes behind it;
// zeroing agent_tgid really blinds Sentinel (a SIGKILL of the agent goes
// unrecorded), and the acknowledgement after a committed pulse restores
// what the agent wrote.
func TestSentinelConfigTamper(t *testing.T) {
	requireKernel(t)
	testutil.RequireTools(t, "sleep", "kill")
	dir := tempPinDir(t)
	agent := startChild(t, exec.Command("sleep", "60"))
	pid := agent.Process.Pid
	m, _ := loadTestManager(t, Options{PinDir: dir, AgentPID: pid})
	s := m.Sentinel()
	got, err := s.Check()
	if err != nil || got.AgentPID != uint32(pid) || got.ManagerPID != 1 {
		t.Fatalf("untouched config: %+v %v", got, err)
	}
	if id := s.ConfigMapID(); id == 0 {
		t.Fatal("no kernel ID for sentinel_cfg")
	}
	cfg := pinnedConfig(t, dir)

	for _, tc := range []struct {
		field string
		edit  func(*sentinelSentinelConfig)
	}{
		{"agent_tgid", func(c *sentinelSentinelConfig) { c.AgentTgid = 0 }},
		{"manager_tgid", func(c *sentinelSentinelConfig) { c.ManagerTgid = 4242 }},
		{"acked_seq", func(c *sentinelSentinelConfig) { c.AckedSeq += 1000 }},
	} {
		t.Run(tc.field, func(t *testing.T) {
			writeConfig(t, cfg, tc.edit)
			_, err := s.Check()
			var te *SentinelTamperError
			if !errors.Is(err, ErrSentinelTampered) || !errors.As(err, &te) || te.Field != tc.field {
				t.Fatalf("Check after changing %s: %v", tc.field, err)
			}
			// The acknowledgement restores the configuration.
			rep, err := s.Events()
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Ack(rep.Through); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Check(); err != nil {
				t.Fatalf("after the acknowledgement: %v", err)
			}
		})
	}

	t.Run("blinded Sentinel records no SIGKILL", func(t *testing.T) {
		writeConfig(t, cfg, func(c *sentinelSentinelConfig) { c.AgentTgid = 0 })
		before, err := s.Events()
		if err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("kill", "-KILL", strconv.Itoa(pid)).CombinedOutput(); err != nil {
			t.Fatalf("kill: %v: %s", err, out)
		}
		_ = agent.Wait()
		after, err := s.Events()
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range after.Events {
			if e.Kind == EventSignal && e.TargetPID == pid && e.Seq > before.Through {
				t.Fatalf("a blinded Sentinel recorded %+v", e)
			}
		}
		if _, err := s.Check(); !errors.Is(err, ErrSentinelTampered) {
			t.Fatalf("the blinding is not reported: %v", err)
		}
	})
}

// TestSentinelBlindedWhileDown: root zeroes agent_tgid while no agent runs;
// the next agent reports it until a committed pulse acknowledges it.
func TestSentinelBlindedWhileDown(t *testing.T) {
	requireKernel(t)
	testutil.RequireTools(t, "sleep")
	dir := tempPinDir(t)
	// A stand-in agent, so this process's program loads are recorded.
	agent := startChild(t, exec.Command("sleep", "60"))
	m1, _ := loadTestManager(t, Options{PinDir: dir, AgentPID: agent.Process.Pid})
	if _, err := m1.Sentinel().Check(); err != nil {
		t.Fatalf("first load: %v", err)
	}
	// Give the ring a record (the test process loads a program).
	trivialProgram(t, "pulse_tamper_t", 0)
	m1.Close()
	writeConfig(t, pinnedConfig(t, dir), func(c *sentinelSentinelConfig) { c.AgentTgid = 0 })

	m2, _ := loadTestManager(t, Options{PinDir: dir, AgentPID: agent.Process.Pid})
	_, err := m2.Sentinel().Check()
	var te *SentinelTamperError
	if !errors.As(err, &te) || te.Field != "agent_tgid" || te.Got != 0 {
		t.Fatalf("restarted agent's check: %v", err)
	}
	rep, err := m2.Sentinel().Events()
	if err != nil {
		t.Fatal(err)
	}
	if err := m2.Sentinel().Ack(rep.Through); err != nil {
		t.Fatal(err)
	}
	if _, err := m2.Sentinel().Check(); err != nil {
		t.Fatalf("after the acknowledgement: %v", err)
	}

	// Honest side: a clean restart reports nothing.
	m2.Close()
	m3, _ := loadTestManager(t, Options{PinDir: dir, AgentPID: agent.Process.Pid})
	if _, err := m3.Sentinel().Check(); err != nil {
		t.Fatalf("clean restart: %v", err)
	}
}

// TestSentinelCursorIsTheAgents: a cursor moved ahead in sentinel_cfg hides
// nothing from the running agent, which reads from its own acknowledgement;
// the report's counter is the kernel's.
func TestSentinelCursorIsTheAgents(t *testing.T) {
	requireKernel(t)
	testutil.RequireTools(t, "sleep")
	dir := tempPinDir(t)
	agent := startChild(t, exec.Command("sleep", "60"))
	m, _ := loadTestManager(t, Options{PinDir: dir, AgentPID: agent.Process.Pid})
	s := m.Sentinel()
	rep, err := s.Events()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(rep.Through); err != nil {
		t.Fatal(err)
	}
	trivialProgram(t, "pulse_tamper_t", 0)
	writeConfig(t, pinnedConfig(t, dir), func(c *sentinelSentinelConfig) { c.AckedSeq += 1 << 20 })
	rep2, err := s.EventsUpTo(0)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep2.Events) == 0 || rep2.Events[0].Seq != rep.Through+1 || rep2.NextSeq < rep2.Events[len(rep2.Events)-1].Seq {
		t.Fatalf("after the cursor moved: %+v (acknowledged %d)", rep2, rep.Through)
	}
	if _, err := s.Check(); !errors.Is(err, ErrSentinelTampered) {
		t.Fatalf("moved cursor not reported: %v", err)
	}
	one, err := s.EventsUpTo(1)
	if err != nil || len(one.Events) != 1 || (!one.Truncated && one.NextSeq > one.Through) {
		t.Fatalf("bounded read: %+v %v", one, err)
	}
}

func TestCompareSentinelConfig(t *testing.T) {
	want := SentinelConfig{AgentPID: 10, ManagerPID: 1, AckedSeq: 5}
	for _, tc := range []struct {
		got   SentinelConfig
		field string
	}{
		{want, ""},
		{SentinelConfig{AgentPID: 0, ManagerPID: 1, AckedSeq: 5}, "agent_tgid"},
		{SentinelConfig{AgentPID: 10, ManagerPID: 0, AckedSeq: 5}, "manager_tgid"},
		{SentinelConfig{AgentPID: 10, ManagerPID: 1, AckedSeq: 4}, "acked_seq"},
	} {
		err := compareSentinelConfig(want, tc.got)
		var te *SentinelTamperError
		switch {
		case tc.field == "" && err != nil:
			t.Errorf("%+v: %v", tc.got, err)
		case tc.field != "" && (!errors.As(err, &te) || te.Field != tc.field || !errors.Is(err, ErrSentinelTampered)):
			t.Errorf("%+v: %v, want field %s", tc.got, err, tc.field)
		}
	}
}
