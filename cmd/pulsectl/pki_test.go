package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/internal/pki"
	"github.com/pulse-attest/pulse/internal/tlsconfig"
)

func runCmd(t *testing.T, name string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := commands.Main(append(strings.Fields(name), args...), &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestPKIInitIssueHandshake(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	code, out, errOut := runCmd(t, "pki init", "--dir", dir, "--name", "Test Fleet CA")
	if code != 0 {
		t.Fatalf("pki init = %d: %s", code, errOut)
	}
	if !strings.Contains(out, filepath.Join(dir, "ca.pem")) {
		t.Errorf("init output lacks ca path: %s", out)
	}
	if st, err := os.Stat(filepath.Join(dir, "ca-key.pem")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("ca key: %v, %v", st, err)
	}
	if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("pki dir: %v, %v", st, err)
	}

	code, out, errOut = runCmd(t, "pki issue", "--dir", dir, "--role", "verifier", "--id", "v1")
	if code != 0 {
		t.Fatalf("issue verifier = %d: %s", code, errOut)
	}
	if !strings.Contains(out, "pulse://verifier/v1") || !strings.Contains(out, "localhost, 127.0.0.1, ::1") {
		t.Errorf("issue verifier output: %s", out)
	}
	agentPrefix := filepath.Join(t.TempDir(), "edge")
	code, out, errOut = runCmd(t, "pki issue", "--dir", dir, "--role", "agent", "--id", "edge-7", "--key-type", "ed25519", "--out", agentPrefix)
	if code != 0 {
		t.Fatalf("issue agent = %d: %s", code, errOut)
	}
	for _, s := range []string{out, errOut} {
		if strings.Contains(s, "PRIVATE KEY") {
			t.Error("command output contains a private key")
		}
	}
	if st, err := os.Stat(agentPrefix + "-key.pem"); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("agent key: %v, %v", st, err)
	}
	if code, _, errOut := runCmd(t, "pki issue", "--dir", dir, "--role", "operator", "--id", "alice"); code != 0 {
		t.Fatalf("issue operator = %d: %s", code, errOut)
	}

	// The written files drive a real mutual TLS 1.3 handshake.
	srvCfg, _, err := tlsconfig.ServerConfig(tlsconfig.ServerOptions{
		CertFile: filepath.Join(dir, "verifier-v1.pem"), KeyFile: filepath.Join(dir, "verifier-v1-key.pem"),
		ClientCAFile: filepath.Join(dir, "ca.pem"), RequireRole: pki.RoleAgent,
	})
	if err != nil {
		t.Fatal(err)
	}
	agentCfg, r, err := tlsconfig.ClientConfig(tlsconfig.ClientOptions{
		CertFile: agentPrefix + ".pem", KeyFile: agentPrefix + "-key.pem",
		ServerCAFile: filepath.Join(dir, "ca.pem"), ServerName: "localhost", RequireServerRole: pki.RoleVerifier,
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, signer := r.Current(); signer == nil {
		t.Fatal("no signer")
	} else if _, ok := signer.Public().(ed25519.PublicKey); !ok {
		t.Errorf("agent key is %T, want ed25519", signer.Public())
	}
	opCfg, _, err := tlsconfig.ClientConfig(tlsconfig.ClientOptions{
		CertFile: filepath.Join(dir, "operator-alice.pem"), KeyFile: filepath.Join(dir, "operator-alice-key.pem"),
		ServerCAFile: filepath.Join(dir, "ca.pem"), ServerName: "localhost",
	})
	if err != nil {
		t.Fatal(err)
	}

	id, srvErr, cliErr := pkiHandshake(t, srvCfg, agentCfg)
	if srvErr != nil || cliErr != nil {
		t.Fatalf("agent handshake: server %v, client %v", srvErr, cliErr)
	}
	if id != (pki.Identity{Role: pki.RoleAgent, ID: "edge-7"}) {
		t.Errorf("server saw %+v", id)
	}
	_, srvErr, cliErr = pkiHandshake(t, srvCfg, opCfg)
	if !errors.Is(srvErr, tlsconfig.ErrWrongRole) || cliErr == nil {
		t.Errorf("operator on agent port: server %v, client %v", srvErr, cliErr)
	}
}

// pkiHandshake runs one handshake over loopback and returns the server's
// view of the client identity and both sides' errors.
func pkiHandshake(t *testing.T, srv, cli *tls.Config) (pki.Identity, error, error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	type srvResult struct {
		id  pki.Identity
		err error
	}
	done := make(chan srvResult, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- srvResult{err: err}
			return
		}
		defer c.Close()
		sc := tls.Server(c, srv)
		if err := sc.HandshakeContext(ctx); err != nil {
			done <- srvResult{err: err}
			return
		}
		id, err := tlsconfig.PeerIdentity(sc.ConnectionState())
		if err == nil {
			_, err = sc.Write([]byte("ok"))
		}
		done <- srvResult{id: id, err: err}
	}()
	d := tls.Dialer{Config: cli}
	var cliErr error
	if c, err := d.DialContext(ctx, "tcp", ln.Addr().String()); err != nil {
		cliErr = err
	} else {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 2)
		_, cliErr = io.ReadFull(c, buf)
		c.Close()
	}
	res := <-done
	return res.id, res.err, cliErr
}

