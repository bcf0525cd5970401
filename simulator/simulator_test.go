package simulator_test

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/internal/testutil"
	"github.com/pulse-attest/pulse/simulator"
	"github.com/pulse-attest/pulse/simulator/simtest"
	"github.com/pulse-attest/pulse/tpm"
)

var bankAlg = map[string]uint16{"sha1": tpm.AlgSHA1, "sha256": tpm.AlgSHA256}

var pcrs0to7 = []uint32{0, 1, 2, 3, 4, 5, 6, 7}

// TestBootFixtures boots every real firmware log into swtpm and checks that
// PCRs 0-7 of every bank the fixture lists equal what the logged machine's
// TPM reported, and that a reboot zeroes them again.
func TestBootFixtures(t *testing.T) {
	sw := simtest.Start(t, "")
	tp, err := sw.Open(simtest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	for _, name := range testutil.EventLogFixtures(t) {
		t.Run(name, func(t *testing.T) {
			fx := testutil.LoadFixture(t, name)
			res, err := sw.Boot(fx.Log)
			if err != nil {
				t.Fatalf("boot: %v", err)
			}
			if res.Events == 0 {
				t.Fatal("boot extended no events")
			}
			checked := 0
			for bank, want := range fx.PCRs {
				alg, ok := bankAlg[bank]
				if !ok {
					t.Fatalf("fixture bank %q unknown", bank)
				}
				got, err := tp.ReadPCRs(alg, pcrs0to7)
				if err != nil {
					t.Fatalf("read %s: %v", bank, err)
				}
				for idx, w := range want {
					if idx > 7 {
						continue
					}
					if !bytes.Equal(got[uint32(idx)], w) {
						t.Errorf("%s pcr %d = %x, fixture says %x", bank, idx, got[uint32(idx)], w)
					}
					checked++
				}
			}
			if checked < 8 {
				t.Fatalf("only %d pcrs compared", checked)
			}
			// The booted log is in the state directory, byte for byte.
			if res.LogPath != sw.BootLogPath() || filepath.Dir(res.LogPath) != sw.StateDir() {
				t.Errorf("log path %q, state says %q", res.LogPath, sw.BootLogPath())
			}
			copied, err := tpm.ReadFirmwareLog(res.LogPath)
			if err != nil || !bytes.Equal(copied, fx.Log) {
				t.Errorf("copied log differs from fixture (err %v)", err)
			}

			if err := sw.Reboot(); err != nil {
				t.Fatalf("reboot: %v", err)
			}
			for _, alg := range []uint16{tpm.AlgSHA1, tpm.AlgSHA256} {
				got, err := tp.ReadPCRs(alg, pcrs0to7)
				if err != nil {
					t.Fatal(err)
				}
				for _, p := range pcrs0to7 {
					if !allZero(got[p]) {
						t.Errorf("after reboot %s pcr %d = %x, want zeros", tpm.AlgName(alg), p, got[p])
					}
				}
			}
			if sw.BootLogPath() != "" {
				t.Errorf("boot log still %q after a plain reboot", sw.BootLogPath())
			}
			if _, err := os.Stat(res.LogPath); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("booted log still on disk after reboot: %v", err)
			}
		})
	}
}

// TestStartupLocality checks glinux-alex's StartupLocality 3 is honoured:
// PCR 0 starts at 0...03, so the booted TPM matches the fixture, while the
// same events extended after a locality-0 startup do not.
func TestStartupLocality(t *testing.T) {
	fx := testutil.LoadFixture(t, "glinux-alex")
	sw := simtest.Start(t, "")
	res, err := sw.Boot(fx.Log)
	if err != nil {
		t.Fatal(err)
	}
	if res.StartupLocality != 3 {
		t.Fatalf("startup locality %d, want 3", res.StartupLocality)
	}
	tp, err := sw.Open(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	got, err := tp.ReadPCRs(tpm.AlgSHA256, []uint32{0})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[0], fx.PCRs["sha256"][0]) {
		t.Fatalf("pcr 0 = %x, fixture %x", got[0], fx.PCRs["sha256"][0])
	}

	// A plain reboot starts from locality 0: PCR 0 is zero, and replaying
	// the same events from there cannot give the fixture's PCR 0.
	if err := sw.Reboot(); err != nil {
		t.Fatal(err)
	}
	if got, err = tp.ReadPCRs(tpm.AlgSHA256, []uint32{0}); err != nil {
		t.Fatal(err)
	}
	if !allZero(got[0]) {
		t.Fatalf("pcr 0 after reboot = %x, want zeros", got[0])
	}
	if _, _, err := simulator.ExtendLog(tp, fx.Log); err != nil {
		t.Fatal(err)
	}
	if got, err = tp.ReadPCRs(tpm.AlgSHA256, []uint32{0}); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(got[0], fx.PCRs["sha256"][0]) {
		t.Fatal("pcr 0 matches the fixture without the locality-3 startup")
	}
}

func TestBootRejectsBadLog(t *testing.T) {
	sw := simtest.Start(t, "")
	fx := testutil.LoadFixture(t, "rhel8-uefi")
	for name, raw := range map[string][]byte{
		"empty":     nil,
		"truncated": fx.Log[:len(fx.Log)/3+7],
		"garbage":   bytes.Repeat([]byte{0xa5}, 512),
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := sw.Boot(raw); err == nil {
				t.Fatal("boot accepted a malformed log")
			}
		})
	}
	// The simulator still works after the rejected logs.
	if _, err := sw.Boot(fx.Log); err != nil {
		t.Fatalf("boot after bad logs: %v", err)
	}
}

