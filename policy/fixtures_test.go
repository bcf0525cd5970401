package policy

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// The evidence under testdata/evidence/BANK/NAME.json is what `pulsectl
// policy evidence` makes of the real firmware logs in testdata/eventlogs
// verified against the PCR values their TPMs reported (cmd/pulsectl's
// TestPolicyFixtureEvidence keeps it in sync).

func loadFixtureEvidence(t *testing.T, bank string) map[string]*Evidence {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "evidence", bank, "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no %s fixture evidence: %v", bank, err)
	}
	out := map[string]*Evidence{}
	for _, f := range files {
		ev, err := LoadEvidence(f)
		if err != nil {
			t.Fatal(err)
		}
		out[strings.TrimSuffix(filepath.Base(f), ".json")] = ev
	}
	return out
}

func sortedNames(m map[string]*Evidence) []string {
	var names []string
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func mustParse(t *testing.T, name, src string) *Set {
	t.Helper()
	set, diags := Parse(name, []byte(src))
	if set == nil {
		t.Fatalf("policy does not load:\n%s", DiagnosticsText(diags, []Source{{Name: name, Bytes: []byte(src)}}))
	}
	return set
}

var fixtureTime = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// TestPolicySecureBootFixtures: a policy requiring Secure Boot passes
// rhel8-uefi and fails ubuntu-2104-no-secure-boot with the rule's name and
// line.
func TestPolicySecureBootFixtures(t *testing.T) {
	evs := loadFixtureEvidence(t, "sha256")
	src := `policy "secure-boot" {
  match {
    agents = ["*"]
  }
  tpm = "required"
  measured_boot {
    secure_boot {}
  }
}
`
	set := mustParse(t, "sb.hcl", src)
	ok := set.Evaluate(*evs["rhel8-uefi"], fixtureTime)
	if ok.Denied || len(ok.Findings) != 0 || ok.Policy != "secure-boot" || ok.PolicyDigest != set.Digest() {
		t.Errorf("rhel8-uefi: %+v", ok)
	}
	bad := set.Evaluate(*evs["ubuntu-2104-no-secure-boot"], fixtureTime)
	if !bad.Denied || len(bad.Findings) != 1 {
		t.Fatalf("ubuntu: %+v", bad)
	}
	f := bad.Findings[0]
	if f.Rule != "measured_boot.secure_boot" || f.File != "sb.hcl" || f.Line != 7 || f.Mode != Enforce ||
		f.Severity != DefaultSeverity || f.Policy != "secure-boot" || !strings.Contains(f.Message, "Secure Boot is disabled") {
		t.Errorf("ubuntu finding: %+v", f)
	}
	if f.Where() != "sb.hcl:7" {
		t.Errorf("Where = %q", f.Where())
	}
	// The other fixtures follow their recorded Secure Boot state.
	for name, ev := range evs {
		want := name == "arch-linux-workstation" || name == "glinux-alex" || name == "ubuntu-2104-no-secure-boot"
		if got := set.Evaluate(*ev, fixtureTime).Denied; got != want {
			t.Errorf("%s: denied=%v, want %v", name, got, want)
		}
	}
}

// firstUnique returns the digest of the first boot application event of
// name that no other fixture's evidence contains.
func firstUnique(t *testing.T, evs map[string]*Evidence, name string) BootEvent {
	t.Helper()
	for _, e := range evs[name].Boot.Events {
		if e.Type != "EV_EFI_BOOT_SERVICES_APPLICATION" {
			continue
		}
		shared := false
		for other, ev := range evs {
			for _, oe := range ev.Boot.Events {
				if other != name && oe.Digest == e.Digest {
					shared = true
				}
			}
		}
		if !shared {
			return e
		}
	}
	t.Fatalf("%s has no boot application of its own", name)
	return BootEvent{}
}

// TestPolicyForbidFixtures: a forbidden boot-component digest taken from one
// log fails that log only, in both banks.
func TestPolicyForbidFixtures(t *testing.T) {
	for _, bank := range []string{"sha256", "sha1"} {
		evs := loadFixtureEvidence(t, bank)
		if len(evs) < 4 {
			t.Fatalf("%s: only %d fixtures", bank, len(evs))
		}
		for _, name := range sortedNames(evs) {
			e := firstUnique(t, evs, name)
			src := fmt.Sprintf(`policy "fleet" {
  match {
    agents = ["*"]
  }
  tpm = "required"
  measured_boot {
    bank = %q
    forbid "from-%s" {
      digests = [%q]
      reason  = "taken from %s"
    }
  }
}
`, bank, name, e.Digest, name)
			set := mustParse(t, "forbid.hcl", src)
			for _, other := range sortedNames(evs) {
				res := set.Evaluate(*evs[other], fixtureTime)
				if other != name {
					if res.Denied || len(res.Findings) > 0 {
						t.Errorf("%s: forbidding %s's digest fails %s: %v", bank, name, other, res.Findings)
					}
					continue
				}
				if !res.Denied || len(res.Findings) != 1 {
					t.Fatalf("%s: %s not denied by its own digest: %+v", bank, name, res)
				}
				f := res.Findings[0]
				wantRule := fmt.Sprintf("measured_boot.forbid[%q]", "from-"+name)
				if f.Rule != wantRule || f.Line != 8 || !strings.Contains(f.Message, e.Digest) ||
					!strings.Contains(f.Message, fmt.Sprintf("(event %d)", e.Seq)) || !strings.Contains(f.Message, "taken from "+name) {
					t.Errorf("%s: finding %+v, want rule %s line 8 naming event %d", bank, f, wantRule, e.Seq)
				}
			}
		}
	}
}

// TestPolicyDeriveFixtures: a policy derived from a fixture's evidence
// passes that evidence and fails every other fixture (in either bank), on
// its measured-boot rules.
func TestPolicyDeriveFixtures(t *testing.T) {
	sha256 := loadFixtureEvidence(t, "sha256")
	sha1 := loadFixtureEvidence(t, "sha1")
	type named struct {
		name string
		ev   *Evidence
	}
	var all []named
	for _, n := range sortedNames(sha256) {
		all = append(all, named{"sha256/" + n, sha256[n]})
	}
	for _, n := range sortedNames(sha1) {
		all = append(all, named{"sha1/" + n, sha1[n]})
	}
	for _, src := range all {
		text, err := Derive(*src.ev, DeriveOptions{Source: src.name})
		if err != nil {
			t.Fatalf("%s: %v", src.name, err)
		}
		set, diags := Parse(src.name+".hcl", text)
		if set == nil || len(diags) > 0 {
			t.Fatalf("%s: derived policy has diagnostics:\n%s\n%s", src.name, DiagnosticsText(diags, nil), text)
		}
		p := set.Policies()[0]
		if p.MeasuredBoot == nil || len(p.MeasuredBoot.Allow) == 0 {
			t.Fatalf("%s: no boot components derived:\n%s", src.name, text)
		}
		if p.MeasuredBoot.Bank != src.ev.Boot.Bank {
			t.Errorf("%s: bank %s", src.name, p.MeasuredBoot.Bank)
		}
		if (p.MeasuredBoot.SecureBoot != nil) != *src.ev.Boot.SecureBoot {
			t.Errorf("%s: secure_boot rule %v, device Secure Boot %v", src.name, p.MeasuredBoot.SecureBoot != nil, *src.ev.Boot.SecureBoot)
		}
		// The derived match selects the device it came from.
		if res := set.Evaluate(*src.ev, fixtureTime); res.Denied || len(res.Findings) > 0 {
			t.Errorf("%s: derived policy fails its own evidence: %v", src.name, res.Findings)
		}
		for _, other := range all {
			if other.name == src.name {
				continue
			}
			// Evaluate the policy itself: the failure must come from the
			// rules, not from the match (other agent IDs).
			res := p.Evaluate(*other.ev, fixtureTime)
			if !res.Denied {
				t.Errorf("policy derived from %s allows %s", src.name, other.name)
				continue
			}
			for _, f := range res.Findings {
				if f.Mode == Enforce && !strings.HasPrefix(f.Rule, "measured_boot.") {
					t.Errorf("policy derived from %s denies %s with %s", src.name, other.name, f.Rule)
				}
			}
		}
	}
}

// TestPolicyDeriveRuntime: runtime evidence gives agent_binary, ebpf and
// fortress rules that pass the device and fail a changed one.
func TestPolicyDeriveRuntime(t *testing.T) {
	ev := *loadFixtureEvidence(t, "sha256")["rhel8-uefi"]
	ev.Runtime = &RuntimeEvidence{
		AgentBinarySHA256: strings.Repeat("1", 64),
		BPFPrograms:       map[string]string{"shield_xdp": strings.Repeat("2", 64), "odd*name": strings.Repeat("3", 64)},
		FortressActive:    true,
	}
	text, err := Derive(ev, DeriveOptions{Name: "dev"})
	if err != nil {
		t.Fatal(err)
	}
	set := mustParse(t, "d.hcl", string(text))
	p := set.Policy("dev")
	if p == nil || p.AgentBinary == nil || p.EBPF == nil || p.Fortress == nil || p.TPM != TPMRequired {
		t.Fatalf("derived:\n%s", text)
	}
	if res := p.Evaluate(ev, fixtureTime); res.Denied {
		t.Fatalf("own evidence denied: %v", res.Findings)
	}
	changes := map[string]func(r *RuntimeEvidence){
		"agent_binary":               func(r *RuntimeEvidence) { r.AgentBinarySHA256 = strings.Repeat("4", 64) },
		`ebpf.require["shield_xdp"]`: func(r *RuntimeEvidence) { r.BPFPrograms["shield_xdp"] = strings.Repeat("5", 64) },
		`ebpf.allow["odd\\*name"]`:   func(r *RuntimeEvidence) { r.BPFPrograms["odd*name"] = strings.Repeat("6", 64) },
		"ebpf":                       func(r *RuntimeEvidence) { r.BPFPrograms["new"] = strings.Repeat("7", 64) },
		"fortress":                   func(r *RuntimeEvidence) { r.FortressActive = false },
	}
	for rule, change := range changes {
		r := *ev.Runtime
		r.BPFPrograms = map[string]string{}
		for k, v := range ev.Runtime.BPFPrograms {
			r.BPFPrograms[k] = v
		}
		change(&r)
		e2 := ev
		e2.Runtime = &r
		res := p.Evaluate(e2, fixtureTime)
		if !res.Denied || len(res.Findings) != 1 || res.Findings[0].Rule != rule {
			t.Errorf("change for %s: %+v", rule, res.Findings)
		}
	}
	// Data from the device cannot inject policy text through a comment.
	ev.Boot.Events[0].Note = "x\n}\npolicy \"evil\" {"
	text, err = Derive(ev, DeriveOptions{Name: "dev"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(text), "\npolicy \"evil\"") {
		t.Fatal("note injected a line")
	}
	if _, err := Derive(Evidence{AgentID: "x"}, DeriveOptions{}); err == nil {
		t.Error("derive from empty evidence succeeded")
	}
	if _, err := Derive(ev, DeriveOptions{Name: "bad name"}); err == nil {
		t.Error("derive with a bad name succeeded")
	}
}
