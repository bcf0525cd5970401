package verifier_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/verifier/admin"
	"github.com/pulse-attest/pulse/verifier/config"
	"github.com/pulse-attest/pulse/verifier/store"
	"github.com/pulse-attest/pulse/verifier/verifiertest"
)

// stopEnv is a verifier whose policy has stopSections, with its own
// swtpm (an agent's runtime PCR is its own).
func stopEnv(t *testing.T) *env {
	return newEnvCfg(t, "rhel8-uefi", fleetPolicy(t, stopSections))
}

const stopSections = `  planned_stop {
    stopped_by  = ["systemd"]
    max_offline = "2h"
  }
`

// stopMark marks a pulse as the agent's last before a SIGTERM sent by
// comm ("" : Sentinel recorded no sender).
func stopMark(comm string) func(*parts) {
	return func(p *parts) {
		ps := &pulsev1.PlannedStop{Signo: int32(syscall.SIGTERM)}
		if comm != "" {
			ps.Signal = &pulsev1.SentinelEvent{Kind: pulsev1.SentinelEvent_KIND_SIGNAL, SenderPid: 1, SenderComm: comm, Signal: int32(syscall.SIGTERM)}
		}
		p.Payload.PlannedStop = ps
	}
}

// TestPlannedStop: a pulse marked planned_stop that passes every check is
// OFFLINE/AGENT_STOPPED, with one agent_stopped alert: severity 4 inside
// an operator's maintenance window or when the recorded sender matches
// stopped_by, else severity 2. Its deadline moves to the end of the
// window (or max_offline), so the agent is not BLINDED while it stays
// away, and its next ordinary pulse is TRUSTED again; a second stop within
// the hour raises no second alert. No compromised alert.
func TestPlannedStop(t *testing.T) {
	for _, c := range []struct {
		name       string
		comm       string
		window     time.Duration
		wantSev    int
		wantWithin time.Duration // the deadline, from now
	}{
		{"unexpected sender", "kill", 0, 2, 2 * time.Hour},
		{"no sender recorded", "", 0, 2, 2 * time.Hour},
		{"maintenance window", "kill", 30 * time.Minute, 4, 30 * time.Minute},
		{"stopped_by sender", "systemd", 0, 4, 2 * time.Hour},
		{"maintenance window and stopped_by", "systemd", 45 * time.Minute, 4, 45 * time.Minute},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := stopEnv(t)
			if e == nil {
				return
			}
			st := e.daemon.Store
			const id = "edge-stop"
			a := e.enrolled(id)
			if c.window > 0 {
				if err := st.SetMaintenance(ctx(t), store.Maintenance{AgentID: id, Until: e.clock.Now().Add(c.window), By: "alice", At: e.clock.Now()}); err != nil {
					t.Fatal(err)
				}
			}
			resp := a.Pulse(stopMark(c.comm))
			wantVerdict(t, resp, pulsev1.Verdict_VERDICT_OFFLINE, pulsev1.Reason_REASON_AGENT_STOPPED)
			al := alertsOf(t, st, id, "agent_stopped")
			if len(al) != 1 || al[0].Severity != c.wantSev {
				t.Fatalf("agent_stopped alerts %+v, want one of severity %d", al, c.wantSev)
			}
			if n := len(alertsOf(t, st, id, "compromised")) + len(alertsOf(t, st, id, "untrusted")); n != 0 {
				t.Fatalf("%d compromised or untrusted alerts for a planned stop", n)
			}
			ops, err := st.GetAgentOps(ctx(t), id)
			if err != nil {
				t.Fatal(err)
			}
			if d := time.Until(ops.Deadline); d < c.wantWithin-time.Minute || d > c.wantWithin+time.Minute {
				t.Fatalf("deadline in %s, want about %s", d.Round(time.Second), c.wantWithin)
			}
			// It comes back: judged as usual.
			wantVerdict(t, a.Pulse(nil), trusted, pulsev1.Reason_REASON_OK)
			if ops, _ := st.GetAgentOps(ctx(t), id); time.Until(ops.Deadline) > 10*time.Minute {
				t.Fatalf("deadline still %s away after an ordinary pulse", time.Until(ops.Deadline).Round(time.Second))
			}
			// Stopped again within the hour: OFFLINE again, no second alert.
			wantVerdict(t, a.Pulse(stopMark(c.comm)), pulsev1.Verdict_VERDICT_OFFLINE, pulsev1.Reason_REASON_AGENT_STOPPED)
			if al := alertsOf(t, st, id, "agent_stopped"); len(al) != 1 {
				t.Fatalf("%d agent_stopped alerts after a second stop within the hour, want 1", len(al))
			}
		})
	}
}

