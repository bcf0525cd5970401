package verifier_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"strings"
	"testing"
	"time"

	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/tpm"
	"github.com/pulse-attest/pulse/tpm/cel"
	"github.com/pulse-attest/pulse/verifier/store"
	"github.com/pulse-attest/pulse/verifier/verifiertest"
)

// Regression tests for holes a white-box review found in the last-known-good
// and deadline handling, each next to the honest behaviour it must keep.

// approveUpgrade opens a short update window for build and moves the agent
// to it (honest: TRUSTED, new last-known-good).
func approveUpgrade(t *testing.T, e *env, st *store.Store, a interface{ MeasureBinary() }, id string, set func([32]byte), build [32]byte) {
	t.Helper()
	now := e.clock.Now()
	if err := st.AddUpdateWindow(context.Background(), &store.UpdateWindow{Digest: hexOf(build[:]), Agents: []string{id},
		Start: now.Add(-time.Minute), End: now.Add(5 * time.Minute), CreatedBy: "operator:test"}); err != nil {
		t.Fatal(err)
	}
	set(build)
	a.MeasureBinary()
}

// TestOlderBuildAfterUpgradeIsAChange: an approved upgrade A -> B leaves
// A's record in the boot, which stays accepted once the window closes; but
// launching A again later — in the same boot, or after a reboot that keeps
// the TPM reset count (TPM Restart) — is a downgrade outside any window.
func TestOlderBuildAfterUpgradeIsAChange(t *testing.T) {
	e := newEnv(t, "rhel8-uefi")
	if e == nil {
		return
	}
	st := openStore(t, e)
	a := e.enrolled("edge-downgrade")
	oldBuild := a.Binary
	newBuild := sha256.Sum256([]byte("pulse-agent 2.0"))
	approveUpgrade(t, e, st, a, "edge-downgrade", func(b [32]byte) { a.Binary = b }, newBuild)
	wantVerdict(t, a.Pulse(nil), trusted, pulsev1.Reason_REASON_OK)
	e.clock.Advance(time.Hour) // the window closes
	a.Challenge()
	// Honest: the boot's log still holds A then B; nothing new is judged.
	wantVerdict(t, a.Pulse(func(p *parts) { p.Payload.Time = timestampNow(e) }), trusted, pulsev1.Reason_REASON_OK)
	// Honest: B restarted through the launcher.
	a.MeasureBinary()
	wantVerdict(t, a.Pulse(func(p *parts) { p.Payload.Time = timestampNow(e) }), trusted, pulsev1.Reason_REASON_OK)

	// Attack 1: A launched again in the same boot.
	a.Binary = oldBuild
	a.MeasureBinary()
	wantVerdict(t, a.Pulse(func(p *parts) { p.Payload.Time = timestampNow(e) }), untrusted, pulsev1.Reason_REASON_BINARY_CHANGED)

	// Attack 2: a reboot that keeps the reset count, then A.
	shutdownState(t, e)
	if _, err := e.sw.Boot(e.fwLog); err != nil {
		t.Fatal(err)
	}
	a.Records, a.SentUpTo = nil, 0
	a.MeasureBinary()
	resp := a.Pulse(func(p *parts) { p.Payload.Time = timestampNow(e) })
	wantVerdict(t, resp, untrusted, pulsev1.Reason_REASON_BINARY_CHANGED)
	lkg, err := st.GetLKG(context.Background(), "edge-downgrade")
	if err != nil || lkg.BinarySHA256 != hexOf(newBuild[:]) {
		t.Fatalf("last-known-good %+v %v, want the approved build", lkg, err)
	}
	if n := len(alertsOf(t, st, "edge-downgrade", "binary_changed")); n != 1 {
		t.Fatalf("%d binary_changed alerts, want 1 (one per change)", n)
	}
	// Attack 3: a reboot, then A launched first and B's record appended: the
	// log replays the accepted prefix [A, B] of an earlier boot, which is
	// not this boot's.
	if _, err := e.sw.Boot(e.fwLog); err != nil {
		t.Fatal(err)
	}
	a.Records, a.SentUpTo = nil, 0
	a.MeasureBinary()
	a.Binary = newBuild
	a.MeasureBinary()
	wantVerdict(t, a.Pulse(func(p *parts) { p.Payload.Time = timestampNow(e) }), untrusted, pulsev1.Reason_REASON_BINARY_CHANGED)

	// Honest: after a reboot, B again is TRUSTED.
	if _, err := e.sw.Boot(e.fwLog); err != nil {
		t.Fatal(err)
	}
	a.Records, a.SentUpTo, a.Binary = nil, 0, newBuild
	a.MeasureBinary()
	wantVerdict(t, a.Pulse(func(p *parts) { p.Payload.Time = timestampNow(e) }), trusted, pulsev1.Reason_REASON_OK)
}

