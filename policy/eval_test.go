package policy

import (
	"strings"
	"testing"
	"time"
)

func hexOf(c string, n int) string { return strings.Repeat(c, n) }

var (
	dShim   = hexOf("a", 64)
	dGrub   = hexOf("b", 64)
	dEvil   = hexOf("c", 64)
	dAgent1 = hexOf("1", 64)
	dAgent2 = hexOf("2", 64)
	dAgent3 = hexOf("3", 64)
	dProgA  = hexOf("d", 64)
	dProgB  = hexOf("e", 64)
	dPCR7   = hexOf("7", 64)
)

func boolp(b bool) *bool { return &b }

// goodEvidence is a healthy device for evalPolicy below.
func goodEvidence() Evidence {
	pcrs := map[int]string{}
	for i := 0; i <= 7; i++ {
		pcrs[i] = hexOf("0", 64)
	}
	pcrs[7] = dPCR7
	pcrs[9] = hexOf("9", 64)
	return Evidence{
		AgentID: "gw-01", Partition: "edge-eu", TPM: true,
		Boot: &BootEvidence{Bank: "sha256", PCRs: pcrs, SecureBoot: boolp(true), Events: []BootEvent{
			{Seq: 3, PCR: 7, Type: "EV_EFI_VARIABLE_DRIVER_CONFIG", Digest: hexOf("f", 64)},
			{Seq: 20, PCR: 4, Type: "EV_EFI_BOOT_SERVICES_APPLICATION", Digest: dShim},
			{Seq: 21, PCR: 4, Type: "EV_EFI_BOOT_SERVICES_APPLICATION", Digest: strings.ToUpper(dGrub)},
			{Seq: 30, PCR: 9, Type: "EV_IPL", Digest: hexOf("8", 64)},
		}},
		Runtime: &RuntimeEvidence{
			AgentBinarySHA256: dAgent1,
			BPFPrograms:       map[string]string{"shield_xdp": dProgA, "sentinel_signal": dProgB, "vendor_lb": dProgB},
			FortressActive:    true,
		},
	}
}

const evalPolicy = `policy "edge" {
  match {
    partitions = ["edge-*"]
  }
  tpm = "required"
  on_failure {
    severity = 3
  }
  measured_boot {
    secure_boot {
      severity = 1
    }
    pcr "7" {
      values = ["` + "7777777777777777777777777777777777777777777777777777777777777777" + `"]
    }
    allow "boot-chain" {
      types   = ["EV_EFI_BOOT_SERVICES_APPLICATION"]
      digests = ["` + "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" + `", "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"]
    }
    forbid "evil" {
      digests = ["` + "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc" + `"]
      isolate = true
    }
  }
  agent_binary {
    allow = ["` + "1111111111111111111111111111111111111111111111111111111111111111" + `"]
    update_window "v2" {
      start = "2025-03-04T02:00:00Z"
      end   = "2025-03-04T06:00:00Z"
      allow = ["` + "2222222222222222222222222222222222222222222222222222222222222222" + `"]
    }
  }
  ebpf {
    require "shield_xdp" {
      digests = ["` + "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd" + `"]
    }
    require "sentinel_signal" {}
    allow "vendor_*" {
      mode    = "warn"
      digests = ["` + "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee" + `"]
    }
  }
  fortress {
    mode = "warn"
  }
}

policy "lab" {
  match {
    partitions = ["lab"]
  }
  tpm = "optional"
  measured_boot {
    secure_boot {}
  }
}
`

// Lines of the rules in evalPolicy.
const (
	lineTPM       = 5
	lineSB        = 10
	linePCR7      = 13
	lineAllow     = 16
	lineForbid    = 20
	lineAgent     = 25
	lineEBPF      = 33
	lineShield    = 34
	lineSentinel  = 37
	lineVendor    = 38
	lineFortress  = 43
	inWindow      = "2025-03-04T03:00:00Z"
	beforeWindow  = "2025-03-01T00:00:00Z"
	afterWindow   = "2025-03-10T00:00:00Z"
	defaultRunAt  = "2025-06-01T00:00:00Z"
	severityOnErr = 3
)