func TestPKICommandErrors(t *testing.T) {
	dir := t.TempDir()
	if code, _, errOut := runCmd(t, "pki init", "--dir", dir); code != 0 {
		t.Fatalf("init: %s", errOut)
	}
	if code, _, errOut := runCmd(t, "pki issue", "--dir", dir, "--role", "agent", "--id", "a"); code != 0 {
		t.Fatalf("issue: %s", errOut)
	}
	tests := []struct {
		name     string
		cmd      string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"init without dir", "pki init", nil, 2, "--dir is required"},
		{"init over existing ca", "pki init", []string{"--dir", dir}, 1, "--force"},
		{"init positional arg", "pki init", []string{"--dir", dir, "extra"}, 2, "unexpected argument"},
		{"init unknown flag", "pki init", []string{"--bogus"}, 2, "bogus"},
		{"issue without dir", "pki issue", []string{"--role", "agent", "--id", "a"}, 2, "--dir is required"},
		{"issue bad role", "pki issue", []string{"--dir", dir, "--role", "admin", "--id", "a"}, 2, "--role"},
		{"issue missing id", "pki issue", []string{"--dir", dir, "--role", "agent"}, 2, "--id"},
		{"issue bad id", "pki issue", []string{"--dir", dir, "--role", "agent", "--id", "a/b"}, 2, "--id"},
		{"issue bad key type", "pki issue", []string{"--dir", dir, "--role", "agent", "--id", "b", "--key-type", "dsa"}, 2, "--key-type"},
		{"issue bad ip", "pki issue", []string{"--dir", dir, "--role", "verifier", "--id", "v", "--ip", "300.1.1.1"}, 2, "--ip"},
		{"issue bad dns", "pki issue", []string{"--dir", dir, "--role", "verifier", "--id", "v", "--dns", "bad name"}, 1, "dns name"},
		{"issue existing files", "pki issue", []string{"--dir", dir, "--role", "agent", "--id", "a"}, 1, "--force"},
		{"issue without ca", "pki issue", []string{"--dir", t.TempDir(), "--role", "agent", "--id", "a"}, 1, "ca.pem"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := runCmd(t, tc.cmd, tc.args...)
			if code != tc.wantCode {
				t.Errorf("exit %d, want %d (stderr %s)", code, tc.wantCode, errOut)
			}
			if !strings.Contains(errOut, tc.wantErr) {
				t.Errorf("stderr %q lacks %q", errOut, tc.wantErr)
			}
		})
	}

	// --force replaces the agent's pair with a new key; --dns/--ip lists work.
	old, err := pki.ReadPrivateKey(filepath.Join(dir, "agent-a-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := runCmd(t, "pki issue", "--dir", dir, "--role", "agent", "--id", "a", "--force"); code != 0 {
		t.Fatalf("issue --force: %s", errOut)
	}
	replaced, err := pki.ReadPrivateKey(filepath.Join(dir, "agent-a-key.pem"))
	if err != nil || pki.PublicKeysEqual(old.Public(), replaced.Public()) {
		t.Errorf("--force did not replace the key (%v)", err)
	}
	code, _, errOut := runCmd(t, "pki issue", "--dir", dir, "--role", "verifier", "--id", "v2",
		"--dns", "a.example.net,b.example.net", "--dns", "c.example.net", "--ip", "10.0.0.1", "--ip", "fd00::1")
	if code != 0 {
		t.Fatalf("issue with SANs: %s", errOut)
	}
	certs, err := pki.ReadCertificates(filepath.Join(dir, "verifier-v2.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(certs[0].DNSNames, ","); got != "a.example.net,b.example.net,c.example.net" {
		t.Errorf("DNS SANs %s", got)
	}
	if len(certs[0].IPAddresses) != 2 || certs[0].IPAddresses[1].String() != "fd00::1" {
		t.Errorf("IP SANs %v", certs[0].IPAddresses)
	}
}
