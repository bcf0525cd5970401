package tpm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
	"testing/iotest"
	"time"
)

func response(rc uint32, body []byte) []byte {
	b := make([]byte, 10, 10+len(body))
	binary.BigEndian.PutUint16(b, 0x8001)
	binary.BigEndian.PutUint32(b[2:], uint32(10+len(body)))
	binary.BigEndian.PutUint32(b[6:], rc)
	return append(b, body...)
}

func TestReadResponse(t *testing.T) {
	want := response(0, bytes.Repeat([]byte{0x5a}, 3000))
	// Delivered a byte at a time, the response is still read whole.
	got, err := readResponse(iotest.OneByteReader(bytes.NewReader(append(want, 0xee))))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("readResponse = %d bytes, %v", len(got), err)
	}
	bad := map[string][]byte{
		"short header":  want[:6],
		"short body":    want[:100],
		"size below 10": {0x80, 0x01, 0, 0, 0, 4, 0, 0, 0, 0},
		"size too big":  {0x80, 0x01, 0x7f, 0, 0, 0, 0, 0, 0, 0},
	}
	for name, b := range bad {
		if _, err := readResponse(bytes.NewReader(b)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestSendRetrying(t *testing.T) {
	defer func(p time.Duration) { retryPause = p }(retryPause)
	retryPause = time.Microsecond
	calls := 0
	send := func(rcs ...uint32) func([]byte) ([]byte, error) {
		calls = 0
		return func([]byte) ([]byte, error) {
			rc := rcs[min(calls, len(rcs)-1)]
			calls++
			return response(rc, nil), nil
		}
	}
	rsp, err := sendRetrying(send(rcRetry, rcTesting, rcYielded, 0), nil)
	if err != nil || binary.BigEndian.Uint32(rsp[6:]) != 0 || calls != 4 {
		t.Fatalf("after retries: rc %x, %d calls, %v", rsp[6:], calls, err)
	}
	// A real error is returned at once, not retried.
	if rsp, _ := sendRetrying(send(0x18b), nil); binary.BigEndian.Uint32(rsp[6:]) != 0x18b || calls != 1 {
		t.Fatalf("error response retried: %d calls", calls)
	}
	// A TPM that keeps saying RETRY: the last answer is returned, bounded.
	if rsp, _ := sendRetrying(send(rcRetry), nil); binary.BigEndian.Uint32(rsp[6:]) != rcRetry || calls != 13 {
		t.Fatalf("endless retry: %d calls", calls)
	}
	boom := errors.New("boom")
	if _, err := sendRetrying(func([]byte) ([]byte, error) { return nil, boom }, nil); !errors.Is(err, boom) {
		t.Fatalf("transport error: %v", err)
	}
}
