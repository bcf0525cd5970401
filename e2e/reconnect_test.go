package e2e

import (
	"context"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
)

// reconnectInterval is the heartbeat interval of TestReconnectNoFalseBlinded;
// the policy's grace after a verifier start is the same: an agent must be
// heard from within one interval of the verifier's return.
const reconnectInterval = 2 * time.Second

const reconnectPolicy = `
policy "fleet" {
  match {
    agents = ["*"]
  }
  tpm = "required"
  heartbeat {
    interval = "2s"
    missed   = 2
    grace    = "2s"
  }
  measured_boot {
    secure_boot {}
  }
}
`

// TestReconnectNoFalseBlinded: a verifier stopped (SIGTERM) for three
// intervals, long past every agent's deadline, and started again on the
// same address and store, with a grace of one interval. The agent, whose
// retries are capped at a quarter of the interval and which pulses as soon
// as its connection is back, is TRUSTED by a pulse sent after the return
// within one interval of it, and the store shows no BLINDED verdict and no
// compromised alert.
func TestReconnectNoFalseBlinded(t *testing.T) {
	sw := startTPM(t, "rhel8-uefi", false)
	if sw == nil {
		return
	}
	f := newFleet(t, reconnectPolicy, sw)
	const id = "edge-r1"
	cfg := f.agentConfig(id, sw, "")
	f.launchAgent(id, cfg, bin("pulse-agent"))
	f.waitVerdict(id, trusted, "REASON_OK", 30*time.Second)
	st := f.store()
	ctx := context.Background()

	// Past the first pulses: the verifier knows the agent's rhythm.
	time.Sleep(2 * reconnectInterval)
	f.verifier.stop(syscall.SIGTERM)
	time.Sleep(3 * reconnectInterval)
	restart := time.Now()
	f.startVerifier()
	back := time.Now()

	// A pulse sent after the return, accepted, within one interval of it.
	deadline := back.Add(reconnectInterval)
	for {
		a, err := st.GetAgent(ctx, id)
		if err == nil && a.LastPulseAt.After(restart) && a.LastVerdict == int32(pulsev1.Verdict_VERDICT_TRUSTED) {
			t.Logf("first pulse %s after the verifier accepted connections again", a.LastPulseAt.Sub(back).Round(time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			if err == nil {
				t.Fatalf("no trusted pulse within %s of the verifier's return: last pulse at %s (return at %s), verdict %s",
					reconnectInterval, a.LastPulseAt.Format(time.RFC3339Nano), back.Format(time.RFC3339Nano), pulsev1.Verdict(a.LastVerdict))
			}
			t.Fatalf("no trusted pulse within %s of the verifier's return: %v", reconnectInterval, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	f.waitVerdict(id, trusted, "REASON_OK", reconnectInterval)

	// Past the grace and interval x missed: every sweep that could have
	// found the agent silent has run.
	time.Sleep(3 * reconnectInterval)
	f.waitVerdict(id, trusted, "REASON_OK", reconnectInterval)
	hist, err := st.History(ctx, id, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range hist {
		if e.Verdict == int32(pulsev1.Verdict_VERDICT_BLINDED) {
			t.Fatalf("false BLINDED after a %s verifier outage: %s at %s", 3*reconnectInterval, e.Message, e.At.Format(time.RFC3339Nano))
		}
	}
	if n := f.alerts(id, "compromised"); n != 0 {
		t.Fatalf("%d false compromised alerts after a verifier outage", n)
	}
	// The pulse came from the reconnect, not from a retry timer.
	log, err := os.ReadFile(f.dir + "/agent-" + id + ".log")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(log), "reconnected to verifier; pulsing now") {
		t.Fatal("the agent did not log a reconnect")
	}
}
