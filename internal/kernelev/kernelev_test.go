package kernelev

import (
	"errors"
	"maps"
	"testing"
)

func TestMapsRecordRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   map[string]uint32
		want string
	}{
		{"empty", map[string]uint32{}, ""},
		{"sorted by name", map[string]uint32{"shield_quarantine": 12, "sentinel_cfg": 7}, "sentinel_cfg 7\nshield_quarantine 12\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := EncodeMaps(tc.in)
			if err != nil || string(b) != tc.want {
				t.Fatalf("EncodeMaps = %q, %v; want %q", b, err, tc.want)
			}
			got, err := DecodeMaps(b)
			if err != nil || !maps.Equal(got, tc.in) {
				t.Fatalf("DecodeMaps = %v, %v", got, err)
			}
		})
	}
}

func TestMapsRecordRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		data string
	}{
		{"no final newline", "a 1"},
		{"unsorted", "b 1\na 2\n"},
		{"repeated", "a 1\na 2\n"},
		{"zero id", "a 0\n"},
		{"leading zero", "a 01\n"},
		{"not a number", "a x\n"},
		{"too large", "a 4294967296\n"},
		{"no id", "a\n"},
		{"empty name", " 1\n"},
		{"space in id", "a 1 2\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := DecodeMaps([]byte(tc.data)); !errors.Is(err, ErrMalformed) {
				t.Errorf("DecodeMaps(%q) = %v, want ErrMalformed", tc.data, err)
			}
		})
	}
	for _, in := range []map[string]uint32{{"a b": 1}, {"": 1}, {"a": 0}} {
		if _, err := EncodeMaps(in); !errors.Is(err, ErrMalformed) {
			t.Errorf("EncodeMaps(%v) = %v, want ErrMalformed", in, err)
		}
	}
}

func TestParseAttachPoint(t *testing.T) {
	for _, tc := range []struct {
		point string
		want  Hook
		ok    bool
	}{
		{"tcx/ingress:eth0", Hook{HookTCXIngress, "eth0"}, true},
		{"tcx/egress:eth0", Hook{HookTCXEgress, "eth0"}, true},
		{"xdp:veth1", Hook{HookXDP, "veth1"}, true},
		{"tracepoint/signal/signal_generate", Hook{HookTracepoint, "signal/signal_generate"}, true},
		{"", Hook{}, false},
		{"eth0", Hook{}, false},
		{"xdp:", Hook{}, false},
		{"tracepoint/signal", Hook{}, false},
		{"lsm/task_kill", Hook{}, false},
	} {
		got, ok := ParseAttachPoint(tc.point)
		if got != tc.want || ok != tc.ok {
			t.Errorf("ParseAttachPoint(%q) = %v, %v; want %v, %v", tc.point, got, ok, tc.want, tc.ok)
		}
	}
}

// FuzzDecodeMaps: DecodeMaps never panics, and whatever it accepts is
// canonical: encoding the result gives back the very bytes.
func FuzzDecodeMaps(f *testing.F) {
	for _, s := range []string{"", "sentinel_cfg 7\nshield_quarantine 12\n", "a 1\n", "a 01\n", "b 1\na 2\n", "a 4294967296\n", "a 1", " 1\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ms, err := DecodeMaps(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			return
		}
		back, err := EncodeMaps(ms)
		if err != nil {
			t.Fatalf("EncodeMaps of a decoded record: %v", err)
		}
		if string(back) != string(data) {
			t.Fatalf("decoded %q, re-encoded %q", data, back)
		}
	})
}
