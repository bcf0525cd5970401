package tlsconfig

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pulse-attest/pulse/internal/pki"
)

// DefaultPollInterval is how often Run checks the files when given no interval.
const DefaultPollInterval = 10 * time.Second

// Typed reasons a certificate/key pair is refused. pki.ErrKeyMismatch,
// pki.ErrNoPEM and file-system errors (os.ErrNotExist...) are wrapped as is.
var (
	// ErrCertExpired: the leaf's NotAfter is in the past.
	ErrCertExpired = errors.New("certificate has expired")
	// ErrCertNotYetValid: the leaf's NotBefore is in the future.
	ErrCertNotYetValid = errors.New("certificate is not yet valid")
	// ErrCheckFailed: ReloaderOptions.Check refused the certificate.
	ErrCheckFailed = errors.New("certificate refused by check")
)

// ReloaderOptions configures a Reloader.
type ReloaderOptions struct {
	// Logger receives reload and refusal messages; nil discards them.
	Logger hclog.Logger
	// Check, when set, vets every candidate leaf (including the first) before
	// it is used, e.g. that an agent's certificate still names its agent ID.
	Check func(leaf *x509.Certificate) error
	// Now is the clock used for validity checks; time.Now when nil.
	Now func() time.Time
}

// Reloader holds a certificate and private key read from two PEM files and
// swaps in a new pair when the files change. It serves tls.Config's
// GetCertificate and GetClientCertificate, so each new handshake uses the
// newest good pair and established connections are not disturbed. A
// replacement that fails to parse, does not match its key, is outside its
// validity period or fails Check is refused: the old pair stays in use and
// the reason is logged (once per distinct file content).
type Reloader struct {
	certFile, keyFile string
	log               hclog.Logger
	check             func(*x509.Certificate) error
	now               func() time.Time

	cur atomic.Pointer[keyPair]

	mu          sync.Mutex // serialises loads and guards the fields below
	cas         []*CAPool  // CA pools of the configs built on this Reloader
	changed     chan struct{}
	lastRefused string // fingerprint + reason of the last logged refusal
	expiryNoted fingerprint
}

type fingerprint struct{ cert, key [sha256.Size]byte }

type keyPair struct {
	cert   *tls.Certificate
	signer crypto.Signer
	fp     fingerprint
}

// NewReloader loads certFile and keyFile. The first load must succeed.
// Call Run to poll for changes, or Reload to re-read on demand (e.g. SIGHUP).
func NewReloader(certFile, keyFile string, opts ReloaderOptions) (*Reloader, error) {
	if certFile == "" || keyFile == "" {
		return nil, errors.New("tlsconfig: certificate and key file paths are required")
	}
	r := &Reloader{
		certFile: certFile,
		keyFile:  keyFile,
		log:      opts.Logger,
		check:    opts.Check,
		now:      opts.Now,
		changed:  make(chan struct{}),
	}
	if r.log == nil {
		r.log = hclog.NewNullLogger()
	}
	if r.now == nil {
		r.now = time.Now
	}
	kp, err := r.load()
	if err != nil {
		return nil, fmt.Errorf("tlsconfig: load %s and %s: %w", certFile, keyFile, err)
	}
	r.cur.Store(kp)
	r.log.Info("loaded certificate", certLogArgs(r, kp)...)
	return r, nil
}

// Current returns the pair in use: the certificate (chain in Certificate,
// parsed leaf in Leaf) and its private key. Both come from one snapshot, so
// the signer always matches the certificate. Callers must not modify them.
func (r *Reloader) Current() (*tls.Certificate, crypto.Signer) {
	kp := r.cur.Load()
	return kp.cert, kp.signer
}

// Changed returns a channel that is closed the next time a new pair is
// swapped in. Connections made before that keep the old certificate; a
// client that signs with Current (the agent) should reconnect when it fires
// so the key it signs with is the key its TLS channel proves.
func (r *Reloader) Changed() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.changed
}

// GetCertificate is for tls.Config.GetCertificate.
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.cur.Load().cert, nil
}

// GetClientCertificate is for tls.Config.GetClientCertificate.
func (r *Reloader) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return r.cur.Load().cert, nil
}

// Reload re-reads both files now, and the CA files of the configs built on
// this Reloader (see WatchCA). It returns nil if the files hold the pair
// already in use or a new valid pair (now in use), and the reasons
// otherwise, in which case the previous pair (or pool) stays in use.
func (r *Reloader) Reload() error {
	_, err := r.reload(true)
	errs := []error{err}
	for _, p := range r.caPools() {
		_, err := p.reload(true)
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// WatchCA makes Run and Reload re-read p too. ServerConfig calls it for the
// client CA pool of every config it builds on this Reloader, so starting
// the Reloader's loop keeps the certificate and the trusted CAs current.
func (r *Reloader) WatchCA(p *CAPool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, q := range r.cas {
		if q == p {
			return
		}
	}
	r.cas = append(r.cas, p)
}

func (r *Reloader) caPools() []*CAPool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*CAPool(nil), r.cas...)
}