func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

// TestPolicyEvaluate checks every rule from both sides: the good device
// passes; each change fails exactly the rule that covers it, at its line,
// with its mode, severity and isolation.
func TestPolicyEvaluate(t *testing.T) {
	set := mustParse(t, "edge.hcl", evalPolicy)
	base := goodEvidence()
	if res := set.Evaluate(base, at(defaultRunAt)); res.Denied || len(res.Findings) != 0 || res.Degraded || res.Policy != "edge" {
		t.Fatalf("good device: %+v", res)
	}
	type want struct {
		rule     string
		line     int
		mode     Mode
		severity int
		msg      string
	}
	cases := []struct {
		name    string
		change  func(e *Evidence)
		when    string
		want    []want
		denied  bool
		isolate bool
	}{
		{"mtls only", func(e *Evidence) { e.TPM = false; e.Boot = nil }, "", []want{
			{"tpm", lineTPM, Enforce, 3, "no verified TPM quote"},
			{"measured_boot.secure_boot", lineSB, Enforce, 1, "no verified firmware event log"},
			{`measured_boot.pcr["7"]`, linePCR7, Enforce, 3, "no verified firmware event log"},
			{`measured_boot.allow["boot-chain"]`, lineAllow, Enforce, 3, "no verified firmware event log"},
			{`measured_boot.forbid["evil"]`, lineForbid, Enforce, 3, "no verified firmware event log"},
		}, true, true},
		{"secure boot off", func(e *Evidence) { e.Boot.SecureBoot = boolp(false) }, "", []want{
			{"measured_boot.secure_boot", lineSB, Enforce, 1, "Secure Boot is disabled"}}, true, false},
		{"secure boot unknown", func(e *Evidence) { e.Boot.SecureBoot = nil }, "", []want{
			{"measured_boot.secure_boot", lineSB, Enforce, 1, "Secure Boot state is unknown"}}, true, false},
		{"pcr 7 changed", func(e *Evidence) { e.Boot.PCRs[7] = hexOf("6", 64) }, "", []want{
			{`measured_boot.pcr["7"]`, linePCR7, Enforce, 3, "PCR 7 is 6666"}}, true, false},
		{"pcr 7 not quoted", func(e *Evidence) { delete(e.Boot.PCRs, 7) }, "", []want{
			{`measured_boot.pcr["7"]`, linePCR7, Enforce, 3, "PCR 7 was not verified"},
			{`measured_boot.allow["boot-chain"]`, lineAllow, Enforce, 3, "PCR 7 not verified"},
			{`measured_boot.forbid["evil"]`, lineForbid, Enforce, 3, "PCR 7 not verified"},
		}, true, true},
		{"unknown boot app", func(e *Evidence) {
			e.Boot.Events = append(e.Boot.Events, BootEvent{Seq: 40, PCR: 4, Type: "EV_EFI_BOOT_SERVICES_APPLICATION", Digest: hexOf("5", 64)})
		}, "", []want{{`measured_boot.allow["boot-chain"]`, lineAllow, Enforce, 3, "1 boot component is not on the allow list: PCR 4 EV_EFI_BOOT_SERVICES_APPLICATION 5555"}}, true, false},
		{"unknown app outside the rule's types is fine", func(e *Evidence) {
			e.Boot.Events = append(e.Boot.Events, BootEvent{Seq: 40, PCR: 2, Type: "EV_EFI_BOOT_SERVICES_DRIVER", Digest: hexOf("5", 64)})
		}, "", nil, false, false},
		{"forbidden component", func(e *Evidence) {
			e.Boot.Events = append(e.Boot.Events, BootEvent{Seq: 41, PCR: 2, Type: "EV_EFI_BOOT_SERVICES_DRIVER", Digest: dEvil})
		}, "", []want{{`measured_boot.forbid["evil"]`, lineForbid, Enforce, 3, "forbidden boot component measured: PCR 2 EV_EFI_BOOT_SERVICES_DRIVER cccc"}}, true, true},
		{"forbidden digest outside firmware PCRs is not checked", func(e *Evidence) {
			e.Boot.Events = append(e.Boot.Events, BootEvent{Seq: 41, PCR: 9, Type: "EV_IPL", Digest: dEvil})
		}, "", nil, false, false},
		{"wrong bank", func(e *Evidence) {
			e.Boot.Bank = "sha1"
		}, "", []want{
			{"measured_boot.secure_boot", lineSB, Enforce, 1, "verified in the sha1 bank"},
			{`measured_boot.pcr["7"]`, linePCR7, Enforce, 3, "verified in the sha1 bank"},
			{`measured_boot.allow["boot-chain"]`, lineAllow, Enforce, 3, "verified in the sha1 bank"},
			{`measured_boot.forbid["evil"]`, lineForbid, Enforce, 3, "verified in the sha1 bank"},
		}, true, true},
		{"unknown agent binary", func(e *Evidence) { e.Runtime.AgentBinarySHA256 = dAgent3 }, "", []want{
			{"agent_binary", lineAgent, Enforce, 3, "is not an approved build"}}, true, false},
		{"unknown agent binary earlier in the boot", func(e *Evidence) {
			e.Runtime.AgentBinaries = []AgentBinaryRecord{{SHA256: dAgent3}, {SHA256: e.Runtime.AgentBinarySHA256, SelfMeasured: true}}
		}, "", []want{
			{"agent_binary", lineAgent, Enforce, 3, "measured earlier in this boot and is not an approved build"}}, true, false},
		{"approved agent binaries throughout the boot", func(e *Evidence) {
			e.Runtime.AgentBinaries = []AgentBinaryRecord{{SHA256: e.Runtime.AgentBinarySHA256}, {SHA256: e.Runtime.AgentBinarySHA256}}
		}, "", nil, false, false},
		{"window build before the window", func(e *Evidence) { e.Runtime.AgentBinarySHA256 = dAgent2 }, beforeWindow, []want{
			{"agent_binary", lineAgent, Enforce, 3, `approved only from update window "v2", which opens at 2025-03-04T02:00:00Z`}}, true, false},
		{"window build in the window", func(e *Evidence) {
			e.Runtime.AgentBinarySHA256 = dAgent2
			e.Runtime.PreviousAgentBinarySHA256 = dAgent1
		}, inWindow, nil, false, false},
		{"window build after the window", func(e *Evidence) { e.Runtime.AgentBinarySHA256 = dAgent2 }, afterWindow, nil, false, false},
		{"switch to window build after the window", func(e *Evidence) {
			e.Runtime.AgentBinarySHA256 = dAgent2
			e.Runtime.PreviousAgentBinarySHA256 = dAgent1
		}, afterWindow, []want{{"agent_binary", lineAgent, Enforce, 3, "changed from 1111"}}, true, false},
		{"switch back to an allowed build", func(e *Evidence) {
			e.Runtime.AgentBinarySHA256 = dAgent1
			e.Runtime.PreviousAgentBinarySHA256 = dAgent2
		}, afterWindow, nil, false, false},
		{"no runtime evidence", func(e *Evidence) { e.Runtime = nil }, "", []want{
			{"agent_binary", lineAgent, Enforce, 3, "not measured"},
			{"ebpf", lineEBPF, Enforce, 3, "loaded eBPF programs are unknown"},
			{"fortress", lineFortress, Warn, 3, "state is unknown"},
		}, true, false},
		{"required program missing", func(e *Evidence) { delete(e.Runtime.BPFPrograms, "sentinel_signal") }, "", []want{
			{`ebpf.require["sentinel_signal"]`, lineSentinel, Enforce, 3, `required eBPF program "sentinel_signal" is not loaded`}}, true, false},
		{"required program replaced", func(e *Evidence) { e.Runtime.BPFPrograms["shield_xdp"] = dProgB }, "", []want{
			{`ebpf.require["shield_xdp"]`, lineShield, Enforce, 3, "not an approved build"}}, true, false},
		{"allowed program with another build warns", func(e *Evidence) { e.Runtime.BPFPrograms["vendor_fw"] = dProgA }, "", []want{
			{`ebpf.allow["vendor_*"]`, lineVendor, Warn, 3, `"vendor_fw" has digest dddd`}}, false, false},
		{"unlisted program", func(e *Evidence) {
			e.Runtime.BPFPrograms["rootkit"] = dEvil
			e.Runtime.BPFPrograms["miner"] = dEvil
		}, "", []want{{"ebpf", lineEBPF, Enforce, 3, `2 eBPF programs are not listed in require or allow: "miner"`}}, true, false},
		{"fortress off warns only", func(e *Evidence) { e.Runtime.FortressActive = false }, "", []want{
			{"fortress", lineFortress, Warn, 3, "Fortress is not active"}}, false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ev := goodEvidence()
			c.change(&ev)
			when := defaultRunAt
			if c.when != "" {
				when = c.when
			}
			res := set.Evaluate(ev, at(when))
			if res.Denied != c.denied || res.Isolate != c.isolate {
				t.Errorf("denied=%v isolate=%v, want %v %v", res.Denied, res.Isolate, c.denied, c.isolate)
			}
			if len(res.Findings) != len(c.want) {
				t.Fatalf("findings %+v, want %d", res.Findings, len(c.want))
			}
			for i, w := range c.want {
				f := res.Findings[i]
				if f.Rule != w.rule || f.Line != w.line || f.File != "edge.hcl" || f.Mode != w.mode || f.Severity != w.severity ||
					!strings.Contains(f.Message, w.msg) || f.Policy != "edge" {
					t.Errorf("finding %d: %+v\nwant %+v", i, f, w)
				}
			}
		})
	}
}

