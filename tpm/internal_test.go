package tpm

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestTrimDER(t *testing.T) {
	cert := append([]byte{0x30, 0x82, 0x01, 0x00}, bytes.Repeat([]byte{0xaa}, 0x100)...)
	tests := []struct {
		name string
		in   []byte
		want []byte
	}{
		{"exact", cert, cert},
		{"zero padded", append(slices.Clone(cert), 0, 0, 0, 0), cert},
		{"ff padded", append(slices.Clone(cert), 0xff, 0xff), cert},
		{"short form", []byte{0x30, 0x02, 0x05, 0x00, 0x00, 0x00}, []byte{0x30, 0x02, 0x05, 0x00}},
		{"truncated kept whole", cert[:100], cert[:100]},
		{"not a sequence", []byte{0x04, 0x01, 0x00, 0x00}, []byte{0x04, 0x01, 0x00, 0x00}},
		{"indefinite length kept", []byte{0x30, 0x80, 0x00, 0x00}, []byte{0x30, 0x80, 0x00, 0x00}},
		{"empty", []byte{}, []byte{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := trimDER(tc.in); !bytes.Equal(got, tc.want) {
				t.Fatalf("trimDER = %x, want %x", got, tc.want)
			}
		})
	}
}

func FuzzTrimDER(f *testing.F) {
	f.Add([]byte{0x30, 0x82, 0x00, 0x01, 0x00, 0xff})
	f.Add([]byte{0x30, 0x84, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		got := trimDER(b)
		if !bytes.HasPrefix(b, got) {
			t.Fatalf("trimDER(%x) = %x, not a prefix", b, got)
		}
	})
}

func TestUnwrap2B(t *testing.T) {
	if got, err := unwrap2B([]byte{0, 2, 7, 8}); err != nil || !bytes.Equal(got, []byte{7, 8}) {
		t.Fatalf("unwrap2B = %x, %v", got, err)
	}
	for _, bad := range [][]byte{nil, {0}, {0, 3, 1, 2}, {0, 1, 1, 2}} {
		if _, err := unwrap2B(bad); err == nil {
			t.Errorf("unwrap2B(%x) accepted", bad)
		}
	}
}

func FuzzUnwrap2B(f *testing.F) {
	f.Add([]byte{0, 1, 9})
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := unwrap2B(b)
		if err == nil && (len(got)+2 != len(b) || !bytes.Equal(got, b[2:])) {
			t.Fatalf("unwrap2B(%x) = %x", b, got)
		}
	})
}

func TestPCRSelection(t *testing.T) {
	sel, err := pcrSelection(AlgSHA256, []uint32{0, 7, 8, 23})
	if err != nil {
		t.Fatal(err)
	}
	bm := sel.PCRSelections[0].PCRSelect
	if !bytes.Equal(bm, []byte{0x81, 0x01, 0x80}) {
		t.Fatalf("bitmap %x", bm)
	}
	if got := selected(bm); !slices.Equal(got, []uint32{0, 7, 8, 23}) {
		t.Fatalf("selected = %v", got)
	}
	if _, err := pcrSelection(AlgSHA256, []uint32{24}); err == nil {
		t.Fatal("pcr 24 accepted")
	}
}

func TestReadFirmwareLog(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadFirmwareLog(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing log: %v, want os.ErrNotExist", err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadFirmwareLog(empty); err == nil {
		t.Fatal("empty log accepted")
	}
	good := filepath.Join(dir, "log")
	if err := os.WriteFile(good, []byte{1, 2, 3}, 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := ReadFirmwareLog(good); err != nil || !bytes.Equal(b, []byte{1, 2, 3}) {
		t.Fatalf("ReadFirmwareLog = %x, %v", b, err)
	}
}
