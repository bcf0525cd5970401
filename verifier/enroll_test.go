package verifier_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/pulse-attest/pulse/internal/tlsconfig"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/simulator"
	"github.com/pulse-attest/pulse/tpm"
	"github.com/pulse-attest/pulse/verifier/config"
	"github.com/pulse-attest/pulse/verifier/ektrust/ektrusttest"
	"github.com/pulse-attest/pulse/verifier/store"
	"github.com/pulse-attest/pulse/verifier/verifiertest"
)

// enrollStart sends Enroll with the client's TPM parts, changed by mut.
func enrollStart(t *testing.T, a *verifiertest.Client, mut func(*pulsev1.EnrollRequest)) *pulsev1.EnrollResponse {
	t.Helper()
	req := &pulsev1.EnrollRequest{Tpm: a.Dev != nil, Partition: a.Partition}
	if a.Dev != nil {
		ek, err := a.Dev.EK()
		if err != nil {
			t.Fatal(err)
		}
		req.EkPublic, req.EkCertificate, req.AkPublic = ek.PublicBlob, ek.Certificate, a.AK.Public()
	}
	if mut != nil {
		mut(req)
	}
	resp, err := a.Cl.Enroll(ctx(t), req)
	if err != nil {
		t.Fatalf("enroll rpc: %v", err)
	}
	return resp
}

// enrollFinish answers an Enroll's challenge with the client's TPM.
func enrollFinish(t *testing.T, a *verifiertest.Client, resp *pulsev1.EnrollResponse) *pulsev1.EnrollResult {
	t.Helper()
	if resp.GetResult() != nil {
		return resp.GetResult()
	}
	secret, err := a.Dev.ActivateCredential(a.AK, resp.GetCredentialBlob(), resp.GetEncryptedSecret())
	if err != nil {
		t.Fatalf("activate credential: %v", err)
	}
	res, err := a.Cl.ActivateCredential(ctx(t), &pulsev1.ActivateCredentialRequest{EnrollmentId: resp.GetEnrollmentId(), Secret: secret})
	if err != nil {
		t.Fatalf("activate rpc: %v", err)
	}
	return res
}

func enrollWith(t *testing.T, a *verifiertest.Client, mut func(*pulsev1.EnrollRequest)) *pulsev1.EnrollResult {
	t.Helper()
	return enrollFinish(t, a, enrollStart(t, a, mut))
}

func wantEnrolled(t *testing.T, res *pulsev1.EnrollResult, r pulsev1.Reason) {
	t.Helper()
	if !res.GetEnrolled() || res.GetReason() != r {
		t.Fatalf("enrollment %t %s (%s), want enrolled with %s", res.GetEnrolled(), res.GetReason(), res.GetMessage(), r)
	}
}

func wantRefused(t *testing.T, res *pulsev1.EnrollResult, r pulsev1.Reason) {
	t.Helper()
	if res.GetEnrolled() || res.GetReason() != r {
		t.Fatalf("enrollment %t %s (%s), want refused with %s", res.GetEnrolled(), res.GetReason(), res.GetMessage(), r)
	}
	if res.GetMessage() == "" {
		t.Fatal("refusal without a message")
	}
}

func storedAgent(t *testing.T, s *store.Store, id string) *store.Agent {
	t.Helper()
	a, err := s.GetAgent(context.Background(), id)
	if err != nil {
		t.Fatalf("agent %s: %v", id, err)
	}
	return a
}

func wantAlert(t *testing.T, s *store.Store, agent, kind string, n, severity int, reason pulsev1.Reason) {
	t.Helper()
	al := alertsOf(t, s, agent, kind)
	if len(al) != n {
		t.Fatalf("%d %s alerts for %s, want %d", len(al), kind, agent, n)
	}
	for _, a := range al {
		if a.Severity != severity || a.Reason != reason.String() {
			t.Fatalf("%s alert: severity %d reason %s, want %d %s", kind, a.Severity, a.Reason, severity, reason)
		}
	}
}

