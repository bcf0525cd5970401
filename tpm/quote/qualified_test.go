package quote

import (
	"crypto/sha256"
	"errors"
	"testing"
)

func TestOwnerPrimaryQualifiedName(t *testing.T) {
	name := append([]byte{0x00, 0x0b}, make([]byte, 32)...)
	qn, err := OwnerPrimaryQualifiedName(name)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	h.Write([]byte{0x40, 0x00, 0x00, 0x01})
	h.Write(name)
	if want := append([]byte{0x00, 0x0b}, h.Sum(nil)...); string(qn) != string(want) {
		t.Fatalf("qualified name %x, want %x", qn, want)
	}
	for _, bad := range [][]byte{nil, {0x00}, {0x00, 0x0b, 1, 2}, append([]byte{0x12, 0x34}, make([]byte, 32)...)} {
		var e *Error
		if _, err := OwnerPrimaryQualifiedName(bad); !errors.As(err, &e) {
			t.Errorf("name %x: %v, want a typed error", bad, err)
		}
	}
}
