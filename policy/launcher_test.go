package policy

import (
	"strings"
	"testing"
)

const launcherPolicy = `policy "kiosk" {
  match {
    agents = ["*"]
  }
  tpm = "required"
  agent_binary {
    require_launcher = true
    allow = ["` + dLauncherAgent + `"]
  }
}
`

const dLauncherAgent = "1111111111111111111111111111111111111111111111111111111111111111"

// TestPolicyRequireLauncher: with require_launcher the running agent
// binary must have been measured by pulse-agent launch; a self-measured
// one is denied, and so is evidence that does not say.
func TestPolicyRequireLauncher(t *testing.T) {
	set := mustParse(t, "kiosk.hcl", launcherPolicy)
	rt := func(bs ...AgentBinaryRecord) Evidence {
		return Evidence{AgentID: "k-1", TPM: true, Runtime: &RuntimeEvidence{AgentBinarySHA256: dLauncherAgent, AgentBinaries: bs, BPFPrograms: map[string]string{}}}
	}
	for _, c := range []struct {
		name string
		ev   Evidence
		want string
	}{
		{"launched", rt(AgentBinaryRecord{SHA256: dLauncherAgent}), ""},
		{"relaunched", rt(AgentBinaryRecord{SHA256: dLauncherAgent}, AgentBinaryRecord{SHA256: dLauncherAgent}), ""},
		{"self-measured", rt(AgentBinaryRecord{SHA256: dLauncherAgent, SelfMeasured: true}), "measured itself"},
		{"launched, then restarted without the launcher", rt(AgentBinaryRecord{SHA256: dLauncherAgent}, AgentBinaryRecord{SHA256: dLauncherAgent, SelfMeasured: true}), "measured itself"},
		{"unknown", rt(), "does not say how the agent binary was measured"},
	} {
		t.Run(c.name, func(t *testing.T) {
			res := set.Evaluate(c.ev, at(defaultRunAt))
			if c.want == "" {
				if res.Denied {
					t.Fatalf("denied: %+v", res.Findings)
				}
				return
			}
			if !res.Denied || len(res.Findings) != 1 || res.Findings[0].Rule != "agent_binary" || !strings.Contains(res.Findings[0].Message, c.want) {
				t.Fatalf("findings %+v, want agent_binary %q", res.Findings, c.want)
			}
		})
	}
	// Without require_launcher a self-measured build on the allow list passes.
	lax := mustParse(t, "lax.hcl", strings.Replace(launcherPolicy, "    require_launcher = true\n", "", 1))
	if res := lax.Evaluate(rt(AgentBinaryRecord{SHA256: dLauncherAgent, SelfMeasured: true}), at(defaultRunAt)); res.Denied {
		t.Fatalf("denied without require_launcher: %+v", res.Findings)
	}
}
