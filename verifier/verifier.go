// Package verifier is the Pulse verifier: the gRPC service agents attest to,
// the nonce service, the verification pipeline (docs/threat-model.md, "What a verdict proves"), the
// state store, and the directive fan-out.
package verifier

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pulse-attest/pulse/policy"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/verifier/config"
	"github.com/pulse-attest/pulse/verifier/ektrust"
	"github.com/pulse-attest/pulse/verifier/metrics"
	"github.com/pulse-attest/pulse/verifier/nonce"
	"github.com/pulse-attest/pulse/verifier/store"
)

// MaxInflightPulses bounds concurrent pulse verifications; beyond it a
// pulse waits up to admissionWait, then is refused with ResourceExhausted.
const (
	MaxInflightPulses = 64
	admissionWait     = 2 * time.Second
)

// PolicySource yields the policy set in force (a policy.Watcher in the
// daemon; a fixed set in tests).
type PolicySource interface {
	Current() *policy.Set
}

// Verifier holds the verifier's state and implements the Attestation service.
type Verifier struct {
	pulsev1.UnimplementedAttestationServer

	log      hclog.Logger
	cfg      *config.Config
	store    *store.Store
	policies PolicySource
	ekTrust  *ektrust.Trust
	fw       *fwCache
	hub      *hub
	now      func() time.Time
	replica  string
	alerter  Alerter
	metrics  *metrics.Metrics
	started  time.Time
	// storeHealth says whether the store answers (storehealth.go).
	storeHealth storeHealth
	// lastStatus is when agents-by-status was last exported (sweeper only).
	lastStatus time.Time

	// inflight bounds the pulses verified at once (admission control).
	inflight chan struct{}

	// aks caches parsed AKs by public area (bounded by the fleet size).
	aks sync.Map
	// agents caches agents' rows, checked by each pulse's commit
	// (agentcache.go).
	agents agentCache

	// nonces issues and checks nonces with the key every replica shares.
	nonces *nonce.Keyring

	// enroll rate-limits Enroll and paces expired-enrollment deletion.
	enroll enrollGuard

	// dkey signs quarantine and release directives; quar is this
	// replica's isolation and reconciliation memory (quarantine.go).
	dkey ed25519.PrivateKey
	quar *quarantineState
}

// nonceKeyName names the shared nonce key in the store.
const nonceKeyName = "nonce_key_v1"

// Options configure New.
type Options struct {
	Config   *config.Config
	Store    *store.Store
	Policies PolicySource
	EKTrust  *ektrust.Trust
	Logger   hclog.Logger
	// Now overrides the clock (tests).
	Now func() time.Time
	// Replica names this verifier replica (alerts record who raised them).
	Replica string
	// Alerter receives raised alerts (webhooks, audit log); may be nil.
	Alerter Alerter
	// Metrics records Prometheus metrics; may be nil.
	Metrics *metrics.Metrics
}

// New builds a verifier over an open store.
func New(o Options) (*Verifier, error) {
	if o.Config == nil || o.Store == nil || o.Policies == nil || o.EKTrust == nil {
		return nil, fmt.Errorf("verifier: config, store, policies and ek trust are required")
	}
	log := o.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	now := o.Now
	if now == nil {
		now = time.Now
	}
	key, err := o.Store.Secret(context.Background(), nonceKeyName, func() ([]byte, error) {
		k := make([]byte, nonce.KeySize)
		_, err := rand.Read(k)
		return k, err
	})
	if err != nil {
		return nil, fmt.Errorf("verifier: nonce key: %w", err)
	}
	ring, err := nonce.New(key)
	if err != nil {
		return nil, fmt.Errorf("verifier: nonce key: %w", err)
	}
	dkey, err := loadDirectiveKey(context.Background(), o.Config, o.Store, log.Named("verifier"))
	if err != nil {
		return nil, fmt.Errorf("verifier: %w", err)
	}
	return &Verifier{
		nonces:   ring,
		log:      log.Named("verifier"),
		cfg:      o.Config,
		store:    o.Store,
		policies: o.Policies,
		ekTrust:  o.EKTrust,
		fw:       newFWCache(firmwareLogCacheBytes(o.Config)),
		hub:      newHub(),
		now:      now,
		replica:  o.Replica,
		alerter:  o.Alerter,
		metrics:  o.Metrics,
		started:  now(),
		inflight: make(chan struct{}, MaxInflightPulses),
		dkey:     dkey,
		quar:     newQuarantineState(),
	}, nil
}

func (v *Verifier) selectPolicy(agentID string) *policy.Policy {
	set := v.policies.Current()
	if set == nil {
		return nil
	}
	return set.Select(agentID, v.partitionOf(agentID))
}

// partitionOf is the partition the operator assigned to the agent (verifier
// configuration): it selects the policy. The agent never chooses it; what
// it asks for at enrollment or names in a pulse decides nothing.
func (v *Verifier) partitionOf(agentID string) string {
	return v.cfg.Enrollment.PartitionOf(agentID)
}

// issueNonce returns a single-use nonce bound to the agent at its current
// epoch. It writes nothing: the nonce authenticates itself (package nonce)
// and spending it moves the agent's epoch on.
func (v *Verifier) issueNonce(agentID string, epoch uint64) (*pulsev1.Nonce, error) {
	var r [8]byte
	if _, err := rand.Read(r[:]); err != nil {
		return nil, fmt.Errorf("nonce: %w", err)
	}
	exp := v.now().Add(v.cfg.NonceTTL)
	n, err := v.nonces.Issue(agentID, epoch, exp, r[:])
	if err != nil {
		return nil, err
	}
	return &pulsev1.Nonce{Value: n, Expires: timestamppb.New(exp)}, nil
}

// state tells the agent what the verifier holds for it.
func (v *Verifier) state(a *store.Agent, o *Outcome) *pulsev1.VerifierState {
	st := &pulsev1.VerifierState{}
	interval := time.Duration(0)
	if a != nil {
		st.FirmwareLogSha256 = a.FirmwareLogSHA256
		st.RuntimeRecordsAcked = a.RuntimeCount
		st.BootResetCount = a.ResetCount
		if pol := v.selectPolicy(a.ID); pol != nil {
			interval = pol.Heartbeat.Interval
		}
	}
	if o != nil {
		if o.update.Evidence {
			st.FirmwareLogSha256 = o.update.FirmwareLogSHA256
			st.RuntimeRecordsAcked = o.update.RuntimeCount
			st.BootResetCount = o.update.ResetCount
		}
		if o.Reason == pulsev1.Reason_REASON_RUNTIME_LOG_GAP || o.Reason == pulsev1.Reason_REASON_RUNTIME_LOG_REPLAY {
			// Ask for the whole log of this boot again.
			st.RuntimeRecordsAcked = 0
		}
		st.SendFirmwareLog = o.sendFirmwareLog
		if o.host != nil {
			st.HostProgramsSha256 = o.host.held
		}
		if o.interval > 0 {
			interval = o.interval
		}
	}
	if interval > 0 {
		st.Interval = durationpb.New(interval)
	}
	return st
}
