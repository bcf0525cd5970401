package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// StateFile is the name of the agent's state file in state_dir.
const StateFile = "state.json"

// sequenceBlock is how many sequence numbers are reserved on disk at a time:
// the file is rewritten once per block, not once per pulse, and after a
// restart numbering resumes above the last reservation, so the sequence
// never goes back (it may skip forward).
const sequenceBlock = 64

// Enrollment records that an AK (or, without a TPM, the agent's
// certificate identity) was enrolled with the verifier.
type Enrollment struct {
	AgentID string `json:"agent_id"`
	// TPM is false for an mTLS-only enrollment.
	TPM bool `json:"tpm"`
	// AKPublicSHA256 is the hex SHA-256 of the AK's TPMT_PUBLIC.
	AKPublicSHA256 string    `json:"ak_public_sha256,omitempty"`
	AKHandle       uint32    `json:"ak_handle,omitempty"`
	Verifier       string    `json:"verifier"`
	EnrolledAt     time.Time `json:"enrolled_at"`
}

// persisted is the JSON document of the state file.
type persisted struct {
	Version int `json:"version"`
	// SequenceReserved is the first sequence number not yet handed out by a
	// previous run: the next run starts here.
	SequenceReserved uint64      `json:"sequence_reserved"`
	Enrollment       *Enrollment `json:"enrollment,omitempty"`
}

// State is the agent's small persistent state: enrollment and the pulse
// sequence number. Writes are atomic (temp file, fsync, rename, fsync dir).
type State struct {
	path string

	mu       sync.Mutex
	doc      persisted
	next     uint64 // next sequence number to hand out
	reserved uint64 // numbers below this are covered by the file
}

// OpenState loads (or creates) the state file in dir.
func OpenState(dir string) (*State, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	s := &State{path: filepath.Join(dir, StateFile)}
	b, err := os.ReadFile(s.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		s.doc = persisted{Version: 1}
	case err != nil:
		return nil, fmt.Errorf("read state: %w", err)
	default:
		if err := json.Unmarshal(b, &s.doc); err != nil {
			// A corrupt state file must not reset the sequence silently.
			return nil, fmt.Errorf("parse state %s: %w (move it away to start over; the verifier may then see a sequence regression)", s.path, err)
		}
		if s.doc.Version != 1 {
			return nil, fmt.Errorf("state %s: unsupported version %d", s.path, s.doc.Version)
		}
	}
	s.next = s.doc.SequenceReserved
	s.reserved = s.doc.SequenceReserved
	return s, nil
}

// NextSequence returns the next pulse sequence number, reserving a new block
// on disk first when the current one is used up.
func (s *State) NextSequence() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.next >= s.reserved {
		doc := s.doc
		doc.SequenceReserved = s.next + sequenceBlock
		if err := s.write(doc); err != nil {
			return 0, err
		}
		s.doc = doc
		s.reserved = doc.SequenceReserved
	}
	n := s.next
	s.next++
	return n, nil
}

// Enrollment returns the recorded enrollment, or nil.
func (s *State) Enrollment() *Enrollment {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.doc.Enrollment == nil {
		return nil
	}
	e := *s.doc.Enrollment
	return &e
}

// SetEnrollment records (or, with nil, forgets) the enrollment.
func (s *State) SetEnrollment(e *Enrollment) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	doc := s.doc
	doc.Enrollment = e
	if err := s.write(doc); err != nil {
		return err
	}
	s.doc = doc
	return nil
}

func (s *State) write(doc persisted) error {
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	if err := writeFileSynced(s.path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	return nil
}

// writeFileSynced replaces path atomically and durably: a temporary file in
// the same directory is written and synced, renamed over path, and the
// directory is synced so the rename survives a power cut.
func writeFileSynced(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a successful rename this is a no-op
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	return nil
}

// Matches reports whether e is an enrollment of this agent ID, TPM mode and
// AK public digest (hex; empty without a TPM).
func (e *Enrollment) Matches(agentID string, withTPM bool, akDigest string) bool {
	return e != nil && e.AgentID == agentID && e.TPM == withTPM && e.AKPublicSHA256 == akDigest
}
