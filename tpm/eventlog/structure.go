package eventlog

import "encoding/binary"

// modeVariables are the Secure Boot mode variables (EFI global variables):
// each decides part of the derived state, so each may be measured once.
var modeVariables = [...]string{"SecureBoot", "SetupMode", "DeployedMode", "AuditMode"}

// modeVariable returns the index in modeVariables of the variable a
// UEFI_VARIABLE_DATA names (trailing NULs ignored, as ParseUEFIVariable
// does), or -1. It allocates nothing.
func modeVariable(data []byte) int {
	n, ok := variableNameLen(data)
	if !ok || GUID(data[:16]) != GUIDGlobalVariable {
		return -1
	}
	for i, name := range modeVariables {
		if n == len(name) && ucs2Is(data[32:32+2*n], name) {
			return i
		}
	}
	return -1
}

// variableNameLen returns the length in UTF-16 units of a
// UEFI_VARIABLE_DATA's name without its trailing NULs. It reads the name
// from its end, once.
func variableNameLen(data []byte) (int, bool) {
	n, _, err := variableLayout(data)
	if err != nil {
		return 0, false
	}
	for n > 0 && binary.LittleEndian.Uint16(data[32+2*(n-1):]) == 0 {
		n--
	}
	return n, true
}

// allowedAfterSeparator reports whether the PC Client Platform Firmware
// Profile puts events of type t in PCR 7 after PCR 7's separator: the
// authority (db entry, or shim's own certificates and SbatLevel) that
// verified an image loaded after the separator, and the authority of an
// SPDM device authenticated then. Everything else of PCR 7 — the Secure
// Boot configuration above all — is measured before it.
func allowedAfterSeparator(t EventType) bool {
	return t == EvEFIVariableAuthority || t == EvEFISPDMDeviceAuthority
}

// CheckStructure checks that the events are where the TCG PC Client
// Platform Firmware Profile puts them, for what Pulse derives from them:
//
//   - Each of PCRs 0-7 has exactly one EV_SEPARATOR (ErrSeparatorMissing,
//     ErrSeparatorRepeated), with the normal value, four zero bytes
//     (ErrSeparatorValue): the firmware measures it when it hands control to
//     the boot loader, closing the pre-OS record of the PCR.
//   - In PCR 7, the Secure Boot configuration (EV_EFI_VARIABLE_DRIVER_CONFIG:
//     SecureBoot, PK, KEK, db, dbx...) comes before the separator
//     (ErrSecureBootAfterSeparator); after it only EV_EFI_VARIABLE_AUTHORITY
//     and EV_EFI_SPDM_DEVICE_AUTHORITY are accepted (ErrEventAfterSeparator).
//   - Each Secure Boot mode variable (SecureBoot, SetupMode, DeployedMode,
//     AuditMode) is measured at most once (ErrSecureBootRepeated).
//
// A PCR's hash chain fixes the order of that PCR's events but not how the
// log interleaves PCRs, so every rule is about the events of one PCR. Root
// on a running device can extend any of PCRs 0-7 and append matching events
// to the log it sends; such events always come after the PCR's separator,
// so they cannot change what the pre-OS record says. The first violation,
// in log order, is returned as a *StructureError (errors.Is ErrMalformed).
// Verify applies CheckStructure; it reads no event data beyond separators
// and PCR 7 variable names, and takes time linear in the log.
func (l *Log) CheckStructure() error {
	var sep [8]int // seq of each PCR's separator, -1 before it
	for i := range sep {
		sep[i] = -1
	}
	var mode [len(modeVariables)]int // seq of each mode variable's measurement
	for i := range mode {
		mode[i] = -1
	}
	for i := range l.Events {
		ev := &l.Events[i]
		if ev.PCR > 7 {
			continue
		}
		fail := func(err error, earlier int) *StructureError {
			se := &StructureError{Err: err, PCR: ev.PCR, Seq: ev.Seq, Offset: ev.Offset, Type: ev.Type, Earlier: earlier}
			if v, perr := ParseUEFIVariable(ev.Data); perr == nil && ev.Type != EvSeparator {
				se.Variable = v.Name
			}
			return se
		}
		if ev.Type == EvSeparator {
			if prev := sep[ev.PCR]; prev >= 0 {
				return fail(ErrSeparatorRepeated, prev)
			}
			if len(ev.Data) != 4 || binary.LittleEndian.Uint32(ev.Data) != 0 {
				return fail(ErrSeparatorValue, -1)
			}
			sep[ev.PCR] = ev.Seq
			continue
		}
		if ev.PCR != 7 {
			continue
		}
		if after := sep[7]; after >= 0 {
			switch {
			case ev.Type == EvEFIVariableDriverConfig:
				return fail(ErrSecureBootAfterSeparator, after)
			case !allowedAfterSeparator(ev.Type):
				return fail(ErrEventAfterSeparator, after)
			}
			continue
		}
		if ev.Type != EvEFIVariableDriverConfig {
			continue
		}
		if m := modeVariable(ev.Data); m >= 0 {
			if prev := mode[m]; prev >= 0 {
				return fail(ErrSecureBootRepeated, prev)
			}
			mode[m] = ev.Seq
		}
	}
	for pcr, s := range sep {
		if s < 0 {
			return &StructureError{Err: ErrSeparatorMissing, PCR: uint32(pcr), Seq: -1, Earlier: -1}
		}
	}
	return nil
}
