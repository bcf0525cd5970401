package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/simulator"
)

// launcherPolicy requires the launcher: enforced for edge-*, warned for
// warn-*; the test binary's digest is the approved build.
const launcherPolicy = `
policy "enforced" {
  match {
    agents = ["edge-*"]
  }
  tpm = "required"
  heartbeat {
    interval = "2s"
  }
  agent_binary {
    require_launcher = true
    allow = [%[1]q]
  }
}

policy "warned" {
  match {
    agents = ["warn-*"]
  }
  tpm = "required"
  heartbeat {
    interval = "2s"
  }
  agent_binary {
    require_launcher = true
    mode = "warn"
    allow = [%[1]q]
  }
}
`

// TestRequireLauncher: real pulse-agent processes on swtpm under
// agent_binary { require_launcher = true }. An agent started through
// pulse-agent launch (the launcher measured it before exec) is TRUSTED;
// the same binary started directly measures itself (the self-measured
// marker in its runtime log, replayed against the quoted PCR) and is
// UNTRUSTED/POLICY_DENIED with the launcher finding; under mode = "warn"
// it is TRUSTED and the finding reaches the agent as a warning.
func TestRequireLauncher(t *testing.T) {
	var tpms []*simulator.Swtpm
	for range 3 {
		sw := startTPM(t, "rhel8-uefi", false)
		if sw == nil {
			return
		}
		tpms = append(tpms, sw)
	}
	raw, err := os.ReadFile(bin("pulse-agent"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(raw)
	f := newFleet(t, fmt.Sprintf(launcherPolicy, hex.EncodeToString(sum[:])), tpms...)

	f.launchAgent("edge-launched", f.agentConfig("edge-launched", tpms[0], ""), bin("pulse-agent"))
	for i, id := range []string{"edge-self", "warn-self"} {
		cfg := f.agentConfig(id, tpms[i+1], "")
		p := f.start("pulse-agent", "agent-"+id+".log", "run", "--config", cfg)
		f.mu.Lock()
		f.agents[id] = p
		f.mu.Unlock()
	}
	f.waitVerdict("edge-launched", trusted, "REASON_OK", 45*time.Second)
	v := f.waitVerdict("edge-self", untrusted, "REASON_POLICY_DENIED", 45*time.Second)
	if !strings.Contains(v.Message, "measured itself") || !strings.Contains(v.Message, "require_launcher") {
		t.Fatalf("self-measured agent denied for another reason: %s", v.Message)
	}
	f.waitVerdict("warn-self", trusted, "REASON_OK", 45*time.Second)
	// The finding's message names the rule's setting; the agent's own
	// self-measurement warning does not.
	waitLog(t, filepath.Join(f.dir, "agent-warn-self.log"), "(require_launcher)", 10*time.Second)
	log, err := os.ReadFile(filepath.Join(f.dir, "agent-warn-self.log"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(log), "policy finding") || !strings.Contains(string(log), "enforce=false") {
		t.Fatalf("the warn-mode finding did not reach the agent:\n%s", tail(string(log), 20))
	}
	if log, _ := os.ReadFile(filepath.Join(f.dir, "agent-edge-launched.log")); strings.Contains(string(log), "measured itself") {
		t.Fatal("the launched agent measured itself")
	}
}