// bpfAgent is an agent whose runtime log measures one pinned eBPF program,
// under a policy that allows builds A and B.
type bpfAgent struct {
	*verifiertest.Client
	e              *env
	buildA, buildB [32]byte
	prog           *cel.EBPFProgram
}

func newBPFAgent(t *testing.T, id string) *bpfAgent {
	buildA := sha256.Sum256([]byte("pulse-agent build for " + id)) // the client's default
	buildB := sha256.Sum256([]byte("pulse-agent 2.0"))
	e := newEnvCfg(t, "rhel8-uefi", fleetPolicy(t, fmt.Sprintf("  agent_binary {\n    allow = [%q, %q]\n  }\n", hexOf(buildA[:]), hexOf(buildB[:]))))
	if e == nil {
		return nil
	}
	a := &bpfAgent{Client: e.agent(id, e.openTPM(e.sw)), e: e, buildA: buildA, buildB: buildB}
	if a.Binary != buildA {
		t.Fatal("the client's default build changed")
	}
	if res := a.Enroll(); !res.GetEnrolled() {
		t.Fatal(res.GetMessage())
	}
	a.MeasureBinary()
	a.setProg("v1")
	a.Challenge()
	wantVerdict(t, a.Pulse(a.pin), trusted, pulsev1.Reason_REASON_OK)
	return a
}

// setProg measures a new build of the pinned program.
func (a *bpfAgent) setProg(tag string) {
	p := &cel.EBPFProgram{Name: "shield_xdp", ProgramType: "xdp", AttachPoint: "eth0", KernelRelease: "6.1.0"}
	p.InsnSHA256 = sha256.Sum256([]byte("instructions " + tag))
	copy(p.Tag[:], p.InsnSHA256[:8])
	a.prog = p
	a.Measure(p)
}

// launch measures build b, as the launcher does.
func (a *bpfAgent) launch(b [32]byte) {
	a.Binary = b
	a.MeasureBinary()
}

func (a *bpfAgent) pin(p *parts) {
	p.Payload.Time = timestampNow(a.e)
	p.Payload.Bpf = &pulsev1.BPFSnapshot{Pinned: []*pulsev1.PinnedProgram{{Name: a.prog.Name, Id: 7, Tag: a.prog.Tag[:], InsnSha256: a.prog.InsnSHA256[:]}}}
}

// openWindow opens a fleet-wide update window for build b in the store.
func (a *bpfAgent) openWindow(t *testing.T, b [32]byte) {
	t.Helper()
	st := openStore(t, a.e)
	now := a.e.clock.Now()
	if err := st.AddUpdateWindow(context.Background(), &store.UpdateWindow{Digest: hexOf(b[:]), Agents: []string{"*"},
		Start: now.Add(-time.Minute), End: now.Add(time.Hour), CreatedBy: "operator:test"}); err != nil {
		t.Fatal(err)
	}
}

// TestBPFChangeNeedsOpenWindow: with two builds on the policy's allow
// list, root swaps a pinned eBPF program and relaunches the other build.
// A build on the allow list approves no eBPF change, nor does a window
// for the build the device already runs.
func TestBPFChangeNeedsOpenWindow(t *testing.T) {
	a := newBPFAgent(t, "edge-bpf-flip")
	if a == nil {
		return
	}
	// Honest: the other allowed build, same programs.
	a.launch(a.buildB)
	wantVerdict(t, a.Pulse(a.pin), trusted, pulsev1.Reason_REASON_OK)

	// Dropping Shield while a window for the running build is open.
	a.openWindow(t, a.buildB)
	wantVerdict(t, a.Pulse(func(p *parts) { p.Payload.Time = timestampNow(a.e) }), untrusted, pulsev1.Reason_REASON_BPF_PROGRAM_CHANGED)

	a.setProg("evil")
	wantVerdict(t, a.Pulse(a.pin), untrusted, pulsev1.Reason_REASON_BPF_PROGRAM_CHANGED)
	wantVerdict(t, a.Pulse(a.pin), untrusted, pulsev1.Reason_REASON_BPF_PROGRAM_CHANGED)
	a.launch(a.buildA)
	wantVerdict(t, a.Pulse(a.pin), untrusted, pulsev1.Reason_REASON_BPF_PROGRAM_CHANGED)
}

