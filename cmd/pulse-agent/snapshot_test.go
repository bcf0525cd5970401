package main

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/hashicorp/go-hclog"

	"github.com/pulse-attest/pulse/bpf"
	"github.com/pulse-attest/pulse/internal/testutil"
)

func TestSnapshotCommandJSON(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireTools(t, "bpftool")
	if err := bpf.EnsureFilesystems(hclog.NewNullLogger()); err != nil {
		t.Fatal(err)
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "pulse_cli_t", Type: ebpf.SocketFilter, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 7), asm.Return()},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	info, _ := prog.Info()
	id, _ := info.ID()

	var stdout, stderr bytes.Buffer
	pinDir := filepath.Join(bpf.BPFFSPath, "pulse-cli-test-none")
	if code := commands.Main([]string{"snapshot", "--json", "--pin-dir", pinDir}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	var out struct {
		Programs []map[string]any `json:"programs"`
		Pinned   map[string]any   `json:"pinned"`
		Checked  bool             `json:"checked"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, stdout.String())
	}
	if out.Checked || len(out.Pinned) != 0 {
		t.Errorf("empty pin dir reported checked=%v pinned=%v", out.Checked, out.Pinned)
	}
	var found map[string]any
	for _, p := range out.Programs {
		for _, k := range []string{"id", "name", "type", "tag"} {
			if _, ok := p[k]; !ok {
				t.Fatalf("program entry lacks %q: %v", k, p)
			}
		}
		if uint32(p["id"].(float64)) == uint32(id) {
			found = p
		}
	}
	if found == nil {
		t.Fatalf("program %d not listed", id)
	}
	bt, err := exec.Command("bpftool", "prog", "show", "id", strings.TrimSpace(jsonNumber(uint32(id))), "-j").Output()
	if err != nil {
		t.Fatal(err)
	}
	var tool map[string]any
	if err := json.Unmarshal(bt, &tool); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"name", "type", "tag"} {
		if found[k] != tool[k] {
			t.Errorf("%s: snapshot %v, bpftool %v", k, found[k], tool[k])
		}
	}
}

func jsonNumber(n uint32) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func TestSnapshotCommandTable(t *testing.T) {
	testutil.RequireRoot(t)
	var stdout, stderr bytes.Buffer
	if code := commands.Main([]string{"snapshot", "--pin-dir", filepath.Join(bpf.BPFFSPath, "pulse-cli-test-none")}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if !strings.HasPrefix(stdout.String(), "ID") || !strings.Contains(stdout.String(), "programs loaded") {
		t.Errorf("table output:\n%s", stdout.String())
	}
}

func TestSnapshotCommandUsage(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := commands.Main([]string{"snapshot", "--bogus"}, &stdout, &stderr); code != 2 {
		t.Errorf("bad flag: exit %d", code)
	}
	if code := commands.Main([]string{"snapshot", "extra"}, &stdout, &stderr); code != 2 {
		t.Errorf("extra argument: exit %d", code)
	}
}
