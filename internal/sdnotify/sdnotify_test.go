package sdnotify

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// listen opens a unix datagram socket like systemd's notify socket.
func listen(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func receive(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	buf := make([]byte, 4096)
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no notification received: %v", err)
	}
	return string(buf[:n])
}

func TestNotify(t *testing.T) {
	dir := t.TempDir()
	abstract := fmt.Sprintf("@pulse-sdnotify-test-%d", time.Now().UnixNano())
	for _, tc := range []struct {
		name, addr, state string
	}{
		{"path socket, ready", filepath.Join(dir, "a.sock"), Ready},
		{"abstract socket, stopping", abstract, Stopping},
		{"status line", filepath.Join(dir, "b.sock"), Ready + "\n" + Status("serving\nagents")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := listen(t, tc.addr)
			t.Setenv("NOTIFY_SOCKET", tc.addr)
			sent, err := Notify(tc.state)
			if err != nil || !sent {
				t.Fatalf("Notify: sent=%v err=%v", sent, err)
			}
			if got := receive(t, c); got != tc.state {
				t.Fatalf("received %q, want %q", got, tc.state)
			}
		})
	}
}

func TestStatusIsOneAssignment(t *testing.T) {
	if got := Status("a\nb\rc"); got != "STATUS=a b c" {
		t.Fatalf("Status = %q", got)
	}
}

func TestReloadingNowCarriesMonotonicTime(t *testing.T) {
	m := ReloadingNow()
	var usec int64
	if _, err := fmt.Sscanf(m, Reloading+"\nMONOTONIC_USEC=%d", &usec); err != nil || usec <= 0 {
		t.Fatalf("ReloadingNow = %q (%v)", m, err)
	}
}

func TestNotifyWithoutSocketIsNoop(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if sent, err := Notify(Ready); sent || err != nil {
		t.Fatalf("sent=%v err=%v, want a silent no-op", sent, err)
	}
}

func TestNotifyErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		addr string
		is   error
	}{
		{"relative path", "notify.sock", ErrBadSocket},
		{"nobody listening", filepath.Join(dir, "missing.sock"), syscall.ENOENT},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sent, err := NotifySocket(tc.addr, Ready)
			if sent || !errors.Is(err, tc.is) {
				t.Fatalf("sent=%v err=%v, want %v", sent, err, tc.is)
			}
			if !strings.HasPrefix(err.Error(), "sdnotify: ") {
				t.Fatalf("error %q lacks context", err)
			}
		})
	}
}
