package e2e

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/pulse-attest/pulse/bpf"
	"github.com/pulse-attest/pulse/internal/pki"
	"github.com/pulse-attest/pulse/internal/testutil"
	"github.com/pulse-attest/pulse/simulator/simtest"
	"github.com/pulse-attest/pulse/tpm"
	"github.com/pulse-attest/pulse/tpm/eventlog"
	"github.com/pulse-attest/pulse/verifier/store"
)

// drillPolicy is bpfFleetPolicy with extra HCL inside the policy block.
func drillPolicy(extra string) string {
	return strings.Replace(bpfFleetPolicy, "  sentinel {", extra+"  sentinel {", 1)
}

// TestAlertsDrill: the attacks and faults a security team must be told
// about, each done the way an attacker or a fault does it, against the real
// verifier and the real agent (started through its measuring launcher,
// eBPF loaded on the real kernel, swtpm). Each step asserts the verdict,
// the alert's kind and severity, its record in the hash-chained audit log
// and exactly one signed webhook delivery anchored to that record:
//
//   - refused handshakes (curl and openssl s_client, without a certificate
//     and with one from a foreign CA; curl with the verifier's own
//     certificate) counted per cause in pulse_refused_total, logged with
//     the remote address and subject, the burst alerted as probe;
//   - a pinned program replaced under its pin name (bpftool prog pin id):
//     bpf_program_changed;
//   - the agent binary swapped, no allow-list in the policy: binary_changed;
//   - a pinned program removed: bpf_program_missing;
//   - a policy edit with a syntax error: policy_reload_failed naming
//     file:line, once for that content; the recovery logged;
//   - the agent binary swapped under an agent_binary allow-list:
//     binary_changed;
//   - SIGKILL of the agent by a shell: compromised (BLINDED), then after
//     the restart agent_signalled naming the shell's pid, comm and uid;
//   - the agent restarted without its TPM (tpm = "none"): tpm_downgrade;
//   - the runtime PCR extended behind the agent's back: untrusted;
//   - a firmware PCR changed: untrusted;
//   - the audit log's tail torn while the verifier is stopped:
//     audit_chain_broken, the verifier serves, pulsectl audit verify
//     reports each segment.
func TestAlertsDrill(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireTools(t, "bpftool", "curl", "openssl", "sh")
	sw := startTPM(t, "rhel8-uefi", false)
	if sw == nil {
		return
	}
	f := newFleet(t, bpfFleetPolicy, sw)
	d := newDrill(t, f)
	suffix := make([]byte, 4)
	rand.Read(suffix) //nolint:errcheck
	pinDir := "/sys/fs/bpf/pulse-e2e-drill-" + hex.EncodeToString(suffix)
	t.Cleanup(func() { bpf.RemoveAll(pinDir) })

	const id = "edge-drill"
	agentBin := filepath.Join(f.dir, "pulse-agent")
	copyBinary(t, bin("pulse-agent"), agentBin, nil)
	digests := []string{fileSHA256(t, agentBin)}
	cfg := f.agentConfig(id, sw, "")
	replaceInFile(t, cfg, "bpf {\n  enabled = false\n}", "bpf {\n  enabled = true\n  pin_dir = \""+pinDir+"\"\n}")
	f.launchAgent(id, cfg, agentBin)
	f.waitVerdict(id, trusted, "REASON_OK", 45*time.Second)
	// Honest: a few pulses, no alert of any kind for the agent.
	since := d.lastPulseAt(t, id)
	waitFor(t, "two more pulses", func() bool { return d.lastPulseAt(t, id).After(since.Add(3 * time.Second)) })
	f.waitVerdict(id, trusted, "REASON_OK", 5*time.Second)
	if all, err := d.db().ListAlerts(context.Background(), store.AlertFilter{AgentID: id}); err != nil || len(all) != 0 {
		t.Fatalf("the honest agent raised alerts: %v %v", all, err)
	}
	progs := pinnedPrograms(t, pinDir)
	if len(progs) < 2 {
		t.Fatalf("agent pinned %d programs under %s: %v", len(progs), pinDir, progs)
	}
	// relaunch restarts the agent (an orderly stop) with the binary on disk.
	relaunch := func(before func()) {
		t.Helper()
		f.stopAgent(id, syscall.SIGTERM)
		if before != nil {
			before()
		}
		f.launchAgent(id, cfg, agentBin)
	}
	// swap puts another build of the agent on disk, as an attacker with
	// root would, and returns its digest.
	swap := func(tag string) string {
		t.Helper()
		copyBinary(t, bin("pulse-agent"), agentBin, []byte("\x00drill build "+tag))
		sum := fileSHA256(t, agentBin)
		digests = append(digests, sum)
		return sum
	}

	drillStep(t, "refused handshakes counted by cause", func(t *testing.T) {
		foreign := foreignAgentCert(t, f.dir)
		// The verifier's own certificate, from the right CA, has the
		// wrong role for the agent port.
		own := [2]string{filepath.Join(f.dir, "pki", "verifier.pem"), filepath.Join(f.dir, "pki", "verifier-key.pem")}
		causes := []string{"no_certificate", "unknown_authority", "wrong_role"}
		count := map[string]float64{}
		for _, c := range causes {
			count[c] = d.refused(t, c)
		}
		url := "https://" + f.addr() + "/pulse.v1.Attestation/Pulse"
		curl := func(cert [2]string) []string {
			args := []string{"curl", "-sS", "-k", "--max-time", "5"}
			if cert[0] != "" {
				args = append(args, "--cert", cert[0], "--key", cert[1])
			}
			return append(args, url)
		}
		sClient := func(cert [2]string) []string {
			args := []string{"openssl", "s_client", "-connect", f.addr(), "-servername", "localhost", "-tls1_3"}
			if cert[0] != "" {
				args = append(args, "-cert", cert[0], "-key", cert[1])
			}
			return args
		}
		probes := []struct {
			name  string
			cmd   []string
			cause string
		}{
			{"curl without a certificate", curl([2]string{}), "no_certificate"},
			{"curl with a foreign CA's certificate", curl(foreign), "unknown_authority"},
			{"openssl s_client without a certificate", sClient([2]string{}), "no_certificate"},
			{"openssl s_client with a foreign CA's certificate", sClient(foreign), "unknown_authority"},
			{"curl with the verifier's own certificate", curl(own), "wrong_role"},
		}
		for _, p := range probes {
			cmd := exec.Command(p.cmd[0], p.cmd[1:]...)
			cmd.Stdin = strings.NewReader("")
			out, err := cmd.CombinedOutput()
			if p.cmd[0] == "curl" && err == nil {
				t.Fatalf("%s: the agent port answered: %s", p.name, out)
			}
			count[p.cause]++
			// Each probe moves its own cause's counter by one, and no other.
			d.waitRefused(t, p.cause, count[p.cause])
			for _, c := range causes {
				if got := d.refused(t, c); got != count[c] {
					t.Errorf("%s: pulse_refused_total cause %s = %v, want %v", p.name, c, got, count[c])
				}
			}
		}
		if len(probes) != drillProbeAlertAfter {
			t.Fatalf("%d probes, the verifier alerts after %d", len(probes), drillProbeAlertAfter)
		}
		d.expectAlert(t, "", "probe", 3, "", fmt.Sprintf("%d TLS handshakes from 127.0.0.1 refused", drillProbeAlertAfter))
		// Each refusal is logged with the remote address, and the
		// certificate's subject where there is one.
		logged, err := os.ReadFile(f.verifier.log)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range causes {
			re := regexp.MustCompile(`refused agent connection: cause=` + c + ` remote_addr=127\.0\.0\.1:\d+` + map[bool]string{true: ` peer_subject=`, false: ""}[c != "no_certificate"])
			if n := len(re.FindAllString(string(logged), -1)); n != int(count[c]) {
				t.Errorf("verifier log has %d refusals of cause %s matching %s, want %v", n, c, re, count[c])
			}
		}
		// The honest agent was never refused meanwhile.
		f.waitVerdict(id, trusted, "REASON_OK", 10*time.Second)
	})

	drillStep(t, "pinned program replaced under its pin name", func(t *testing.T) {
		d.step(t)
		name := progs[0]
		for _, p := range progs {
			if p == "sentinel_signal" {
				name = p
			}
		}
		path := filepath.Join(pinDir, name)
		impostor, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "impostor", Type: ebpf.SocketFilter, License: "GPL",
			Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}})
		if err != nil {
			t.Fatal(err)
		}
		defer impostor.Close()
		info, err := impostor.Info()
		if err != nil {
			t.Fatal(err)
		}
		progID, ok := info.ID()
		if !ok {
			t.Fatal("the kernel did not report the impostor's program ID")
		}
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		sh(t, "bpftool", "prog", "pin", "id", strconv.Itoa(int(progID)), path)
		f.waitVerdict(id, untrusted, "REASON_BPF_PROGRAM_CHANGED", 20*time.Second)
		d.expectAlert(t, id, "bpf_program_changed", 1, "REASON_BPF_PROGRAM_CHANGED", name)
		d.quiet(t, id, "bpf_program_changed", "untrusted")
	})

	drillStep(t, "agent binary swapped without an allow-list", func(t *testing.T) {
		d.step(t)
		var b string
		relaunch(func() { b = swap("B") })
		f.waitVerdict(id, untrusted, "REASON_BINARY_CHANGED", 45*time.Second)
		d.expectAlert(t, id, "binary_changed", 1, "REASON_BINARY_CHANGED", b[:12])
		// The operator approves the build: TRUSTED, no further alert.
		if err := d.db().AddUpdateWindow(context.Background(), &store.UpdateWindow{Digest: b, Agents: []string{id},
			Start: time.Now().Add(-time.Minute), End: time.Now().Add(time.Hour), CreatedBy: "operator:drill"}); err != nil {
			t.Fatal(err)
		}
		f.waitVerdict(id, trusted, "REASON_OK", 20*time.Second)
		d.noNewAlert(t, id, "binary_changed")
	})

	drillStep(t, "pinned program removed", func(t *testing.T) {
		d.step(t)
		name := progs[len(progs)-1]
		if err := os.Remove(filepath.Join(pinDir, name)); err != nil {
			t.Fatal(err)
		}
		f.waitVerdict(id, untrusted, "REASON_BPF_PROGRAM_MISSING", 20*time.Second)
		d.expectAlert(t, id, "bpf_program_missing", 1, "REASON_BPF_PROGRAM_MISSING", name)
		d.quiet(t, id, "bpf_program_missing", "untrusted")
	})

	policyFile := filepath.Join(f.dir, "policy.hcl")
	allowList := func(ds []string) string {
		q := make([]string, len(ds))
		for i, x := range ds {
			q[i] = strconv.Quote(x)
		}
		return "  agent_binary {\n    severity = 1\n    allow = [" + strings.Join(q, ", ") + "]\n  }\n"
	}

	drillStep(t, "policy edit with a syntax error", func(t *testing.T) {
		d.step(t)
		broken := drillPolicy("  agent_binary {\n    allow = [\"unterminated\n  }\n")
		line := 0
		for i, l := range strings.Split(broken, "\n") {
			if strings.Contains(l, `"unterminated`) {
				line = i + 1
			}
		}
		if err := os.WriteFile(policyFile, []byte(broken), 0o644); err != nil {
			t.Fatal(err)
		}
		a := d.expectAlert(t, "", "policy_reload_failed", 3, "", fmt.Sprintf("policy.hcl:%d", line))
		t.Logf("policy_reload_failed: %s", a.Message)
		// The same broken content, written again, is not alerted again.
		if err := os.WriteFile(policyFile, []byte(broken), 0o644); err != nil {
			t.Fatal(err)
		}
		// The agent still pulses under the policy in force (two pulses
		// span more than a policy poll interval).
		since := d.lastPulseAt(t, id)
		waitFor(t, "two pulses under the policy in force", func() bool { return d.lastPulseAt(t, id).After(since.Add(3 * time.Second)) })
		d.noNewAlert(t, "", "policy_reload_failed")
		// Fixed (with an allow-list of the builds so far): the recovery
		// is logged.
		if err := os.WriteFile(policyFile, []byte(drillPolicy(allowList(digests))), 0o644); err != nil {
			t.Fatal(err)
		}
		waitLog(t, f.verifier.log, "policy reloaded", 20*time.Second)
	})

	drillStep(t, "agent binary swapped under an allow-list", func(t *testing.T) {
		d.step(t)
		var c string
		relaunch(func() { c = swap("C") })
		v := d.waitReasonIn(t, id, untrusted, 45*time.Second, "REASON_BINARY_CHANGED", "REASON_POLICY_DENIED")
		t.Logf("swap under an allow-list: %s/%s: %s", v.Verdict, v.Reason, v.Message)
		d.expectAlert(t, id, "binary_changed", 1, v.Reason, c[:12])
		d.quiet(t, id, "binary_changed", "untrusted")
		// The operator adds the build to the allow-list: TRUSTED.
		if err := os.WriteFile(policyFile, []byte(drillPolicy(allowList(digests))), 0o644); err != nil {
			t.Fatal(err)
		}
		f.waitVerdict(id, trusted, "REASON_OK", 30*time.Second)
	})

	drillStep(t, "SIGKILL by a shell", func(t *testing.T) {
		d.step(t)
		f.mu.Lock()
		p := f.agents[id]
		delete(f.agents, id)
		f.mu.Unlock()
		killer := exec.Command("sh", "-c", "kill -KILL "+strconv.Itoa(p.cmd.Process.Pid))
		if out, err := killer.CombinedOutput(); err != nil {
			t.Fatalf("kill: %v: %s", err, out)
		}
		shPID := killer.Process.Pid
		<-p.done
		f.waitVerdict(id, "VERDICT_BLINDED", "REASON_SILENT", 40*time.Second)
		d.expectAlert(t, id, "compromised", 1, "REASON_SILENT")
		f.launchAgent(id, cfg, agentBin)
		d.expectAlert(t, id, "agent_signalled", 1, "REASON_AGENT_SIGNALLED",
			fmt.Sprintf("pid %d", shPID), `"sh"`, "uid 0", "SIGKILL")
		f.waitVerdict(id, trusted, "REASON_OK", 30*time.Second)
	})

	drillStep(t, "agent restarted without its TPM", func(t *testing.T) {
		d.step(t)
		// Root restarts the agent with tpm = "none": mTLS-only pulses from
		// an agent enrolled with a TPM.
		b, err := os.ReadFile(cfg)
		if err != nil {
			t.Fatal(err)
		}
		noTPM := filepath.Join(filepath.Dir(cfg), "agent-notpm.hcl")
		s := strings.Replace(string(b), "tpm          = \""+sw.Spec()+"\"", "tpm          = \"none\"", 1)
		if s == string(b) {
			t.Fatal("no tpm line in the agent configuration")
		}
		if err := os.WriteFile(noTPM, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		f.stopAgent(id, syscall.SIGTERM)
		const refusal = "enrollment refused: agent_id=" + id
		before := countInFile(t, f.verifier.log, refusal)
		f.launchAgent(id, noTPM, agentBin)
		// The agent tries an mTLS-only enrollment: refused, and alerted
		// once. The refusal is not a verdict: the agent stays as its
		// orderly stop left it (OFFLINE), never TRUSTED.
		d.expectAlert(t, id, "tpm_downgrade", 1, "REASON_TPM_DOWNGRADE", "without one")
		waitFor(t, "three refused enrollments", func() bool { return countInFile(t, f.verifier.log, refusal) >= before+3 })
		d.noNewAlert(t, id, "tpm_downgrade")
		if v, _ := d.show(id); v.Verdict != "VERDICT_OFFLINE" {
			t.Errorf("verdict %s/%s (%s) during the downgrade attempt, want OFFLINE from the stop", v.Verdict, v.Reason, v.Message)
		}
	})

	drillStep(t, "runtime PCR extended behind the agent's back", func(t *testing.T) {
		d.step(t)
		relaunch(func() { extendPCR(t, sw.Spec(), 14, "rootkit") })
		f.waitVerdict(id, untrusted, "REASON_RUNTIME_LOG_REPLAY", 45*time.Second)
		d.expectAlert(t, id, "untrusted", 1, "REASON_RUNTIME_LOG_REPLAY")
	})

	drillStep(t, "firmware PCR changed", func(t *testing.T) {
		d.step(t)
		raw, err := os.ReadFile(sw.BootLogPath())
		if err != nil {
			t.Fatal(err)
		}
		relaunch(func() {
			// A reboot of the same firmware clears the runtime PCR's
			// damage; then PCR 0 is extended outside the firmware log.
			if err := sw.Reboot(); err != nil {
				t.Fatal(err)
			}
			if _, err := sw.Boot(raw); err != nil {
				t.Fatal(err)
			}
			extendPCR(t, sw.Spec(), 0, "firmware implant")
		})
		v := d.waitReasonIn(t, id, untrusted, 45*time.Second, "REASON_FIRMWARE_LOG_REPLAY", "REASON_PCR_DIGEST")
		t.Logf("firmware PCR changed: %s/%s: %s", v.Verdict, v.Reason, v.Message)
		d.expectAlert(t, id, "untrusted", 1, v.Reason)
	})

	drillStep(t, "audit log tail damaged, verifier restarted", func(t *testing.T) {
		d.step(t)
		auditLog := filepath.Join(f.dir, "audit.log")
		f.verifier.stop(syscall.SIGTERM)
		// Intact before the damage: one segment, exit 0.
		if out, code := runCode(t, "pulsectl", "audit", "verify", "--file", auditLog); code != 0 || !strings.HasPrefix(out, "ok: ") {
			t.Fatalf("pulsectl audit verify of the intact log: exit %d: %s", code, out)
		}
		lines := auditLines(t, auditLog)
		if len(lines) < 3 {
			t.Fatalf("audit log has %d records", len(lines))
		}
		// A torn last record, as a crash or an editor leaves it.
		torn := strings.Join(lines[:len(lines)-1], "\n") + "\n" + lines[len(lines)-1][:len(lines[len(lines)-1])/2]
		if err := os.WriteFile(auditLog, []byte(torn), 0o600); err != nil {
			t.Fatal(err)
		}
		restarted := time.Now()
		// An immediate restart: the stopped verifier released the lock.
		f.startVerifier()
		d.expectAlert(t, "", "audit_chain_broken", 1, "", fmt.Sprintf("line %d", len(lines)))
		// It serves: the agent's pulses are judged again.
		waitFor(t, "a pulse judged after the restart", func() bool { return d.lastPulseAt(t, id).After(restarted) })
		out, code := runCode(t, "pulsectl", "audit", "verify", "--file", auditLog)
		t.Logf("pulsectl audit verify:\n%s", out)
		if code != 1 {
			t.Errorf("pulsectl audit verify exit %d, want 1 (a break is evidence lost)", code)
		}
		for _, re := range []string{
			`segment 0 \S+audit\.log: broken: \d+ intact records, first broken record seq \d+ at line ` + strconv.Itoa(len(lines)),
			`segment 1 \S+audit\.log\.1: starts with chain_resumed`,
			`segment 1 \S+audit\.log\.1: anchor ok`,
			`segment 1 \S+audit\.log\.1: ok: \d+ records, chain intact`,
			`chain broken in segment 0 at line ` + strconv.Itoa(len(lines)),
		} {
			if !regexp.MustCompile(re).MatchString(out) {
				t.Errorf("pulsectl audit verify output lacks %q", re)
			}
		}
	})
}

// fileSHA256 is the hex SHA-256 of a file.
func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// foreignAgentCert writes an agent certificate for the drill's agent ID
// issued by a CA the verifier does not trust, and returns its cert and key
// paths.
func foreignAgentCert(t *testing.T, dir string) [2]string {
	t.Helper()
	ca, err := pki.NewCA("not the agent CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	is, err := pki.Issue(ca, pki.Request{Role: pki.RoleAgent, ID: "edge-drill"})
	if err != nil {
		t.Fatal(err)
	}
	out := [2]string{filepath.Join(dir, "foreign.pem"), filepath.Join(dir, "foreign-key.pem")}
	if err := is.WriteFiles(out[0], out[1], true); err != nil {
		t.Fatal(err)
	}
	return out
}

// extendPCR extends pcr's SHA-256 bank with the digest of what, through the
// TPM directly (the agent is stopped: swtpm serves one client).
func extendPCR(t *testing.T, spec string, pcr uint32, what string) {
	t.Helper()
	dev, err := tpm.Open(spec, simtest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	junk := sha256.Sum256([]byte(what))
	if err := dev.Extend(pcr, map[uint16][]byte{uint16(eventlog.AlgSHA256): junk[:]}); err != nil {
		t.Fatal(err)
	}
}