// TestEnrollPartitionAssigned: the verifier assigns the partition; an
// agent asking for another one is refused with PARTITION_MISMATCH and an
// alert, and cannot change the partition it is enrolled in. The device of
// the security review — UNTRUSTED under "fleet" (no Secure Boot) — stays
// UNTRUSTED after asking for the laxer "lab".
func TestEnrollPartitionAssigned(t *testing.T) {
	e := newEnv(t, "ubuntu-2104-no-secure-boot")
	if e == nil {
		return
	}
	st := openStore(t, e)
	dev := e.openTPM(e.sw)

	// An honest TPM agent, asking for the partition it is assigned.
	a := e.agent("edge-shop", dev)
	wantEnrolled(t, a.Enroll(), pulsev1.Reason_REASON_OK)
	a.MeasureBinary()
	a.Challenge()
	wantVerdict(t, a.Pulse(nil), untrusted, pulsev1.Reason_REASON_POLICY_DENIED)

	long := strings.Repeat("lab", 100)
	cases := []struct {
		name, agent, asked string
		tpm                bool
		// enrolled is whether the agent is enrolled before the attempt.
		enrolled bool
	}{
		{"enrolled TPM agent asks for a laxer partition", "edge-shop", "lab", true, true},
		{"new TPM agent asks for another partition", "edge-new", "lab", true, false},
		{"new mTLS-only agent asks for another partition", "edge-plain", "lab", false, false},
		{"lab agent asks for fleet", "lab-9", "fleet", false, false},
		{"partition name too long", "edge-long", long, false, false},
		{"partition name with control bytes", "edge-ctl", "lab\n\x1b[2J", false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var d *tpm.TPM
			if c.tpm {
				d = dev
			}
			cl := e.agent(c.agent, d)
			cl.Partition = c.asked
			before, _ := st.GetAgent(context.Background(), c.agent)
			res := cl.Enroll()
			wantRefused(t, res, pulsev1.Reason_REASON_PARTITION_MISMATCH)
			if strings.Contains(res.GetMessage(), "\x1b") || strings.Contains(res.GetMessage(), long) {
				t.Fatalf("refusal echoes the partition: %q", res.GetMessage())
			}
			wantAlert(t, st, c.agent, "partition_mismatch", 1, 2, pulsev1.Reason_REASON_PARTITION_MISMATCH)
			after, err := st.GetAgent(context.Background(), c.agent)
			if !c.enrolled {
				if !errors.Is(err, store.ErrNotFound) {
					t.Fatalf("refused agent enrolled: %+v %v", after, err)
				}
				return
			}
			if err != nil || after.Partition != before.Partition || !after.EnrolledAt.Equal(before.EnrolledAt) || !bytes.Equal(after.AKName, before.AKName) {
				t.Fatalf("stored agent changed: %+v -> %+v (%v)", before, after, err)
			}
		})
	}
	if p := storedAgent(t, st, "edge-shop").Partition; p != "fleet" {
		t.Fatalf("stored partition %q, want fleet", p)
	}
	// The shopping agent is still judged by fleet's policy.
	wantVerdict(t, a.Pulse(nil), untrusted, pulsev1.Reason_REASON_POLICY_DENIED)

	// Agents asking for nothing, or for what they are assigned, enroll in
	// the operator's partition.
	honest := []struct {
		agent, asked, want string
	}{
		{"lab-1", "lab", "lab"},
		{"lab-2", "", "lab"},
		{"edge-quiet", "", "fleet"},
	}
	clients := map[string]*verifiertest.Client{}
	for _, h := range honest {
		cl := e.agent(h.agent, nil)
		cl.Partition = h.asked
		clients[h.agent] = cl
		wantEnrolled(t, cl.Enroll(), pulsev1.Reason_REASON_OK)
		if p := storedAgent(t, st, h.agent).Partition; p != h.want {
			t.Fatalf("%s stored in %q, want %q", h.agent, p, h.want)
		}
		if n := len(alertsOf(t, st, h.agent, "partition_mismatch")); n != 0 {
			t.Fatalf("%s: %d partition_mismatch alerts", h.agent, n)
		}
	}
	// lab-2, which asked for nothing, is judged by lab's policy.
	lab := clients["lab-2"]
	lab.Challenge()
	wantVerdict(t, lab.Pulse(nil), pulsev1.Verdict_VERDICT_DEGRADED, pulsev1.Reason_REASON_OK)
}

