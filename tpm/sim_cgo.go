//go:build cgo && pulse_sim

package tpm

import (
	"errors"
	"fmt"
	"sync"

	"github.com/google/go-tpm-tools/simulator"
)

// SimAvailable reports whether the in-process simulator ("sim") is compiled
// in. It needs cgo and -tags pulse_sim, which only the tests and benchmarks
// use (make test, scripts/bench.sh): no Pulse binary carries the reference
// TPM (or links libcrypto for it).
const SimAvailable = true

// ErrSimBusy is returned when "sim" is opened while another in-process
// simulator is still open: the reference TPM is a process-wide singleton.
var ErrSimBusy = errors.New("in-process tpm simulator already open in this process")

// simInUse guards the process-wide simulator so a second open fails fast
// instead of blocking inside go-tpm-tools until the first is closed.
var simInUse sync.Mutex

type simTPM struct {
	mu  sync.Mutex
	sim *simulator.Simulator
}

func openSim(spec Spec) (*simTPM, error) {
	if !simInUse.TryLock() {
		return nil, ErrSimBusy
	}
	var (
		s   *simulator.Simulator
		err error
	)
	if spec.HasSeed {
		s, err = simulator.GetWithFixedSeedInsecure(spec.Seed)
	} else {
		s, err = simulator.Get()
	}
	if err != nil {
		simInUse.Unlock()
		return nil, fmt.Errorf("start in-process simulator: %w", err)
	}
	return &simTPM{sim: s}, nil
}

// Send implements transport.TPM.
func (s *simTPM) Send(cmd []byte) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sim == nil {
		return nil, errors.New("in-process simulator: use of closed tpm")
	}
	return sendRetrying(s.sendOnce, cmd)
}

func (s *simTPM) sendOnce(cmd []byte) ([]byte, error) {
	if _, err := s.sim.Write(cmd); err != nil {
		return nil, fmt.Errorf("in-process simulator: %w", err)
	}
	return readResponse(s.sim)
}

// Close shuts the simulator down and frees it for the next open.
func (s *simTPM) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sim == nil {
		return nil
	}
	err := s.sim.Close()
	s.sim = nil
	simInUse.Unlock()
	return err
}

// reset simulates a reboot of the in-process TPM (Shutdown, Startup(CLEAR)).
func (s *simTPM) reset() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sim == nil {
		return errors.New("in-process simulator: use of closed tpm")
	}
	return s.sim.Reset()
}
