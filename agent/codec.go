package agent

import (
	"fmt"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// exactCodec is gRPC's protobuf codec without gRPC's buffer pool: a message
// is marshalled into a buffer of its own size, garbage once sent. gRPC's
// codec takes buffers from a process-wide pool of size tiers (256 B, 4, 16,
// 32 KiB, 1 MiB), so a message a little over 32 KiB — the first pulse with
// a 34 KB firmware log, a pulse carrying many Sentinel records — holds a
// 1 MiB buffer, kept in the pool between pulses. The agent sends one
// message per interval: pooling saves it nothing.
type exactCodec struct{}

// Name is the content subtype: the same "proto" the verifier expects.
func (exactCodec) Name() string { return "proto" }

// Marshal encodes v into a buffer of exactly its size.
func (exactCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("marshal: %T is not a protobuf message", v)
	}
	b, err := proto.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("marshal %T: %w", v, err)
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

// Unmarshal decodes data into v, copying it into one slice of its size.
func (exactCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("unmarshal: %T is not a protobuf message", v)
	}
	if err := proto.Unmarshal(data.Materialize(), m); err != nil {
		return fmt.Errorf("unmarshal %T: %w", v, err)
	}
	return nil
}
