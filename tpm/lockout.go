package tpm

import (
	"errors"
	"fmt"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// ErrLockout matches a TPM response of TPM_RC_LOCKOUT: the TPM is in
// dictionary-attack lockout and refuses authorisations of DA-protected
// objects (errors.Is(err, tpm.ErrLockout)).
var ErrLockout = tpm2.TPMRCLockout

// LockoutState is the TPM's dictionary-attack state (TPM 2.0 Part 1, 19.8):
// TPM2_GetCapability(TPM_CAP_TPM_PROPERTIES) TPM_PT_LOCKOUT_COUNTER,
// TPM_PT_MAX_AUTH_FAIL, TPM_PT_LOCKOUT_INTERVAL, TPM_PT_LOCKOUT_RECOVERY,
// TPMA_PERMANENT's inLockout bit and TPMA_STARTUP_CLEAR's orderly bit.
type LockoutState struct {
	// Counter is the number of authorisation failures the TPM counts now.
	Counter uint32
	// MaxAuthFail is the count at which the TPM locks out.
	MaxAuthFail uint32
	// InLockout: the TPM refuses DA-protected authorisations.
	InLockout bool
	// Interval is how long it takes for the counter to go down by one.
	Interval time.Duration
	// Recovery is how long lockoutAuth stays locked after a failure of it.
	Recovery time.Duration
	// Orderly is TPMA_STARTUP_CLEAR.orderly: the TPM was shut down with
	// TPM2_Shutdown before its last reset (false after a power cut: then
	// the counter went up by one if a DA-protected object had been used).
	Orderly bool
}

// permanentInLockout is TPMA_PERMANENT.inLockout (bit 9);
// startupClearOrderly is TPMA_STARTUP_CLEAR.orderly (bit 31).
const (
	permanentInLockout  = 1 << 9
	startupClearOrderly = 1 << 31
)

// lockoutProperties are the properties LockoutState needs, all in the
// TPM_PT_PERMANENT group (0x200-0x211).
var lockoutProperties = []tpm2.TPMPT{
	tpm2.TPMPTPermanent, tpm2.TPMPTStartupClear, tpm2.TPMPTLockoutCounter, tpm2.TPMPTMaxAuthFail,
	tpm2.TPMPTLockoutInterval, tpm2.TPMPTLockoutRecovery,
}

// ParseLockout builds the lockout state from the tagged properties a
// TPM2_GetCapability(TPM_CAP_TPM_PROPERTIES) answered. Every property it
// needs must be present; the others are ignored.
func ParseLockout(props []tpm2.TPMSTaggedProperty) (LockoutState, error) {
	got := make(map[tpm2.TPMPT]uint32, len(props))
	for _, p := range props {
		got[p.Property] = p.Value
	}
	for _, want := range lockoutProperties {
		if _, ok := got[want]; !ok {
			return LockoutState{}, fmt.Errorf("tpm property 0x%08x missing from the capability data", uint32(want))
		}
	}
	return LockoutState{
		Counter:     got[tpm2.TPMPTLockoutCounter],
		MaxAuthFail: got[tpm2.TPMPTMaxAuthFail],
		InLockout:   got[tpm2.TPMPTPermanent]&permanentInLockout != 0,
		Interval:    time.Duration(got[tpm2.TPMPTLockoutInterval]) * time.Second,
		Recovery:    time.Duration(got[tpm2.TPMPTLockoutRecovery]) * time.Second,
		Orderly:     got[tpm2.TPMPTStartupClear]&startupClearOrderly != 0,
	}, nil
}

// Lockout reads the TPM's dictionary-attack state. It needs no
// authorisation, so it works in lockout too.
func (t *TPM) Lockout() (LockoutState, error) {
	var props []tpm2.TPMSTaggedProperty
	err := t.do(func(tr transport.TPM) error {
		first := uint32(tpm2.TPMPTPermanent)
		count := uint32(tpm2.TPMPTLockoutRecovery) - first + 1
		// A TPM may answer fewer properties than asked (moreData): ask
		// again from the one after the last it gave.
		for count > 0 {
			rsp, err := (tpm2.GetCapability{Capability: tpm2.TPMCapTPMProperties, Property: first, PropertyCount: count}).Execute(tr)
			if err != nil {
				return fmt.Errorf("tpm2 getcapability tpm properties: %w", err)
			}
			tagged, err := rsp.CapabilityData.Data.TPMProperties()
			if err != nil {
				return fmt.Errorf("tpm2 getcapability tpm properties: %w", err)
			}
			if len(tagged.TPMProperty) == 0 {
				break
			}
			props = append(props, tagged.TPMProperty...)
			last := uint32(tagged.TPMProperty[len(tagged.TPMProperty)-1].Property)
			if !rsp.MoreData || last >= uint32(tpm2.TPMPTLockoutRecovery) || last < first {
				break
			}
			count -= last - first + 1
			first = last + 1
		}
		return nil
	})
	if err != nil {
		return LockoutState{}, err
	}
	st, err := ParseLockout(props)
	if err != nil {
		return LockoutState{}, fmt.Errorf("read lockout state: %w", err)
	}
	return st, nil
}

// IsLockout reports whether err is the TPM refusing in lockout.
func IsLockout(err error) bool { return errors.Is(err, ErrLockout) }
