package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/pulse-attest/pulse/internal/testutil"
)

func TestEventlogReplayJSON(t *testing.T) {
	names := testutil.EventLogFixtures(t)
	if len(names) == 0 {
		t.Fatal("no fixtures")
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			f := testutil.LoadFixture(t, name)
			var stdout, stderr bytes.Buffer
			if code := runEventlogReplay([]string{"--log", f.LogPath, "--json"}, &stdout, &stderr); code != 0 {
				t.Fatalf("exit %d: %s", code, stderr.String())
			}
			var out struct {
				PCRs       map[string]map[string]string `json:"pcrs"`
				SecureBoot map[string]any               `json:"secure_boot"`
			}
			dec := json.NewDecoder(bytes.NewReader(stdout.Bytes()))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&out); err != nil {
				t.Fatalf("output is not the documented JSON object: %v\n%s", err, stdout.String())
			}
			for bank, pcrs := range f.PCRs {
				got := out.PCRs[bank]
				if got == nil {
					t.Fatalf("bank %s missing from output", bank)
				}
				for idx, want := range pcrs {
					if g := got[strconv.Itoa(idx)]; g != hex.EncodeToString(want) {
						t.Errorf("%s PCR %d = %s, want %x", bank, idx, g, want)
					}
				}
				if len(got) != len(pcrs) {
					t.Errorf("%s: %d PCRs printed, fixture lists %d", bank, len(got), len(pcrs))
				}
			}
			if _, ok := out.SecureBoot["enabled"].(bool); !ok {
				t.Errorf("secure_boot.enabled missing: %v", out.SecureBoot)
			}
		})
	}
}

func TestEventlogReplaySecureBootAndText(t *testing.T) {
	for name, want := range map[string]bool{"rhel8-uefi": true, "ubuntu-2104-no-secure-boot": false} {
		f := testutil.LoadFixture(t, name)
		var stdout, stderr bytes.Buffer
		if code := runEventlogReplay([]string{"--log", f.LogPath, "--json"}, &stdout, &stderr); code != 0 {
			t.Fatalf("exit %d: %s", code, stderr.String())
		}
		var out struct {
			SecureBoot struct {
				Known, Enabled bool
			} `json:"secure_boot"`
		}
		if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
			t.Fatal(err)
		}
		if !out.SecureBoot.Known || out.SecureBoot.Enabled != want {
			t.Errorf("%s: secure boot %+v, want enabled=%v", name, out.SecureBoot, want)
		}
		stdout.Reset()
		if code := runEventlogReplay([]string{"--log", f.LogPath}, &stdout, &stderr); code != 0 {
			t.Fatalf("text exit %d", code)
		}
		wantLine := "secure boot: disabled"
		if want {
			wantLine = "secure boot: enabled"
		}
		if !strings.Contains(stdout.String(), wantLine) || !strings.Contains(stdout.String(), "sha256:") {
			t.Errorf("%s text output:\n%s", name, stdout.String())
		}
	}
}

func TestEventlogReplayErrors(t *testing.T) {
	f := testutil.LoadFixture(t, "rhel8-uefi")
	dir := t.TempDir()
	bad := filepath.Join(dir, "truncated.bin")
	if err := os.WriteFile(bad, f.Log[:len(f.Log)-7], 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := runEventlogReplay([]string{"--log", bad, "--json"}, &stdout, &stderr); code != 1 {
		t.Fatalf("truncated log: exit %d, want 1", code)
	}
	if !strings.Contains(stderr.String(), "not a valid firmware event log") || !strings.Contains(stderr.String(), "truncated") || stdout.Len() != 0 {
		t.Errorf("stderr %q stdout %q", stderr.String(), stdout.String())
	}
	stderr.Reset()
	if code := runEventlogReplay([]string{"--log", filepath.Join(dir, "missing.bin")}, &stdout, &stderr); code != 1 {
		t.Errorf("missing file: exit %d", code)
	}
	if code := runEventlogReplay(nil, &stdout, &stderr); code != 2 {
		t.Errorf("no --log: exit %d", code)
	}
	// The registry routes the two-word name to this command.
	stdout.Reset()
	if code := commands.Main([]string{"eventlog", "replay", "--log", f.LogPath, "--json"}, &stdout, &stderr); code != 0 {
		t.Errorf("via registry: exit %d", code)
	}
}
