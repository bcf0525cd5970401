package config

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/internal/hclconf"
)

var update = flag.Bool("update", false, "rewrite golden files")

// tlsFiles creates the three TLS files a config must name and returns the
// directory holding them.
func tlsFiles(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, n := range []string{"agent.crt", "agent.key", "ca.crt"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const tlsBlock = `tls {
  cert = "agent.crt"
  key  = "agent.key"
  ca   = "ca.crt"
}
`

func TestDefaults(t *testing.T) {
	dir := tlsFiles(t)
	c, err := Parse(filepath.Join(dir, "agent.hcl"), []byte(`verifier = "verifier.example:7443"`+"\n"+tlsBlock))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		File:        filepath.Join(dir, "agent.hcl"),
		Verifier:    "verifier.example:7443",
		TLS:         TLS{Cert: filepath.Join(dir, "agent.crt"), Key: filepath.Join(dir, "agent.key"), CA: filepath.Join(dir, "ca.crt")},
		TPM:         "auto",
		AKHandle:    0x81020001,
		RuntimePCR:  14,
		RuntimeLog:  "/run/pulse-agent/runtime.cel",
		FirmwareLog: "/sys/kernel/security/tpm0/binary_bios_measurements",
		StateDir:    "/var/lib/pulse-agent",
		Interval:    30 * time.Second,
		Partition:   "",
		BPF:         BPF{Enabled: false, PinDir: "/sys/fs/bpf/pulse"},
		LogLevel:    "info",

		BinaryRehashEvery: 10,
		ReleaseCodePages:  true,
	}
	if !reflect.DeepEqual(*c, want) {
		t.Fatalf("defaults:\n got %+v\nwant %+v", *c, want)
	}
}

func TestFull(t *testing.T) {
	dir := tlsFiles(t)
	src := `verifier = "[::1]:7443"
tls {
  cert        = "agent.crt"
  key         = "agent.key"
  ca          = "ca.crt"
  server_name = "verifier.example"
}
tpm          = "swtpm:/tmp/swtpm/server.sock"
ak_handle    = "0x81020002"
runtime_pcr  = 15
runtime_log  = "run/runtime.cel"
firmware_log = "/tmp/fw.bin"
state_dir    = "state"
interval     = "5s"
partition    = "edge-west.1"
log_level    = "DEBUG"
log_json     = true
release_code_pages = false
bpf {
  enabled = true
  pin_dir = "/sys/fs/bpf/pulse-test"
}
`
	c, err := Parse(filepath.Join(dir, "agent.hcl"), []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case c.Verifier != "[::1]:7443", c.TLS.ServerName != "verifier.example",
		c.TPM != "swtpm:/tmp/swtpm/server.sock", c.AKHandle != 0x81020002, c.RuntimePCR != 15,
		c.RuntimeLog != filepath.Join(dir, "run/runtime.cel"), c.FirmwareLog != "/tmp/fw.bin",
		c.StateDir != filepath.Join(dir, "state"), c.Interval != 5*time.Second, c.Partition != "edge-west.1",
		!c.BPF.Enabled, c.BPF.PinDir != "/sys/fs/bpf/pulse-test", !c.LogJSON, c.ReleaseCodePages:
		t.Fatalf("unexpected config %+v", *c)
	}
	if c.Level().String() != "debug" {
		t.Fatalf("level %s", c.Level())
	}
	// A numeric handle is accepted too.
	c, err = Parse(filepath.Join(dir, "agent.hcl"), []byte(`verifier = "v:1"`+"\n"+tlsBlock+"ak_handle = 2164391938\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.AKHandle != 0x81020002 {
		t.Fatalf("ak handle 0x%08x", c.AKHandle)
	}
}

func TestRuntimePCRs(t *testing.T) {
	dir := tlsFiles(t)
	for pcr := -1; pcr <= 24; pcr++ {
		src := `verifier = "v:1"` + "\n" + tlsBlock + "runtime_pcr = " + itoa(pcr) + "\n"
		c, err := Parse(filepath.Join(dir, "agent.hcl"), []byte(src))
		ok := pcr >= 11 && pcr <= 15
		if ok {
			if err != nil || c.RuntimePCR != uint32(pcr) {
				t.Errorf("pcr %d: %v", pcr, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("pcr %d accepted", pcr)
			continue
		}
		if !strings.Contains(err.Error(), "agent.hcl:7:15: unusable runtime_pcr") {
			t.Errorf("pcr %d: error %q lacks the position", pcr, err)
		}
		if (pcr == 16 || pcr == 23) && !strings.Contains(err.Error(), "can be reset by any root process") {
			t.Errorf("pcr %d: error %q does not explain the reset", pcr, err)
		}
	}
}

func itoa(i int) string {
	if i < 0 {
		return "-" + itoa(-i)
	}
	if i < 10 {
		return string(rune('0' + i))
	}
	return itoa(i/10) + itoa(i%10)
}

func TestDiagnostics(t *testing.T) {
	dir := tlsFiles(t)
	base := `verifier = "verifier.example:7443"` + "\n" + tlsBlock // lines 1-6
	cases := []struct {
		name, src string
		want      []string
	}{
		{"unknown top-level key", base + `colour = "blue"` + "\n", []string{"agent.hcl:7:1: Unsupported argument"}},
		{"unknown block", base + "shield {\n}\n", []string{"agent.hcl:7:1: Unsupported block type"}},
		{"unknown tls key", `verifier = "v:1"` + "\ntls {\n  cert = \"agent.crt\"\n  key = \"agent.key\"\n  ca = \"ca.crt\"\n  sni = \"x\"\n}\n",
			[]string{"agent.hcl:6:3: Unsupported argument"}},
		{"missing verifier", tlsBlock, []string{"Missing required argument", "verifier"}},
		{"bad verifier", `verifier = "no-port"` + "\n" + tlsBlock, []string{"agent.hcl:1:12: invalid verifier address"}},
		{"verifier port zero", `verifier = "h:0"` + "\n" + tlsBlock, []string{"agent.hcl:1:12: invalid verifier address"}},
		{"missing cert file", `verifier = "v:1"` + "\ntls {\n  cert = \"nope.crt\"\n  key = \"agent.key\"\n  ca = \"ca.crt\"\n}\n",
			[]string{"agent.hcl:3:10: file not found"}},
		{"bad tpm", base + `tpm = "tpm0"` + "\n", []string{"agent.hcl:7:7: invalid tpm", "bad tpm spec"}},
		{"bad interval", base + `interval = "soon"` + "\n", []string{"agent.hcl:7:12: invalid duration"}},
		{"interval too short", base + `interval = "10ms"` + "\n", []string{"agent.hcl:7:12: duration out of range"}},
		{"interval too long", base + `interval = "25h"` + "\n", []string{"agent.hcl:7:12: duration out of range"}},
		{"handle not persistent", base + `ak_handle = "0x01000000"` + "\n", []string{"agent.hcl:7:13: invalid ak_handle", "owner persistent"}},
		{"handle garbage", base + `ak_handle = "zz"` + "\n", []string{"agent.hcl:7:13: invalid ak_handle"}},
		{"handle fraction", base + `ak_handle = 1.5` + "\n", []string{"agent.hcl:7:13: invalid ak_handle"}},
		{"handle bool", base + `ak_handle = true` + "\n", []string{"agent.hcl:7:13: invalid ak_handle"}},
		{"handle too large", base + `ak_handle = 4294967296` + "\n", []string{"agent.hcl:7:13: invalid ak_handle"}},
		{"pcr not a number", base + `runtime_pcr = "x"` + "\n", []string{"agent.hcl:7:16: Unsuitable value type"}},
		{"partition charset", base + `partition = "a b"` + "\n", []string{"agent.hcl:7:13: invalid partition"}},
		{"empty partition", base + `partition = ""` + "\n", []string{"agent.hcl:7:13: invalid partition"}},
		{"log level", base + `log_level = "verbose"` + "\n", []string{"agent.hcl:7:13: invalid log level"}},
		{"release code pages type", base + `release_code_pages = "yes"` + "\n", []string{"agent.hcl:7:23: Unsuitable value type"}},
		{"rehash zero", base + `binary_rehash_every = 0` + "\n", []string{"agent.hcl:7:23: invalid binary_rehash_every"}},
		{"empty state dir", base + `state_dir = ""` + "\n", []string{"agent.hcl:7:13: empty path"}},
		{"bpf enabled type", base + "bpf {\n  enabled = \"maybe\"\n}\n", []string{"agent.hcl:8:14: Unsuitable value type"}},
		{"duplicate tls", base + tlsBlock, []string{"agent.hcl:7:1: Duplicate tls block"}},
		{"syntax", `verifier = `, []string{"agent.hcl:1:"}},
		{"empty file", "\n", []string{"empty configuration file"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(filepath.Join(dir, "agent.hcl"), []byte(tc.src))
			if err == nil {
				t.Fatal("accepted")
			}
			var he *hclconf.Error
			if !errors.As(err, &he) {
				t.Fatalf("error %T is not an *hclconf.Error: %v", err, err)
			}
			msg := strings.ReplaceAll(err.Error(), dir+"/", "")
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q lacks %q", msg, w)
				}
			}
		})
	}
}

// TestGolden loads each testdata/bad/*.hcl and compares the full error text
// with its .golden file (go test -run TestGolden -update rewrites them).
func TestGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/bad/*.hcl")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			_, err := Load(f)
			if err == nil {
				t.Fatal("accepted")
			}
			got := err.Error() + "\n"
			golden := strings.TrimSuffix(f, ".hcl") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update)", err)
			}
			if got != string(want) {
				t.Errorf("diagnostics differ from %s:\n got:\n%s\nwant:\n%s", golden, got, want)
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.hcl"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("want ErrNotExist, got %v", err)
	}
}

// TestPathsAreAbsolute: a configuration loaded by a relative name still
// yields absolute paths, so the agent does not depend on its working
// directory (the launcher execs it with the same configuration).
func TestPathsAreAbsolute(t *testing.T) {
	dir := tlsFiles(t)
	if err := os.WriteFile(filepath.Join(dir, "agent.hcl"), []byte(`verifier = "v:1"`+"\n"+tlsBlock+`runtime_log = "run/rt.cel"`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	c, err := Load("agent.hcl")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{c.File, c.TLS.Cert, c.TLS.Key, c.TLS.CA, c.RuntimeLog, c.StateDir, c.FirmwareLog} {
		if !filepath.IsAbs(p) {
			t.Errorf("%q is not absolute", p)
		}
	}
	if c.RuntimeLog != filepath.Join(dir, "run/rt.cel") {
		t.Fatalf("runtime log %q", c.RuntimeLog)
	}
}
