package tpm_test

import (
	"errors"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/pulse-attest/pulse/simulator/simtest"
	"github.com/pulse-attest/pulse/tpm"
)

const legacyAKHandle = 0x81020077

// persistLegacyAK persists Pulse's earlier AK template (no noDA) at h.
func persistLegacyAK(t *testing.T, tp *tpm.TPM, h uint32) *tpm.AK {
	t.Helper()
	var ak *tpm.AK
	err := tp.DoForTest(func(tr transport.TPM) error {
		owner := tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)}
		rsp, err := (tpm2.CreatePrimary{PrimaryHandle: owner, InPublic: tpm2.New2B(tpm.LegacyAKTemplate())}).Execute(tr)
		if err != nil {
			return err
		}
		defer tp.FlushForTest(tr, rsp.ObjectHandle)
		if _, err := (tpm2.EvictControl{Auth: owner, ObjectHandle: tpm2.NamedHandle{Handle: rsp.ObjectHandle, Name: rsp.Name},
			PersistentHandle: tpm2.TPMIDHPersistent(h)}).Execute(tr); err != nil {
			return err
		}
		pub, err := rsp.OutPublic.Contents()
		if err != nil {
			return err
		}
		ak, err = tpm.NewAKForTest(h, *pub, rsp.Name.Buffer)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return ak
}

// lockoutCounter reads TPM_PT_LOCKOUT_COUNTER.
func lockoutCounter(t *testing.T, tp *tpm.TPM) uint32 {
	t.Helper()
	var n uint32
	err := tp.DoForTest(func(tr transport.TPM) error {
		rsp, err := (tpm2.GetCapability{Capability: tpm2.TPMCapTPMProperties, Property: uint32(tpm2.TPMPTLockoutCounter), PropertyCount: 1}).Execute(tr)
		if err != nil {
			return err
		}
		props, err := rsp.CapabilityData.Data.TPMProperties()
		if err != nil {
			return err
		}
		for _, p := range props.TPMProperty {
			if p.Property == tpm2.TPMPTLockoutCounter {
				n = p.Value
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestAKSurvivesUncleanReboots: power cuts (a TPM reset without
// TPM2_Shutdown) after the AK was used. With noDA the lockout counter stays
// 0 and the AK keeps quoting; Pulse's earlier AK (no noDA) locks the TPM
// out within swtpm's default three failures.
func TestAKSurvivesUncleanReboots(t *testing.T) {
	sw := simtest.StartFresh(t, "")
	if sw == nil {
		return
	}
	tp, err := sw.Open(simtest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	ak, err := tp.AK(tpm.AKOptions{})
	if err != nil {
		t.Fatal(err)
	}
	nonce := make([]byte, 32)
	for i := 0; i < 10; i++ {
		if _, _, err := tp.Quote(ak, []uint32{0, 7}, nonce); err != nil {
			t.Fatalf("quote after %d unclean reboots: %v", i, err)
		}
		if err := sw.Reboot(); err != nil {
			t.Fatal(err)
		}
	}
	if n := lockoutCounter(t, tp); n != 0 {
		t.Fatalf("lockout counter %d after 10 unclean reboots with a noDA AK, want 0", n)
	}

	legacy := persistLegacyAK(t, tp, legacyAKHandle)
	var lockedOut bool
	for i := 0; i < 6 && !lockedOut; i++ {
		_, _, err := tp.Quote(legacy, []uint32{0, 7}, nonce)
		switch {
		case errors.Is(err, tpm2.TPMRCLockout):
			lockedOut = true
		case err != nil:
			t.Fatalf("legacy AK quote: %v", err)
		default:
			if err := sw.Reboot(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if !lockedOut {
		t.Fatalf("Pulse's earlier AK (no noDA) kept quoting through unclean reboots (lockout counter %d): the test proves nothing", lockoutCounter(t, tp))
	}
}

// TestAKReplacesLegacyKey: an AK persisted without noDA is replaced by the
// current template at the same handle; a foreign key is still left alone.
func TestAKReplacesLegacyKey(t *testing.T) {
	sw := simtest.StartFresh(t, "")
	if sw == nil {
		return
	}
	tp, err := sw.Open(simtest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	old := persistLegacyAK(t, tp, legacyAKHandle)
	ak, err := tp.AK(tpm.AKOptions{Handle: legacyAKHandle})
	if err != nil {
		t.Fatal(err)
	}
	if !ak.Replaced || !ak.Created || string(ak.Name()) == string(old.Name()) {
		t.Fatalf("replaced %t created %t, same name %t", ak.Replaced, ak.Created, string(ak.Name()) == string(old.Name()))
	}
	again, err := tp.AK(tpm.AKOptions{Handle: legacyAKHandle})
	if err != nil || again.Created || string(again.Name()) != string(ak.Name()) {
		t.Fatalf("second load: created %v name equal %v err %v", again != nil && again.Created, again != nil && string(again.Name()) == string(ak.Name()), err)
	}
}