// TestAttachStopReboot drives a detached simulator from "another process"
// (Attach from the state directory), as pulsectl does.
func TestAttachStopReboot(t *testing.T) {
	dir := t.TempDir()
	sw, err := simulator.Start(simulator.Options{StateDir: dir, Template: simtest.Template(t), Detach: true, Logger: simtest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sw.Stop() })
	if sw.PID() <= 0 {
		t.Fatal("no pid")
	}
	// A second Start on the same state refuses.
	if _, err := simulator.Start(simulator.Options{StateDir: dir, Detach: true}); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Fatalf("second start: %v", err)
	}
	// The local CA root is a CA certificate Go can parse.
	pemBytes, err := os.ReadFile(sw.LocalCACert())
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(pemBytes)
	if blk == nil {
		t.Fatal("local ca root is not PEM")
	}
	root, err := x509.ParseCertificate(blk.Bytes)
	if err != nil || !root.IsCA {
		t.Fatalf("local ca root: %v (IsCA %v)", err, root != nil && root.IsCA)
	}
	if strings.HasPrefix(sw.LocalCACert(), "/var/lib") || !strings.HasPrefix(sw.LocalCACert(), dir) {
		t.Fatalf("local ca outside the state dir: %s", sw.LocalCACert())
	}

	other, err := simulator.Attach(dir, simtest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	if other.Spec() != sw.Spec() || other.PID() != sw.PID() {
		t.Fatalf("attach sees %s/%d, started %s/%d", other.Spec(), other.PID(), sw.Spec(), sw.PID())
	}
	tp, err := other.Open(nil)
	if err != nil {
		t.Fatal(err)
	}
	ak, err := tp.AK(tpm.AKOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tp.Close()
	fx := testutil.LoadFixture(t, "ubuntu-2104-no-secure-boot")
	if _, err := other.Boot(fx.Log); err != nil {
		t.Fatal(err)
	}
	// The state file records the booted log for the next attacher.
	third, err := simulator.Attach(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if third.BootLogPath() != filepath.Join(dir, simulator.BootLogFile) {
		t.Fatalf("boot log %q", third.BootLogPath())
	}
	pid := sw.PID()
	if err := other.Stop(); err != nil {
		t.Fatal(err)
	}
	// Gone, or a zombie (this container's init may not reap it); allow the
	// kernel a moment to finish the exit it is in the middle of.
	for i := 0; ; i++ {
		st, err := os.ReadFile("/proc/" + itoa(pid) + "/stat")
		if err != nil || bytes.Contains(st, []byte(") Z")) || bytes.Contains(st, []byte(") X")) {
			break
		}
		if i == 40 {
			t.Fatalf("swtpm pid %d still running after stop: %s", pid, st)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := simulator.Attach(dir, nil); !errors.Is(err, simulator.ErrNotRunning) {
		t.Fatalf("attach after stop: %v, want ErrNotRunning", err)
	}

	// Restarting the same state keeps the TPM: the persisted AK is there,
	// the same key, not created again.
	sw2, err := simulator.Start(simulator.Options{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer sw2.Stop()
	tp2, err := sw2.Open(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tp2.Close()
	ak2, err := tp2.AK(tpm.AKOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ak2.Created || !bytes.Equal(ak2.Public(), ak.Public()) {
		t.Fatalf("after swtpm restart: created %v, same key %v", ak2.Created, bytes.Equal(ak2.Public(), ak.Public()))
	}
}

// TestStopLeavesForeignProcess: a state file naming a pid that is not our
// swtpm must not get that process killed.
func TestStopLeavesForeignProcess(t *testing.T) {
	sw := simtest.Start(t, "")
	st := sw.State()
	// Point the state at this test process, which is not an swtpm.
	st.PID = os.Getpid()
	raw := []byte(`{"pid":` + itoa(os.Getpid()) + `,"server_socket":"` + st.ServerSocket + `","ctrl_socket":"` + st.CtrlSocket + `"}`)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, simulator.StateFile), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := simulator.Attach(dir, nil); !errors.Is(err, simulator.ErrNotRunning) {
		t.Fatalf("attach to a non-swtpm pid: %v, want ErrNotRunning", err)
	}
}

func allZero(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func itoa(i int) string { return strconv.Itoa(i) }

// TestLongStatePath: a state directory too deep for a unix socket path gets
// its sockets in a short temporary directory, removed again by Stop.
func TestLongStatePath(t *testing.T) {
	dir := filepath.Join(t.TempDir(), strings.Repeat("d", 60), strings.Repeat("e", 60))
	sw, err := simulator.Start(simulator.Options{StateDir: dir, Template: simtest.Template(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sw.Stop() })
	sockDir := sw.State().SocketDir
	if sockDir == "" || len(sw.ServerSocket()) > 100 {
		t.Fatalf("socket %q (%d bytes) in %q", sw.ServerSocket(), len(sw.ServerSocket()), sockDir)
	}
	tp, err := sw.Open(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tp.ReadPCRs(tpm.AlgSHA256, []uint32{0}); err != nil {
		t.Fatal(err)
	}
	tp.Close()
	if err := sw.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sockDir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket dir left behind: %v", err)
	}
}
