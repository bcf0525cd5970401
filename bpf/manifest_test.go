package bpf

import (
	"encoding/binary"
	"reflect"
	"strings"
	"testing"

	"github.com/pulse-attest/pulse/bpf/snapshot"
)

func TestManifestRoundTrip(t *testing.T) {
	in := map[string]snapshot.Expectation{
		"shield_ingress": {ID: 3, Type: "sched_cls", Tag: "0011223344556677", InsnSHA256: snapshot.Digest{1, 2, 3}, Links: []string{"shield_ingress@eth0"}},
		"sentinel_bpf":   {ID: 4, Type: "tracepoint", Tag: "8899aabbccddeeff"},
	}
	buf, err := encodeManifest(in)
	if err != nil {
		t.Fatal(err)
	}
	if len(buf) != manifestValueSize {
		t.Fatalf("encoded %d bytes", len(buf))
	}
	out, err := decodeManifest(buf)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Errorf("round trip\n got %+v\nwant %+v", out, in)
	}
}

func TestManifestRejects(t *testing.T) {
	big := map[string]snapshot.Expectation{}
	for i := 0; i < 200; i++ {
		big[strings.Repeat("x", 60)+string(rune('a'+i%26))+strings.Repeat("y", i)] = snapshot.Expectation{Links: []string{strings.Repeat("l", 100)}}
	}
	if _, err := encodeManifest(big); err == nil {
		t.Error("oversized manifest encoded")
	}
	lenOnly := func(n uint32, body string) []byte {
		b := make([]byte, 4+len(body))
		binary.LittleEndian.PutUint32(b, n)
		copy(b[4:], body)
		return b
	}
	for name, buf := range map[string][]byte{
		"short":       {1, 2},
		"empty":       make([]byte, 64),
		"overlong":    lenOnly(100, "{}"),
		"not json":    lenOnly(3, "abc"),
		"old version": lenOnly(uint32(len(`{"version":0}`)), `{"version":0}`),
	} {
		if _, err := decodeManifest(buf); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzDecodeManifest(f *testing.F) {
	good, _ := encodeManifest(map[string]snapshot.Expectation{"p": {ID: 1, Tag: "00"}})
	f.Add(good[:64])
	f.Add([]byte{5, 0, 0, 0, '{', '}', 0})
	f.Fuzz(func(t *testing.T, buf []byte) {
		_, _ = decodeManifest(buf)
	})
}
