package verifier

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
)

// TestStoreFailedClassifies: only the pipeline's store reads and commits
// count as the store's unavailability; the other internal outcomes (which
// concurrent pulses of one agent could provoke) do not.
func TestStoreFailedClassifies(t *testing.T) {
	tests := []struct {
		reason pulsev1.Reason
		msg    string
		want   bool
	}{
		{pulsev1.Reason_REASON_INTERNAL, "nonce store: failed to connect to `host=/tmp/pg`: dial error", true},
		{pulsev1.Reason_REASON_INTERNAL, "firmware log store: database or disk is full (13)", true},
		{pulsev1.Reason_REASON_INTERNAL, "sentinel cursor: sql: database is closed", true},
		{pulsev1.Reason_REASON_INTERNAL, "host program state: sql: database is closed", true},
		{pulsev1.Reason_REASON_INTERNAL, "agent edge-1's record changed under 3 verifications in a row; not recorded", false},
		{pulsev1.Reason_REASON_INTERNAL, "verdict decided 2 times (last UNTRUSTED/POLICY_DENIED); not recorded", false},
		{pulsev1.Reason_REASON_INTERNAL, "nonce: key ring empty", false},
		{pulsev1.Reason_REASON_POLICY_DENIED, "nonce store: looks like one but is a verdict", false},
	}
	for _, tt := range tests {
		if got := storeFailed(&Outcome{Reason: tt.reason, Message: tt.msg}); got != tt.want {
			t.Errorf("storeFailed(%s %q) = %t, want %t", tt.reason, tt.msg, got, tt.want)
		}
	}
}

// TestStoreHealthGrace: the grace starts at the replica's start; a store
// fault and the sweep that finds the store again move it to the return;
// faults without a return do not move it, and a later start wins.
func TestStoreHealthGrace(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	now := t0
	v := &Verifier{log: hclog.NewNullLogger(), now: func() time.Time { return now }, started: t0}
	steps := []struct {
		name string
		at   time.Duration
		do   func()
		want time.Duration
	}{
		{"start", 0, func() {}, 0},
		{"answered without a fault", 5 * time.Second, v.storeAnswered, 0},
		{"fault", 10 * time.Second, func() { v.storeFault(storeOpPulse, errors.New("down")) }, 0},
		{"more faults", 20 * time.Second, func() { v.storeFault(storeOpSweep, errors.New("down")) }, 0},
		{"back", 40 * time.Second, v.storeAnswered, 40 * time.Second},
		{"answered again", 45 * time.Second, v.storeAnswered, 40 * time.Second},
		{"second outage", 50 * time.Second, func() { v.storeFault(storeOpChallenge, errors.New("down")) }, 40 * time.Second},
		{"second return", 52 * time.Second, v.storeAnswered, 52 * time.Second},
	}
	for _, s := range steps {
		now = t0.Add(s.at)
		s.do()
		if got := v.graceFrom().Sub(t0); got != s.want {
			t.Errorf("%s: grace from +%s, want +%s", s.name, got, s.want)
		}
	}
	v.started = t0.Add(time.Minute)
	if got := v.graceFrom(); !got.Equal(v.started) {
		t.Errorf("after a later start: grace from %s, want the start %s", got, v.started)
	}
}

// TestStoreFailurePrefixesCoverInternal: every REASON_INTERNAL message the
// verifier's sources write is classified, as a store failure or as not
// one; a new one fails here until it is put in one list.
func TestStoreFailurePrefixesCoverInternal(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`Reason_REASON_INTERNAL, "([^"]*)"`)
	seen := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllSubmatch(b, -1) {
			seen++
			msg := string(m[1])
			known := false
			for _, p := range append(append([]string(nil), storeFailurePrefixes...), notStoreFailures...) {
				known = known || strings.HasPrefix(msg, p)
			}
			if !known {
				t.Errorf("%s: REASON_INTERNAL message %q is neither in storeFailurePrefixes nor in notStoreFailures (storehealth.go)", f, msg)
			}
		}
	}
	if seen == 0 {
		t.Fatal("no REASON_INTERNAL message found in the verifier's sources")
	}
}
