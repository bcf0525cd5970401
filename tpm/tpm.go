// Package tpm is Pulse's device-side TPM 2.0 code: opening a TPM (a kernel
// device, swtpm's unix socket or the in-process reference simulator), the
// attestation key, the endorsement key and its certificate, PCR reads and
// extends, quotes, credential activation and reading the firmware event log.
//
// Verification of what a TPM produces lives in the pure sub-packages
// (tpm/quote, tpm/eventlog, tpm/credential); nothing here is needed by the
// verifier.
//
// A *TPM serialises its commands: it is safe for concurrent use. Every
// transient object or session it creates is flushed before the method that
// created it returns (swtpm and /dev/tpm0 have no resource manager).
package tpm

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"
	"github.com/hashicorp/go-hclog"
)

// ErrNoTPM is returned by Open for the spec "none", and for "auto" when the
// host has no TPM device.
var ErrNoTPM = errors.New("no tpm available")

// autoDevices are the paths "auto" probes, resource manager first.
var autoDevices = []string{"/dev/tpmrm0", "/dev/tpm0"}

// TPM is an open TPM.
type TPM struct {
	mu     sync.Mutex
	tr     transport.TPMCloser
	sim    *simTPM // non-nil for the in-process simulator
	spec   Spec
	log    hclog.Logger
	closed bool
}

// Open opens the TPM a spec names (see ParseSpec), flushes transient objects
// and sessions that a previous user left loaded, and returns it. "none", and
// "auto" on a host without a TPM device, return ErrNoTPM.
func Open(spec string, logger hclog.Logger) (*TPM, error) {
	s, err := ParseSpec(spec)
	if err != nil {
		return nil, err
	}
	return OpenSpec(s, logger)
}

// OpenSpec is Open for an already parsed spec.
func OpenSpec(s Spec, logger hclog.Logger) (*TPM, error) {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	logger = logger.Named("tpm")
	if s.Kind == KindAuto {
		resolved, err := resolveAuto(autoDevices)
		if err != nil {
			return nil, err
		}
		logger.Debug("auto-detected tpm device", "path", resolved.Path)
		s = resolved
	}
	t := &TPM{spec: s, log: logger}
	switch s.Kind {
	case KindNone:
		return nil, ErrNoTPM
	case KindDevice:
		tr, err := linuxtpm.Open(s.Path)
		if err != nil {
			return nil, fmt.Errorf("open tpm device %s: %w", s.Path, err)
		}
		t.tr = tr
	case KindSwtpm:
		tr, err := openSocket(s.Path)
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", s, err)
		}
		t.tr = tr
	case KindSim:
		sim, err := openSim(s)
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", s, err)
		}
		t.tr, t.sim = sim, sim
	default:
		return nil, fmt.Errorf("%w: unsupported kind %s", ErrBadSpec, s.Kind)
	}
	n, err := t.flushLeaked()
	if err != nil {
		t.tr.Close()
		return nil, fmt.Errorf("open %s: %w", s, err)
	}
	logger.Info("tpm opened", "spec", s.String(), "flushed_handles", n)
	return t, nil
}

// resolveAuto picks the first existing device of paths, or ErrNoTPM.
func resolveAuto(paths []string) (Spec, error) {
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			return Spec{Kind: KindDevice, Path: p}, nil
		}
	}
	return Spec{}, fmt.Errorf("%w: none of %v exists", ErrNoTPM, paths)
}

// Spec returns the canonical spec of the opened TPM ("auto" resolved to the
// device it found).
func (t *TPM) Spec() string { return t.spec.String() }

// Close closes the TPM. Persistent objects (the AK) stay in the TPM.
func (t *TPM) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	if err := t.tr.Close(); err != nil {
		return fmt.Errorf("close tpm: %w", err)
	}
	return nil
}

// do runs f with the TPM locked.
func (t *TPM) do(f func(tr transport.TPM) error) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return errors.New("tpm is closed")
	}
	return f(t.tr)
}

// flush flushes a transient object or session handle, logging (not
// returning) a failure: it runs in defers after the real work.
func (t *TPM) flush(tr transport.TPM, h tpm2.TPMHandle) {
	if _, err := (tpm2.FlushContext{FlushHandle: h}).Execute(tr); err != nil {
		t.log.Warn("flush context failed", "handle", fmt.Sprintf("0x%08x", uint32(h)), "error", err)
	}
}

// handles lists the handles of one type (TPM_HT) currently in the TPM.
func handles(tr transport.TPM, ht tpm2.TPMHT) ([]tpm2.TPMHandle, error) {
	var out []tpm2.TPMHandle
	next := uint32(ht) << 24
	for {
		rsp, err := (tpm2.GetCapability{
			Capability:    tpm2.TPMCapHandles,
			Property:      next,
			PropertyCount: 64,
		}).Execute(tr)
		if err != nil {
			return nil, fmt.Errorf("get capability handles 0x%02x: %w", uint8(ht), err)
		}
		hl, err := rsp.CapabilityData.Data.Handles()
		if err != nil {
			return nil, fmt.Errorf("get capability handles 0x%02x: %w", uint8(ht), err)
		}
		for _, h := range hl.Handle {
			if uint32(h)>>24 != uint32(ht) {
				return out, nil
			}
			out = append(out, h)
			next = uint32(h) + 1
		}
		if !rsp.MoreData || len(hl.Handle) == 0 {
			return out, nil
		}
	}
}

// flushLeaked flushes transient objects and sessions left by an earlier
// process that died without cleaning up (swtpm and /dev/tpm0 keep them until
// they are flushed or the TPM restarts; /dev/tpmrm0 shows none).
func (t *TPM) flushLeaked() (int, error) {
	n := 0
	err := t.do(func(tr transport.TPM) error {
		for _, ht := range []tpm2.TPMHT{tpm2.TPMHTTransient, tpm2.TPMHTHMACSession, tpm2.TPMHTPolicySession} {
			hs, err := handles(tr, ht)
			if err != nil {
				return err
			}
			for _, h := range hs {
				if _, err := (tpm2.FlushContext{FlushHandle: h}).Execute(tr); err != nil {
					return fmt.Errorf("flush leaked handle 0x%08x: %w", uint32(h), err)
				}
				t.log.Debug("flushed leaked handle", "handle", fmt.Sprintf("0x%08x", uint32(h)))
				n++
			}
		}
		return nil
	})
	return n, err
}

// TransientHandles returns how many transient objects and sessions are loaded
// in the TPM now (for leak checks; always 0 behind /dev/tpmrm0 between calls).
func (t *TPM) TransientHandles() (int, error) {
	n := 0
	err := t.do(func(tr transport.TPM) error {
		for _, ht := range []tpm2.TPMHT{tpm2.TPMHTTransient, tpm2.TPMHTHMACSession, tpm2.TPMHTPolicySession} {
			hs, err := handles(tr, ht)
			if err != nil {
				return err
			}
			n += len(hs)
		}
		return nil
	})
	return n, err
}

// ResetSim reboots the in-process simulator (Shutdown then Startup(CLEAR)),
// keeping its persistent objects and NV. It fails for any other kind of TPM.
func (t *TPM) ResetSim() error {
	if t.sim == nil {
		return fmt.Errorf("reset: %s is not the in-process simulator", t.spec)
	}
	return t.do(func(transport.TPM) error {
		if err := t.sim.reset(); err != nil {
			return fmt.Errorf("reset in-process simulator: %w", err)
		}
		return nil
	})
}