// TestBPFSwapByBuildBounce: with a rollout window open for build B, a
// device on B moves to A (allowed, programs unchanged), then back to B
// with a swapped program. B was accepted with the original programs: it
// must bring them again.
func TestBPFSwapByBuildBounce(t *testing.T) {
	a := newBPFAgent(t, "edge-bpf-bounce")
	if a == nil {
		return
	}
	a.launch(a.buildB)
	wantVerdict(t, a.Pulse(a.pin), trusted, pulsev1.Reason_REASON_OK)
	a.openWindow(t, a.buildB)
	a.launch(a.buildA)
	wantVerdict(t, a.Pulse(a.pin), trusted, pulsev1.Reason_REASON_OK)
	a.launch(a.buildB)
	a.setProg("evil")
	wantVerdict(t, a.Pulse(a.pin), untrusted, pulsev1.Reason_REASON_BPF_PROGRAM_CHANGED)
}

// TestBPFChangeWithApprovedBuild: a new build that ships new programs is
// an approved update of both only under a policy update_window that rolls
// it out with its build manifest (ebpf_objects), and only when every
// program was loaded from an object the manifest lists. A store window
// (pulsectl agents approve-update) approves the binary, never new
// programs; nor does a manifest that does not list the programs' object.
func TestBPFChangeWithApprovedBuild(t *testing.T) {
	shieldV1 := sha256.Sum256([]byte("shield.o v1"))
	shieldV2 := sha256.Sum256([]byte("shield.o v2"))
	for i, tc := range []struct {
		name     string
		store    bool     // a store window for the new build
		manifest [32]byte // the policy window's ebpf_objects (zero: no policy window)
		want     pulsev1.Reason
	}{
		{"policy window with the build's manifest", false, shieldV2, pulsev1.Reason_REASON_OK},
		{"store window only", true, [32]byte{}, pulsev1.Reason_REASON_BPF_PROGRAM_CHANGED},
		{"manifest lists another object", false, shieldV1, pulsev1.Reason_REASON_BPF_PROGRAM_CHANGED},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := fmt.Sprintf("edge-bpf-update-%d", i)
			next := sha256.Sum256([]byte("pulse-agent 2.0 with shield v2"))
			start := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
			end := time.Now().Add(24 * time.Hour).UTC().Format(time.RFC3339)
			window := ""
			if tc.manifest != ([32]byte{}) {
				window = fmt.Sprintf("    update_window \"v2\" {\n      start = %q\n      end = %q\n      allow = [%q]\n      ebpf_objects = [%q]\n    }\n",
					start, end, hexOf(next[:]), hexOf(tc.manifest[:]))
			}
			allow := []string{}
			first := sha256.Sum256([]byte("pulse-agent build for " + id))
			allow = append(allow, fmt.Sprintf("%q", hexOf(first[:])))
			if tc.store {
				// The build is allowed outright and a store window is open
				// for it: still no approval of new programs.
				allow = append(allow, fmt.Sprintf("%q", hexOf(next[:])))
			}
			e := newEnvCfg(t, "rhel8-uefi", fleetPolicy(t, fmt.Sprintf("  agent_binary {\n    allow = [%s]\n%s  }\n", strings.Join(allow, ", "), window)))
			if e == nil {
				return
			}
			st := openStore(t, e)
			a := e.agent(id, e.openTPM(e.sw))
			if res := a.Enroll(); !res.GetEnrolled() {
				t.Fatal(res.GetMessage())
			}
			prog := &cel.EBPFProgram{Name: "shield_xdp", ProgramType: "xdp", AttachPoint: "eth0", KernelRelease: "6.1.0", ObjectSHA256: shieldV1[:]}
			prog.InsnSHA256 = sha256.Sum256([]byte("instructions v1"))
			pin := func(p *parts) {
				p.Payload.Time = timestampNow(e)
				p.Payload.Bpf = &pulsev1.BPFSnapshot{Pinned: []*pulsev1.PinnedProgram{{Name: prog.Name, Id: 7, Tag: prog.Tag[:], InsnSha256: prog.InsnSHA256[:]}}}
			}
			a.MeasureBinary()
			a.Measure(prog)
			a.Challenge()
			wantVerdict(t, a.Pulse(pin), trusted, pulsev1.Reason_REASON_OK)
			if tc.store {
				approveUpgrade(t, e, st, a, id, func(b [32]byte) { a.Binary = b }, next)
			} else {
				a.Binary = next
				a.MeasureBinary()
			}
			updated := *prog
			updated.InsnSHA256 = sha256.Sum256([]byte("instructions v2"))
			updated.ObjectSHA256 = shieldV2[:]
			prog = &updated
			a.Measure(prog)
			if tc.want == pulsev1.Reason_REASON_OK {
				wantVerdict(t, a.Pulse(pin), trusted, tc.want)
			} else {
				wantVerdict(t, a.Pulse(pin), untrusted, tc.want)
			}
		})
	}
}

