package launcher

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/pulse-attest/pulse/tpm/cel"
)

// TestLaunchEnvironmentAllowList: through a real exec, the allow-listed
// variables reach the program, PATH is replaced, and LD_PRELOAD,
// LD_LIBRARY_PATH, GODEBUG, GOTRACEBACK, forged PULSE_AGENT_* values and
// anything else are dropped; the record measures exactly what was passed.
func TestLaunchEnvironmentAllowList(t *testing.T) {
	e := newLaunchEnv(t, false)
	bin := buildProbe(t, e.dir, "env")
	r := e.launch(t, bin, "",
		"TZ=Europe/Paris", "LANG=fr_FR.UTF-8", "LC_TIME=C", "NOTIFY_SOCKET=/run/systemd/notify",
		"HTTPS_PROXY=http://proxy.example:3128", "PULSE_TEST_LAUNCH_KEEP=HTTPS_PROXY",
		"LD_PRELOAD=/tmp/evil.so", "LD_LIBRARY_PATH=/tmp/evil", "LD_AUDIT=/tmp/evil.so",
		"GODEBUG=x509sha1=1,tlsrsakex=1", "GOTRACEBACK=crash", "PATH=/tmp/evil:/usr/bin",
		"SSL_CERT_FILE=/tmp/evil-roots.pem", "ARBITRARY=value",
		"PULSE_AGENT_LAUNCH_RECORD=99", "PULSE_AGENT_CONFIG_SHA256=00")
	got := map[string]string{}
	for _, kv := range r.Env {
		k, v, _ := strings.Cut(kv, "=")
		got[k] = v
	}
	want := map[string]string{
		"PATH": SafePath, "TZ": "Europe/Paris", "LANG": "fr_FR.UTF-8", "LC_TIME": "C",
		"NOTIFY_SOCKET": "/run/systemd/notify", "HTTPS_PROXY": "http://proxy.example:3128",
		// Set by the launcher, not inherited.
		RecordEnv: "1", ConfigPathEnv: e.cfgPath,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	for _, k := range []string{"LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "GODEBUG", "GOTRACEBACK", "SSL_CERT_FILE",
		"ARBITRARY", "PULSE_TEST_LAUNCH_CONFIG", "PULSE_TEST_LAUNCH_BINARY", "HOME"} {
		if v, ok := got[k]; ok {
			t.Errorf("%s=%q was passed to the agent", k, v)
		}
	}
	cfgBytes, _ := os.ReadFile(e.cfgPath)
	if sum := sha256.Sum256(cfgBytes); got[ConfigSHA256Env] != hex.EncodeToString(sum[:]) {
		t.Errorf("%s = %q, want the measured digest", ConfigSHA256Env, got[ConfigSHA256Env])
	}
	if len(r.Env) != len(want)+2 { // + the config descriptor and digest
		t.Errorf("environment names %q", envNames(r.Env))
	}

	// The record measures the passed environment, launcher variables aside.
	_, recs, _ := e.lastAgentRecord(t)
	cr, ok, err := FindConfigRecord(recs, len(recs)-1)
	if err != nil || !ok {
		t.Fatalf("no configuration record: %v", err)
	}
	var measured []string
	for _, kv := range r.Env {
		if !strings.HasPrefix(kv, "PULSE_AGENT_") {
			measured = append(measured, kv)
		}
	}
	slices.Sort(measured)
	if !slices.Equal(cr.Env, measured) {
		t.Errorf("record env %q, agent got %q", cr.Env, measured)
	}
}

// agentReport is what TestHelperAgent prints.
type agentReport struct {
	Error     string
	Partition string
	File      string
	Env       []string
}

// String leaves the environment out of failure messages (it can hold the
// test runner's secrets).
func (r agentReport) String() string {
	return fmt.Sprintf("{error %q partition %q file %q, %d variables}", r.Error, r.Partition, r.File, len(r.Env))
}

// TestHelperAgent is not a test: the launcher execs the test binary with
// "-- run --config PATH" and this loads the configuration as the agent
// does (LoadConfig), printing what it got.
func TestHelperAgent(t *testing.T) {
	args := flag.Args()
	if len(args) != 3 || args[0] != "run" || args[1] != "--config" {
		t.Skip("helper process only")
	}
	var r agentReport
	cfg, err := LoadConfig(args[2])
	if err != nil {
		r.Error = err.Error()
	} else {
		r.Partition, r.File = cfg.Partition, cfg.File
	}
	r.Env = os.Environ()
	json.NewEncoder(os.Stdout).Encode(r)
	os.Exit(0)
}

// TestLaunchConfigEditedAfterMeasurement: the configuration file is changed
// after the launcher measured it and before the exec; the agent runs with
// the measured bytes, and the record names their digest.
func TestLaunchConfigEditedAfterMeasurement(t *testing.T) {
	e := newLaunchEnv(t, true)
	measured, err := os.ReadFile(e.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	self, err := filepath.Abs(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	var r agentReport
	e.launchInto(t, &r, self,
		"PULSE_TEST_LAUNCH_ARGS="+strings.Join([]string{"-test.run=^TestHelperAgent$", "--", "run", "--config", e.cfgPath}, "\x1f"),
		"PULSE_TEST_LAUNCH_EDIT_CONFIG=partition = \"evil\"\n")
	if r.Error != "" || r.Partition != "" || r.File != e.cfgPath {
		t.Fatalf("agent loaded %v; want the measured configuration (no partition)", r)
	}
	now, _ := os.ReadFile(e.cfgPath)
	if !bytes.Contains(now, []byte(`"evil"`)) {
		t.Fatal("the edit did not happen")
	}
	for _, kv := range r.Env {
		if strings.HasPrefix(kv, "PULSE_AGENT_CONFIG_") {
			t.Errorf("%s left in the agent's environment after loading", kv)
		}
	}
	_, recs, _ := e.lastAgentRecord(t)
	cr, ok, err := FindConfigRecord(recs, len(recs)-1)
	if err != nil || !ok {
		t.Fatalf("no configuration record: %v", err)
	}
	if cr.ConfigSHA256 != sha256.Sum256(measured) {
		t.Fatalf("record digest %x, want the measured bytes' %x", cr.ConfigSHA256, sha256.Sum256(measured))
	}
}

// TestAgentRefusesUnboundConfig: an agent started with launcher variables
// that do not describe a sealed copy of the measured bytes refuses to
// start, through a real exec with the descriptor inherited.
func TestAgentRefusesUnboundConfig(t *testing.T) {
	e := newLaunchEnv(t, false)
	data, err := os.ReadFile(e.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	good := hex.EncodeToString(sum[:])
	regular, err := os.Open(e.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	defer regular.Close()
	sealed, err := sealedCopy(data)
	if err != nil {
		t.Fatal(err)
	}
	defer sealed.Close()
	other, err := sealedCopy(append(bytes.Clone(data), "partition = \"evil\"\n"...))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	tests := []struct {
		name    string
		file    *os.File
		sha     string
		path    string
		wantErr string // "" = loads
	}{
		{"sealed copy of the measured bytes", sealed, good, e.cfgPath, ""},
		{"regular file (could change)", regular, good, e.cfgPath, ErrConfigNotSealed.Error()},
		{"sealed copy of other bytes", other, good, e.cfgPath, ErrConfigDigest.Error()},
		{"digest of nothing", sealed, "", e.cfgPath, ErrConfigDigest.Error()},
		{"another path", sealed, good, filepath.Join(e.dir, "other.hcl"), ErrConfigPath.Error()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestHelperAgent$", "--", "run", "--config", e.cfgPath)
			// ExtraFiles[0] is descriptor 3 in the child.
			cmd.ExtraFiles = []*os.File{tc.file}
			cmd.Env = append(os.Environ(), ConfigFDEnv+"=3", ConfigSHA256Env+"="+tc.sha, ConfigPathEnv+"="+tc.path)
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("helper: %v", err)
			}
			var r agentReport
			if err := json.Unmarshal(out, &r); err != nil {
				t.Fatalf("helper output %q: %v", out, err)
			}
			switch {
			case tc.wantErr == "" && (r.Error != "" || r.Partition != ""):
				t.Fatalf("refused the measured configuration: %v", r)
			case tc.wantErr != "" && !strings.Contains(r.Error, tc.wantErr):
				t.Fatalf("loaded %v; want an error with %q", r, tc.wantErr)
			}
		})
	}
}

// TestLoadConfig covers LoadConfig's decisions in process, matching the
// errors with errors.Is.
func TestLoadConfig(t *testing.T) {
	e := newLaunchEnv(t, false)
	data, err := os.ReadFile(e.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	good := hex.EncodeToString(sum[:])
	unsealed, err := unix.MemfdCreate("unsealed", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	uf := os.NewFile(uintptr(unsealed), "unsealed")
	defer uf.Close()
	if _, err := uf.Write(data); err != nil {
		t.Fatal(err)
	}
	sealed, err := sealedCopy(data)
	if err != nil {
		t.Fatal(err)
	}
	defer sealed.Close()
	// The sealed copy cannot be changed, by the launcher or anyone.
	if _, err := sealed.WriteAt([]byte("x"), 0); !errors.Is(err, unix.EPERM) {
		t.Errorf("write to the sealed copy: %v, want EPERM", err)
	}
	if err := sealed.Truncate(1); !errors.Is(err, unix.EPERM) {
		t.Errorf("truncate of the sealed copy: %v, want EPERM", err)
	}
	if _, err := unix.FcntlInt(sealed.Fd(), unix.F_ADD_SEALS, 0); err == nil {
		// F_SEAL_SEAL: even adding no seal is refused.
		t.Error("the seals can still be changed")
	}

	tests := []struct {
		name    string
		f       *os.File
		sha     string
		path    string
		wantErr error
	}{
		{"measured", sealed, good, e.cfgPath, nil},
		{"unsealed memfd", uf, good, e.cfgPath, ErrConfigNotSealed},
		{"wrong digest", sealed, strings.Repeat("00", 32), e.cfgPath, ErrConfigDigest},
		{"upper-case digest is not the launcher's", sealed, strings.ToUpper(good), e.cfgPath, ErrConfigDigest},
		{"other path", sealed, good, "/etc/pulse/agent.hcl", ErrConfigPath},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := loadSealed(tc.f, tc.path, tc.sha, e.cfgPath)
			if tc.wantErr == nil {
				if err != nil || cfg.File != e.cfgPath {
					t.Fatalf("loadSealed: %v", err)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err %v, want %v", err, tc.wantErr)
			}
		})
	}

	t.Run("no launcher variables: the file", func(t *testing.T) {
		cfg, err := LoadConfig(e.cfgPath)
		if err != nil || cfg.File != e.cfgPath {
			t.Fatalf("LoadConfig: %v", err)
		}
	})
	for _, fd := range []string{"", "x", "0", "2", "-1"} {
		t.Run("descriptor "+fd, func(t *testing.T) {
			t.Setenv(ConfigFDEnv, fd)
			t.Setenv(ConfigSHA256Env, good)
			t.Setenv(ConfigPathEnv, e.cfgPath)
			if _, err := LoadConfig(e.cfgPath); !errors.Is(err, ErrConfigNotSealed) {
				t.Fatalf("err %v, want %v", err, ErrConfigNotSealed)
			}
		})
	}
}

func TestAgentEnv(t *testing.T) {
	in := []string{
		"PATH=/tmp/evil", "TZ=UTC", "TZ=Asia/Tokyo", "LANG=C.UTF-8", "LC_ALL=C", "LC_=x", "NOTIFY_SOCKET=/run/n",
		"LD_PRELOAD=/x.so", "LD_LIBRARY_PATH=/x", "GODEBUG=tlsrsakex=1", "GOTRACEBACK=crash", "GOMAXPROCS=1",
		"HOME=/root", "PULSE_AGENT_LAUNCH_RECORD=7", "HTTPS_PROXY=http://p:3128", "NOEQUALS", "=nothing",
	}
	tests := []struct {
		name    string
		keep    []string
		want    []string
		wantErr bool
	}{
		{"default allow-list", nil, []string{"LANG=C.UTF-8", "LC_ALL=C", "NOTIFY_SOCKET=/run/n", "PATH=" + SafePath, "TZ=UTC"}, false},
		{"keep a proxy", []string{"HTTPS_PROXY", "GOMAXPROCS"},
			[]string{"GOMAXPROCS=1", "HTTPS_PROXY=http://p:3128", "LANG=C.UTF-8", "LC_ALL=C", "NOTIFY_SOCKET=/run/n", "PATH=" + SafePath, "TZ=UTC"}, false},
		{"LD_PRELOAD cannot be kept", []string{"LD_PRELOAD"}, nil, true},
		{"LD_ anything cannot be kept", []string{"LD_BIND_NOW"}, nil, true},
		{"GODEBUG cannot be kept", []string{"GODEBUG"}, nil, true},
		{"GOTRACEBACK cannot be kept", []string{"GOTRACEBACK"}, nil, true},
		{"PATH cannot be kept", []string{"PATH"}, nil, true},
		{"launcher variables cannot be kept", []string{"PULSE_AGENT_LAUNCH_RECORD"}, nil, true},
		{"not a name", []string{"A=B"}, nil, true},
		{"leading digit", []string{"1A"}, nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := AgentEnv(in, tc.keep)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("kept %v: %q", tc.keep, got)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("AgentEnv = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	if d := droppedNames(in, []string{"TZ=UTC"}); slices.Contains(d, "PATH") || !slices.Contains(d, "LD_PRELOAD") || slices.Contains(d, "TZ") {
		t.Errorf("dropped names %q", d)
	}
}

func TestConfigRecordEncoding(t *testing.T) {
	r := &ConfigRecord{ConfigPath: "/etc/pulse/agent.hcl", ConfigSize: 321,
		Args: []string{"run", "--config", "/etc/pulse/agent.hcl", ""}, Env: []string{"LANG=C", "PATH=" + SafePath, "TZ="}}
	r.AgentSHA256[0], r.ConfigSHA256[31] = 0xaa, 0xbb
	data, err := r.Encode()
	if err != nil {
		t.Fatal(err)
	}
	back, err := DecodeConfigRecord(data)
	if err != nil {
		t.Fatal(err)
	}
	if back.AgentSHA256 != r.AgentSHA256 || back.ConfigSHA256 != r.ConfigSHA256 || back.ConfigPath != r.ConfigPath ||
		back.ConfigSize != r.ConfigSize || !slices.Equal(back.Args, r.Args) || !slices.Equal(back.Env, r.Env) {
		t.Fatalf("round trip %+v, want %+v", back, r)
	}
	g, err := r.Generic()
	if err != nil || g.Name != ConfigRecordName || !bytes.Equal(g.Data, data) {
		t.Fatalf("Generic = %+v, %v", g, err)
	}
	if _, err := cel.EncodeContent(g); err != nil {
		t.Fatalf("not a valid CEL content: %v", err)
	}

	tlv := func(typ byte, v string) string {
		return string([]byte{typ, 0, 0, byte(len(v) >> 8), byte(len(v))}) + v
	}
	head := tlv(1, string(r.AgentSHA256[:])) + tlv(2, "/p") + tlv(3, string(r.ConfigSHA256[:])) + tlv(4, "\x00\x00\x00\x00\x00\x00\x00\x01")
	if _, err := DecodeConfigRecord([]byte(head + tlv(5, "run") + tlv(6, "A=1"))); err != nil {
		t.Fatalf("hand-encoded record: %v", err)
	}
	bad := []struct{ name, data string }{
		{"empty", ""},
		{"truncated", head[:len(head)-3]},
		{"trailing byte", head + "\x05"},
		{"length past the end", head + "\x05\x00\x00\x01\x00ab"},
		{"short digest", tlv(1, "abc") + head[37:]},
		{"fields out of order", tlv(2, "/p") + tlv(1, string(r.AgentSHA256[:])) + head[37+7:]},
		{"argument after environment", head + tlv(6, "A=1") + tlv(5, "run")},
		{"unsorted environment", head + tlv(6, "B=1") + tlv(6, "A=1")},
		{"duplicate variable", head + tlv(6, "A=1") + tlv(6, "A=2")},
		{"entry without =", head + tlv(6, "A")},
		{"NUL in argument", head + tlv(5, "r\x00n")},
		{"path not UTF-8", tlv(1, string(r.AgentSHA256[:])) + tlv(2, "/\xff") + head[37+7:]},
		{"unknown field", head + tlv(9, "x")},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			if got, err := DecodeConfigRecord([]byte(tc.data)); !errors.Is(err, ErrInvalidConfigRecord) {
				t.Fatalf("decoded %+v, %v", got, err)
			}
		})
	}

	// FindConfigRecord pairs a record only with the binary it names.
	bin := &cel.AgentBinary{Path: "/x", SHA256: r.AgentSHA256}
	recs := []cel.Record{{RecNum: 0, Content: g}, {RecNum: 1, Content: bin}}
	if got, ok, err := FindConfigRecord(recs, 1); err != nil || !ok || got.ConfigPath != r.ConfigPath {
		t.Fatalf("FindConfigRecord = %+v %v %v", got, ok, err)
	}
	other := &cel.AgentBinary{Path: "/x", SHA256: [32]byte{1}}
	if _, ok, _ := FindConfigRecord([]cel.Record{recs[0], {RecNum: 1, Content: other}}, 1); ok {
		t.Error("a configuration record for another digest was paired")
	}
	marker := &cel.Generic{Name: cel.SelfMeasuredMarker, Data: r.AgentSHA256[:]}
	if _, ok, _ := FindConfigRecord([]cel.Record{{Content: marker}, recs[1]}, 1); ok {
		t.Error("a self-measured marker was taken for a configuration record")
	}
	if _, ok, _ := FindConfigRecord(recs, 0); ok {
		t.Error("record 0 has no predecessor")
	}
}
