package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPolicyRequireLauncherGolden: the finding require_launcher gives a
// self-measured agent, in enforce and warn mode, and none for a launched
// one, as kept in testdata/launcher/*.golden (quoted in docs/policy.md).
func TestPolicyRequireLauncherGolden(t *testing.T) {
	self := Evidence{AgentID: "kiosk-1", TPM: true, Runtime: &RuntimeEvidence{AgentBinarySHA256: dLauncherAgent,
		AgentBinaries: []AgentBinaryRecord{{SHA256: dLauncherAgent, SelfMeasured: true}}, BPFPrograms: map[string]string{}}}
	launched := Evidence{AgentID: "kiosk-1", TPM: true, Runtime: &RuntimeEvidence{AgentBinarySHA256: dLauncherAgent,
		AgentBinaries: []AgentBinaryRecord{{SHA256: dLauncherAgent}}, BPFPrograms: map[string]string{}}}
	warn := strings.Replace(launcherPolicy, "    require_launcher = true\n", "    require_launcher = true\n    mode = \"warn\"\n", 1)
	for _, c := range []struct {
		name, src  string
		ev         Evidence
		wantDenied bool
	}{
		{"enforce_self", launcherPolicy, self, true},
		{"warn_self", warn, self, false},
		{"enforce_launched", launcherPolicy, launched, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			res := mustParse(t, "kiosk.hcl", c.src).Evaluate(c.ev, at(defaultRunAt))
			if res.Denied != c.wantDenied {
				t.Fatalf("denied %v, want %v: %+v", res.Denied, c.wantDenied, res.Findings)
			}
			var b strings.Builder
			for _, f := range res.Findings {
				b.WriteString(f.String() + "\n")
			}
			golden := filepath.Join("testdata", "launcher", c.name+".golden")
			if *update {
				if err := os.WriteFile(golden, []byte(b.String()), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./policy -run RequireLauncherGolden -update)", err)
			}
			if b.String() != string(want) {
				t.Fatalf("findings differ from %s\n--- got ---\n%s--- want ---\n%s", golden, b.String(), want)
			}
		})
	}
}
