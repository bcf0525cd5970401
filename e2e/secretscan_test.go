package e2e

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/pulse-attest/pulse/internal/secretscan"
)

// The e2e suite's artefacts: every daemon log, audit log segment and
// webhook body a test produced is copied into artefactDir when its fleet
// ends, and every secret its configuration held (private keys, webhook
// HMAC secrets, admin tokens, the directive key) is registered. TestMain
// scans the artefacts for all of them, and for PEM private-key blocks and
// secret-named assignments, once the tests ran (scanArtefacts); a finding
// fails the run.
var (
	artefactDir string

	artefactMu sync.Mutex
	// artefactSecrets holds each secret once, keyed by its value.
	artefactSecrets = map[string]secretscan.Secret{}
)

// maxArtefact bounds one copied file (the store and binaries are not
// artefacts; logs of a drill stay far below this).
const maxArtefact = 64 << 20

// initArtefacts makes the suite's artefact directory (TestMain).
func initArtefacts() error {
	d, err := os.MkdirTemp("", "pulse-e2e-artefacts-")
	if err != nil {
		return fmt.Errorf("artefact dir: %w", err)
	}
	artefactDir = d
	return nil
}

// isArtefact reports whether a file of a test's directory is something the
// suite's programs wrote for people or peers to read: logs, audit
// segments, captured webhook bodies.
func isArtefact(rel string) bool {
	base := filepath.Base(rel)
	switch {
	case strings.HasSuffix(base, ".log"), strings.Contains(base, ".log."):
		return true
	case strings.HasPrefix(base, "audit"):
		return true
	case strings.HasPrefix(filepath.ToSlash(rel), "webhooks/"):
		return true
	}
	return false
}

// isSecretFile reports whether a file of a test's directory holds a
// secret by its name (its content is then registered).
func isSecretFile(rel string) bool {
	base := filepath.Base(rel)
	return strings.HasSuffix(base, ".secret") || strings.Contains(base, "token")
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// collectArtefacts copies the artefacts of a test's directory into the
// suite's artefact directory and registers the secrets it holds. It runs
// from the fleet's cleanup, before the test's temporary directory goes.
func collectArtefacts(t *testing.T, dir string) {
	t.Helper()
	if artefactDir == "" {
		return
	}
	dst := filepath.Join(artefactDir, unsafeName.ReplaceAllString(t.Name(), "_"))
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil || info.Size() > maxArtefact {
			return err
		}
		switch {
		case isArtefact(rel):
			return copyArtefact(path, filepath.Join(dst, rel))
		case isSecretFile(rel):
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			if v := bytes.TrimSpace(b); len(v) >= secretscan.MinSecretLen {
				registerSecret(secretscan.Secret{Name: rel, Value: v})
			}
		case strings.HasSuffix(rel, ".pem") || strings.HasSuffix(rel, ".key"):
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			if !bytes.Contains(b, []byte("PRIVATE KEY-----")) {
				return nil
			}
			secs, err := secretscan.KeySecrets(rel, b)
			if err != nil {
				return err
			}
			for _, s := range secs {
				registerSecret(s)
			}
		}
		return nil
	})
	if err != nil {
		t.Errorf("collecting artefacts of %s: %v", dir, err)
	}
}

func copyArtefact(from, to string) error {
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		return err
	}
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// registerSecret adds a secret the artefacts must not contain.
func registerSecret(s secretscan.Secret) {
	if len(s.Value) < secretscan.MinSecretLen {
		return
	}
	artefactMu.Lock()
	defer artefactMu.Unlock()
	if _, ok := artefactSecrets[string(s.Value)]; !ok {
		artefactSecrets[string(s.Value)] = s
	}
}

// saveArtefact writes one artefact a test captured itself (a webhook body)
// under the suite's artefact directory.
func saveArtefact(t *testing.T, name string, b []byte) {
	t.Helper()
	if artefactDir == "" {
		return
	}
	path := filepath.Join(artefactDir, unsafeName.ReplaceAllString(t.Name(), "_"), name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Error(err)
		return
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Error(err)
	}
}

// scanArtefacts scans dir for the registered secrets and the generic
// patterns; it returns the findings and how many files it read.
func scanArtefacts(dir string, secrets []secretscan.Secret) ([]secretscan.Finding, int, error) {
	s, err := secretscan.New(secrets...)
	if err != nil {
		return nil, 0, err
	}
	n := 0
	if err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			n++
		}
		return err
	}); err != nil {
		return nil, 0, err
	}
	f, err := s.ScanDir(dir)
	return f, n, err
}

func registeredSecrets() []secretscan.Secret {
	artefactMu.Lock()
	defer artefactMu.Unlock()
	out := make([]secretscan.Secret, 0, len(artefactSecrets))
	for _, s := range artefactSecrets {
		out = append(out, s)
	}
	return out
}

