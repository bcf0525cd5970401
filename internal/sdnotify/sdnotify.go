// Package sdnotify tells the service manager (systemd, Type=notify) about the
// daemon's state over the NOTIFY_SOCKET unix datagram socket. It is the
// protocol of sd_notify(3), written here because it is one datagram: no
// library, no cgo. Without NOTIFY_SOCKET (not started by systemd) every call
// is a no-op and reports false.
package sdnotify

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

// The states Pulse sends.
const (
	Ready     = "READY=1"
	Reloading = "RELOADING=1"
	Stopping  = "STOPPING=1"
)

// ErrBadSocket is returned for a NOTIFY_SOCKET that is neither a path nor an
// abstract socket name ("@name").
var ErrBadSocket = errors.New("sdnotify: NOTIFY_SOCKET is not a unix socket address")

// Notify sends state (newline-separated VAR=value assignments) to the socket
// named by NOTIFY_SOCKET. It reports whether a message was sent: false with a
// nil error when the variable is unset.
func Notify(state string) (bool, error) {
	return NotifySocket(os.Getenv("NOTIFY_SOCKET"), state)
}

// NotifySocket sends state to the unix datagram socket addr ("" is a no-op;
// a leading '@' names an abstract socket).
func NotifySocket(addr, state string) (bool, error) {
	if addr == "" {
		return false, nil
	}
	if addr[0] != '/' && addr[0] != '@' {
		return false, fmt.Errorf("%w: %q", ErrBadSocket, addr)
	}
	// A leading '@' is Linux's abstract namespace; Go's net package
	// translates it to the leading NUL itself.
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return false, fmt.Errorf("sdnotify: dial %s: %w", addr, err)
	}
	defer c.Close()
	if err := c.SetWriteDeadline(time.Now().Add(time.Second)); err != nil {
		return false, fmt.Errorf("sdnotify: %w", err)
	}
	if _, err := c.Write([]byte(state)); err != nil {
		return false, fmt.Errorf("sdnotify: send to %s: %w", addr, err)
	}
	return true, nil
}

// Status formats a STATUS= line (free text shown by systemctl status); line
// breaks are replaced so the message stays one assignment.
func Status(text string) string {
	return "STATUS=" + strings.NewReplacer("\n", " ", "\r", " ").Replace(text)
}

// ReloadingNow is the RELOADING=1 message with the monotonic timestamp that
// Type=notify-reload units require (MONOTONIC_USEC, CLOCK_MONOTONIC in
// microseconds); plain Type=notify units accept it too.
func ReloadingNow() string {
	return Reloading + "\nMONOTONIC_USEC=" + fmt.Sprint(monotonicUsec())
}
