package verifier_test

import (
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/pulse-attest/pulse/tpm"
)

// rawTPM is a go-tpm transport straight to the swtpm socket: what root on
// the device has (/dev/tpmrm0), for commands Pulse's agent never sends.
type rawTPM struct{ path string }

func (r rawTPM) Send(cmd []byte) ([]byte, error) {
	for attempt := 0; ; attempt++ {
		rsp, err := r.once(cmd)
		if err != nil {
			return nil, err
		}
		// TPM_RC_RETRY, TPM_RC_YIELDED, TPM_RC_TESTING: try again.
		rc := binary.BigEndian.Uint32(rsp[6:10])
		if (rc != 0x922 && rc != 0x908 && rc != 0x90A) || attempt == 12 {
			return rsp, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (r rawTPM) once(cmd []byte) ([]byte, error) {
	conn, err := net.DialTimeout("unix", r.path, 5*time.Second)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if _, err := conn.Write(cmd); err != nil {
		return nil, err
	}
	hdr := make([]byte, 10)
	if _, err := io.ReadFull(conn, hdr); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[2:6])
	if n < 10 {
		return nil, io.ErrUnexpectedEOF
	}
	rest := make([]byte, int(n)-10)
	if _, err := io.ReadFull(conn, rest); err != nil {
		return nil, err
	}
	return append(hdr, rest...), nil
}

// shutdownState sends TPM2_Shutdown(TPM_SU_STATE): what any root process
// can do right before it reboots. The firmware's TPM2_Startup(CLEAR) at the
// next boot is then a TPM Restart: PCRs are reset, restartCount moves,
// resetCount does not.
func shutdownState(t *testing.T, e *env) {
	t.Helper()
	if _, err := (tpm2.Shutdown{ShutdownType: tpm2.TPMSUState}).Execute(rawTPM{e.sw.ServerSocket()}); err != nil {
		t.Fatalf("TPM2_Shutdown(STATE): %v", err)
	}
}

const endorsementAKHandle = 0x81000042

// persistEndorsementAK creates Pulse's AK template as a primary of the
// endorsement hierarchy and persists it: its quotes carry the TPM's real
// reset and restart counts, which TPM2_Clear sets back to 0 without
// changing the key.
func persistEndorsementAK(t *testing.T, e *env) {
	t.Helper()
	tr := rawTPM{e.sw.ServerSocket()}
	rsp, err := (tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(tpm.AKTemplate()),
	}).Execute(tr)
	if err != nil {
		t.Fatalf("create endorsement AK: %v", err)
	}
	defer (tpm2.FlushContext{FlushHandle: rsp.ObjectHandle}).Execute(tr) //nolint:errcheck // best effort
	if _, err := (tpm2.EvictControl{Auth: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		ObjectHandle:     tpm2.NamedHandle{Handle: rsp.ObjectHandle, Name: rsp.Name},
		PersistentHandle: tpm2.TPMIDHPersistent(endorsementAKHandle)}).Execute(tr); err != nil {
		t.Fatalf("persist endorsement AK: %v", err)
	}
}
