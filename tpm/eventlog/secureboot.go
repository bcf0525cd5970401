package eventlog

import (
	"crypto/sha256"
)

// SecureBoot is the UEFI Secure Boot configuration as measured into PCR 7
// by the firmware before PCR 7's EV_SEPARATOR: the pre-OS record. Nothing
// measured after the separator (by a boot loader, or by root on the running
// system) changes it; CheckStructure refuses logs that try.
type SecureBoot struct {
	// Known is true when the SecureBoot variable was measured (in a PCR 7
	// event before the separator, whose data is bound by its digest).
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
	// EV_EFI_VARIABLE_DRIVER_CONFIG before the separator, in log order (a
	// database measured twice keeps its last measurement; a mode variable
	// measured twice is refused by CheckStructure).
	Variables []SecureBootVariable
	// Authorities are the db entries firmware used to authorise loaded
	// images (EV_EFI_VARIABLE_AUTHORITY), in log order, before and after
	// the separator. Those after it may have been appended by software
	// after boot: an authority says an image was verified with it, never
	// that nothing else ran.
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
	// Cert describes the certificate, for people. Log.SecureBoot sets it,
	// except when Data is not a certificate, is larger than 8 KiB, or is
	// beyond the first 16 distinct certificates of the log (real logs have
	// a handful of authorities, of 1-2 KiB). Verify leaves it nil: decoding
	// runs at about 50 MB/s, and far slower for hostile certificates, and
	// no verification decision uses it; call DescribeCert(Data).
	Cert *CertInfo
}

// Bounds on certificate decoding in Log.SecureBoot.
const (
	maxDescribedCerts    = 16
	maxDescribedCertSize = 8 << 10
)

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

// SecureBoot derives the Secure Boot state the log claims, from its PCR 7
// events whose data is bound by their digests in every bank: the
// configuration measured before PCR 7's separator and the authorities. It
// is the zero SecureBoot (unknown) when the log breaks CheckStructure. Use
// Verify to get a state backed by quoted PCR values.
func (l *Log) SecureBoot() SecureBoot {
	if l.CheckStructure() != nil {
		return SecureBoot{}
	}
	return deriveSecureBoot(l.Events, func(ev *Event) bool { return ev.DataBound() }, true)
}

// maxVariableName bounds the names, in UTF-16 units without trailing NULs,
// worth decoding: addVariable keeps none longer than "DeployedMode".
const maxVariableName = 32

// deriveSecureBoot reads the Secure Boot state from events that passed
// CheckStructure; bound says whether an event's data is evidence, describe
// whether authority certificates are decoded (Authority.Cert). Its cost per
// event is a few small allocations at most: hostile logs have MaxEvents
// authorities.
func deriveSecureBoot(events []Event, bound func(*Event) bool, describe bool) SecureBoot {
	var sb SecureBoot
	preOS := true
	n := 0
	for i := range events {
		if events[i].PCR == 7 && events[i].Type == EvEFIVariableAuthority {
			n++
		}
	}
	ad := authorityDecoder{names: map[string]string{}}
	if describe {
		ad.certs = map[[32]byte]*CertInfo{}
	}
	if n > 0 {
		sb.Authorities = make([]Authority, 0, n)
		ad.sums = make([]byte, 0, n*sha256.Size)
	}
	for i := range events {
		ev := &events[i]
		if ev.PCR != 7 {
			continue
		}
		switch ev.Type {
		case EvSeparator:
			preOS = false
		case EvEFIVariableDriverConfig:
			if !preOS {
				continue
			}
			// Only a few short names are kept: skip decoding others.
			if nl, ok := variableNameLen(ev.Data); !ok || nl > maxVariableName || !bound(ev) {
				continue
			}
			if v, err := ParseUEFIVariable(ev.Data); err == nil {
				sb.addVariable(v)
			}
		case EvEFIVariableAuthority:
			if !bound(ev) {
				continue
			}
			if a, ok := ad.decode(ev.Data); ok {
				sb.Authorities = append(sb.Authorities, a)
			}
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

// authorityDecoder decodes EV_EFI_VARIABLE_AUTHORITY data with amortised
// allocations: variable names are decoded once each (up to maxNames
// distinct), digests are cut from one slab, and certificates are described
// once each (when certs is not nil; at most maxDescribedCerts distinct).
type authorityDecoder struct {
	names map[string]string
	sums  []byte
	certs map[[32]byte]*CertInfo
}

const maxNames = 64

func (ad *authorityDecoder) decode(b []byte) (Authority, bool) {
	_, off, err := variableLayout(b)
	if err != nil {
		return Authority{}, false
	}
	var a Authority
	copy(a.VendorGUID[:], b[:16])
	raw := b[32:off]
	if name, ok := ad.names[string(raw)]; ok {
		a.Variable = name
	} else {
		a.Variable = decodeUCS2(raw)
		if len(ad.names) < maxNames {
			ad.names[string(raw)] = a.Variable
		}
	}
	d := b[off:]
	// EFI_SIGNATURE_DATA: owner GUID then the entry. Some firmware logs the
	// bare certificate instead.
	if len(d) > 16 && d[16] == 0x30 {
		copy(a.Owner[:], d[:16])
		d = d[16:]
	}
	a.Data = d
	sum := sha256.Sum256(d)
	if cap(ad.sums)-len(ad.sums) < len(sum) {
		ad.sums = make([]byte, 0, 64*len(sum))
	}
	ad.sums = append(ad.sums, sum[:]...)
	a.SHA256 = ad.sums[len(ad.sums)-len(sum) : len(ad.sums) : len(ad.sums)]
	if ad.certs == nil || len(d) == 0 || d[0] != 0x30 || len(d) > maxDescribedCertSize {
		return a, true
	}
	if c, ok := ad.certs[sum]; ok {
		a.Cert = c
	} else if len(ad.certs) < maxDescribedCerts {
		a.Cert = DescribeCert(d)
		ad.certs[sum] = a.Cert
	}
	return a, true
}
