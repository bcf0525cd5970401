package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/internal/sdnotify"
	"github.com/pulse-attest/pulse/verifier/verifiertest"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// writeConfig writes a verifier configuration with its PKI and policy into
// dir and returns its path and the PKI.
func writeConfig(t *testing.T, dir string) (string, *verifiertest.PKI) {
	t.Helper()
	tp := verifiertest.WritePKI(t, dir, "run test ca", time.Hour)
	pol := "policy \"fleet\" {\n  match {\n    agents = [\"*\"]\n  }\n  tpm = \"required\"\n}\n"
	if err := os.WriteFile(filepath.Join(dir, "policy.hcl"), []byte(pol), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := `listen = "127.0.0.1:0"
policy_files = ["policy.hcl"]
tls {
  cert     = "v.pem"
  key      = "v-key.pem"
  agent_ca = "ca.pem"
}
store {
  dsn = "verifier.db"
}
`
	path := filepath.Join(dir, "verifier.hcl")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, tp
}

// TestRunNotifiesSystemd: `pulse-verifier run` under a Type=notify unit
// says READY once it serves, RELOADING then READY around a SIGHUP reload,
// and STOPPING on SIGTERM, over the NOTIFY_SOCKET datagram socket.
func TestRunNotifiesSystemd(t *testing.T) {
	dir := t.TempDir()
	cfg, _ := writeConfig(t, dir)
	sock := filepath.Join(dir, "notify.sock")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	recv := func() string {
		t.Helper()
		buf := make([]byte, 4096)
		if err := ln.SetReadDeadline(time.Now().Add(30 * time.Second)); err != nil {
			t.Fatal(err)
		}
		n, err := ln.Read(buf)
		if err != nil {
			t.Fatalf("no notification: %v", err)
		}
		return string(buf[:n])
	}
	var stderr syncBuffer
	done := make(chan int, 1)
	go func() { done <- runVerifier([]string{"--config", cfg}, nil, &stderr) }()

	ready := recv()
	if !strings.HasPrefix(ready, sdnotify.Ready+"\nSTATUS=serving agents on 127.0.0.1:") {
		t.Fatalf("first notification %q, want READY=1 with a status naming the listener", ready)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	var usec int64
	if m := recv(); func() bool {
		_, err := fmt.Sscanf(m, sdnotify.Reloading+"\nMONOTONIC_USEC=%d", &usec)
		return err != nil
	}() {
		t.Fatalf("after SIGHUP got %q, want RELOADING=1 with MONOTONIC_USEC", m)
	}
	if m := recv(); m != sdnotify.Ready {
		t.Fatalf("after the reload got %q, want READY=1", m)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if m := recv(); m != sdnotify.Stopping {
		t.Fatalf("after SIGTERM got %q, want STOPPING=1", m)
	}
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit %d\n%s", code, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("verifier did not stop")
	}
	if !strings.Contains(stderr.String(), "reloaded certificates, policy and revocations") {
		t.Fatalf("reload not logged:\n%s", stderr.String())
	}
}