// TestPolicyTPMModes: optional and none accept mTLS-only pulses as
// degraded, skipping (not passing) the boot rules; required denies them;
// a TPM pulse without a firmware log fails the boot rules in every mode.
func TestPolicyTPMModes(t *testing.T) {
	set := mustParse(t, "lab.hcl", evalPolicy)
	ev := goodEvidence()
	ev.Partition = "lab"
	ev.TPM = false
	ev.Boot = nil
	res := set.Evaluate(ev, at(defaultRunAt))
	if res.Policy != "lab" || res.Denied || !res.Degraded || len(res.Findings) != 0 || len(res.Skipped) != 1 ||
		res.Skipped[0].Rule != "measured_boot.secure_boot" || !strings.Contains(res.Skipped[0].Reason, `tpm = "optional"`) {
		t.Errorf("mTLS-only under optional: %+v", res)
	}
	ev.TPM = true
	res = set.Evaluate(ev, at(defaultRunAt))
	if !res.Denied || res.Degraded || len(res.Findings) != 1 || res.Findings[0].Rule != "measured_boot.secure_boot" {
		t.Errorf("TPM pulse without firmware log: %+v", res)
	}
	none := mustParse(t, "none.hcl", `policy "p" {
  match {
    agents = ["*"]
  }
  tpm = "none"
  fortress {}
}
`)
	ev = goodEvidence()
	ev.TPM, ev.Boot = false, nil
	if res := none.Evaluate(ev, at(defaultRunAt)); res.Denied || !res.Degraded {
		t.Errorf("tpm none: %+v", res)
	}
	ev.Runtime.FortressActive = false
	if res := none.Evaluate(ev, at(defaultRunAt)); !res.Denied || res.Findings[0].Rule != "fortress" {
		t.Errorf("tpm none, fortress off: %+v", res)
	}
}

