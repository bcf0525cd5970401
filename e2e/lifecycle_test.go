package e2e

import (
	"syscall"
	"testing"
	"time"
)

// The grace after a verifier start must cover the agents' reconnect
// backoff (here up to a few seconds).
const lifecyclePolicy = `
policy "lab" {
  match {
    partitions = ["lab"]
  }
  tpm = "optional"
  heartbeat {
    interval = "2s"
    missed   = 2
    grace    = "10s"
  }
}

policy "fleet" {
  match {
    agents = ["*"]
  }
  tpm = "required"
  heartbeat {
    interval = "2s"
    missed   = 2
    grace    = "10s"
  }
  measured_boot {
    secure_boot {}
  }
}
`

// TestLifecycle: a verifier killed with SIGKILL and restarted keeps every
// agent and verdict and raises no false BLINDED; an agent killed with
// SIGKILL becomes BLINDED with exactly one alert; a host without a TPM is
// DEGRADED where policy allows it.
func TestLifecycle(t *testing.T) {
	sw := startTPM(t, "rhel8-uefi", false)
	if sw == nil {
		return
	}
	f := newFleet(t, lifecyclePolicy, sw)
	cfg := f.agentConfig("edge-1", sw, "")
	f.launchAgent("edge-1", cfg, bin("pulse-agent"))
	f.waitVerdict("edge-1", trusted, "REASON_OK", 30*time.Second)

	lab := f.agentConfig("lab-1", nil, "")
	// tpm = "none" stands for a host without a TPM; partition lab.
	replaceInFile(t, lab, `partition    = "fleet"`, `partition    = "lab"`)
	f.launchAgent("lab-1", lab, bin("pulse-agent"))
	f.waitVerdict("lab-1", "VERDICT_DEGRADED", "REASON_OK", 30*time.Second)

	// Verifier crash and restart: state survives, no false BLINDED.
	f.verifier.stop(syscall.SIGKILL)
	time.Sleep(3 * time.Second) // agents retry with backoff meanwhile
	f.startVerifier()
	f.waitVerdict("edge-1", trusted, "REASON_OK", 30*time.Second)
	time.Sleep(6 * time.Second) // past interval x missed: nobody was silent
	if v, _ := f.show("edge-1"); v.Verdict != trusted {
		t.Fatalf("after verifier restart: %+v", v)
	}
	if n := f.alerts("edge-1", "compromised") + f.alerts("lab-1", "compromised"); n != 0 {
		t.Fatalf("%d false BLINDED alerts after a verifier restart", n)
	}

	// Agent killed: BLINDED within its deadline (2s x 2) plus sweep, one alert.
	f.stopAgent("edge-1", syscall.SIGKILL)
	f.waitVerdict("edge-1", "VERDICT_BLINDED", "REASON_SILENT", 25*time.Second)
	time.Sleep(3 * time.Second)
	if n := f.alerts("edge-1", "compromised"); n != 1 {
		t.Fatalf("%d compromised alerts, want 1", n)
	}
	// It comes back: trusted again, not stuck.
	f.launchAgent("edge-1", cfg, bin("pulse-agent"))
	f.waitVerdict("edge-1", trusted, "REASON_OK", 30*time.Second)
}
