package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/internal/testutil"
	"github.com/pulse-attest/pulse/policy"
)

var updatePolicyEvidence = flag.Bool("update-policy", false, "rewrite the evidence files under policy/testdata from the fixture logs")

func runPolicyCmd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := commands.Main(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

const policyRecordedAt = "2025-06-01T12:00:00Z"

// Runtime facts of the suite's devices: the digests of pulse-agent 1.5.0
// and of two eBPF builds (see policy/examples).
const (
	agent150   = "262bf28c4568feebaaa60bcf3fe3e15e098f924d5d25ee7714b0e17c4262cbd2"
	agentOther = "4d7a7c1be27baf035a6b56a247c96184381a29dc6641c54c8fa3b7c72391c408"
	shieldXDP  = "shield_xdp=d786201b37aeb1690416b63fe625c390ea1a5045b7f4a285b5b9a0477ca6cedf"
	sentSignal = "sentinel_signal=875c0ff317371a14dbb00f9c9f5693ee65961e5a35a84fe37f0415a5382c93da"
)

type evidenceCase struct {
	out     string // path under policy/testdata
	fixture string // "" = no firmware log
	args    []string
}

// policyEvidenceCases are the evidence files committed under
// policy/testdata: every fixture in both banks (for the fixture tests of
// package policy), and the sample regression suite.
func policyEvidenceCases(t *testing.T) []evidenceCase {
	var cases []evidenceCase
	for _, name := range testutil.EventLogFixtures(t) {
		f := testutil.LoadFixture(t, name)
		for _, bank := range []string{"sha256", "sha1"} {
			if f.PCRs[bank] == nil {
				continue
			}
			cases = append(cases, evidenceCase{
				out: filepath.Join("evidence", bank, name+".json"), fixture: name,
				args: []string{"--bank", bank, "--agent-id", name, "--partition", "fixtures"},
			})
		}
	}
	cloud := []string{"--partition", "cloud", "--agent-binary", agent150, "--bpf", shieldXDP, "--bpf", sentSignal}
	suite := func(name, fixture string, args ...string) evidenceCase {
		return evidenceCase{out: filepath.Join("suite", "evidence", name+".json"), fixture: fixture, args: args}
	}
	cases = append(cases,
		suite("rhel8-uefi", "rhel8-uefi", append([]string{"--agent-id", "vm-rhel8"}, cloud...)...),
		suite("ubuntu-2104-no-secure-boot", "ubuntu-2104-no-secure-boot", append([]string{"--agent-id", "vm-ubuntu"}, cloud...)...),
		suite("rhel8-unapproved-agent", "rhel8-uefi", "--agent-id", "vm-rhel8-b", "--partition", "cloud",
			"--agent-binary", agentOther, "--bpf", shieldXDP, "--bpf", sentSignal, "--bpf", "rogue_prog="+strings.Repeat("ab", 32)),
		suite("cloud-mtls-only", "", append([]string{"--agent-id", "vm-no-tpm", "--no-tpm"}, cloud...)...),
		suite("debian-10", "debian-10", "--agent-id", "scanner-07", "--partition", "legacy"),
		suite("arch-linux-workstation", "arch-linux-workstation", "--agent-id", "ws-arch", "--partition", "workstations"),
		suite("glinux-alex", "glinux-alex", "--agent-id", "ws-alex", "--partition", "workstations"),
		suite("unknown-partition", "rhel8-uefi", "--agent-id", "vm-stray", "--partition", "staging"),
	)
	return cases
}

// TestPolicyFixtureEvidence: the evidence files under policy/testdata are
// exactly what `pulsectl policy evidence` makes of the real fixture logs
// verified against the PCR values their TPMs reported.
func TestPolicyFixtureEvidence(t *testing.T) {
	root := testutil.RepoRoot(t)
	dir := t.TempDir()
	for _, c := range policyEvidenceCases(t) {
		args := []string{"policy", "evidence", "--recorded-at", policyRecordedAt, "-o", filepath.Join(dir, "out.json")}
		if c.fixture != "" {
			logDir := testutil.EventLogDir(t)
			args = append(args, "--log", filepath.Join(logDir, c.fixture+".bin"), "--pcrs", filepath.Join(logDir, c.fixture+".json"))
		}
		args = append(args, c.args...)
		code, _, errOut := runPolicyCmd(t, args...)
		if code != 0 {
			t.Fatalf("%s: exit %d: %s", c.out, code, errOut)
		}
		got, err := os.ReadFile(filepath.Join(dir, "out.json"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := policy.ParseEvidence(got); err != nil {
			t.Fatalf("%s: output does not parse: %v", c.out, err)
		}
		path := filepath.Join(root, "policy", "testdata", c.out)
		if *updatePolicyEvidence {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, got, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (regenerate with go test ./cmd/pulsectl -run PolicyFixtureEvidence -update-policy)", err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is stale: regenerate with go test ./cmd/pulsectl -run PolicyFixtureEvidence -update-policy", path)
		}
	}
}

// TestPolicyEvidenceSelfReplay: without --pcrs the log is verified against
// its own replay; for a fixture whose reported PCRs cover every PCR the log
// extends, that gives the same events.
func TestPolicyEvidenceSelfReplay(t *testing.T) {
	logDir := testutil.EventLogDir(t)
	dir := t.TempDir()
	self, quoted := filepath.Join(dir, "self.json"), filepath.Join(dir, "quoted.json")
	if code, _, e := runPolicyCmd(t, "policy", "evidence", "--log", filepath.Join(logDir, "rhel8-uefi.bin"), "-o", self); code != 0 {
		t.Fatal(e)
	}
	if code, _, e := runPolicyCmd(t, "policy", "evidence", "--log", filepath.Join(logDir, "rhel8-uefi.bin"),
		"--pcrs", filepath.Join(logDir, "rhel8-uefi.json"), "-o", quoted); code != 0 {
		t.Fatal(e)
	}
	a, err := policy.LoadEvidence(self)
	if err != nil {
		t.Fatal(err)
	}
	b, err := policy.LoadEvidence(quoted)
	if err != nil {
		t.Fatal(err)
	}
	if a.Boot.Bank != "sha256" || len(a.Boot.Events) != len(b.Boot.Events) || len(a.Boot.Events) == 0 {
		t.Fatalf("self replay: bank %s, %d events; quoted: %d events", a.Boot.Bank, len(a.Boot.Events), len(b.Boot.Events))
	}
	for i := range a.Boot.Events {
		if a.Boot.Events[i] != b.Boot.Events[i] {
			t.Fatalf("event %d differs: %+v vs %+v", i, a.Boot.Events[i], b.Boot.Events[i])
		}
	}
	if !strings.Contains(a.Source, "own replay") {
		t.Errorf("self-replayed evidence does not say so: %q", a.Source)
	}
}

// TestPolicyEvidenceRejectsBadLogs: a log that does not replay to the
// reported PCRs, a truncated log and missing arguments are refused.
func TestPolicyEvidenceRejectsBadLogs(t *testing.T) {
	logDir := testutil.EventLogDir(t)
	raw, err := os.ReadFile(filepath.Join(logDir, "rhel8-uefi.bin"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ev, err := policy.LoadEvidence(filepath.Join(testutil.RepoRoot(t), "policy", "testdata", "evidence", "sha256", "rhel8-uefi.json"))
	if err != nil {
		t.Fatal(err)
	}
	// Flip one byte of the shim's digest: the log no longer replays to the quote.
	var shim string
	for _, e := range ev.Boot.Events {
		if e.Type == "EV_EFI_BOOT_SERVICES_APPLICATION" {
			shim = e.Digest
			break
		}
	}
	d := mustHex(t, shim)
	i := bytes.Index(raw, d)
	if i < 0 {
		t.Fatal("shim digest not found in the log")
	}
	tampered := bytes.Clone(raw)
	tampered[i] ^= 0xff
	tp := filepath.Join(dir, "tampered.bin")
	if err := os.WriteFile(tp, tampered, 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := runPolicyCmd(t, "policy", "evidence", "--log", tp, "--pcrs", filepath.Join(logDir, "rhel8-uefi.json"))
	if code != 1 || !strings.Contains(errOut, "PCR") {
		t.Errorf("tampered log: exit %d, stderr %q", code, errOut)
	}
	trunc := filepath.Join(dir, "trunc.bin")
	if err := os.WriteFile(trunc, raw[:len(raw)/3], 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := runPolicyCmd(t, "policy", "evidence", "--log", trunc); code != 1 || errOut == "" {
		t.Errorf("truncated log: exit %d, stderr %q", code, errOut)
	}
	if code, _, _ := runPolicyCmd(t, "policy", "evidence"); code != 2 {
		t.Errorf("no arguments: exit %d, want 2", code)
	}
	if code, _, _ := runPolicyCmd(t, "policy", "evidence", "--agent-binary", "xyz"); code != 1 {
		t.Errorf("bad digest: exit %d, want 1", code)
	}
	if code, _, errOut := runPolicyCmd(t, "policy", "evidence", "--log", filepath.Join(logDir, "debian-10.bin"), "--bank", "sha256"); code != 1 || errOut == "" {
		t.Errorf("bank missing from log: exit %d, stderr %q", code, errOut)
	}
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b := make([]byte, len(s)/2)
	for i := range b {
		var v byte
		for _, c := range s[2*i : 2*i+2] {
			v <<= 4
			switch {
			case c >= '0' && c <= '9':
				v |= byte(c - '0')
			case c >= 'a' && c <= 'f':
				v |= byte(c-'a') + 10
			default:
				t.Fatalf("bad hex %q", s)
			}
		}
		b[i] = v
	}
	return b
}

// TestPolicyCheckExamples: every annotated example passes policy check, as
// CI runs it.
func TestPolicyCheckExamples(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(testutil.RepoRoot(t), "policy", "examples", "*.hcl"))
	if len(files) == 0 {
		t.Fatal("no examples")
	}
	for _, f := range files {
		code, out, errOut := runPolicyCmd(t, "policy", "check", f)
		if code != 0 || errOut != "" || !strings.HasPrefix(out, "ok: ") {
			t.Errorf("%s: exit %d\nstdout: %s\nstderr: %s", f, code, out, errOut)
		}
	}
	// All files at once are one set in which minimal.hcl's catch-all comes
	// before the policies of the later files: check must report them.
	code, _, errOut := runPolicyCmd(t, append([]string{"policy", "check"}, files...)...)
	if code != 1 || !strings.Contains(errOut, `policy "payment-terminals" is unreachable`) {
		t.Errorf("examples together: exit %d, stderr %s", code, errOut)
	}
}

// TestPolicyCheckInvalid: policy check prints each invalid file's golden
// diagnostics and exits 1.
func TestPolicyCheckInvalid(t *testing.T) {
	root := filepath.Join(testutil.RepoRoot(t), "policy")
	files, _ := filepath.Glob(filepath.Join(root, "testdata", "invalid", "*.hcl"))
	if len(files) == 0 {
		t.Fatal("no invalid files")
	}
	for _, f := range files {
		code, out, errOut := runPolicyCmd(t, "policy", "check", f)
		golden, err := os.ReadFile(strings.TrimSuffix(f, ".hcl") + ".golden")
		if err != nil {
			t.Fatal(err)
		}
		want := strings.ReplaceAll(string(golden), "testdata/invalid/", filepath.Join(root, "testdata", "invalid")+"/")
		if code != 1 || out != "" || !strings.HasPrefix(errOut, want) || !(strings.HasSuffix(errOut, " errors\n") || strings.HasSuffix(errOut, "\n1 error\n")) {
			t.Errorf("%s: exit %d\nstdout: %s\nstderr:\n%s\nwant stderr starting:\n%s", f, code, out, errOut, want)
		}
	}
	if code, _, errOut := runPolicyCmd(t, "policy", "check", filepath.Join(t.TempDir(), "missing.hcl")); code != 1 || !strings.Contains(errOut, "cannot read policy file") {
		t.Errorf("missing file: exit %d, stderr %q", code, errOut)
	}
	if code, _, _ := runPolicyCmd(t, "policy", "check"); code != 2 {
		t.Errorf("no file: exit %d, want 2", code)
	}
}

// TestPolicyTestSuite runs the sample regression suite, then breaks one
// expectation and one evidence file to see the command fail.
func TestPolicyTestSuite(t *testing.T) {
	suite := filepath.Join(testutil.RepoRoot(t), "policy", "testdata", "suite")
	code, out, errOut := runPolicyCmd(t, "policy", "test", filepath.Join(suite, "policy.hcl"), "--evidence", filepath.Join(suite, "evidence"))
	if code != 0 {
		t.Fatalf("suite: exit %d\n%s\n%s", code, out, errOut)
	}
	for _, want := range []string{"rhel8-uefi ", "ubuntu-2104-no-secure-boot", "deny", "allow", " 0 failed"} {
		if !strings.Contains(out, want) {
			t.Errorf("suite output lacks %q:\n%s", want, out)
		}
	}

	// A copy whose expectation says the Ubuntu VM is allowed must fail.
	dir := t.TempDir()
	ents, _ := os.ReadDir(filepath.Join(suite, "evidence"))
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(suite, "evidence", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if e.Name() == "ubuntu-2104-no-secure-boot.expect" {
			b = []byte("verdict allow\npolicy cloud-vms\n")
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	code, out, _ = runPolicyCmd(t, "policy", "test", "--evidence", dir, filepath.Join(suite, "policy.hcl"))
	if code != 1 || !strings.Contains(out, "FAIL") || !strings.Contains(out, "verdict: expected allow, got deny") ||
		!strings.Contains(out, `unexpected finding: enforce measured_boot.secure_boot`) {
		t.Errorf("broken expectation: exit %d\n%s", code, out)
	}

	// --update rewrites the expectations from the results; the suite passes again.
	if code, out, errOut := runPolicyCmd(t, "policy", "test", filepath.Join(suite, "policy.hcl"), "--evidence", dir, "--update"); code != 0 {
		t.Fatalf("update: exit %d %s %s", code, out, errOut)
	}
	if code, out, _ := runPolicyCmd(t, "policy", "test", filepath.Join(suite, "policy.hcl"), "--evidence", dir); code != 0 {
		t.Errorf("after update: exit %d\n%s", code, out)
	}

	// A corrupt evidence file is a failed case, not a crash.
	if err := os.WriteFile(filepath.Join(dir, "debian-10.json"), []byte(`{"version": 1, "boot": {"bank": "md5"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, _ = runPolicyCmd(t, "policy", "test", filepath.Join(suite, "policy.hcl"), "--evidence", dir)
	if code != 1 || !strings.Contains(out, "unknown bank") {
		t.Errorf("corrupt evidence: exit %d\n%s", code, out)
	}
	if code, _, _ := runPolicyCmd(t, "policy", "test", filepath.Join(suite, "policy.hcl"), "--evidence", t.TempDir()); code != 1 {
		t.Errorf("empty evidence dir: exit %d, want 1", code)
	}
}

// TestPolicyDeriveCLI: a policy derived from each fixture's evidence passes
// policy check, allows that evidence and denies every other fixture.
func TestPolicyDeriveCLI(t *testing.T) {
	evDir := filepath.Join(testutil.RepoRoot(t), "policy", "testdata", "evidence")
	var all []string
	for _, bank := range []string{"sha256", "sha1"} {
		m, _ := filepath.Glob(filepath.Join(evDir, bank, "*.json"))
		all = append(all, m...)
	}
	if len(all) < 8 {
		t.Fatalf("want fixture evidence in both banks, got %d files", len(all))
	}
	dir := t.TempDir()
	sources, _ := filepath.Glob(filepath.Join(evDir, "sha256", "*.json"))
	sources = append(sources, filepath.Join(evDir, "sha1", "debian-10.json"))
	for _, src := range sources {
		out := filepath.Join(dir, "derived.hcl")
		if code, _, errOut := runPolicyCmd(t, "policy", "derive", "--evidence", src, "--name", "derived", "-o", out); code != 0 {
			t.Fatalf("derive %s: %s", src, errOut)
		}
		if code, _, errOut := runPolicyCmd(t, "policy", "check", out); code != 0 {
			t.Fatalf("derived from %s does not check:\n%s", src, errOut)
		}
		set, diags := policy.LoadFiles(out)
		if set == nil {
			t.Fatal(diags)
		}
		p := set.Policies()[0]
		for _, other := range all {
			ev, err := policy.LoadEvidence(other)
			if err != nil {
				t.Fatal(err)
			}
			res := p.Evaluate(*ev, time.Now())
			if other == src && res.Denied {
				t.Errorf("policy derived from %s denies its own evidence: %v", filepath.Base(src), res.Findings)
			}
			if other != src && !res.Denied {
				t.Errorf("policy derived from %s allows %s", src, other)
			}
		}
	}
	if code, _, _ := runPolicyCmd(t, "policy", "derive"); code != 2 {
		t.Errorf("derive without --evidence: exit %d", code)
	}
	if code, _, errOut := runPolicyCmd(t, "policy", "derive", "--evidence", filepath.Join(dir, "nope.json")); code != 1 || errOut == "" {
		t.Errorf("derive missing file: exit %d", code)
	}
}

// TestPolicyEvidenceRuntimePCRHistory: policy evidence records the log's
// MOK measurements in the runtime PCR (14 unless --runtime-pcr says
// otherwise), refuses a log the verifier would refuse, and a runtime PCR
// the verifier would not accept.
func TestPolicyEvidenceRuntimePCRHistory(t *testing.T) {
	logDir := testutil.EventLogDir(t)
	rhel8 := filepath.Join(logDir, "rhel8-uefi.bin")
	dir := t.TempDir()
	out := filepath.Join(dir, "ev.json")
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{nil, []string{"MokList", "MokListX"}},
		{[]string{"--runtime-pcr", "14"}, []string{"MokList", "MokListX"}},
		{[]string{"--runtime-pcr", "15"}, []string{}},
	} {
		args := append([]string{"policy", "evidence", "--log", rhel8, "-o", out}, tc.args...)
		if code, _, errOut := runPolicyCmd(t, args...); code != 0 {
			t.Fatalf("%v: exit %d: %s", tc.args, code, errOut)
		}
		ev, err := policy.LoadEvidence(out)
		if err != nil {
			t.Fatal(err)
		}
		if got := ev.Boot.RuntimePCRHistory; got == nil || !slices.Equal(got, tc.want) {
			t.Errorf("%v: runtime_pcr_history %#v, want %#v", tc.args, got, tc.want)
		}
	}
	for _, pcr := range []string{"10", "16", "9"} {
		if code, _, errOut := runPolicyCmd(t, "policy", "evidence", "--log", rhel8, "--runtime-pcr", pcr); code != 2 || !strings.Contains(errOut, "11-15") {
			t.Errorf("--runtime-pcr %s: exit %d, stderr %q", pcr, code, errOut)
		}
	}
	// An EV_IPL event in PCR 14 that names no MOK variable. Its data is not
	// covered by its digest, so the log still replays.
	raw, err := os.ReadFile(rhel8)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(raw, []byte("MokListX\x00"))
	if i < 0 {
		t.Fatal("no MokListX event in the rhel8 log")
	}
	tampered := bytes.Clone(raw)
	copy(tampered[i:], "MokListY")
	tp := filepath.Join(dir, "tampered.bin")
	if err := os.WriteFile(tp, tampered, 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := runPolicyCmd(t, "policy", "evidence", "--log", tp, "--pcrs", filepath.Join(logDir, "rhel8-uefi.json"))
	if code != 1 || !strings.Contains(errOut, "in runtime PCR 14 is not a measurement of shim's MOK state") {
		t.Errorf("log with a non-MOK event in PCR 14: exit %d, stderr %q", code, errOut)
	}
}

// TestPolicyCheckOverlaps: policy check prints the partial overlaps of each
// policy/testdata/overlap set as its golden says, as warnings (exit 0), and
// nothing for a set without any.
func TestPolicyCheckOverlaps(t *testing.T) {
	root := filepath.Join(testutil.RepoRoot(t), "policy")
	tests := []struct {
		set      string
		warnings int
	}{
		{"partial", 1},
		{"partitions", 1},
		{"disjoint", 0},
	}
	for _, tc := range tests {
		t.Run(tc.set, func(t *testing.T) {
			dir := filepath.Join(root, "testdata", "overlap", tc.set)
			golden, err := os.ReadFile(dir + ".golden")
			if err != nil {
				t.Fatal(err)
			}
			want := strings.ReplaceAll(string(golden), "testdata/overlap/", filepath.Join(root, "testdata", "overlap")+"/")
			code, out, errOut := runPolicyCmd(t, "policy", "check", dir)
			if code != 0 || !strings.HasPrefix(out, "ok: ") {
				t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
			}
			if errOut != want || strings.Count(errOut, ": warning: ") != tc.warnings {
				t.Errorf("stderr:\n%s\nwant:\n%s", errOut, want)
			}
		})
	}
}