// TestPolicySelection: first match wins; an agent no policy selects, and a
// nil set, are denied with a reason.
func TestPolicySelection(t *testing.T) {
	set := mustParse(t, "sel.hcl", `policy "canaries" {
  match {
    partitions = ["edge-*"]
    agents     = ["gw-canary-[0-9]"]
  }
  tpm = "required"
  fortress {}
}

policy "gateways" {
  match {
    partitions = ["edge-*", "core"]
    agents     = ["gw-*"]
  }
  tpm = "required"
  fortress {}
}
`)
	for _, c := range []struct{ agent, partition, want string }{
		{"gw-canary-1", "edge-eu", "canaries"},
		{"gw-canary-12", "edge-eu", "gateways"},
		{"gw-canary-1", "core", "gateways"},
		{"gw-7", "edge-us", "gateways"},
		{"db-1", "edge-us", ""},
		{"gw-7", "lab", ""},
	} {
		p := set.Select(c.agent, c.partition)
		got := ""
		if p != nil {
			got = p.Name
		}
		if got != c.want {
			t.Errorf("Select(%q, %q) = %q, want %q", c.agent, c.partition, got, c.want)
		}
	}
	res := set.Evaluate(Evidence{AgentID: "db-1", Partition: "edge-us", TPM: true}, time.Now())
	if !res.Denied || len(res.Findings) != 1 || res.Findings[0].Rule != RuleSelect || res.PolicyDigest != set.Digest() ||
		!strings.Contains(res.Findings[0].Message, `no policy selects agent "db-1" in partition "edge-us"`) {
		t.Errorf("unselected agent: %+v", res)
	}
	var none *Set
	if res := none.Evaluate(Evidence{AgentID: "x"}, time.Now()); !res.Denied || res.Findings[0].Rule != RuleNoPolicy {
		t.Errorf("nil set: %+v", res)
	}
	if none.Select("x", "y") != nil {
		t.Error("nil set selected a policy")
	}
}