// TestEnrollRecordsRuntimePCR: the runtime PCR comes from the verifier's
// configuration, for TPM and mTLS-only agents alike.
func TestEnrollRecordsRuntimePCR(t *testing.T) {
	for _, pcr := range []uint32{0, 12} {
		t.Run(fmt.Sprint("runtime_pcr ", pcr), func(t *testing.T) {
			e := newEnvCfg(t, "rhel8-uefi", func(c *config.Config) { c.RuntimePCR = pcr })
			if e == nil {
				return
			}
			want := pcr
			if want == 0 {
				want = config.DefaultRuntimePCR
			}
			st := openStore(t, e)
			wantEnrolled(t, e.agent("edge-pcr", e.openTPM(e.sw)).Enroll(), pulsev1.Reason_REASON_OK)
			wantEnrolled(t, e.agent("edge-plain", nil).Enroll(), pulsev1.Reason_REASON_OK)
			for _, id := range []string{"edge-pcr", "edge-plain"} {
				if got := storedAgent(t, st, id).RuntimePCR; got != want {
					t.Fatalf("%s runtime PCR %d, want %d", id, got, want)
				}
			}
		})
	}
}

// TestEnrollNewAKIsNotAReboot: root creates a second AK on the enrolled
// TPM and re-enrolls with it. The TPM obfuscates the reset count per AK,
// so the new AK's quotes carry another count; the verifier accepts the
// re-enrollment, alerts (AK_CHANGED), and does not take the next pulse
// for a reboot. Re-enrolling with the same AK alerts nothing.
func TestEnrollNewAKIsNotAReboot(t *testing.T) {
	e := newEnv(t, "rhel8-uefi")
	if e == nil {
		return
	}
	st := openStore(t, e)
	a := e.agent("edge-ak", e.openTPM(e.sw))
	wantEnrolled(t, a.Enroll(), pulsev1.Reason_REASON_OK)
	a.MeasureBinary()
	a.Challenge()
	first := a.Pulse(nil)
	wantVerdict(t, first, trusted, pulsev1.Reason_REASON_OK)
	wantVerdict(t, a.Pulse(func(p *parts) { p.SendLog = false }), trusted, pulsev1.Reason_REASON_OK)

	// Same AK again: a plain re-enrollment.
	wantEnrolled(t, a.Enroll(), pulsev1.Reason_REASON_OK)
	if n := len(alertsOf(t, st, "edge-ak", "ak_changed")); n != 0 {
		t.Fatalf("%d ak_changed alerts after a same-AK re-enrollment", n)
	}
	a.SentUpTo = 0
	a.Challenge()
	wantVerdict(t, a.Pulse(nil), trusted, pulsev1.Reason_REASON_OK)

	oldName := a.AK.Name()
	a.AK = secondAK(t, e.sw, a.Dev)
	if bytes.Equal(a.AK.Name(), oldName) {
		t.Fatal("the second AK is the first one")
	}
	wantEnrolled(t, a.Enroll(), pulsev1.Reason_REASON_AK_CHANGED)
	wantAlert(t, st, "edge-ak", "ak_changed", 1, 2, pulsev1.Reason_REASON_AK_CHANGED)
	if got := storedAgent(t, st, "edge-ak"); !bytes.Equal(got.AKName, a.AK.Name()) || got.FirmwareLogSHA256 != nil {
		t.Fatalf("after the new AK: AK %x, firmware log %x", got.AKName, got.FirmwareLogSHA256)
	}

	// The agent learns it must resend its logs; its next pulse is TRUSTED
	// and carries no reboot note, though its reset count differs.
	a.SentUpTo = 0
	a.Challenge()
	resp := a.Pulse(nil)
	wantVerdict(t, resp, trusted, pulsev1.Reason_REASON_OK)
	for _, n := range resp.GetNotes() {
		if n == pulsev1.Reason_REASON_REBOOTED {
			t.Fatalf("a new AK was taken for a reboot: notes %v", resp.GetNotes())
		}
	}
	// What would have looked like a reboot: the counts differ (a 32-bit
	// obfuscation per key; equal only by a 2^-32 chance).
	if resp.GetState().GetBootResetCount() == first.GetState().GetBootResetCount() {
		t.Fatalf("reset count %d under both AKs: the test does not exercise the obfuscation", first.GetState().GetBootResetCount())
	}
	wantVerdict(t, a.Pulse(func(p *parts) { p.SendLog = false }), trusted, pulsev1.Reason_REASON_OK)
	// Enrolling the same new AK again raises nothing more.
	wantEnrolled(t, a.Enroll(), pulsev1.Reason_REASON_OK)
	wantAlert(t, st, "edge-ak", "ak_changed", 1, 2, pulsev1.Reason_REASON_AK_CHANGED)
}