// TestPlannedStopAttacks: the planned_stop mark shelters nothing on a
// pulse that fails a check: each attack is refused with its own reason,
// the agent is not OFFLINE, and no agent_stopped alert is raised (root
// on the device can stop the agent, but cannot make a forged, replayed or
// unquoted stop count).
func TestPlannedStopAttacks(t *testing.T) {
	for _, c := range []struct {
		name   string
		mut    func(*parts)
		reason pulsev1.Reason
	}{
		{"signature over another payload", func(p *parts) {
			stopMark("systemd")(p)
			p.After = func(r *pulsev1.PulseRequest) { r.Signature[len(r.Signature)-1] ^= 1 }
		}, pulsev1.Reason_REASON_BAD_SIGNATURE},
		{"no quote", func(p *parts) { stopMark("systemd")(p); p.NoQuote = true }, pulsev1.Reason_REASON_TPM_DOWNGRADE},
		{"binary claim differs from the measured one", func(p *parts) {
			stopMark("systemd")(p)
			p.Payload.AgentBinarySha256 = make([]byte, 32)
		}, pulsev1.Reason_REASON_CLAIM_MISMATCH},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := stopEnv(t)
			if e == nil {
				return
			}
			st := e.daemon.Store
			const id = "edge-atk"
			a := e.enrolled(id)
			resp := a.Pulse(c.mut)
			if resp.GetVerdict() == pulsev1.Verdict_VERDICT_OFFLINE || resp.GetReason() != c.reason {
				t.Fatalf("verdict %s/%s (%s), want %s", resp.GetVerdict(), resp.GetReason(), resp.GetMessage(), c.reason)
			}
			if al := alertsOf(t, st, id, "agent_stopped"); len(al) != 0 {
				t.Fatalf("agent_stopped alert for a refused pulse: %+v", al)
			}
			if ops, _ := st.GetAgentOps(context.Background(), id); time.Until(ops.Deadline) > 10*time.Minute {
				t.Fatalf("a refused planned stop moved the deadline %s away", time.Until(ops.Deadline).Round(time.Second))
			}
		})
	}
	// A replay of an accepted planned stop is refused as a replay.
	e := stopEnv(t)
	if e == nil {
		return
	}
	a := e.enrolled("edge-replay")
	req := a.Build(stopMark("systemd"))
	wantVerdict(t, a.Send(req), pulsev1.Verdict_VERDICT_OFFLINE, pulsev1.Reason_REASON_AGENT_STOPPED)
	if resp := a.Send(req); resp.GetVerdict() == pulsev1.Verdict_VERDICT_OFFLINE || resp.GetReason() != pulsev1.Reason_REASON_NONCE_REPLAYED {
		t.Fatalf("replayed planned stop: %s/%s (%s)", resp.GetVerdict(), resp.GetReason(), resp.GetMessage())
	}
}