// TestReenrollDoesNotMoveDeadline: root stops the agent and re-enrolls the
// device (same TPM, same AK) again and again. Re-enrolling is not being
// heard from: the device is BLINDED like any silent one.
func TestReenrollDoesNotMoveDeadline(t *testing.T) {
	// Deadlines are on the database's clock: a 1s heartbeat, 3 missed, no
	// startup grace.
	e := newEnvCfg(t, "rhel8-uefi", fastHeartbeat("1s", 3, "0s"))
	if e == nil {
		return
	}
	st := openStore(t, e)
	a := e.enrolled("edge-silent")
	before, err := st.GetAgentOps(context.Background(), "edge-silent")
	if err != nil {
		t.Fatal(err)
	}
	if res := a.Enroll(); !res.GetEnrolled() || res.GetReason() != pulsev1.Reason_REASON_OK {
		t.Fatalf("re-enrollment: %s %s", res.GetReason(), res.GetMessage())
	}
	after, err := st.GetAgentOps(context.Background(), "edge-silent")
	if err != nil {
		t.Fatal(err)
	}
	if !after.Deadline.Equal(before.Deadline) {
		t.Fatalf("re-enrollment moved the deadline from %s to %s", before.Deadline, after.Deadline)
	}
	// Past the deadline, re-enrolling again and again.
	for !pastDeadline(t, st, "edge-silent") {
		if res := a.Enroll(); !res.GetEnrolled() {
			t.Fatalf("re-enrollment: %s", res.GetMessage())
		}
		time.Sleep(300 * time.Millisecond)
	}
	waitFor(t, "the silent device BLINDED", func() bool {
		ag, err := st.GetAgent(context.Background(), "edge-silent")
		return err == nil && pulsev1.Verdict(ag.LastVerdict) == pulsev1.Verdict_VERDICT_BLINDED
	})
	if _, err := a.Cl.Challenge(ctx(t), &pulsev1.ChallengeRequest{}); err != nil {
		t.Fatal(err)
	}
	if res := a.Enroll(); !res.GetEnrolled() {
		t.Fatal(res.GetMessage())
	}
	if ops, _ := st.GetAgentOps(context.Background(), "edge-silent"); ops.BlindedAt.IsZero() {
		t.Fatal("a re-enrollment cleared the BLINDED mark")
	}
	if n := len(alertsOf(t, st, "edge-silent", "compromised")); n != 1 {
		t.Fatalf("%d compromised alerts, want 1", n)
	}
	// Honest: an accepted pulse ends it (re-enrolling dropped the stored
	// runtime log: the agent resends it from record 0, as the state in the
	// challenge's answer tells it).
	a.Challenge()
	a.SentUpTo = 0
	wantVerdict(t, a.Pulse(func(p *parts) { p.Payload.Time = timestampNow(e) }), trusted, pulsev1.Reason_REASON_OK)
}

// TestAKMustBeOwnerPrimary: root re-enrolls the device with Pulse's AK
// template created in the endorsement hierarchy. Its quotes carry the
// TPM's real reset and restart counts, which TPM2_Clear sets back to 0
// without changing the key, so two boots could name themselves alike. Only
// an owner-hierarchy primary is accepted as the signer.
func TestAKMustBeOwnerPrimary(t *testing.T) {
	e := newEnv(t, "rhel8-uefi")
	if e == nil {
		return
	}
	a := e.enrolled("edge-ak-hierarchy")
	owner := a.AK
	persistEndorsementAK(t, e)
	ak, err := a.Dev.AK(tpm.AKOptions{Handle: endorsementAKHandle})
	if err != nil {
		t.Fatal(err)
	}
	a.AK = ak
	if res := a.Enroll(); !res.GetEnrolled() || res.GetReason() != pulsev1.Reason_REASON_AK_CHANGED {
		t.Fatalf("re-enroll: %s %s", res.GetReason(), res.GetMessage())
	}
	a.Challenge()
	a.SentUpTo = 0
	wantVerdict(t, a.Pulse(nil), untrusted, pulsev1.Reason_REASON_AK_NOT_OWNER_PRIMARY)
	// Honest: back to the owner-hierarchy AK.
	a.AK = owner
	if res := a.Enroll(); !res.GetEnrolled() {
		t.Fatalf("re-enroll: %s %s", res.GetReason(), res.GetMessage())
	}
	a.Challenge()
	a.SentUpTo = 0
	wantVerdict(t, a.Pulse(nil), trusted, pulsev1.Reason_REASON_OK)
}