// finishArtefacts scans the suite's artefacts once every test ran and
// turns a finding into a failed run (code 1). The directory is kept when
// the run failed, for reading.
func finishArtefacts(code int) int {
	if artefactDir == "" {
		return code
	}
	secrets := registeredSecrets()
	findings, files, err := scanArtefacts(artefactDir, secrets)
	switch {
	case err != nil:
		fmt.Fprintf(os.Stderr, "e2e: secret scan of %s: %v\n", artefactDir, err)
		code = 1
	case len(findings) > 0:
		fmt.Fprintf(os.Stderr, "e2e: secret scan: %d findings in the suite's logs, audit records and webhook bodies (%s):\n", len(findings), artefactDir)
		for _, f := range findings {
			fmt.Fprintf(os.Stderr, "  %s\n", f)
		}
		code = 1
	default:
		fmt.Fprintf(os.Stderr, "e2e: secret scan: %d artefacts, %d known secrets: no secret found\n", files, len(secrets))
	}
	if code == 0 {
		os.RemoveAll(artefactDir)
	} else {
		fmt.Fprintf(os.Stderr, "e2e: artefacts kept in %s\n", artefactDir)
	}
	return code
}

// TestArtefactScan tests the suite's secret scan from both sides on a
// fleet's real artefacts: a verifier and its configuration (keys, a
// webhook secret, an admin token) run, the collected logs and audit log
// scan clean against the secrets collected from the same directory; the
// same artefacts with one secret planted in a log (hex-encoded, as a
// careless debug line would print it) or a PEM private key in a webhook
// body fail the scan, each with the finding's kind.
func TestArtefactScan(t *testing.T) {
	f := newFleet(t, fleetPolicy)
	newDrill(t, f)
	tokenFile := filepath.Join(f.dir, "admin.token")
	if err := os.WriteFile(tokenFile, []byte("e2e-admin-token-0123456789abcdef"), 0o600); err != nil {
		t.Fatal(err)
	}
	f.verifier.stop(syscall.SIGTERM)

	// What the suite's cleanup does, into a directory of this test's own.
	saved := artefactDir
	artefactDir = t.TempDir()
	savedSecrets := registeredSecrets()
	collectArtefacts(t, f.dir)
	local := registeredSecrets()
	dir := artefactDir
	artefactDir = saved
	artefactMu.Lock()
	artefactSecrets = map[string]secretscan.Secret{}
	artefactMu.Unlock()
	for _, s := range append(savedSecrets, local...) {
		registerSecret(s)
	}

	names := map[string]bool{}
	for _, s := range local {
		names[s.Name] = true
	}
	for _, want := range []string{"webhook.secret", "admin.token", "directive-key.pem (seed)", "pki/ca-key.pem (DER)", "pki/verifier-key.pem (DER)"} {
		if !names[want] {
			t.Errorf("secret %q not registered from the fleet's directory (got %v)", want, names)
		}
	}
	findings, files, err := scanArtefacts(dir, local)
	if err != nil {
		t.Fatal(err)
	}
	if files == 0 {
		t.Fatal("no artefact collected from the fleet's directory")
	}
	if len(findings) != 0 {
		t.Fatalf("the fleet's own artefacts hold secrets: %v", findings)
	}

	logs, _ := filepath.Glob(filepath.Join(dir, "*", "verifier.log"))
	if len(logs) != 1 {
		t.Fatalf("verifier.log not collected: %v", logs)
	}
	secret, err := os.ReadFile(filepath.Join(f.dir, "webhook.secret"))
	if err != nil {
		t.Fatal(err)
	}
	caKey, err := os.ReadFile(filepath.Join(f.dir, "pki", "ca-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, file, plant, kind string
	}{
		{"webhook secret in a log", logs[0], fmt.Sprintf("[DEBUG] alerts: signing with %x\n", secret), secretscan.KindKnownSecret},
		{"ca key in a webhook body", filepath.Join(filepath.Dir(logs[0]), "webhooks", "1.json"), string(caKey), secretscan.KindPEMPrivateKey},
	} {
		t.Run(tt.name, func(t *testing.T) {
			planted := t.TempDir()
			if err := os.CopyFS(planted, os.DirFS(dir)); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(planted, strings.TrimPrefix(tt.file, dir))
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			fh, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			fh.WriteString(tt.plant)
			fh.Close()
			findings, _, err := scanArtefacts(planted, local)
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, fd := range findings {
				found = found || fd.Kind == tt.kind
			}
			if !found {
				t.Fatalf("planted %s not found: %v", tt.kind, findings)
			}
		})
	}
}