// TestEnrollEKInUse: one EK backs one agent ID unless ek_max_agents says
// more; a further agent ID on it is refused with EK_IN_USE and raised as
// an identity takeover, whether caught at Enroll or, when two agent IDs
// raced past it, at ActivateCredential.
func TestEnrollEKInUse(t *testing.T) {
	t.Run("default: one agent per EK", func(t *testing.T) {
		e := newEnv(t, "rhel8-uefi")
		if e == nil {
			return
		}
		st := openStore(t, e)
		dev := e.openTPM(e.sw)
		wantEnrolled(t, e.agent("edge-1", dev).Enroll(), pulsev1.Reason_REASON_OK)
		wantRefused(t, e.agent("edge-2", dev).Enroll(), pulsev1.Reason_REASON_EK_IN_USE)
		wantAlert(t, st, "edge-2", "identity_takeover", 1, 1, pulsev1.Reason_REASON_EK_IN_USE)
		if _, err := st.GetAgent(context.Background(), "edge-2"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("edge-2 enrolled: %v", err)
		}
		// The EK's own agent re-enrolls freely.
		wantEnrolled(t, e.agent("edge-1", dev).Enroll(), pulsev1.Reason_REASON_OK)
		if n := len(alertsOf(t, st, "edge-1", "identity_takeover")); n != 0 {
			t.Fatalf("%d takeover alerts for the EK's own agent", n)
		}
		// mTLS-only agents have no EK to share.
		wantEnrolled(t, e.agent("edge-3", nil).Enroll(), pulsev1.Reason_REASON_OK)
		wantEnrolled(t, e.agent("edge-4", nil).Enroll(), pulsev1.Reason_REASON_OK)
	})
	t.Run("race past Enroll is caught at activation", func(t *testing.T) {
		e := newEnv(t, "rhel8-uefi")
		if e == nil {
			return
		}
		st := openStore(t, e)
		dev := e.openTPM(e.sw)
		x, y := e.agent("edge-x", dev), e.agent("edge-y", dev)
		rx, ry := enrollStart(t, x, nil), enrollStart(t, y, nil)
		if rx.GetEnrollmentId() == "" || ry.GetEnrollmentId() == "" {
			t.Fatalf("challenges: %v / %v", rx.GetResult(), ry.GetResult())
		}
		wantEnrolled(t, enrollFinish(t, x, rx), pulsev1.Reason_REASON_OK)
		wantRefused(t, enrollFinish(t, y, ry), pulsev1.Reason_REASON_EK_IN_USE)
		wantAlert(t, st, "edge-y", "identity_takeover", 1, 1, pulsev1.Reason_REASON_EK_IN_USE)
	})
	t.Run("ek_max_agents 2", func(t *testing.T) {
		e := newEnvCfg(t, "rhel8-uefi", ekBacks(2))
		if e == nil {
			return
		}
		dev := e.openTPM(e.sw)
		wantEnrolled(t, e.agent("edge-1", dev).Enroll(), pulsev1.Reason_REASON_OK)
		wantEnrolled(t, e.agent("edge-2", dev).Enroll(), pulsev1.Reason_REASON_OK)
		wantRefused(t, e.agent("edge-3", dev).Enroll(), pulsev1.Reason_REASON_EK_IN_USE)
	})
}

