package agent

import (
	"bytes"
	"testing"

	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // gRPC's own codec, for the comparison
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
)

// TestExactCodec: the agent's codec marshals a message into one buffer of
// the message's size and reads it back; gRPC's own codec, for a message a
// little over 32 KiB (a first pulse's firmware log), takes a 1 MiB buffer
// from its pool — what the agent's codec avoids keeping between pulses.
func TestExactCodec(t *testing.T) {
	cases := []struct {
		name string
		msg  *pulsev1.PulseRequest
	}{
		{"empty", &pulsev1.PulseRequest{}},
		{"small", &pulsev1.PulseRequest{Payload: bytes.Repeat([]byte{1}, 200)}},
		{"first pulse, 34 KB firmware log", &pulsev1.PulseRequest{Payload: bytes.Repeat([]byte{2}, 300), FirmwareLog: bytes.Repeat([]byte{3}, 34034)}},
	}
	grpcCodec := encoding.GetCodecV2("proto")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			size := proto.Size(tc.msg)
			bs, err := exactCodec{}.Marshal(tc.msg)
			if err != nil {
				t.Fatal(err)
			}
			defer bs.Free()
			if len(bs) > 1 {
				t.Fatalf("%d buffers, want one", len(bs))
			}
			if got := bs.Len(); got != size {
				t.Fatalf("marshalled %d bytes, message is %d", got, size)
			}
			if size > 0 {
				if c := cap(bs[0].ReadOnlyData()); c > 2*size {
					t.Fatalf("buffer capacity %d for a %d-byte message", c, size)
				}
			}
			var back pulsev1.PulseRequest
			if err := (exactCodec{}).Unmarshal(bs, &back); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(&back, tc.msg) {
				t.Fatal("round trip changed the message")
			}

			// gRPC's codec on the same message.
			gs, err := grpcCodec.Marshal(tc.msg)
			if err != nil {
				t.Fatal(err)
			}
			defer gs.Free()
			if size > 32<<10 {
				if c := cap(gs[0].ReadOnlyData()); c < 1<<20 {
					t.Fatalf("gRPC's codec used a %d-byte buffer for %d bytes; the reason for exactCodec is gone", c, size)
				}
			}
		})
	}
}

// TestExactCodecRefusesNonProto: anything but a protobuf message is an error.
func TestExactCodecRefusesNonProto(t *testing.T) {
	if _, err := (exactCodec{}).Marshal("not a message"); err == nil {
		t.Fatal("marshalled a string")
	}
	var s string
	if err := (exactCodec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer([]byte{1})}, &s); err == nil {
		t.Fatal("unmarshalled into a string")
	}
	var req pulsev1.PulseRequest
	if err := (exactCodec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer([]byte{0xff})}, &req); err == nil {
		t.Fatal("unmarshalled garbage")
	}
}
