package simulator

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/pulse-attest/pulse/tpm"
	"github.com/pulse-attest/pulse/tpm/eventlog"
)

// BootResult says what Boot did.
type BootResult struct {
	// LogPath is the copy of the log in the state directory, the path to
	// give the agent as its firmware event log.
	LogPath string
	// Banks are the PCR banks that were extended: those both the log and
	// the TPM have. A bank the TPM has but the log lacks stays as the reboot
	// left it (zero).
	Banks []uint16
	// Events is the number of events extended.
	Events int
	// StartupLocality is the locality TPM2_Startup was sent from.
	StartupLocality uint8
}

// Boot reboots the TPM and replays a firmware event log into it, as the
// firmware of the logged machine did: TPM2_Startup(CLEAR) from the log's
// StartupLocality (so PCR 0 starts at 0...0N), then one TPM2_PCR_Extend per
// event with the event's digests for every bank both the log and the TPM
// have (EV_NO_ACTION records are not extended). Afterwards the PCRs equal a
// replay of the log. The log is copied to STATE/binary_bios_measurements.
func (s *Swtpm) Boot(raw []byte) (*BootResult, error) {
	log, err := eventlog.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("simulator: boot: %w", err)
	}
	if err := s.reset(log.StartupLocality); err != nil {
		return nil, fmt.Errorf("simulator: boot: %w", err)
	}
	t, err := s.Open(s.log)
	if err != nil {
		return nil, fmt.Errorf("simulator: boot: %w", err)
	}
	defer t.Close()
	banks, n, err := extendLog(t, log)
	if err != nil {
		return nil, fmt.Errorf("simulator: boot: %w", err)
	}
	path := filepath.Join(s.dir, BootLogFile)
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		return nil, fmt.Errorf("simulator: boot: copy log: %w", err)
	}
	if err := s.setBootLog(path); err != nil {
		return nil, err
	}
	s.log.Info("booted firmware log", "events", n, "banks", algNames(banks), "startup_locality", log.StartupLocality, "log_path", path)
	return &BootResult{LogPath: path, Banks: banks, Events: n, StartupLocality: log.StartupLocality}, nil
}

// ExtendLog extends every event of a firmware log into an open TPM, for the
// banks both have, without resetting it first: the caller provides a freshly
// started TPM (started from the log's StartupLocality, which only swtpm can
// do: see Swtpm.Boot). It returns the banks extended and the event count.
func ExtendLog(t *tpm.TPM, raw []byte) (banks []uint16, events int, err error) {
	log, err := eventlog.Parse(raw)
	if err != nil {
		return nil, 0, fmt.Errorf("simulator: extend log: %w", err)
	}
	banks, events, err = extendLog(t, log)
	if err != nil {
		return nil, 0, fmt.Errorf("simulator: extend log: %w", err)
	}
	return banks, events, nil
}

func extendLog(t *tpm.TPM, log *eventlog.Log) ([]uint16, int, error) {
	tpmBanks, err := t.PCRBanks()
	if err != nil {
		return nil, 0, err
	}
	var banks []uint16
	for _, a := range log.Algs {
		if a.Hash() != 0 && slices.Contains(tpmBanks, uint16(a)) {
			banks = append(banks, uint16(a))
		}
	}
	if len(banks) == 0 {
		return nil, 0, fmt.Errorf("the log's banks %v and the tpm's %v have none in common", log.Algs, algNames(tpmBanks))
	}
	n := 0
	for i := range log.Events {
		ev := &log.Events[i]
		if ev.Type == eventlog.EvNoAction {
			continue
		}
		digests := make(map[uint16][]byte, len(banks))
		for _, b := range banks {
			d := ev.Digest(eventlog.HashAlg(b))
			if d == nil {
				return nil, 0, fmt.Errorf("event %d (%s, pcr %d) has no %s digest", ev.Seq, ev.Type, ev.PCR, tpm.AlgName(b))
			}
			digests[b] = d
		}
		if err := t.Extend(ev.PCR, digests); err != nil {
			return nil, 0, fmt.Errorf("event %d (%s): %w", ev.Seq, ev.Type, err)
		}
		n++
	}
	return banks, n, nil
}

func algNames(algs []uint16) []string {
	out := make([]string, len(algs))
	for i, a := range algs {
		out[i] = tpm.AlgName(a)
	}
	return out
}
