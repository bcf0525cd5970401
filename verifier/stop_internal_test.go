package verifier

import (
	"strings"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/policy"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/verifier/store"
)

// TestJudgeStop: the severity and shelter of a planned stop for each
// combination of maintenance window, stopped_by and heartbeat.
func TestJudgeStop(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	set, diags := policy.Parse("p.hcl", []byte(`policy "p" {
  match {
    agents = ["*"]
  }
  tpm = "required"
  heartbeat {
    interval = "10m"
    missed   = 3
  }
  planned_stop {
    stopped_by  = ["systemd"]
    max_offline = "2h"
  }
}
`))
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	pol := set.Policies()[0]
	window := func(d time.Duration) *store.Maintenance {
		return &store.Maintenance{AgentID: "a", Until: now.Add(d), By: "alice", At: now.Add(-time.Minute)}
	}
	for _, c := range []struct {
		name    string
		pol     *policy.Policy
		m       *store.Maintenance
		sender  string
		basis   StopBasis
		sev     int
		shelter time.Duration
	}{
		{"unexpected", pol, nil, "kill", StopUnexpected, 2, 2 * time.Hour},
		{"no sender", pol, nil, "", StopUnexpected, 2, 2 * time.Hour},
		{"stopped_by", pol, nil, "systemd", StopAllowedSender, 4, 2 * time.Hour},
		{"window", pol, window(time.Hour), "kill", StopMaintenance, 4, time.Hour},
		{"window wins over stopped_by", pol, window(5 * time.Hour), "systemd", StopMaintenance, 4, 5 * time.Hour},
		{"window closed", pol, window(-time.Second), "kill", StopUnexpected, 2, 2 * time.Hour},
		{"window shorter than the heartbeat deadline", pol, window(time.Minute), "kill", StopMaintenance, 4, 30 * time.Minute},
		{"no policy", nil, nil, "systemd", StopUnexpected, 2, policy.DefaultMaxOffline},
	} {
		t.Run(c.name, func(t *testing.T) {
			j := judgeStop(c.pol, c.m, c.sender, now)
			if j.Basis != c.basis || j.Severity != c.sev || j.Shelter != c.shelter {
				t.Fatalf("judged %+v, want basis %d severity %d shelter %s", j, c.basis, c.sev, c.shelter)
			}
		})
	}
}

// TestDescribeStop: the verdict message names the signal and, when
// Sentinel recorded it, the sender's pid, command name and uid; a sender
// name is quoted and bounded.
func TestDescribeStop(t *testing.T) {
	for _, c := range []struct {
		name string
		ps   *pulsev1.PlannedStop
		want string
	}{
		{"recorded", &pulsev1.PlannedStop{Signo: 15, Signal: &pulsev1.SentinelEvent{Kind: pulsev1.SentinelEvent_KIND_SIGNAL, SenderPid: 1, SenderComm: "systemd", Signal: 15}},
			`SIGTERM (signal 15) from pid 1 "systemd" (uid 0), as Sentinel recorded it`},
		{"uid", &pulsev1.PlannedStop{Signo: 2, Signal: &pulsev1.SentinelEvent{Kind: pulsev1.SentinelEvent_KIND_SIGNAL, SenderPid: 77, SenderComm: "bash", Signal: 2, Value: 1000}},
			`SIGINT (signal 2) from pid 77 "bash" (uid 1000), as Sentinel recorded it`},
		{"not recorded", &pulsev1.PlannedStop{Signo: 15}, "SIGTERM (signal 15); sender not recorded (no Sentinel record)"},
		{"odd signal", &pulsev1.PlannedStop{Signo: 999}, "signal 999; sender not recorded (no Sentinel record)"},
		{"long name", &pulsev1.PlannedStop{Signo: 15, Signal: &pulsev1.SentinelEvent{Kind: pulsev1.SentinelEvent_KIND_SIGNAL, SenderComm: strings.Repeat("x", 100) + "\n"}},
			`"` + strings.Repeat("x", 32) + `..."`},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := describeStop(c.ps); !strings.Contains(got, c.want) {
				t.Fatalf("describeStop = %q, want it to contain %q", got, c.want)
			}
		})
	}
}
