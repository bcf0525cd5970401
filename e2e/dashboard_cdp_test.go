package e2e

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/websocket"
)

// A minimal Chrome DevTools Protocol client for the dashboard walk: one
// headless Chromium per browser profile, one page target, commands over the
// browser's WebSocket (flat sessions). Enough to navigate, read and act on
// the page the way an operator does (click, type), and screenshot it.

type cdpBrowser struct {
	t       testing.TB
	cmd     *exec.Cmd
	ws      *websocket.Conn
	session string

	mu      sync.Mutex
	nextID  int64
	waiting map[int64]chan cdpReply
	closed  chan struct{}
}

type cdpReply struct {
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Message string `json:"message"`
	} `json:"error"`
}

var devtoolsURL = regexp.MustCompile(`DevTools listening on (ws://\S+)`)

// startBrowser runs headless Chromium with HOME=home (its NSS database
// holds the operator's certificate, if any), trusting exactly the admin
// server's key (SPKI pin).
func startBrowser(t testing.TB, chromiumBin, home, spki string) *cdpBrowser {
	t.Helper()
	args := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
		"--no-default-browser-check", "--mute-audio", "--window-size=1400,1000",
		"--user-data-dir=" + t.TempDir(), "--ignore-certificate-errors-spki-list=" + spki,
		"--remote-debugging-port=0", "--remote-allow-origins=*", "about:blank"}
	cmd := exec.Command(chromiumBin, args...)
	cmd.Env = append(os.Environ(), "HOME="+home)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	b := &cdpBrowser{t: t, cmd: cmd, waiting: map[int64]chan cdpReply{}, closed: make(chan struct{})}
	t.Cleanup(b.close)
	found := make(chan string, 1)
	var logMu sync.Mutex
	var logTail []string
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			if m := devtoolsURL.FindStringSubmatch(line); m != nil {
				select {
				case found <- m[1]:
				default:
				}
			}
			if !strings.Contains(line, "dbus") {
				logMu.Lock()
				logTail = append(logTail, line)
				if len(logTail) > 40 {
					logTail = logTail[1:]
				}
				logMu.Unlock()
			}
		}
	}()
	var wsURL string
	select {
	case wsURL = <-found:
	case <-time.After(30 * time.Second):
		logMu.Lock()
		defer logMu.Unlock()
		t.Fatalf("chromium printed no DevTools address:\n%s", strings.Join(logTail, "\n"))
	}
	b.ws, err = websocket.Dial(wsURL, "", "http://127.0.0.1/")
	if err != nil {
		t.Fatalf("devtools: %v", err)
	}
	b.ws.MaxPayloadBytes = 64 << 20
	go b.readLoop()
	var target struct {
		TargetID string `json:"targetId"`
	}
	b.call("", "Target.createTarget", map[string]any{"url": "about:blank"}, &target)
	var att struct {
		SessionID string `json:"sessionId"`
	}
	b.call("", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &att)
	b.session = att.SessionID
	b.call(b.session, "Page.enable", nil, nil)
	b.call(b.session, "Runtime.enable", nil, nil)
	return b
}

func (b *cdpBrowser) readLoop() {
	defer close(b.closed)
	for {
		var raw []byte
		if err := websocket.Message.Receive(b.ws, &raw); err != nil {
			return
		}
		var msg struct {
			ID int64 `json:"id"`
			cdpReply
		}
		if json.Unmarshal(raw, &msg) != nil || msg.ID == 0 {
			continue // an event
		}
		b.mu.Lock()
		ch := b.waiting[msg.ID]
		delete(b.waiting, msg.ID)
		b.mu.Unlock()
		if ch != nil {
			ch <- msg.cdpReply
		}
	}
}

func (b *cdpBrowser) call(session, method string, params any, out any) {
	b.t.Helper()
	if err := b.try(session, method, params, out); err != nil {
		b.t.Fatalf("devtools %s: %v", method, err)
	}
}

func (b *cdpBrowser) try(session, method string, params any, out any) error {
	b.mu.Lock()
	b.nextID++
	id := b.nextID
	ch := make(chan cdpReply, 1)
	b.waiting[id] = ch
	b.mu.Unlock()
	msg := map[string]any{"id": id, "method": method}
	if params != nil {
		msg["params"] = params
	}
	if session != "" {
		msg["sessionId"] = session
	}
	raw, _ := json.Marshal(msg)
	if err := websocket.Message.Send(b.ws, string(raw)); err != nil {
		return err
	}
	select {
	case r := <-ch:
		if r.Error != nil {
			return fmt.Errorf("%s", r.Error.Message)
		}
		if out != nil {
			return json.Unmarshal(r.Result, out)
		}
		return nil
	case <-b.closed:
		return io.ErrUnexpectedEOF
	case <-time.After(60 * time.Second):
		return fmt.Errorf("no answer in 60s")
	}
}

// eval runs a JavaScript expression in the page (awaiting a promise) and
// decodes its value into out.
func (b *cdpBrowser) eval(expr string, out any) error {
	var r struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		Exception *struct {
			Text      string `json:"text"`
			Exception struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	if err := b.try(b.session, "Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true, "awaitPromise": true}, &r); err != nil {
		return err
	}
	if r.Exception != nil {
		return fmt.Errorf("%s %s", r.Exception.Text, r.Exception.Exception.Description)
	}
	if out != nil && len(r.Result.Value) > 0 {
		return json.Unmarshal(r.Result.Value, out)
	}
	return nil
}

// js runs expr and fails the test on an exception.
func (b *cdpBrowser) js(expr string) {
	b.t.Helper()
	if err := b.eval(expr, nil); err != nil {
		b.t.Fatalf("page script %q: %v", expr, err)
	}
}

// text returns expr's string value ("" when it throws).
func (b *cdpBrowser) text(expr string) string {
	var s string
	if err := b.eval("String("+expr+")", &s); err != nil {
		return ""
	}
	return s
}

// waitTrue polls a JavaScript condition until it holds.
func (b *cdpBrowser) waitTrue(what, cond string, within time.Duration) {
	b.t.Helper()
	deadline := time.Now().Add(within)
	for {
		var ok bool
		err := b.eval("Boolean("+cond+")", &ok)
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("%s: not within %s (%s; last error %v)\npage error: %q", what, within, cond, err, b.text(`document.getElementById("error") ? document.getElementById("error").textContent : ""`))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (b *cdpBrowser) navigate(url string) {
	b.t.Helper()
	b.call(b.session, "Page.navigate", map[string]any{"url": url}, nil)
	b.waitTrue("load "+url, `document.readyState === "complete" && location.href !== "about:blank"`, 30*time.Second)
}

// screenshot saves the page as a PNG.
func (b *cdpBrowser) screenshot(path string) {
	b.t.Helper()
	var r struct {
		Data string `json:"data"`
	}
	b.call(b.session, "Page.captureScreenshot", map[string]any{"format": "png", "captureBeyondViewport": true}, &r)
	png, err := base64.StdEncoding.DecodeString(r.Data)
	if err != nil || len(png) == 0 {
		b.t.Fatalf("screenshot: %v", err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

func (b *cdpBrowser) close() {
	if b.ws != nil {
		_ = b.try("", "Browser.close", nil, nil)
		b.ws.Close()
	}
	if b.cmd.Process != nil {
		_ = syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
		done := make(chan struct{})
		go func() { _ = b.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
	}
}
