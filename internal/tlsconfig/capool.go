package tlsconfig

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"

	"github.com/pulse-attest/pulse/internal/pki"
)

// ErrEmptyCAFile: a CA file holds no certificate.
var ErrEmptyCAFile = errors.New("ca file holds no certificate")

// CAPool is a pool of trusted CA certificates read from a PEM file and
// re-read when the file's content changes (Reload; a Reloader's Run loop
// reloads every pool a config built on it uses). A replacement that does not
// parse or holds no certificate is refused and the previous pool stays in
// use. Configs from ServerConfig pick the current pool at every handshake,
// so adding a CA takes effect at once and removing one refuses new
// connections from its clients; open connections are ended by the server's
// maximum connection age.
type CAPool struct {
	file string
	log  hclog.Logger

	cur atomic.Pointer[caState]

	mu          sync.Mutex // serialises reloads; guards lastRefused
	lastRefused string
}

type caState struct {
	pool  *x509.CertPool
	fp    [sha256.Size]byte
	count int
}

// NewCAPool reads file; the first read must succeed.
func NewCAPool(file string, log hclog.Logger) (*CAPool, error) {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	p := &CAPool{file: file, log: log}
	st, err := p.read()
	if err != nil {
		return nil, fmt.Errorf("tlsconfig: ca file %s: %w", file, err)
	}
	p.cur.Store(st)
	return p, nil
}

// File is the path the pool is read from.
func (p *CAPool) File() string { return p.file }

// Pool returns the pool in use. Callers must not modify it.
func (p *CAPool) Pool() *x509.CertPool { return p.cur.Load().pool }

// Reload re-reads the file. It reports whether a new pool is in use; on
// error the previous pool stays.
func (p *CAPool) Reload() (bool, error) { return p.reload(true) }

func (p *CAPool) reload(explicit bool) (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	cur := p.cur.Load()
	b, err := os.ReadFile(p.file)
	if err == nil && sha256.Sum256(b) == cur.fp {
		return false, nil
	}
	var st *caState
	if err == nil {
		st, err = parseCAs(b)
	}
	if err != nil {
		err = fmt.Errorf("tlsconfig: reload ca file %s: %w", p.file, err)
		if key := err.Error(); explicit || key != p.lastRefused {
			p.lastRefused = key
			p.log.Error("refused new ca file, keeping the current pool", "ca_file", p.file, "error", err.Error())
		}
		return false, err
	}
	p.lastRefused = ""
	p.cur.Store(st)
	p.log.Info("reloaded ca file", "ca_file", p.file, "certificates", st.count,
		"digest", hex.EncodeToString(st.fp[:8]), "previous_digest", hex.EncodeToString(cur.fp[:8]))
	return true, nil
}

func (p *CAPool) read() (*caState, error) {
	b, err := os.ReadFile(p.file)
	if err != nil {
		return nil, err
	}
	return parseCAs(b)
}

func parseCAs(b []byte) (*caState, error) {
	certs, err := pki.ParseCertificatesPEM(b)
	if err != nil {
		return nil, err
	}
	if len(certs) == 0 {
		return nil, ErrEmptyCAFile
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return &caState{pool: pool, fp: sha256.Sum256(b), count: len(certs)}, nil
}