// TestEnrollEKProfile: over the real enrollment path, an EK certificate
// from a trusted vendor root that lacks the TCG EK usage or TPM SAN is
// refused (EK_UNTRUSTED), and accepted with allow_nonconforming_ek; a
// conforming one from the same vendor enrolls either way.
func TestEnrollEKProfile(t *testing.T) {
	vendor := ektrusttest.NewVendor(t)
	for _, allow := range []bool{false, true} {
		t.Run(fmt.Sprint("allow_nonconforming_ek=", allow), func(t *testing.T) {
			e := newEnvCfg(t, "rhel8-uefi", func(c *config.Config) {
				c.Enrollment.EKRoots = append(c.Enrollment.EKRoots, vendor.RootFile)
				c.Enrollment.AllowNonconformingEK = allow
				c.Enrollment.EKMaxAgents = 8
			})
			if e == nil {
				return
			}
			dev := e.openTPM(e.sw)
			ek, err := dev.EK()
			if err != nil {
				t.Fatal(err)
			}
			cases := []struct {
				agent string
				p     ektrusttest.Profile
				ok    bool
			}{
				{"edge-conforming", ektrusttest.Profile{}, true},
				{"edge-no-eku", ektrusttest.Profile{NoEKUsage: true}, allow},
				{"edge-no-san", ektrusttest.Profile{Subject: "tpm", SAN: ektrusttest.SANNone}, allow},
				{"edge-no-model", ektrusttest.Profile{SAN: ektrusttest.SANNoModel}, allow},
			}
			for _, c := range cases {
				cert := vendor.Issue(t, ek.PublicBlob, c.p)
				res := enrollWith(t, e.agent(c.agent, dev), func(r *pulsev1.EnrollRequest) { r.EkCertificate = cert })
				if c.ok {
					wantEnrolled(t, res, pulsev1.Reason_REASON_OK)
				} else {
					wantRefused(t, res, pulsev1.Reason_REASON_EK_UNTRUSTED)
				}
			}
			// The honest swtpm certificate conforms.
			wantEnrolled(t, e.agent("edge-swtpm", dev).Enroll(), pulsev1.Reason_REASON_OK)
		})
	}
}

// TestEnrollRateLimited: Enroll calls are limited per source address with
// a token bucket; another address has its own bucket, and time refills it.
func TestEnrollRateLimited(t *testing.T) {
	e := newEnvCfg(t, "rhel8-uefi", func(c *config.Config) { c.Enrollment.RatePerMinute = 3 })
	if e == nil {
		return
	}
	for i := range 3 {
		wantEnrolled(t, e.agent(fmt.Sprintf("edge-%d", i), nil).Enroll(), pulsev1.Reason_REASON_OK)
	}
	// Refused before anything else is looked at, even for an agent whose
	// enrollment would be refused otherwise.
	wantRefused(t, e.agent("edge-3", nil).Enroll(), pulsev1.Reason_REASON_ENROLL_RATE_LIMITED)
	bad := e.agent("edge-4", nil)
	bad.Partition = "lab"
	wantRefused(t, bad.Enroll(), pulsev1.Reason_REASON_ENROLL_RATE_LIMITED)

	// Another source address is not limited by the first one's calls.
	other := e.agent("edge-other", nil)
	other.Conn, other.Cl = dialFrom(t, e, other, "127.0.0.2")
	wantEnrolled(t, other.Enroll(), pulsev1.Reason_REASON_OK)

	// A minute's share of tokens comes back with time.
	e.clock.Advance(21 * time.Second)
	wantEnrolled(t, e.agent("edge-3", nil).Enroll(), pulsev1.Reason_REASON_OK)
	wantRefused(t, e.agent("edge-5", nil).Enroll(), pulsev1.Reason_REASON_ENROLL_RATE_LIMITED)
}