// TestPolicyAccessors: the settings the verifier reads, with defaults.
func TestPolicyAccessors(t *testing.T) {
	set := mustParse(t, "a.hcl", `policy "a" {
  match {
    agents = ["a-*"]
  }
  tpm        = "optional"
  clock_skew = "90s"
  heartbeat {
    interval = "10s"
    missed   = 6
    grace    = "2m"
  }
  on_failure {
    severity = 1
    isolate  = true
  }
  fortress {}
}

policy "b" {
  match {
    agents = ["*"]
  }
  tpm = "none"
  fortress {}
}
`)
	a, b := set.Policy("a"), set.Policy("b")
	if a.TPM != TPMOptional || a.ClockSkew != 90*time.Second || a.Heartbeat.Interval != 10*time.Second ||
		a.Heartbeat.Missed != 6 || a.Heartbeat.Grace != 2*time.Minute || a.Heartbeat.Deadline() != time.Minute ||
		a.OnFailure != (Action{Severity: 1, Isolate: true}) || !a.Fortress.Isolate || a.Fortress.Severity != 1 {
		t.Errorf("a: %+v", a)
	}
	if b.TPM != TPMNone || b.ClockSkew != DefaultClockSkew || b.Heartbeat.Interval != DefaultHeartbeatInterval ||
		b.Heartbeat.Missed != DefaultMissedPulses || b.Heartbeat.Grace != DefaultGrace || b.OnFailure.Severity != DefaultSeverity {
		t.Errorf("b defaults: %+v", b)
	}
	if a.Digest() != set.Digest() || len(set.Digest()) != 64 {
		t.Errorf("digest %q / %q", a.Digest(), set.Digest())
	}
	if b.BinaryAllowed("anything", time.Now()) != true || !b.BinaryChangeApproved("x", "y", time.Now()) {
		t.Error("a policy without agent_binary restricts binaries")
	}
	p := mustParse(t, "e.hcl", evalPolicy).Policy("edge")
	if !p.BinaryAllowed(strings.ToUpper(dAgent1), at(beforeWindow)) || p.BinaryAllowed(dAgent2, at(beforeWindow)) ||
		!p.BinaryAllowed(dAgent2, at(inWindow)) || !p.BinaryAllowed(dAgent2, at(afterWindow)) || p.BinaryAllowed(dAgent3, at(inWindow)) {
		t.Error("BinaryAllowed")
	}
	if !p.BinaryChangeApproved(dAgent1, dAgent2, at(inWindow)) || p.BinaryChangeApproved(dAgent1, dAgent2, at(afterWindow)) ||
		p.BinaryChangeApproved(dAgent1, dAgent2, at("2025-03-04T06:00:00Z")) || !p.BinaryChangeApproved(dAgent2, dAgent1, at(afterWindow)) {
		t.Error("BinaryChangeApproved")
	}
	w := p.AgentBinary.Windows[0]
	if w.Name != "v2" || !w.Start.Equal(at("2025-03-04T02:00:00Z")) || w.Pos.Line != 27 {
		t.Errorf("window %+v", w)
	}
}

