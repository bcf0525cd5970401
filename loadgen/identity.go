package loadgen

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/pulse-attest/pulse/internal/pki"
	"github.com/pulse-attest/pulse/internal/pulsesig"
	"github.com/pulse-attest/pulse/tpm/quote"
	"github.com/pulse-attest/pulse/verifier/store"
)

// Identity is one virtual agent's keys: its mTLS certificate and key, and
// its software attestation key.
type Identity struct {
	ID   string
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	// TLS is the certificate as crypto/tls presents it.
	TLS tls.Certificate
	// LeafKey is SHA-256 of the certificate's SubjectPublicKeyInfo.
	LeafKey [32]byte

	AK       *ecdsa.PrivateKey
	AKPublic []byte
	AKName   []byte
	// EKSHA256 stands in for the EK digest the verifier records at
	// enrollment. It is derived from the agent ID so a re-run against the
	// same store updates the agent (same "TPM") instead of tripping the
	// identity-takeover check.
	EKSHA256 []byte
}

// StandInEK is the stand-in EK digest of a virtual agent.
func StandInEK(id string) []byte {
	s := sha256.Sum256([]byte("pulse-loadgen stand-in EK\x00" + id))
	return s[:]
}

// NewIdentity issues a certificate for id from ca and makes a software AK.
func NewIdentity(ca *pki.CA, id string) (*Identity, error) {
	is, err := pki.Issue(ca, pki.Request{Role: pki.RoleAgent, ID: id, KeyType: pki.KeyECDSAP256, Validity: 7 * 24 * time.Hour})
	if err != nil {
		return nil, err
	}
	key, ok := is.Key.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("loadgen: issued key is %T, want ECDSA", is.Key)
	}
	ak, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("loadgen: ak: %w", err)
	}
	akPub, err := quote.SoftwareAK(&ak.PublicKey)
	if err != nil {
		return nil, err
	}
	akName, err := quote.AKName(akPub)
	if err != nil {
		return nil, err
	}
	return &Identity{
		ID: id, Cert: is.Cert, Key: key,
		TLS:     tls.Certificate{Certificate: [][]byte{is.Cert.Raw}, PrivateKey: key, Leaf: is.Cert},
		LeafKey: pulsesig.LeafKeyDigest(is.Cert),
		AK:      ak, AKPublic: akPub, AKName: akName, EKSHA256: StandInEK(id),
	}, nil
}

// MintIdentities makes one Identity per ID on workers goroutines (the
// number of CPUs when workers < 1).
func MintIdentities(ctx context.Context, ca *pki.CA, ids []string, workers int) ([]*Identity, error) {
	if workers < 1 {
		workers = runtime.GOMAXPROCS(0)
	}
	out := make([]*Identity, len(ids))
	err := parallel(ctx, len(ids), workers, func(i int) error {
		id, err := NewIdentity(ca, ids[i])
		out[i] = id
		return err
	})
	return out, err
}

// Preregister writes the virtual agents into the verifier's store as
// enrolled with a TPM, bypassing credential activation. LOAD TESTS ONLY: see
// the package documentation. It may run before the verifier starts or while
// it runs, on either store engine.
func Preregister(ctx context.Context, st *store.Store, ids []*Identity, partition string, workers int) error {
	if workers < 1 {
		workers = 1
	}
	now := time.Now()
	return parallel(ctx, len(ids), workers, func(i int) error {
		id := ids[i]
		a := &store.Agent{ID: id.ID, Partition: partition, TPM: true,
			EKSHA256: id.EKSHA256, AKPublic: id.AKPublic, AKName: id.AKName, EnrolledAt: now}
		// A running verifier's SQLite checkpointer can hold the file
		// beyond the busy timeout on a loaded disk: try again a few times.
		var err error
		for try := 0; try < 10; try++ {
			if err = st.EnrollAgent(ctx, a); err == nil || !busy(err) {
				return err
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Duration(try+1) * 100 * time.Millisecond):
			}
		}
		return err
	})
}

// parallel runs f(0..n-1) on workers goroutines and returns the first error.
func parallel(ctx context.Context, n, workers int, f func(i int) error) error {
	if workers > n {
		workers = n
	}
	var (
		mu    sync.Mutex
		first error
		next  int
		wg    sync.WaitGroup
	)
	take := func() (int, bool) {
		mu.Lock()
		defer mu.Unlock()
		if first != nil || next >= n || ctx.Err() != nil {
			return 0, false
		}
		i := next
		next++
		return i, true
	}
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i, ok := take()
				if !ok {
					return
				}
				if err := f(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return first
	}
	return ctx.Err()
}

// busy reports SQLite's "database is locked" (SQLITE_BUSY and its
// extended codes, e.g. 517, BUSY_SNAPSHOT).
func busy(err error) bool {
	s := err.Error()
	return strings.Contains(s, "SQLITE_BUSY") || strings.Contains(s, "database is locked")
}
