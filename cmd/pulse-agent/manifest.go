package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/pulse-attest/pulse/bpf"
	"github.com/pulse-attest/pulse/internal/cli"
)

func init() {
	commands.Register(cli.Command{
		Name:    "manifest",
		Summary: "print this build's manifest: the agent binary's digest and the eBPF objects it ships",
		Run:     runManifest,
	})
}

// buildManifest is what `pulse-agent manifest` prints: the values an
// update_window needs to roll a build out (allow) with its eBPF program
// set (ebpf_objects).
type buildManifest struct {
	Format            string           `json:"format"`
	AgentBinarySHA256 string           `json:"agent_binary_sha256"`
	EBPFObjects       []manifestObject `json:"ebpf_objects"`
}

type manifestObject struct {
	Name     string   `json:"name"`
	SHA256   string   `json:"sha256"`
	Programs []string `json:"programs"`
}

const manifestFormat = "pulse-build-manifest/1"

func runManifest(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("manifest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	binary := fs.String("binary", "", "the agent binary to describe (default: this executable); its eBPF objects are this build's")
	asHCL := fs.Bool("hcl", false, "print a policy update_window block instead of JSON")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: pulse-agent manifest [--binary PATH] [--hcl]\n\n"+
			"Prints the build manifest: the SHA-256 of the agent binary and of every eBPF\n"+
			"object compiled into it. A policy update_window that rolls the build out lists\n"+
			"the binary in allow and the objects in ebpf_objects; only then may the build\n"+
			"bring a new eBPF program set (docs/policy.md). Run it with the new build's\n"+
			"binary, which describes its own objects.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "pulse-agent manifest: unexpected arguments %q\n", fs.Args())
		fs.Usage()
		return 2
	}
	m, err := manifestOf(*binary)
	if err != nil {
		fmt.Fprintf(stderr, "pulse-agent manifest: %v\n", err)
		return 1
	}
	if *asHCL {
		fmt.Fprint(stdout, m.hcl(time.Now().UTC()))
		return 0
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(m); err != nil {
		fmt.Fprintf(stderr, "pulse-agent manifest: %v\n", err)
		return 1
	}
	return 0
}

func manifestOf(binary string) (*buildManifest, error) {
	if binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("find this executable: %w", err)
		}
		binary = exe
	}
	raw, err := os.ReadFile(binary)
	if err != nil {
		return nil, fmt.Errorf("read agent binary: %w", err)
	}
	sum := sha256.Sum256(raw)
	objs, err := bpf.BuildObjects()
	if err != nil {
		return nil, err
	}
	m := &buildManifest{Format: manifestFormat, AgentBinarySHA256: hex.EncodeToString(sum[:])}
	for _, o := range objs {
		m.EBPFObjects = append(m.EBPFObjects, manifestObject{Name: o.Name, SHA256: hex.EncodeToString(o.SHA256[:]), Programs: o.Programs})
	}
	return m, nil
}

// hcl renders an update_window block for the build, to paste into a policy's
// agent_binary section (start and end are placeholders to edit).
func (m *buildManifest) hcl(now time.Time) string {
	s := fmt.Sprintf("update_window %q {\n  start = %q\n  end   = %q\n  allow = [%q]\n  ebpf_objects = [\n",
		"agent-"+m.AgentBinarySHA256[:12], now.Format(time.RFC3339), now.Add(7*24*time.Hour).Format(time.RFC3339), m.AgentBinarySHA256)
	for _, o := range m.EBPFObjects {
		s += fmt.Sprintf("    %q, # %s: %v\n", o.SHA256, o.Name, o.Programs)
	}
	return s + "  ]\n}\n"
}
