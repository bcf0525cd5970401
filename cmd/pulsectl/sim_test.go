package main

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pulse-attest/pulse/internal/testutil"
	"github.com/pulse-attest/pulse/tpm"
)

// run runs a pulsectl command line through the registry, as main does.
func run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = commands.Main(args, &out, &errb)
	return code, out.String(), errb.String()
}

func keyValues(t *testing.T, s string) map[string]string {
	t.Helper()
	kv := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			t.Fatalf("output line %q is not key=value", sc.Text())
		}
		kv[k] = v
	}
	return kv
}

func TestSimCommands(t *testing.T) {
	testutil.RequireTools(t, "swtpm", "swtpm_setup", "swtpm_ioctl", "swtpm_localca")
	fx := testutil.LoadFixture(t, "arch-linux-workstation")
	state := filepath.Join(t.TempDir(), "sim")

	code, out, errOut := run(t, "sim", "start", "--state", state, "--boot-log", fx.LogPath)
	if code != 0 {
		t.Fatalf("sim start: exit %d: %s", code, errOut)
	}
	t.Cleanup(func() { run(t, "sim", "stop", "--state", state) })
	kv := keyValues(t, out)
	if !strings.HasPrefix(kv["tpm_spec"], "swtpm:") || kv["firmware_log"] != filepath.Join(state, "binary_bios_measurements") {
		t.Fatalf("sim start printed %q", out)
	}
	if _, err := os.Stat(kv["localca_cert"]); err != nil {
		t.Fatalf("local CA cert: %v", err)
	}
	logged, err := tpm.ReadFirmwareLog(kv["firmware_log"])
	if err != nil || !bytes.Equal(logged, fx.Log) {
		t.Fatalf("firmware log copy: %v", err)
	}

	pcrs := func() map[uint32][]byte {
		t.Helper()
		tp, err := tpm.Open(kv["tpm_spec"], nil)
		if err != nil {
			t.Fatal(err)
		}
		defer tp.Close()
		v, err := tp.ReadPCRs(tpm.AlgSHA256, []uint32{0, 1, 2, 3, 4, 5, 6, 7})
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	matches := func(v map[uint32][]byte) bool {
		for i := uint32(0); i < 8; i++ {
			if !bytes.Equal(v[i], fx.PCRs["sha256"][int(i)]) {
				return false
			}
		}
		return true
	}
	if !matches(pcrs()) {
		t.Fatal("PCRs after sim start --boot-log do not match the fixture")
	}

	// A second start on the same state refuses.
	if code, _, errOut := run(t, "sim", "start", "--state", state); code != 1 || !strings.Contains(errOut, "already running") {
		t.Fatalf("second start: exit %d: %s", code, errOut)
	}

	// Plain reboot: PCRs back to zero, no firmware log.
	code, out, errOut = run(t, "sim", "reboot", "--state", state)
	if code != 0 {
		t.Fatalf("sim reboot: exit %d: %s", code, errOut)
	}
	if keyValues(t, out)["firmware_log"] != "" {
		t.Fatalf("plain reboot still reports a firmware log: %q", out)
	}
	for i, v := range pcrs() {
		if !bytes.Equal(v, make([]byte, 32)) {
			t.Fatalf("pcr %d = %x after reboot", i, v)
		}
	}

	// Reboot with a log boots it again.
	if code, _, errOut := run(t, "sim", "reboot", "--state", state, "--boot-log", fx.LogPath); code != 0 {
		t.Fatalf("sim reboot --boot-log: exit %d: %s", code, errOut)
	}
	if !matches(pcrs()) {
		t.Fatal("PCRs after sim reboot --boot-log do not match the fixture")
	}
	// A bad log is refused and the simulator keeps running.
	bad := filepath.Join(t.TempDir(), "bad.bin")
	if err := os.WriteFile(bad, fx.Log[:97], 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := run(t, "sim", "reboot", "--state", state, "--boot-log", bad); code != 1 || errOut == "" {
		t.Fatalf("reboot with a truncated log: exit %d: %s", code, errOut)
	}

	pid := keyValues(t, out)["pid"]
	code, out, errOut = run(t, "sim", "stop", "--state", state)
	if code != 0 || strings.TrimSpace(out) != "stopped="+pid {
		t.Fatalf("sim stop: exit %d: %q %s", code, out, errOut)
	}
	if code, _, errOut := run(t, "sim", "stop", "--state", state); code != 1 || !strings.Contains(errOut, "no simulator running") {
		t.Fatalf("second stop: exit %d: %s", code, errOut)
	}
	if code, _, _ := run(t, "sim", "reboot", "--state", state); code != 1 {
		t.Fatalf("reboot of a stopped simulator: exit %d", code)
	}
}

func TestSimCommandUsage(t *testing.T) {
	for _, args := range [][]string{
		{"sim", "start"},
		{"sim", "stop"},
		{"sim", "reboot", "--boot-log", "x"},
		{"sim", "start", "--state", "d", "extra"},
		{"sim", "stop", "--state", "d", "--boot-log", "x"},
		{"sim", "start", "--bogus"},
	} {
		if code, _, errOut := run(t, args...); code != 2 || errOut == "" {
			t.Errorf("%q: exit %d, stderr %q; want usage error 2", args, code, errOut)
		}
	}
	if code, _, errOut := run(t, "sim", "start", "--state", t.TempDir(), "--boot-log", filepath.Join(t.TempDir(), "missing.bin")); code != 1 || errOut == "" {
		t.Errorf("missing boot log: exit %d, %q", code, errOut)
	}
}

// TestSimRebootUnclean: sim reboot is orderly (TPM2_Shutdown first, as the
// kernel does on a reboot); --unclean is a power loss, which the TPM
// reports as an unorderly shutdown.
func TestSimRebootUnclean(t *testing.T) {
	testutil.RequireTools(t, "swtpm", "swtpm_setup", "swtpm_ioctl", "swtpm_localca")
	state := filepath.Join(t.TempDir(), "sim")
	code, out, errOut := run(t, "sim", "start", "--state", state)
	if code != 0 {
		t.Fatalf("sim start: exit %d: %s", code, errOut)
	}
	t.Cleanup(func() { run(t, "sim", "stop", "--state", state) })
	spec := keyValues(t, out)["tpm_spec"]
	orderly := func() bool {
		t.Helper()
		tp, err := tpm.Open(spec, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer tp.Close()
		st, err := tp.Lockout()
		if err != nil {
			t.Fatal(err)
		}
		return st.Orderly
	}
	for _, c := range []struct {
		args    []string
		orderly bool
	}{
		{[]string{"sim", "reboot", "--state", state, "--unclean"}, false},
		{[]string{"sim", "reboot", "--state", state}, true},
		{[]string{"sim", "reboot", "--state", state, "--unclean"}, false},
	} {
		if code, _, errOut := run(t, c.args...); code != 0 {
			t.Fatalf("%v: exit %d: %s", c.args, code, errOut)
		}
		if got := orderly(); got != c.orderly {
			t.Fatalf("%v: the TPM reports the shutdown orderly=%t, want %t", c.args, got, c.orderly)
		}
	}
}
