package policy

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"
)

// EvidenceVersion is the version of the evidence JSON format written by
// MarshalEvidence and required by ParseEvidence.
const EvidenceVersion = 1

// Evidence is what the verifier verified about one agent at one pulse, and
// the only input of Evaluate. It is also the on-disk evidence file format
// that pulsectl policy test and derive read (JSON, documented in
// docs/policy.md). Every field must come from verified data: the firmware
// log replayed against the quoted PCRs, the runtime log replayed against the
// runtime PCR, and the quote itself; never from a claim the verifier did not
// check.
type Evidence struct {
	// Version is EvidenceVersion in files; the verifier may leave it 0.
	Version int `json:"version"`
	// AgentID is the identity the agent's mTLS certificate proved.
	AgentID string `json:"agent_id"`
	// Partition is the agent's partition from the verifier's records.
	Partition string `json:"partition"`
	// RecordedAt is when the evidence was verified. pulsectl policy test
	// evaluates a file at this time (update windows depend on it); the
	// verifier passes its own clock to Evaluate.
	RecordedAt time.Time `json:"recorded_at,omitzero"`
	// Source is free text saying where the evidence came from. It is not
	// evaluated.
	Source string `json:"source,omitempty"`
	// TPM is true when the pulse carried a quote that verified (AK
	// signature, nonce, PCR digest). False means mTLS-only.
	TPM bool `json:"tpm"`
	// Boot is nil when no firmware log was verified.
	Boot *BootEvidence `json:"boot,omitempty"`
	// Runtime is nil when no runtime evidence was verified.
	Runtime *RuntimeEvidence `json:"runtime,omitempty"`
	// Clock is the agent kernel's clock discipline as the pulse reports
	// it: a claim the TPM does not measure (clock.go); nil when the pulse
	// reports none.
	Clock *ClockEvidence `json:"clock,omitempty"`
}

// BootEvidence is a firmware event log replayed against quoted PCRs.
type BootEvidence struct {
	// Bank is the PCR bank the log was replayed in ("sha256", "sha1", ...).
	Bank string `json:"bank"`
	// PCRs are the quoted values (lowercase hex) the log reproduced,
	// by PCR index.
	PCRs map[int]string `json:"pcrs"`
	// SecureBoot is the SecureBoot variable measured in a replayed PCR 7
	// event; nil when unknown (PCR 7 not verified or not measured).
	SecureBoot *bool `json:"secure_boot"`
	// Events are the replayed events of the verified PCRs, in log order.
	// Events of PCRs that did not replay are not evidence and are absent.
	Events []BootEvent `json:"events"`
	// RuntimePCRHistory names the firmware log's events in the runtime PCR
	// (shim's MOK measurements, MOKVariables without the trailing NUL), in
	// log order: the value the runtime log's replay starts from. The
	// verifier binds them by replaying the runtime log onto them. Empty
	// (not nil) when the pre-OS boot measured nothing there; nil when
	// unknown (older evidence files), which fails runtime_pcr_history.
	RuntimePCRHistory []string `json:"runtime_pcr_history,omitzero"`
}

// BootEvent is one replayed firmware event.
type BootEvent struct {
	// Seq is the record's position in the log (0 = first record).
	Seq int `json:"seq"`
	PCR int `json:"pcr"`
	// Type is the TCG name, e.g. "EV_EFI_BOOT_SERVICES_APPLICATION".
	Type string `json:"type"`
	// Digest is the event's digest in Bank (lowercase hex).
	Digest string `json:"digest"`
	// Note is a printable excerpt of the event data for humans (a file
	// path, a version string). It is not evidence: many event types'
	// data is not covered by the digest. Rules never read it.
	Note string `json:"note,omitempty"`
}

// RuntimeEvidence is the latest state from the replayed runtime log.
type RuntimeEvidence struct {
	// AgentBinarySHA256 is the SHA-256 of the agent executable, measured
	// by the launcher before it ran (lowercase hex).
	AgentBinarySHA256 string `json:"agent_binary_sha256"`
	// PreviousAgentBinarySHA256 is the agent's last-known-good binary
	// digest from the verifier's records; empty when there is none. When
	// it differs from AgentBinarySHA256 the agent was updated, and
	// agent_binary checks the update happened in an approved window.
	PreviousAgentBinarySHA256 string `json:"previous_agent_binary_sha256,omitempty"`
	// AgentBinaries is every agent-binary measurement of the current boot,
	// in runtime-log order (the last one is AgentBinarySHA256). A record
	// cannot be taken back out of the runtime PCR, so agent_binary judges
	// each of them: one unapproved build anywhere in the boot denies until
	// the next reboot. Empty in older evidence files: then only
	// AgentBinarySHA256 is judged.
	AgentBinaries []AgentBinaryRecord `json:"agent_binaries,omitempty"`
	// BPFPrograms maps pinned program name to the SHA-256 of its
	// translated instructions (lowercase hex).
	BPFPrograms map[string]string `json:"bpf_programs"`
	// BPFObjects maps pinned program name to the SHA-256 of the eBPF
	// object it was loaded from, as measured (lowercase hex; absent when
	// the record names none). Update windows' ebpf_objects judge it.
	BPFObjects map[string]string `json:"bpf_objects,omitempty"`
	// FortressActive is true when the Fortress BPF-LSM guard is attached
	// and enforcing.
	FortressActive bool `json:"fortress_active"`
}

