package bpf

import (
	"errors"
	"net/netip"
	"testing"
)

func TestCheckQuarantinable(t *testing.T) {
	protected := []netip.Addr{netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("2001:db8::7")}
	for in, wantErr := range map[string]error{
		"192.0.2.1":           nil,
		"2001:db8::1":         nil,
		"198.51.100.7":        ErrProtected,
		"2001:db8::7":         ErrProtected,
		"127.0.0.1":           ErrProtected,
		"::1":                 ErrProtected,
		"0.0.0.0":             ErrProtected,
		"::":                  ErrProtected,
		"224.0.0.1":           ErrProtected,
		"ff02::1":             ErrProtected,
		"::ffff:198.51.100.7": ErrProtected, // mapped form of a protected address
	} {
		a := normalizeAddr(netip.MustParseAddr(in))
		err := checkQuarantinable(a, protected)
		if !errors.Is(err, wantErr) || (wantErr == nil) != (err == nil) {
			t.Errorf("%s: %v, want %v", in, err, wantErr)
		}
	}
	if err := checkQuarantinable(netip.Addr{}, nil); err == nil {
		t.Error("invalid address accepted")
	}
}

func TestShieldKey(t *testing.T) {
	v4 := shieldKey(normalizeAddr(netip.MustParseAddr("192.0.2.1")))
	want := [16]byte{10: 0xff, 11: 0xff, 12: 192, 13: 0, 14: 2, 15: 1}
	if v4.Bytes != want {
		t.Errorf("IPv4 key %x, want %x (IPv4-mapped, as shield.c builds it)", v4.Bytes, want)
	}
	mapped := shieldKey(normalizeAddr(netip.MustParseAddr("::ffff:192.0.2.1")))
	if mapped != v4 {
		t.Error("mapped and plain IPv4 differ")
	}
	zoned := shieldKey(normalizeAddr(netip.MustParseAddr("fe80::1%eth0")))
	if zoned != shieldKey(netip.MustParseAddr("fe80::1")) {
		t.Error("zone changes the key")
	}
}