// TestEnrollExpiredChallengesDeleted: challenges never answered are
// deleted once expired, and an agent holds one pending challenge at most.
func TestEnrollExpiredChallengesDeleted(t *testing.T) {
	e := newEnvCfg(t, "rhel8-uefi", ekBacks(8))
	if e == nil {
		return
	}
	st := openStore(t, e)
	dev := e.openTPM(e.sw)
	pending := func() int {
		n, err := st.CountEnrollments(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	a, b := e.agent("edge-a", dev), e.agent("edge-b", dev)
	enrollStart(t, a, nil)
	enrollStart(t, a, nil)
	enrollStart(t, b, nil)
	if n := pending(); n != 2 {
		t.Fatalf("%d pending enrollments, want 2 (one per agent)", n)
	}
	// Past the challenge timeout (1m) and the sweep spacing, the next
	// Enroll deletes them before issuing its own.
	e.clock.Advance(2 * time.Minute)
	c := e.agent("edge-c", dev)
	rc := enrollStart(t, c, nil)
	if n := pending(); n != 1 {
		t.Fatalf("%d pending enrollments after expiry, want 1 (edge-c's)", n)
	}
	wantEnrolled(t, enrollFinish(t, c, rc), pulsev1.Reason_REASON_OK)
	if n := pending(); n != 0 {
		t.Fatalf("%d pending enrollments after activation", n)
	}
}

// ekBacks lets one EK back n agent IDs (tests whose agents share a swtpm).
func ekBacks(n int) func(*config.Config) {
	return func(c *config.Config) { c.Enrollment.EKMaxAgents = n }
}

// dialFrom connects the client's certificate from the local address ip
// (any 127/8 address reaches the loopback listener).
func dialFrom(t *testing.T, e *env, a *verifiertest.Client, ip string) (*grpc.ClientConn, pulsev1.AttestationClient) {
	t.Helper()
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "a.pem"), filepath.Join(dir, "a-key.pem")
	if err := a.Cert.WriteFiles(certFile, keyFile, false); err != nil {
		t.Fatal(err)
	}
	tc, _, err := tlsconfig.ClientConfig(tlsconfig.ClientOptions{CertFile: certFile, KeyFile: keyFile, ServerCAFile: e.caFile, ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	conn, err := grpc.NewClient(e.daemon.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(tc)),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, pulsev1.NewAttestationClient(conn)
}

// secondAK does what root on the device can: create another attestation
// key in the owner hierarchy (the AK template with another unique value)
// and persist it beside the first.
func secondAK(t *testing.T, sw *simulator.Swtpm, dev *tpm.TPM) *tpm.AK {
	t.Helper()
	const handle = tpm.DefaultAKHandle + 1
	tr := swtpmSocket(sw.ServerSocket())
	tmpl := tpm.AKTemplate()
	tmpl.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
		X: tpm2.TPM2BECCParameter{Buffer: []byte("root's second attestation key")},
		Y: tpm2.TPM2BECCParameter{Buffer: []byte{}},
	})
	owner := tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)}
	rsp, err := tpm2.CreatePrimary{PrimaryHandle: owner, InPublic: tpm2.New2B(tmpl)}.Execute(tr)
	if err != nil {
		t.Fatalf("create second AK: %v", err)
	}
	defer tpm2.FlushContext{FlushHandle: rsp.ObjectHandle}.Execute(tr) //nolint:errcheck // best effort
	if _, err := (tpm2.EvictControl{Auth: owner, ObjectHandle: tpm2.NamedHandle{Handle: rsp.ObjectHandle, Name: rsp.Name},
		PersistentHandle: tpm2.TPMIDHPersistent(handle)}).Execute(tr); err != nil {
		t.Fatalf("persist second AK: %v", err)
	}
	ak, err := dev.AK(tpm.AKOptions{Handle: handle})
	if err != nil {
		t.Fatal(err)
	}
	return ak
}

// swtpmSocket sends TPM commands to swtpm's server socket, one connection
// per command as package tpm does.
type swtpmSocket string

func (s swtpmSocket) Send(cmd []byte) ([]byte, error) {
	for attempt := 0; ; attempt++ {
		rsp, err := s.sendOnce(cmd)
		if err != nil {
			return nil, err
		}
		// TPM_RC_RETRY: libtpms asks again on some first uses.
		if binary.BigEndian.Uint32(rsp[6:10]) != 0x922 || attempt == 10 {
			return rsp, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s swtpmSocket) sendOnce(cmd []byte) ([]byte, error) {
	conn, err := net.DialTimeout("unix", string(s), 10*time.Second)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		return nil, err
	}
	if _, err := conn.Write(cmd); err != nil {
		return nil, err
	}
	hdr := make([]byte, 10)
	if _, err := io.ReadFull(conn, hdr); err != nil {
		return nil, err
	}
	size := binary.BigEndian.Uint32(hdr[2:6])
	if size < 10 || size > 1<<16 {
		return nil, fmt.Errorf("tpm response size %d", size)
	}
	body := make([]byte, size-10)
	if _, err := io.ReadFull(conn, body); err != nil {
		return nil, err
	}
	return append(hdr, body...), nil
}