// Run polls the files every interval (DefaultPollInterval if <= 0) until
// ctx is done, reloading when their content changes; it polls the CA files
// of WatchCA the same way. Each poll reads and hashes the files (they are
// small), so a rewrite that keeps size and mtime is still seen and a touch
// without a content change is a no-op.
func (r *Reloader) Run(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = DefaultPollInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_, _ = r.reload(false)
			r.noteExpiry()
			for _, p := range r.caPools() {
				_, _ = p.reload(false)
			}
		}
	}
}

// reload loads the files and swaps them in if they differ from the current
// pair. explicit refusals are always logged; polled ones once per content.
func (r *Reloader) reload(explicit bool) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cur := r.cur.Load()

	certPEM, keyPEM, fp, err := r.read()
	if err == nil && fp == cur.fp {
		return false, nil
	}
	var kp *keyPair
	if err == nil {
		kp, err = r.parse(certPEM, keyPEM, fp)
	}
	if err != nil {
		err = fmt.Errorf("tlsconfig: reload %s and %s: %w", r.certFile, r.keyFile, err)
		key := hex.EncodeToString(fp.cert[:]) + hex.EncodeToString(fp.key[:]) + err.Error()
		if explicit || key != r.lastRefused {
			r.lastRefused = key
			r.log.Error("refused new certificate, keeping the current one",
				"cert_file", r.certFile, "key_file", r.keyFile,
				"current_serial", cur.cert.Leaf.SerialNumber.String(), "error", err.Error())
		}
		return false, err
	}
	r.lastRefused = ""
	r.cur.Store(kp)
	close(r.changed)
	r.changed = make(chan struct{})
	r.log.Info("reloaded certificate", append(certLogArgs(r, kp), "previous_serial", cur.cert.Leaf.SerialNumber.String())...)
	return true, nil
}

func (r *Reloader) noteExpiry() {
	r.mu.Lock()
	defer r.mu.Unlock()
	kp := r.cur.Load()
	if r.now().After(kp.cert.Leaf.NotAfter) && r.expiryNoted != kp.fp {
		r.expiryNoted = kp.fp
		r.log.Error("current certificate has expired; install a new one in place",
			certLogArgs(r, kp)...)
	}
}

func (r *Reloader) load() (*keyPair, error) {
	certPEM, keyPEM, fp, err := r.read()
	if err != nil {
		return nil, err
	}
	return r.parse(certPEM, keyPEM, fp)
}

func (r *Reloader) read() (certPEM, keyPEM []byte, fp fingerprint, err error) {
	certPEM, err = os.ReadFile(r.certFile)
	if err != nil {
		return nil, nil, fp, fmt.Errorf("read certificate: %w", err)
	}
	keyPEM, err = os.ReadFile(r.keyFile)
	if err != nil {
		return nil, nil, fp, fmt.Errorf("read private key: %w", err)
	}
	return certPEM, keyPEM, fingerprint{sha256.Sum256(certPEM), sha256.Sum256(keyPEM)}, nil
}

func (r *Reloader) parse(certPEM, keyPEM []byte, fp fingerprint) (*keyPair, error) {
	certs, err := pki.ParseCertificatesPEM(certPEM)
	if err != nil {
		return nil, err
	}
	signer, err := pki.ParsePrivateKeyPEM(keyPEM)
	if err != nil {
		return nil, err
	}
	leaf := certs[0]
	if !pki.PublicKeysEqual(leaf.PublicKey, signer.Public()) {
		return nil, fmt.Errorf("leaf serial %s: %w", leaf.SerialNumber, pki.ErrKeyMismatch)
	}
	if err := CheckValidity(leaf, r.now()); err != nil {
		return nil, fmt.Errorf("leaf: %w", err)
	}
	if r.check != nil {
		if err := r.check(leaf); err != nil {
			return nil, fmt.Errorf("leaf serial %s: %w: %w", leaf.SerialNumber, ErrCheckFailed, err)
		}
	}
	chain := make([][]byte, len(certs))
	for i, c := range certs {
		chain[i] = bytes.Clone(c.Raw)
	}
	return &keyPair{
		cert:   &tls.Certificate{Certificate: chain, PrivateKey: signer, Leaf: leaf},
		signer: signer,
		fp:     fp,
	}, nil
}

// certLogArgs describes a pair for logs: public facts only, never the key.
func certLogArgs(r *Reloader, kp *keyPair) []any {
	leaf := kp.cert.Leaf
	spki := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	args := []any{
		"cert_file", r.certFile,
		"serial", leaf.SerialNumber.String(),
		"not_after", leaf.NotAfter.UTC().Format(time.RFC3339),
		"key_digest", hex.EncodeToString(spki[:8]),
	}
	if id, err := pki.IdentityFromCert(leaf); err == nil {
		args = append(args, "identity", id.String())
	}
	return args
}
