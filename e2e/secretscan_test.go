package e2e

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/base64"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/internal/secretscan"
	"github.com/pulse-attest/pulse/verifier/alert"
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
// suite's artefact directory and registers the secrets it holds, and those
// of the verifier's store (the nonce HMAC key: pgDSN, or the directory's
// verifier.db). It runs from the fleet's cleanup, before the test's
// temporary directory goes.
func collectArtefacts(t *testing.T, dir, pgDSN string) {
	t.Helper()
	if artefactDir == "" {
		return
	}
	registerStoreSecrets(t, dir, pgDSN)
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
			registerSecretFile(rel, b)
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

// registerStoreSecrets registers every secret the verifier keeps in its
// store (the shared nonce HMAC key). A store that is gone is skipped.
func registerStoreSecrets(t *testing.T, dir, pgDSN string) {
	t.Helper()
	driver, dsn := "pgx", pgDSN
	if pgDSN == "" {
		driver, dsn = "sqlite", filepath.Join(dir, "verifier.db")
		if _, err := os.Stat(dsn); err != nil {
			return
		}
		dsn = "file:" + dsn + "?mode=ro"
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Logf("artefact scan: store secrets not read: %v", err)
		return
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rows, err := db.QueryContext(ctx, "SELECT name, value FROM secrets")
	if err != nil {
		t.Logf("artefact scan: store secrets not read: %v", err)
		return
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		var v []byte
		if err := rows.Scan(&name, &v); err != nil {
			t.Logf("artefact scan: store secret: %v", err)
			return
		}
		registerSecret(secretscan.Secret{Name: "store secret " + name, Value: v})
	}
}

// registerSecretFile registers a secret file's content, and each of its
// lines and each line's part after "name:" (an admin token file holds
// one token per line as name:token).
func registerSecretFile(name string, b []byte) {
	registerSecret(secretscan.Secret{Name: name, Value: bytes.TrimSpace(b)})
	for _, line := range bytes.Split(b, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		registerSecret(secretscan.Secret{Name: name, Value: line})
		if _, tok, ok := bytes.Cut(line, []byte(":")); ok {
			registerSecret(secretscan.Secret{Name: name, Value: bytes.TrimSpace(tok)})
		}
	}
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

// bodyHook is a webhook receiver that checks each delivery's HMAC
// signature and keeps its raw body as an artefact: DIR/webhooks/N.json of
// the fleet's directory, which collectArtefacts copies for the scan.
type bodyHook struct {
	url, dir string
	secret   []byte
	mu       sync.Mutex
	n        int
	bad      []string
}

func newBodyHook(t *testing.T, fleetDir string, secret []byte) *bodyHook {
	t.Helper()
	h := &bodyHook{dir: filepath.Join(fleetDir, "webhooks"), secret: secret}
	if err := os.MkdirAll(h.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(l) //nolint:errcheck // ends with Close
	t.Cleanup(func() { srv.Close() })
	h.url = "http://" + l.Addr().String() + "/pulse"
	return h
}

func (h *bodyHook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	h.mu.Lock()
	defer h.mu.Unlock()
	if err == nil {
		err = alert.VerifySignature(h.secret, body, r.Header.Get(alert.HeaderSignature))
	}
	if err != nil {
		h.bad = append(h.bad, err.Error())
		http.Error(w, "refused", http.StatusUnauthorized)
		return
	}
	h.n++
	if err := os.WriteFile(filepath.Join(h.dir, fmt.Sprintf("%d.json", h.n)), body, 0o644); err != nil {
		h.bad = append(h.bad, err.Error())
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *bodyHook) received() (int, []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n, append([]string(nil), h.bad...)
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
	sw := startTPM(t, "rhel8-uefi", false)
	if sw == nil {
		return
	}
	f := newFleet(t, fleetPolicy, sw)
	secret := []byte(fmt.Sprintf("artefact-scan-webhook-secret-%d", os.Getpid()))
	secretFile := filepath.Join(f.dir, "webhook.secret")
	if err := os.WriteFile(secretFile, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	hook := newBodyHook(t, f.dir, secret)
	f.verifier.stop(syscall.SIGTERM)
	replaceInFile(t, f.vcfg, `audit_log = "audit.log"`, fmt.Sprintf("audit_log = \"audit.log\"\n  webhook \"scan\" {\n    url         = %q\n    secret_file = %q\n  }", hook.url, secretFile))
	f.startVerifier()
	if err := os.WriteFile(filepath.Join(f.dir, "admin.token"), []byte("# operators\nalice:e2e-admin-token-0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A planned stop raises an agent_stopped alert: an audit record and a
	// signed webhook body.
	f.launchAgent("edge-scan", f.agentConfig("edge-scan", sw, ""), bin("pulse-agent"))
	f.waitVerdict("edge-scan", trusted, "REASON_OK", 30*time.Second)
	f.stopAgent("edge-scan", syscall.SIGTERM)
	waitFor(t, "the agent_stopped webhook", func() bool {
		n, bad := hook.received()
		if len(bad) > 0 {
			t.Fatalf("webhook deliveries refused: %q", bad)
		}
		return n > 0
	})
	f.verifier.stop(syscall.SIGTERM)

	// What the suite's cleanup does, into a directory of this test's own.
	saved := artefactDir
	artefactDir = t.TempDir()
	savedSecrets := registeredSecrets()
	collectArtefacts(t, f.dir, "")
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
	tokenFound := false
	for _, s := range local {
		tokenFound = tokenFound || string(s.Value) == "e2e-admin-token-0123456789abcdef"
	}
	if !tokenFound {
		t.Error("the token of an admin token file's name:token line is not registered")
	}
	for _, want := range []string{"store secret nonce_key_v1", "webhook.secret", "admin.token", "directive-key.pem (seed)", "pki/ca-key.pem (DER)", "pki/verifier-key.pem (DER)", "agent-edge-scan/agent-key.pem (DER)"} {
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
	bodies, _ := filepath.Glob(filepath.Join(dir, "*", "webhooks", "*.json"))
	audits, _ := filepath.Glob(filepath.Join(dir, "*", "audit.log"))
	if len(logs) != 1 || len(bodies) == 0 || len(audits) != 1 {
		t.Fatalf("artefacts not collected: logs %v, webhook bodies %v, audit logs %v", logs, bodies, audits)
	}
	caKey, err := os.ReadFile(filepath.Join(f.dir, "pki", "ca-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	var nonceKey []byte
	for _, s := range local {
		if s.Name == "store secret nonce_key_v1" {
			nonceKey = s.Value
		}
	}
	for _, tt := range []struct {
		name, file, plant, kind string
	}{
		{"nonce key in a log", logs[0], "nonce key " + base64.StdEncoding.EncodeToString(nonceKey) + "\n", secretscan.KindKnownSecret},
		{"webhook secret in a log", logs[0], fmt.Sprintf("[DEBUG] alerts: signing with %x\n", secret), secretscan.KindKnownSecret},
		{"ca key in a webhook body", bodies[0], string(caKey), secretscan.KindPEMPrivateKey},
		{"agent key scalar in the audit log", audits[0], fmt.Sprintf("{\"d\":\"%x\"}\n", agentScalar(t, filepath.Join(f.dir, "agent-edge-scan", "agent-key.pem"))), secretscan.KindKnownSecret},
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

// agentScalar is the private scalar (or seed) of an agent's key file.
func agentScalar(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	secs, err := secretscan.KeySecrets("agent key", b)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range secs {
		if !strings.HasSuffix(s.Name, "(DER)") {
			return s.Value
		}
	}
	t.Fatalf("no scalar in %s", path)
	return nil
}
