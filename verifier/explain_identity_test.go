package verifier_test

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/internal/pki"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/verifier/admin"
	"github.com/pulse-attest/pulse/verifier/verifiertest"
)

// kernelHook makes the agent report an eBPF snapshot (a tcx chain),
// Fortress active and a Sentinel report; replaced, when not empty, adds
// Fortress's pin as measured and a pin by that name whose live program was
// replaced.
func kernelHook(a *verifiertest.Client, replaced string, nextSeq uint64) {
	a.PayloadHook = func(p *pulsev1.PulsePayload) {
		p.Fortress = &pulsev1.FortressStatus{Active: true, LsmListed: true, Loaded: true, Attached: true, ProgramId: 700, LinkId: 701, Tag: fortressTestTag[:]}
		p.Bpf = &pulsev1.BPFSnapshot{
			Hooks: []*pulsev1.HookChain{{Hook: "tcx_ingress", Target: "eth0", Ifindex: 2,
				Programs: []*pulsev1.ChainProgram{{Id: 41, Tag: []byte{1, 2, 3, 4, 5, 6, 7, 8}, Name: "shield_ingress", Type: "sched_cls", LinkId: 5}}}},
			HostProgramCount: uint32(nextSeq) + 5, QuarantineCount: 2,
		}
		if replaced != "" {
			p.Bpf.Pinned = append(p.Bpf.Pinned, &pulsev1.PinnedProgram{Name: "fortress_task_kill", Id: 700, Tag: fortressTestTag[:], InsnSha256: make([]byte, 32)}, &pulsev1.PinnedProgram{Name: replaced, Id: 42, Tag: []byte{9, 9, 9, 9, 9, 9, 9, 9},
				Problem: "pin holds program 99, not 42", ProblemKind: pulsev1.PinProblem_PIN_PROBLEM_REPLACED})
		}
		p.Sentinel = &pulsev1.SentinelReport{NextSeq: nextSeq, CfgAgentTgid: 300, AgentTgid: 300}
	}
}