// AgentBinaryRecord is one agent-binary measurement of the runtime log.
type AgentBinaryRecord struct {
	// SHA256 is the measured file's SHA-256 (lowercase hex).
	SHA256 string `json:"sha256"`
	// SelfMeasured is true when the agent measured itself (it was not
	// started through the launcher). Root on the device can write either
	// form of record; the flag says how an honest agent started.
	SelfMeasured bool `json:"self_measured,omitempty"`
}

// EvidenceError says what is wrong with an evidence file.
type EvidenceError struct {
	Field  string
	Reason string
}

func (e *EvidenceError) Error() string {
	return fmt.Sprintf("policy: bad evidence: %s: %s", e.Field, e.Reason)
}

// ParseEvidence reads an evidence file: strict JSON (unknown fields are
// errors), Version equal to EvidenceVersion, and valid digests.
func ParseEvidence(data []byte) (*Evidence, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var ev Evidence
	if err := dec.Decode(&ev); err != nil {
		return nil, fmt.Errorf("policy: bad evidence: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, &EvidenceError{Field: "(file)", Reason: "trailing data after the JSON object"}
	}
	if ev.Version != EvidenceVersion {
		return nil, &EvidenceError{Field: "version", Reason: fmt.Sprintf("is %d, this Pulse reads version %d", ev.Version, EvidenceVersion)}
	}
	if err := ev.Validate(); err != nil {
		return nil, err
	}
	return &ev, nil
}

// LoadEvidence reads and parses an evidence file.
func LoadEvidence(path string) (*Evidence, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("policy: read evidence: %w", err)
	}
	ev, err := ParseEvidence(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return ev, nil
}

// MarshalEvidence writes the evidence file format (indented JSON, sorted
// map keys, trailing newline), setting Version.
func MarshalEvidence(ev Evidence) ([]byte, error) {
	ev.Version = EvidenceVersion
	if err := ev.Validate(); err != nil {
		return nil, err
	}
	b, err := json.MarshalIndent(ev, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("policy: marshal evidence: %w", err)
	}
	return append(b, '\n'), nil
}

// Validate checks digests and indexes.
func (ev *Evidence) Validate() error {
	if b := ev.Boot; b != nil {
		n, ok := digestLen[b.Bank]
		if !ok {
			return &EvidenceError{Field: "boot.bank", Reason: fmt.Sprintf("unknown bank %q", b.Bank)}
		}
		idx := make([]int, 0, len(b.PCRs))
		for i := range b.PCRs {
			idx = append(idx, i)
		}
		sort.Ints(idx)
		for _, i := range idx {
			if i < 0 || i > 23 {
				return &EvidenceError{Field: "boot.pcrs", Reason: fmt.Sprintf("PCR index %d out of range", i)}
			}
			if err := checkHex(b.PCRs[i], n); err != nil {
				return &EvidenceError{Field: fmt.Sprintf("boot.pcrs.%d", i), Reason: err.Error()}
			}
		}
		for k, e := range b.Events {
			field := fmt.Sprintf("boot.events[%d]", k)
			if e.PCR < 0 || e.PCR > 23 {
				return &EvidenceError{Field: field + ".pcr", Reason: fmt.Sprintf("PCR index %d out of range", e.PCR)}
			}
			if e.Type == "" {
				return &EvidenceError{Field: field + ".type", Reason: "empty"}
			}
			if err := checkHex(e.Digest, n); err != nil {
				return &EvidenceError{Field: field + ".digest", Reason: err.Error()}
			}
		}
		seen := map[string]bool{}
		for k, name := range b.RuntimePCRHistory {
			field := fmt.Sprintf("boot.runtime_pcr_history[%d]", k)
			if !IsMOKVariable(name) {
				return &EvidenceError{Field: field, Reason: fmt.Sprintf("%q is not a MOK variable shim measures (%s)", name, strings.Join(MOKVariables, ", "))}
			}
			if seen[name] {
				return &EvidenceError{Field: field, Reason: fmt.Sprintf("%q is listed twice (shim measures each MOK variable once)", name)}
			}
			seen[name] = true
		}
	}
	if r := ev.Runtime; r != nil {
		if r.AgentBinarySHA256 != "" {
			if err := checkHex(r.AgentBinarySHA256, 64); err != nil {
				return &EvidenceError{Field: "runtime.agent_binary_sha256", Reason: err.Error()}
			}
		}
		for i, b := range r.AgentBinaries {
			if err := checkHex(b.SHA256, 64); err != nil {
				return &EvidenceError{Field: fmt.Sprintf("runtime.agent_binaries[%d].sha256", i), Reason: err.Error()}
			}
		}
		if r.PreviousAgentBinarySHA256 != "" {
			if err := checkHex(r.PreviousAgentBinarySHA256, 64); err != nil {
				return &EvidenceError{Field: "runtime.previous_agent_binary_sha256", Reason: err.Error()}
			}
		}
		for name, d := range r.BPFPrograms {
			if name == "" {
				return &EvidenceError{Field: "runtime.bpf_programs", Reason: "empty program name"}
			}
			if err := checkHex(d, 64); err != nil {
				return &EvidenceError{Field: fmt.Sprintf("runtime.bpf_programs[%q]", name), Reason: err.Error()}
			}
		}
	}
	return nil
}

func checkHex(s string, n int) error {
	if _, err := hex.DecodeString(s); err != nil {
		return fmt.Errorf("not hex")
	}
	if len(s) != n {
		return fmt.Errorf("%d hex characters, want %d", len(s), n)
	}
	return nil
}
