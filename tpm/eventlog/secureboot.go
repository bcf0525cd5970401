package eventlog

import (
	"crypto/sha256"
)

// SecureBoot is the UEFI Secure Boot configuration as measured into PCR 7.
type SecureBoot struct {
	// Known is true when the SecureBoot variable was measured (in a PCR 7
	// event whose data is bound by its digest).
	Known bool
	// Enabled is the value of the SecureBoot variable (1 = enforcing).
	Enabled bool
	// SetupModeKnown/SetupMode: the SetupMode variable, when measured
	// (most firmware measures only SecureBoot, PK, KEK, db and dbx).
	SetupModeKnown bool
	SetupMode      bool
	// DeployedMode/AuditMode are set when those variables were measured.
	DeployedModeKnown bool
	DeployedMode      bool
	AuditModeKnown    bool
	AuditMode         bool
	// Variables are the Secure Boot variables measured in PCR 7 with
	// EV_EFI_VARIABLE_DRIVER_CONFIG, in log order (last measurement wins).
	Variables []SecureBootVariable
	// Authorities are the db entries firmware used to authorise loaded
	// images (EV_EFI_VARIABLE_AUTHORITY), in log order.
	Authorities []Authority
}

// SecureBootVariable is one measured Secure Boot configuration variable.
type SecureBootVariable struct {
	Name       string
	VendorGUID GUID
	Data       []byte
	// SHA256 is the SHA-256 of Data.
	SHA256 []byte
	// Entries are the decoded signature lists of PK, KEK, db and dbx.
	Entries []SignatureEntry
	// EntriesError says why the signature lists could not be decoded.
	EntriesError string
}

// Authority is one EV_EFI_VARIABLE_AUTHORITY record.
type Authority struct {
	// Variable is the database the entry came from (normally "db"; shim
	// uses "MokList", "Shim" or "SbatLevel").
	Variable   string
	VendorGUID GUID
	// Owner is the signature owner, when the data is an EFI_SIGNATURE_DATA.
	Owner GUID
	// Data is the entry (usually a DER certificate); SHA256 its SHA-256.
	Data   []byte
	SHA256 []byte
	Cert   *CertInfo
}

// Variable returns the named measured variable, or nil.
func (s *SecureBoot) Variable(name string) *SecureBootVariable {
	for i := range s.Variables {
		if s.Variables[i].Name == name {
			return &s.Variables[i]
		}
	}
	return nil
}

// Measured reports whether the named variable (e.g. "db") was measured.
func (s *SecureBoot) Measured(name string) bool { return s.Variable(name) != nil }

// SecureBoot derives the Secure Boot state from the log's PCR 7 events whose
// data is bound by their digests in every bank. It is what the log claims;
// use Verify to get a state backed by quoted PCR values.
func (l *Log) SecureBoot() SecureBoot {
	return deriveSecureBoot(l.Events)
}

func deriveSecureBoot(events []Event) SecureBoot {
	var sb SecureBoot
	for i := range events {
		ev := &events[i]
		if ev.PCR != 7 || !ev.DataVerified {
			continue
		}
		switch ev.Type {
		case EvEFIVariableDriverConfig:
			v, err := ParseUEFIVariable(ev.Data)
			if err != nil {
				continue
			}
			sb.addVariable(v)
		case EvEFIVariableAuthority:
			v, err := ParseUEFIVariable(ev.Data)
			if err != nil {
				continue
			}
			sb.Authorities = append(sb.Authorities, newAuthority(v))
		}
	}
	return sb
}

func boolVar(data []byte) bool { return len(data) > 0 && data[0] == 1 }

func (sb *SecureBoot) addVariable(v *UEFIVariable) {
	switch {
	case v.VendorGUID == GUIDGlobalVariable:
		switch v.Name {
		case "SecureBoot":
			sb.Known, sb.Enabled = true, boolVar(v.Data)
		case "SetupMode":
			sb.SetupModeKnown, sb.SetupMode = true, boolVar(v.Data)
		case "DeployedMode":
			sb.DeployedModeKnown, sb.DeployedMode = true, boolVar(v.Data)
		case "AuditMode":
			sb.AuditModeKnown, sb.AuditMode = true, boolVar(v.Data)
		case "PK", "KEK":
		default:
			return
		}
	case v.VendorGUID == GUIDImageSecurityDatabase:
		switch v.Name {
		case "db", "dbx", "dbt", "dbr":
		default:
			return
		}
	default:
		return
	}
	sum := sha256.Sum256(v.Data)
	sv := SecureBootVariable{Name: v.Name, VendorGUID: v.VendorGUID, Data: v.Data, SHA256: sum[:]}
	switch v.Name {
	case "PK", "KEK", "db", "dbx", "dbt", "dbr":
		entries, err := ParseSignatureList(v.Data)
		if err != nil {
			sv.EntriesError = err.Error()
		}
		sv.Entries = entries
	}
	for i := range sb.Variables {
		if sb.Variables[i].Name == v.Name && sb.Variables[i].VendorGUID == v.VendorGUID {
			sb.Variables[i] = sv
			return
		}
	}
	sb.Variables = append(sb.Variables, sv)
}

func newAuthority(v *UEFIVariable) Authority {
	a := Authority{Variable: v.Name, VendorGUID: v.VendorGUID, Data: v.Data}
	d := v.Data
	// EFI_SIGNATURE_DATA: owner GUID then the entry. Some firmware logs the
	// bare certificate instead.
	if len(d) > 16 && d[16] == 0x30 {
		copy(a.Owner[:], d[:16])
		d = d[16:]
	}
	a.Data = d
	sum := sha256.Sum256(d)
	a.SHA256 = sum[:]
	if len(d) > 0 && d[0] == 0x30 {
		a.Cert = DescribeCert(d)
	}
	return a
}