// TestAgentDetailCertificateKernelWindows: the agent detail shows the TLS
// certificate the last committed pulse's handshake verified (a rotated
// certificate expiring in 3 days is marked expiring soon), the kernel
// summary of the last verified pulse (pinned vs. live with the problem,
// hook chains, Fortress, Sentinel; a hostile name escaped, no kernel IDs),
// which a pulse whose quote fails does not replace, and the update windows
// that apply to it (an operator approval matching it, not one for other
// agents; the policy's agent_binary window with its file:line, scheduled).
func TestAgentDetailCertificateKernelWindows(t *testing.T) {
	e, a, cl := explainEnv(t, "edge-ident")
	if e == nil {
		return
	}
	c := ctx(t)
	// The harness's certificates live 7 days: judged 30 days earlier the
	// certificate is far from its end, now within 14 days, 8 days on
	// expired (the verifier's clock).
	for _, tc := range []struct {
		shift         time.Duration
		soon, expired bool
	}{{-30 * 24 * time.Hour, false, false}, {0, true, false}, {8 * 24 * time.Hour, true, true}} {
		e.clock.Advance(tc.shift)
		d, err := cl.GetAgent(c, "edge-ident")
		e.clock.Advance(-tc.shift)
		if err != nil {
			t.Fatal(err)
		}
		cert := d.Agent.Certificate
		if cert == nil || !strings.Contains(cert.Subject, "CN=edge-ident") || !cert.NotAfter.Equal(a.Cert.Cert.NotAfter.UTC()) ||
			cert.ExpiresSoon != tc.soon || cert.Expired != tc.expired {
			t.Fatalf("clock %v: certificate %+v, issued NotAfter %v", tc.shift, cert, a.Cert.Cert.NotAfter)
		}
	}

	kernelHook(a, "", 12)
	a.Challenge()
	wantVerdict(t, a.Pulse(nil), trusted, pulsev1.Reason_REASON_OK)
	d, err := cl.GetAgent(c, "edge-ident")
	if err != nil {
		t.Fatal(err)
	}
	k := d.Agent.Kernel
	if k == nil || len(k.Pinned) != 0 || len(k.Hooks) != 1 || k.Hooks[0].Target != "eth0" || len(k.Hooks[0].Programs) != 1 || !k.Hooks[0].Programs[0].Link ||
		k.Fortress == nil || !k.Fortress.Active || k.Fortress.Tag == "" || k.Sentinel == nil || !k.Sentinel.ConfigMatches || k.HostPrograms != 17 {
		t.Fatalf("kernel summary %+v", k)
	}

	// A replaced pin with a hostile name: UNTRUSTED, and the page shows
	// the quoted pulse's snapshot with the problem, the name escaped.
	kernelHook(a, "evil\x1b[31m\u202ename", 13)
	a.Challenge()
	wantVerdict(t, a.Pulse(nil), untrusted, pulsev1.Reason_REASON_BPF_PROGRAM_CHANGED)
	d, _ = cl.GetAgent(c, "edge-ident")
	if k = d.Agent.Kernel; k == nil || len(k.Pinned) != 2 || k.Pinned[0].ProblemKind != "" || k.Pinned[0].Tag != hexOf(fortressTestTag[:]) || k.Pinned[1].ProblemKind != "REPLACED" || k.Pinned[1].Tag != "0909090909090909" || k.HostPrograms != 18 {
		t.Fatalf("kernel summary of the replaced pin %+v", k)
	}
	if n := k.Pinned[1].Name; strings.ContainsAny(n, "\x1b\u202e") || !strings.Contains(n, `\u{1b}`) || !strings.Contains(n, `\u{202e}`) {
		t.Fatalf("hostile pin name stored as %q", n)
	}

	// A pulse whose quote fails: the kernel summary it claims is not
	// stored; the last quoted one stays.
	kernelHook(a, "", 99)
	a.Challenge()
	resp := a.Pulse(func(p *parts) {
		p.After = func(r *pulsev1.PulseRequest) { r.Quote.Signature[len(r.Quote.Signature)-1] ^= 1 }
	})
	if resp.GetVerdict() != untrusted {
		t.Fatalf("forged quote: %v", resp)
	}
	d, _ = cl.GetAgent(c, "edge-ident")
	if d.Agent.Kernel == nil || d.Agent.Kernel.HostPrograms != 18 || len(d.Agent.Kernel.Pinned) != 2 {
		t.Fatalf("kernel summary after a forged quote: %+v", d.Agent.Kernel)
	}

	// Rotation: a certificate that expires in 3 days replaces the first.
	first := a.Cert.Cert.NotAfter.UTC()
	short, err := pki.Issue(e.ca, pki.Request{Role: pki.RoleAgent, ID: "edge-ident", KeyType: pki.KeyECDSAP256, Validity: 72 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	a.Cert, a.Conn = short, verifiertest.Dial(t, e.daemon.Addr(), e.caFile, short)
	a.Cl = pulsev1.NewAttestationClient(a.Conn)
	kernelHook(a, "", 13)
	a.Challenge()
	wantVerdict(t, a.Pulse(nil), trusted, pulsev1.Reason_REASON_OK)
	d, _ = cl.GetAgent(c, "edge-ident")
	if cert := d.Agent.Certificate; cert == nil || !cert.NotAfter.Equal(short.Cert.NotAfter.UTC()) || cert.NotAfter.Equal(first) || !cert.ExpiresSoon || cert.Expired {
		t.Fatalf("rotated certificate %+v, issued NotAfter %v", cert, short.Cert.NotAfter)
	}

	// Update windows: an approval for this agent applies, one for other
	// agents does not.
	digest := strings.Repeat("ab", 32)
	now := time.Now()
	for _, u := range []admin.UpdateRequest{
		{Digest: digest, Agents: []string{"edge-*"}, Start: now.Add(-time.Minute), End: now.Add(time.Hour)},
		{Digest: strings.Repeat("cd", 32), Agents: []string{"core-*"}, Start: now.Add(-time.Minute), End: now.Add(time.Hour)},
	} {
		if _, err := cl.ApproveUpdate(c, u); err != nil {
			t.Fatal(err)
		}
	}
	d, _ = cl.GetAgent(c, "edge-ident")
	if ws := d.Agent.UpdateWindows; len(ws) != 1 || ws[0].Source != "operator" || ws[0].Digests[0] != digest || !ws[0].Open {
		t.Fatalf("update windows %+v", ws)
	}

	// A policy update window (agent_binary) applies too, with file:line.
	ps, err := cl.PolicyStatus(c)
	if err != nil || len(ps.Files) != 1 {
		t.Fatalf("policy files %v: %v", ps, err)
	}
	next := strings.Repeat("ef", 32)
	sections := strings.Replace(explainSections("edge-ident", ""), "  agent_binary {\n",
		fmt.Sprintf("  agent_binary {\n    update_window \"next-build\" {\n      start = %q\n      end   = %q\n      allow = [%q]\n    }\n",
			now.Add(24*time.Hour).UTC().Format(time.RFC3339), now.Add(48*time.Hour).UTC().Format(time.RFC3339), next), 1)
	pol := "policy \"fleet\" {\n  match {\n    agents = [\"*\"]\n  }\n  tpm = \"required\"\n" + sections + "}\n"
	if err := os.WriteFile(ps.Files[0], []byte(pol), 0o644); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		d, err = cl.GetAgent(c, "edge-ident")
		if err != nil {
			t.Fatal(err)
		}
		if len(d.Agent.UpdateWindows) == 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	ws := d.Agent.UpdateWindows
	if len(ws) != 2 || ws[1].Source != "policy" || ws[1].Name != "fleet/next-build" || !strings.HasPrefix(ws[1].Where, ps.Files[0]+":") ||
		ws[1].Open || len(ws[1].Digests) != 1 || ws[1].Digests[0] != next {
		t.Fatalf("update windows with a policy window %+v", ws)
	}
}