func TestBPFSetApproved(t *testing.T) {
	const build, other = "aa", "bb"
	shield, sentinel, evil := "11", "22", "33"
	start := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	in := start.Add(time.Hour)
	pol := &Policy{AgentBinary: &AgentBinary{Windows: []UpdateWindow{
		{Name: "with-manifest", Start: start, End: start.Add(2 * time.Hour), Allow: []string{build}, EBPFObjects: []string{shield, sentinel}},
		{Name: "no-manifest", Start: start, End: start.Add(2 * time.Hour), Allow: []string{other}},
	}}}
	for _, tc := range []struct {
		name    string
		to      string
		objects map[string]string
		at      time.Time
		want    bool
	}{
		{"manifest covers every program", build, map[string]string{"shield_ingress": shield, "sentinel_signal": sentinel}, in, true},
		{"upper-case digests", "AA", map[string]string{"shield_ingress": "11"}, in, true},
		{"a program from another object", build, map[string]string{"shield_ingress": shield, "x": evil}, in, false},
		{"a program without an object digest", build, map[string]string{"shield_ingress": ""}, in, false},
		{"no programs at all", build, map[string]string{}, in, false},
		{"window closed", build, map[string]string{"shield_ingress": shield}, start.Add(3 * time.Hour), false},
		{"window without a manifest", other, map[string]string{"shield_ingress": shield}, in, false},
		{"build not in the window", "cc", map[string]string{"shield_ingress": shield}, in, false},
	} {
		if got := pol.BPFSetApproved(tc.to, tc.objects, tc.at); got != tc.want {
			t.Errorf("%s: approved = %v, want %v", tc.name, got, tc.want)
		}
	}
	if (&Policy{}).BPFSetApproved(build, map[string]string{"a": shield}, in) {
		t.Error("a policy without agent_binary approved an eBPF change")
	}
}

func TestUpdateWindowEBPFObjects(t *testing.T) {
	const digest = "1111111111111111111111111111111111111111111111111111111111111111"
	src := `policy "p" {
  tpm = "required"
  match {
    agents = ["*"]
  }
  agent_binary {
    update_window "w" {
      start = "2026-12-01T00:00:00Z"
      end = "2026-12-02T00:00:00Z"
      allow = ["` + digest + `"]
      ebpf_objects = ["` + digest + `"]
    }
  }
}
`
	set, diags := Parse("p.hcl", []byte(src))
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	if w := set.Policies()[0].AgentBinary.Windows[0]; len(w.EBPFObjects) != 1 || w.EBPFObjects[0] != digest {
		t.Fatalf("ebpf_objects = %v", w.EBPFObjects)
	}
	for _, bad := range []string{`ebpf_objects = []`, `ebpf_objects = ["nothex"]`} {
		_, diags := Parse("p.hcl", []byte(strings.Replace(src, `ebpf_objects = ["`+digest+`"]`, bad, 1)))
		if !diags.HasErrors() {
			t.Errorf("%s accepted", bad)
		}
	}
}
