//go:build !cgo || pulse_nosim

package tpm

import (
	"errors"

	"github.com/google/go-tpm/tpm2/transport"
)

// SimAvailable reports whether the in-process simulator ("sim") is compiled
// in; this build has it left out (no cgo, or -tags pulse_nosim).
const SimAvailable = false

// ErrSimBusy is returned when "sim" is opened while another in-process
// simulator is still open.
var ErrSimBusy = errors.New("in-process tpm simulator already open in this process")

type simTPM struct{ transport.TPMCloser }

func openSim(Spec) (*simTPM, error) {
	return nil, errors.New("in-process tpm simulator not compiled in (needs cgo, without -tags pulse_nosim)")
}

func (s *simTPM) reset() error { return errors.New("in-process tpm simulator not compiled in") }
