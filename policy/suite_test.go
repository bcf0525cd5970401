package policy

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPolicySuiteSample runs the sample regression suite in
// testdata/suite: every recorded device gets its expected verdict.
func TestPolicySuiteSample(t *testing.T) {
	set, diags := LoadFiles("testdata/suite/policy.hcl")
	if set == nil {
		t.Fatal(diags)
	}
	cases, err := RunSuite(set, "testdata/suite/evidence", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(cases) < 8 {
		t.Fatalf("only %d cases", len(cases))
	}
	verdicts := map[string]string{}
	for _, c := range cases {
		if !c.OK() {
			t.Errorf("%s: err=%v diffs=%v", c.Name, c.Err, c.Diffs)
		}
		verdicts[c.Name] = c.Result.Verdict()
	}
	// Both sides are represented.
	if verdicts["rhel8-uefi"] != "allow" || verdicts["ubuntu-2104-no-secure-boot"] != "deny" ||
		verdicts["cloud-mtls-only"] != "deny" || verdicts["unknown-partition"] != "deny" || verdicts["debian-10"] != "allow" {
		t.Errorf("verdicts %v", verdicts)
	}
}

func TestPolicyExpectation(t *testing.T) {
	x, err := ParseExpectation([]byte("# c\nverdict deny # trailing\npolicy edge\n\nenforce measured_boot.forbid[\"x y\"]\nwarn fortress\n"))
	if err != nil {
		t.Fatal(err)
	}
	if x.Verdict != "deny" || x.Policy != "edge" || len(x.Findings) != 2 || x.Findings[0].Rule != `measured_boot.forbid["x y"]` || x.Findings[1].Mode != Warn {
		t.Errorf("%+v", x)
	}
	for _, bad := range []string{"", "policy x\n", "verdict maybe\n", "verdict allow\nverdict deny\n", "verdict allow\nerror x\n", "verdict\n"} {
		if _, err := ParseExpectation([]byte(bad)); err == nil {
			t.Errorf("ParseExpectation(%q) succeeded", bad)
		}
	}
	res := Result{Policy: "edge", Denied: true, Findings: []Finding{
		{Rule: "tpm", Mode: Enforce, File: "p.hcl", Line: 3, Message: "m"},
		{Rule: "fortress", Mode: Warn},
	}}
	back, err := ParseExpectation(FormatExpectation(res))
	if err != nil || len(back.Compare(res)) != 0 {
		t.Errorf("round trip: %v %v", err, back.Compare(res))
	}
	x = &Expectation{Verdict: "allow", Policy: "other", Findings: []ExpectedFinding{{Warn, "fortress"}, {Enforce, "ebpf"}}}
	diffs := strings.Join(x.Compare(res), "\n")
	for _, want := range []string{"verdict: expected allow, got deny", "policy: expected other, got edge",
		"unexpected finding: enforce tpm at p.hcl:3: m", "missing finding: enforce ebpf"} {
		if !strings.Contains(diffs, want) {
			t.Errorf("diffs lack %q:\n%s", want, diffs)
		}
	}
}

func TestPolicyRunSuiteErrors(t *testing.T) {
	set := mustParse(t, "p.hcl", fileB)
	if _, err := RunSuite(set, t.TempDir(), time.Now()); err == nil {
		t.Error("empty directory accepted")
	}
	dir := t.TempDir()
	good, err := MarshalEvidence(Evidence{AgentID: "a", TPM: true, Runtime: &RuntimeEvidence{FortressActive: true}})
	if err != nil {
		t.Fatal(err)
	}
	write(t, dir, "no-expect.json", string(good))
	write(t, dir, "bad-json.json", "{")
	write(t, dir, "bad-expect.json", string(good))
	write(t, dir, "bad-expect.expect", "verdict perhaps\n")
	write(t, dir, "ok.json", string(good))
	write(t, dir, "ok.expect", "verdict allow\npolicy everyone\n")
	cases, err := RunSuite(set, dir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	status := map[string]bool{}
	for _, c := range cases {
		status[c.Name] = c.OK()
	}
	if len(cases) != 4 || !status["ok"] || status["no-expect"] || status["bad-json"] || status["bad-expect"] {
		t.Errorf("%v", status)
	}
}

func TestPolicyEvidenceFormat(t *testing.T) {
	ev := Evidence{
		AgentID: "a", Partition: "p", TPM: true, RecordedAt: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
		Boot: &BootEvidence{Bank: "sha1", PCRs: map[int]string{0: hexOf("0", 40), 10: hexOf("a", 40)}, SecureBoot: nil,
			Events: []BootEvent{{Seq: 1, PCR: 0, Type: "EV_POST_CODE", Digest: hexOf("1", 40), Note: "x"}}},
		Runtime: &RuntimeEvidence{AgentBinarySHA256: dAgent1, BPFPrograms: map[string]string{"p": dProgA}},
	}
	b, err := MarshalEvidence(ev)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"version": 1`, `"secure_boot": null`, `"10": "aaaa`, `"recorded_at": "2025-01-02T03:04:05Z"`, `"bpf_programs": {`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("evidence JSON lacks %s:\n%s", want, b)
		}
	}
	back, err := ParseEvidence(b)
	if err != nil || back.Boot.PCRs[10] != ev.Boot.PCRs[10] || back.Boot.SecureBoot != nil || !back.RecordedAt.Equal(ev.RecordedAt) {
		t.Fatalf("round trip: %v %+v", err, back)
	}

	bad := map[string]string{
		"unknown field":  `{"version": 1, "agent": "x"}`,
		"old version":    `{"version": 0}`,
		"new version":    `{"version": 2}`,
		"trailing":       `{"version": 1} {}`,
		"bad bank":       `{"version": 1, "boot": {"bank": "md5", "pcrs": {}}}`,
		"short digest":   `{"version": 1, "boot": {"bank": "sha256", "pcrs": {"0": "00"}}}`,
		"pcr range":      `{"version": 1, "boot": {"bank": "sha1", "pcrs": {"24": "` + hexOf("0", 40) + `"}}}`,
		"event digest":   `{"version": 1, "boot": {"bank": "sha1", "pcrs": {}, "events": [{"pcr": 1, "type": "EV_IPL", "digest": "zz"}]}}`,
		"event type":     `{"version": 1, "boot": {"bank": "sha1", "pcrs": {}, "events": [{"pcr": 1, "digest": "` + hexOf("0", 40) + `"}]}}`,
		"agent digest":   `{"version": 1, "runtime": {"agent_binary_sha256": "abc"}}`,
		"program digest": `{"version": 1, "runtime": {"bpf_programs": {"x": "` + hexOf("0", 40) + `"}}}`,
		"empty program":  `{"version": 1, "runtime": {"bpf_programs": {"": "` + hexOf("0", 64) + `"}}}`,
		"not json":       `policy "x" {}`,
	}
	for name, text := range bad {
		if _, err := ParseEvidence([]byte(text)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	var ee *EvidenceError
	if _, err := ParseEvidence([]byte(bad["short digest"])); !errors.As(err, &ee) || ee.Field != "boot.pcrs.0" {
		t.Errorf("typed error: %v", err)
	}
	if _, err := LoadEvidence(filepath.Join(t.TempDir(), "none.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}
