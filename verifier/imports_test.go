package verifier_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestVerifierImportRule enforces the package dependency rule (README, "Layout"): the verifier never opens a
// TPM device and never imports the agent or the eBPF loaders; from tpm/ it
// uses only the pure verification packages. (verifiertest is test support
// and may use a TPM.)
func TestVerifierImportRule(t *testing.T) {
	list, err := exec.Command("go", "list", "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []string
	for _, p := range strings.Fields(string(list)) {
		if !strings.HasSuffix(p, "/verifiertest") {
			pkgs = append(pkgs, p)
		}
	}
	out, err := exec.Command("go", append([]string{"list", "-deps"}, pkgs...)...).Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	const mod = "github.com/pulse-attest/pulse/"
	allowedTPM := map[string]bool{mod + "tpm/quote": true, mod + "tpm/eventlog": true, mod + "tpm/cel": true, mod + "tpm/credential": true}
	for _, dep := range strings.Fields(string(out)) {
		switch {
		case dep == mod+"tpm", strings.HasPrefix(dep, mod+"tpm/") && !allowedTPM[dep]:
			t.Errorf("verifier depends on TPM device code %s", dep)
		case dep == mod+"agent", strings.HasPrefix(dep, mod+"agent/"), dep == mod+"bpf", strings.HasPrefix(dep, mod+"bpf/"),
			dep == mod+"simulator", strings.HasPrefix(dep, mod+"simulator/"), strings.HasPrefix(dep, "github.com/cilium/ebpf"):
			t.Errorf("verifier depends on %s", dep)
		}
	}
}
