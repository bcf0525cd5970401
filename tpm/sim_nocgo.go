//go:build !cgo || !pulse_sim

package tpm

import (
	"errors"

	"github.com/google/go-tpm/tpm2/transport"
)

// SimAvailable reports whether the in-process simulator ("sim") is compiled
// in; this build has it left out (it needs cgo and -tags pulse_sim, which
// only tests and benchmarks use).
const SimAvailable = false

// ErrSimBusy is returned when "sim" is opened while another in-process
// simulator is still open.
var ErrSimBusy = errors.New("in-process tpm simulator already open in this process")

type simTPM struct{ transport.TPMCloser }

func openSim(Spec) (*simTPM, error) {
	return nil, errors.New("in-process tpm simulator not compiled in (tests only: cgo and -tags pulse_sim; use swtpm)")
}

func (s *simTPM) reset() error { return errors.New("in-process tpm simulator not compiled in") }