// TestMaintenanceThroughAdminAPI: an operator opens a maintenance window
// through the admin API (HTTPS, bearer token); it is audit-logged with who
// opened it and until when, listed, refused for an unknown agent or a bad
// duration, and makes the agent's planned stop severity 4.
func TestMaintenanceThroughAdminAPI(t *testing.T) {
	const token = "maintenance-admin-0123456789abcdef"
	var auditLog string
	pol := fleetPolicy(t, stopSections)
	e := newEnvCfg(t, "rhel8-uefi", func(c *config.Config) {
		pol(c)
		c.AdminListen = "127.0.0.1:0"
		c.AdminTokenFile = filepath.Join(filepath.Dir(c.TLS.AgentCA), "admin-token")
		if err := os.WriteFile(c.AdminTokenFile, []byte("alice:"+token+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		auditLog = c.Alerts.AuditLog
	})
	if e == nil {
		return
	}
	cl, err := admin.NewClient(admin.ClientOptions{URL: "https://" + e.daemon.AdminAddr(), CAFile: e.caFile, ServerName: "localhost", Token: token})
	if err != nil {
		t.Fatal(err)
	}
	const id = "edge-maint"
	a := e.enrolled(id)
	for _, c := range []struct {
		name  string
		agent string
		req   admin.MaintenanceRequest
		want  error
	}{
		{"unknown agent", "nobody", admin.MaintenanceRequest{For: "30m"}, admin.ErrNotFound},
		{"no duration", id, admin.MaintenanceRequest{}, admin.ErrInvalid},
		{"negative duration", id, admin.MaintenanceRequest{For: "-5m"}, admin.ErrInvalid},
		{"too long", id, admin.MaintenanceRequest{For: "200h"}, admin.ErrInvalid},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := cl.SetMaintenance(ctx(t), c.agent, c.req); !errors.Is(err, c.want) {
				t.Fatalf("err %v, want %v", err, c.want)
			}
		})
	}
	m, err := cl.SetMaintenance(ctx(t), id, admin.MaintenanceRequest{For: "30m", Reason: "firmware update"})
	if err != nil {
		t.Fatal(err)
	}
	if m.By != "token:alice" || time.Until(m.Until) < 29*time.Minute || time.Until(m.Until) > 31*time.Minute {
		t.Fatalf("window %+v, want alice's for 30m", m)
	}
	l, err := cl.ListMaintenance(ctx(t))
	if err != nil || len(l.Maintenance) != 1 || l.Maintenance[0].AgentID != id {
		t.Fatalf("list %+v %v", l, err)
	}
	raw, err := os.ReadFile(auditLog)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), `"operator_maintenance"`) || !strings.Contains(string(raw), `"firmware update"`) || !strings.Contains(string(raw), id) {
		t.Fatalf("no maintenance record in the audit log:\n%s", raw)
	}
	wantVerdict(t, a.Pulse(stopMark("kill")), pulsev1.Verdict_VERDICT_OFFLINE, pulsev1.Reason_REASON_AGENT_STOPPED)
	if al := alertsOf(t, e.daemon.Store, id, "agent_stopped"); len(al) != 1 || al[0].Severity != 4 {
		t.Fatalf("agent_stopped alerts %+v, want one of severity 4", al)
	}
}

// TestPlannedStopComeback: a planned stop inside a maintenance window
// shelters nothing of what the agent brings back: another binary outside
// an update window is BINARY_CHANGED (severity 1), and another boot is
// noted REBOOTED and judged in full (TRUSTED when its logs replay).
func TestPlannedStopComeback(t *testing.T) {
	for _, c := range []struct {
		name   string
		back   func(e *env, a *verifiertest.Client)
		want   pulsev1.Verdict
		reason pulsev1.Reason
		note   pulsev1.Reason
	}{
		{"another binary", func(e *env, a *verifiertest.Client) {
			a.Binary = sha256.Sum256([]byte("build installed during the maintenance"))
			a.MeasureBinary()
		}, untrusted, pulsev1.Reason_REASON_BINARY_CHANGED, 0},
		{"another boot", func(e *env, a *verifiertest.Client) {
			if err := e.sw.Reboot(); err != nil {
				t.Fatal(err)
			}
			if _, err := e.sw.Boot(e.fwLog); err != nil {
				t.Fatal(err)
			}
			a.Records, a.SentUpTo = nil, 0
			a.MeasureBinary()
		}, trusted, pulsev1.Reason_REASON_OK, pulsev1.Reason_REASON_REBOOTED},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := stopEnv(t)
			if e == nil {
				return
			}
			st := e.daemon.Store
			const id = "edge-back"
			a := e.enrolled(id)
			if err := st.SetMaintenance(ctx(t), store.Maintenance{AgentID: id, Until: e.clock.Now().Add(time.Hour), By: "alice", At: e.clock.Now()}); err != nil {
				t.Fatal(err)
			}
			wantVerdict(t, a.Pulse(stopMark("systemd")), pulsev1.Verdict_VERDICT_OFFLINE, pulsev1.Reason_REASON_AGENT_STOPPED)
			c.back(e, a)
			a.Challenge()
			resp := a.Pulse(nil)
			wantVerdict(t, resp, c.want, c.reason)
			if c.note != 0 && !slices.Contains(resp.GetNotes(), c.note) {
				t.Fatalf("notes %v, want %s", resp.GetNotes(), c.note)
			}
			if c.reason == pulsev1.Reason_REASON_BINARY_CHANGED {
				if al := alertsOf(t, st, id, "binary_changed"); len(al) != 1 || al[0].Severity != 1 {
					t.Fatalf("binary_changed alerts %+v, want one of severity 1", al)
				}
			}
		})
	}
}
