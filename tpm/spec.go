package tpm

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Kind says which sort of TPM a spec names.
type Kind int

// The kinds of TPM a spec can name.
const (
	// KindNone is an explicit "no TPM" (mTLS-only mode).
	KindNone Kind = iota
	// KindAuto probes /dev/tpmrm0 then /dev/tpm0.
	KindAuto
	// KindDevice is a character device such as /dev/tpmrm0.
	KindDevice
	// KindSwtpm is swtpm's unix-socket server channel (the TPM command channel).
	KindSwtpm
	// KindSim is the in-process reference TPM (cgo), fresh on every open.
	KindSim
)

func (k Kind) String() string {
	switch k {
	case KindNone:
		return "none"
	case KindAuto:
		return "auto"
	case KindDevice:
		return "device"
	case KindSwtpm:
		return "swtpm"
	case KindSim:
		return "sim"
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Spec is a parsed TPM spec string.
type Spec struct {
	Kind Kind
	// Path is the device path (KindDevice) or the server socket (KindSwtpm).
	Path string
	// Seed, when HasSeed, fixes the in-process simulator's hierarchy seeds
	// ("sim:<seed>") so its EK and primaries are the same on every open.
	Seed    int64
	HasSeed bool
}

// ErrBadSpec is returned (wrapped) for a spec string that names no known TPM.
var ErrBadSpec = errors.New("bad tpm spec")

// ParseSpec parses a TPM spec:
//
//	/dev/tpmrm0, device:/dev/tpm0   a TPM character device
//	swtpm:/path/to/server.sock      swtpm's unix server socket
//	sim, sim:<seed>                 the in-process simulator
//	none                            no TPM (Open returns ErrNoTPM)
//	auto                            /dev/tpmrm0, else /dev/tpm0, else none
func ParseSpec(s string) (Spec, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return Spec{}, fmt.Errorf("%w: empty (use auto, none, sim, swtpm:SOCKET or a device path)", ErrBadSpec)
	case s == "none":
		return Spec{Kind: KindNone}, nil
	case s == "auto":
		return Spec{Kind: KindAuto}, nil
	case s == "sim":
		return Spec{Kind: KindSim}, nil
	case strings.HasPrefix(s, "sim:"):
		seed, err := strconv.ParseInt(strings.TrimPrefix(s, "sim:"), 10, 64)
		if err != nil {
			return Spec{}, fmt.Errorf("%w: %q: simulator seed must be a decimal integer", ErrBadSpec, s)
		}
		return Spec{Kind: KindSim, Seed: seed, HasSeed: true}, nil
	case strings.HasPrefix(s, "swtpm:"):
		p := strings.TrimPrefix(s, "swtpm:")
		if p == "" {
			return Spec{}, fmt.Errorf("%w: %q: swtpm needs the server socket path", ErrBadSpec, s)
		}
		return Spec{Kind: KindSwtpm, Path: p}, nil
	case strings.HasPrefix(s, "device:"):
		p := strings.TrimPrefix(s, "device:")
		if !strings.HasPrefix(p, "/") {
			return Spec{}, fmt.Errorf("%w: %q: device path must be absolute", ErrBadSpec, s)
		}
		return Spec{Kind: KindDevice, Path: p}, nil
	case strings.HasPrefix(s, "/"):
		return Spec{Kind: KindDevice, Path: s}, nil
	}
	return Spec{}, fmt.Errorf("%w: %q (use auto, none, sim, sim:SEED, swtpm:SOCKET, device:PATH or an absolute device path)", ErrBadSpec, s)
}

// String is the canonical form of the spec; ParseSpec(s.String()) == s.
func (s Spec) String() string {
	switch s.Kind {
	case KindNone:
		return "none"
	case KindAuto:
		return "auto"
	case KindDevice:
		return "device:" + s.Path
	case KindSwtpm:
		return "swtpm:" + s.Path
	case KindSim:
		if s.HasSeed {
			return "sim:" + strconv.FormatInt(s.Seed, 10)
		}
		return "sim"
	}
	return s.Kind.String()
}
