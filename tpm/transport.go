package tpm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/google/go-tpm/tpm2/transport"
)

const (
	// tpmHeaderSize is the size of a TPM 2.0 command/response header
	// (tag u16, size u32, code u32).
	tpmHeaderSize = 10
	// maxResponseSize bounds what we accept from a socket TPM; the TPM 2.0
	// spec's largest responses are a few KiB.
	maxResponseSize = 64 << 10
	// socketCommandTimeout bounds one command on swtpm: RSA primary key
	// generation is the slowest thing we ask for (a few seconds at worst).
	socketCommandTimeout = 2 * time.Minute
)

// socketTPM speaks the raw TPM 2.0 command protocol to swtpm's unix server
// socket ("swtpm socket --server type=unixio,path=..."). It connects for each
// command and reads exactly the response length announced in the header, so
// several processes (agent, pulsectl, tests) can talk to one swtpm in turn and
// a response split over several reads is still read whole.
type socketTPM struct {
	path   string
	mu     sync.Mutex
	closed bool
}

func openSocket(path string) (*socketTPM, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("swtpm socket: %w", err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return nil, fmt.Errorf("swtpm socket %s: not a unix socket (%s)", path, fi.Mode())
	}
	return &socketTPM{path: path}, nil
}

// Send implements transport.TPM.
func (s *socketTPM) Send(cmd []byte) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("swtpm socket: use of closed tpm")
	}
	return sendRetrying(s.sendOnce, cmd)
}

func (s *socketTPM) sendOnce(cmd []byte) ([]byte, error) {
	conn, err := net.DialTimeout("unix", s.path, 10*time.Second)
	if err != nil {
		return nil, fmt.Errorf("swtpm socket: dial %s: %w", s.path, err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(socketCommandTimeout)); err != nil {
		return nil, fmt.Errorf("swtpm socket: set deadline: %w", err)
	}
	if _, err := conn.Write(cmd); err != nil {
		return nil, fmt.Errorf("swtpm socket: write command: %w", err)
	}
	return readResponse(conn)
}

// Warning response codes after which the command should be sent again.
const (
	rcYielded = 0x908
	rcTesting = 0x90A
	rcRetry   = 0x922
)

// retryPause is the first pause before resending (doubled each time, at most
// 500ms; 13 attempts span about 2.5s).
var retryPause = time.Millisecond

// sendRetrying sends cmd and resends it, with a growing pause, while the TPM
// answers TPM_RC_RETRY, TPM_RC_YIELDED or TPM_RC_TESTING (libtpms answers
// RETRY to the first use of an algorithm it has not self-tested yet).
func sendRetrying(send func([]byte) ([]byte, error), cmd []byte) ([]byte, error) {
	pause := retryPause
	for attempt := 0; ; attempt++ {
		rsp, err := send(cmd)
		if err != nil {
			return nil, err
		}
		rc := binary.BigEndian.Uint32(rsp[6:10])
		if (rc != rcRetry && rc != rcYielded && rc != rcTesting) || attempt == 12 {
			return rsp, nil
		}
		time.Sleep(pause)
		pause = min(2*pause, 500*time.Millisecond)
	}
}

// readResponse reads one TPM response: the header, then as many bytes as the
// header's size field says.
func readResponse(r io.Reader) ([]byte, error) {
	hdr := make([]byte, tpmHeaderSize)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return nil, fmt.Errorf("tpm response header: %w", err)
	}
	size := binary.BigEndian.Uint32(hdr[2:6])
	if size < tpmHeaderSize || size > maxResponseSize {
		return nil, fmt.Errorf("tpm response: implausible size %d", size)
	}
	rsp := make([]byte, size)
	copy(rsp, hdr)
	if _, err := io.ReadFull(r, rsp[tpmHeaderSize:]); err != nil {
		return nil, fmt.Errorf("tpm response body (%d bytes): %w", size, err)
	}
	return rsp, nil
}

// Close implements io.Closer. There is no connection held between commands.
func (s *socketTPM) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

var _ transport.TPMCloser = (*socketTPM)(nil)
