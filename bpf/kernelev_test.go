package bpf

import (
	"encoding/binary"
	"maps"
	"slices"
	"testing"
)

func nlattr(typ uint16, v uint32) []byte {
	b := make([]byte, 8)
	binary.NativeEndian.PutUint16(b[0:2], 8)
	binary.NativeEndian.PutUint16(b[2:4], typ)
	binary.NativeEndian.PutUint32(b[4:8], v)
	return b
}

func TestXDPProgramIDs(t *testing.T) {
	attached := []byte{5, 0, 2, 0, 1, 0, 0, 0} // IFLA_XDP_ATTACHED, u8, padded
	for _, tc := range []struct {
		name string
		in   []byte
		want []uint32
		bad  bool
	}{
		{"none", attached, nil, false},
		{"single mode", slices.Concat(attached, nlattr(4, 42)), []uint32{42}, false},
		{"multi mode: hw, drv, skb order", slices.Concat(nlattr(6, 3), nlattr(5, 2), nlattr(7, 1)), []uint32{1, 2, 3}, false},
		{"single and per-mode duplicate", slices.Concat(nlattr(4, 9), nlattr(5, 9)), []uint32{9}, false},
		{"truncated", []byte{8, 0}, nil, true},
		{"length beyond data", []byte{12, 0, 4, 0, 1, 0, 0, 0}, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := xdpProgramIDs(tc.in)
			if (err != nil) != tc.bad || !slices.Equal(got, tc.want) {
				t.Errorf("xdpProgramIDs = %v, %v; want %v (error %v)", got, err, tc.want, tc.bad)
			}
		})
	}
}

func TestMapMeasurement(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []namedID
		want MapMeasurement
		bad  bool
	}{
		{"shared by pin", []namedID{{"sentinel_cfg", 3}, {"shield_quarantine", 9}, {"sentinel_cfg", 3}}, MapMeasurement{"sentinel_cfg": 3, "shield_quarantine": 9}, false},
		{"two IDs for one name", []namedID{{"sentinel_cfg", 3}, {"sentinel_cfg", 4}}, nil, true},
		{"no ID", []namedID{{"shield_quarantine", 0}}, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := mapMeasurement(tc.in)
			if (err != nil) != tc.bad || !maps.Equal(got, tc.want) {
				t.Errorf("mapMeasurement = %v, %v; want %v (error %v)", got, err, tc.want, tc.bad)
			}
		})
	}
}

// FuzzXDPProgramIDs: any attribute bytes the kernel could send are parsed
// without panicking; the IDs returned are non-zero and distinct.
func FuzzXDPProgramIDs(f *testing.F) {
	f.Add([]byte{5, 0, 2, 0, 1, 0, 0, 0})
	f.Add(slices.Concat(nlattr(6, 3), nlattr(5, 2), nlattr(7, 1)))
	f.Add(slices.Concat(nlattr(4, 9), nlattr(5, 9)))
	f.Add([]byte{8, 0})
	f.Add([]byte{12, 0, 4, 0, 1, 0, 0, 0})
	f.Add([]byte{5, 0, 4, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		ids, err := xdpProgramIDs(b)
		if err != nil {
			if ids != nil {
				t.Fatalf("error %v with IDs %v", err, ids)
			}
			return
		}
		seen := map[uint32]bool{}
		for _, id := range ids {
			if id == 0 || seen[id] {
				t.Fatalf("IDs %v: zero or repeated", ids)
			}
			seen[id] = true
		}
		if len(ids) > 4 {
			t.Fatalf("%d IDs from one IFLA_XDP attribute", len(ids))
		}
	})
}
