package nonce

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

func keyring(t testing.TB, fill byte) *Keyring {
	t.Helper()
	k, err := New(bytes.Repeat([]byte{fill}, KeySize))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestIssueCheck(t *testing.T) {
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	k := keyring(t, 1)
	other := keyring(t, 2)
	good, err := k.Issue("edge-a", 7, now.Add(time.Minute), bytes.Repeat([]byte{9}, 8))
	if err != nil {
		t.Fatal(err)
	}
	if len(good) != Size {
		t.Fatalf("nonce is %d bytes, want %d", len(good), Size)
	}
	flip := func(i int) []byte {
		b := bytes.Clone(good)
		b[i] ^= 1
		return b
	}
	cases := []struct {
		name  string
		k     *Keyring
		agent string
		raw   []byte
		at    time.Time
		want  error
		epoch uint64
	}{
		{"fresh", k, "edge-a", good, now, nil, 7},
		{"just before expiry", k, "edge-a", good, now.Add(time.Minute - time.Millisecond), nil, 7},
		{"at expiry", k, "edge-a", good, now.Add(time.Minute), ErrExpired, 7},
		{"another agent presents it", k, "edge-b", good, now, ErrWrongAgent, 7},
		{"another fleet's key", other, "edge-a", good, now, ErrUnknown, 0},
		{"empty", k, "edge-a", nil, now, ErrUnknown, 0},
		{"all zero", k, "edge-a", make([]byte, Size), now, ErrUnknown, 0},
		{"truncated", k, "edge-a", good[:Size-1], now, ErrUnknown, 0},
		{"trailing byte", k, "edge-a", append(bytes.Clone(good), 0), now, ErrUnknown, 0},
		{"version changed", k, "edge-a", flip(0), now, ErrUnknown, 0},
		{"binding changed", k, "edge-a", flip(1), now, ErrUnknown, 0},
		{"epoch changed", k, "edge-a", flip(1 + bindingSize + 7), now, ErrUnknown, 0},
		{"expiry extended", k, "edge-a", flip(1 + bindingSize + 8), now, ErrUnknown, 0},
		{"random changed", k, "edge-a", flip(1 + bindingSize + 16), now, ErrUnknown, 0},
		{"tag changed", k, "edge-a", flip(Size - 1), now, ErrUnknown, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n, err := c.k.Check(c.agent, c.raw, c.at)
			if !errors.Is(err, c.want) || (c.want == nil && err != nil) {
				t.Fatalf("Check: %v, want %v", err, c.want)
			}
			if n.Epoch != c.epoch {
				t.Fatalf("epoch %d, want %d", n.Epoch, c.epoch)
			}
		})
	}
}

func TestNoncesDiffer(t *testing.T) {
	k := keyring(t, 1)
	exp := time.Now().Add(time.Minute)
	a, _ := k.Issue("edge-a", 1, exp, []byte("12345678"))
	b, _ := k.Issue("edge-a", 1, exp, []byte("87654321"))
	c, _ := k.Issue("edge-a", 2, exp, []byte("12345678"))
	if bytes.Equal(a, b) || bytes.Equal(a, c) {
		t.Fatal("distinct random bytes or epochs gave the same nonce")
	}
}

func TestBadInputs(t *testing.T) {
	if _, err := New(make([]byte, 16)); err == nil {
		t.Fatal("a 16-byte key was accepted")
	}
	k := keyring(t, 1)
	if _, err := k.Issue("a", 0, time.Now(), []byte{1, 2}); err == nil {
		t.Fatal("two random bytes were accepted")
	}
	if s := k.String(); bytes.Contains([]byte(s), bytes.Repeat([]byte{1}, 4)) || s == "" {
		t.Fatalf("String shows %q", s)
	}
}

// FuzzCheck: Check never panics, and accepts only what Issue produced.
func FuzzCheck(f *testing.F) {
	k := keyring(f, 3)
	now := time.Unix(1_800_000_000, 0)
	good, _ := k.Issue("edge-a", 42, now.Add(time.Minute), []byte("abcdefgh"))
	f.Add(good)
	f.Add([]byte{})
	f.Add(make([]byte, Size))
	f.Fuzz(func(t *testing.T, raw []byte) {
		n, err := k.Check("edge-a", raw, now)
		if err == nil && (!bytes.Equal(raw, good) || n.Epoch != 42) {
			t.Fatalf("accepted a nonce that was never issued: %x", raw)
		}
	})
}

func BenchmarkIssueCheck(b *testing.B) {
	k := keyring(b, 1)
	now := time.Now()
	r := []byte("12345678")
	b.ReportAllocs()
	for b.Loop() {
		n, _ := k.Issue("edge-a", 1, now.Add(time.Minute), r)
		if _, err := k.Check("edge-a", n, now); err != nil {
			b.Fatal(err)
		}
	}
}
