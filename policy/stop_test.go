package policy

import (
	"strings"
	"testing"
	"time"
)

const stopPolicy = `policy "kiosk" {
  match {
    agents = ["*"]
  }
  tpm = "required"
  planned_stop {
    stopped_by  = ["systemd", "runit-*"]
    max_offline = "2h"
  }
}
`

// TestPolicyStoppedBy: stopped_by allows a planned stop by a sender whose
// recorded command name matches one of its globs, and by nothing else; no
// planned_stop block allows no sender and shelters for DefaultMaxOffline.
func TestPolicyStoppedBy(t *testing.T) {
	set := mustParse(t, "kiosk.hcl", stopPolicy)
	p := set.Policies()[0]
	if p.MaxOffline() != 2*time.Hour {
		t.Fatalf("max_offline %s, want 2h", p.MaxOffline())
	}
	for _, c := range []struct {
		comm string
		want string
	}{
		{"systemd", "systemd"},
		{"runit-sv", "runit-*"},
		{"systemd-logind", ""}, // a glob, not a prefix
		{"kill", ""},
		{"bash", ""},
		{"", ""}, // Sentinel recorded no sender
	} {
		t.Run(c.comm, func(t *testing.T) {
			pat, ok := p.StopSender(c.comm)
			if ok != (c.want != "") || pat != c.want {
				t.Fatalf("StopSender(%q) = %q, %v; want %q", c.comm, pat, ok, c.want)
			}
		})
	}
	bare := mustParse(t, "bare.hcl", strings.Replace(launcherPolicy, "    require_launcher = true\n", "", 1)).Policies()[0]
	if pat, ok := bare.StopSender("systemd"); ok {
		t.Fatalf("no planned_stop block allowed %q", pat)
	}
	if bare.MaxOffline() != DefaultMaxOffline {
		t.Fatalf("default max_offline %s, want %s", bare.MaxOffline(), DefaultMaxOffline)
	}
	var none *Policy
	if _, ok := none.StopSender("systemd"); ok || none.MaxOffline() != DefaultMaxOffline {
		t.Fatal("no policy must allow no sender and shelter for the default")
	}
}
