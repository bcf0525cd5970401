package ebpf

import (
	"bytes"
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/pulse-attest/pulse/bpf"
	"github.com/pulse-attest/pulse/internal/kernelev"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
)

func TestFillKernelEvidence(t *testing.T) {
	sum := [32]byte{1, 2, 3}
	for _, tc := range []struct {
		name string
		in   bpf.KernelEvidence
		want *pulsev1.BPFSnapshot
	}{
		{
			name: "chain, maps and quarantine",
			in: bpf.KernelEvidence{
				Hooks: []bpf.HookChain{
					{Hook: "tcx_ingress", Target: "eth0", Ifindex: 2, Programs: []bpf.ChainProgram{
						{ID: 90, Tag: "0102030405060708", Name: "foreign_pass", Type: "sched_cls", LinkID: 4},
						{ID: 12, Tag: "1112131415161718", Name: "shield_ingress", Type: "sched_cls", MapIDs: []uint32{5}, LinkID: 3},
					}},
					{Hook: "xdp", Target: "eth0", Ifindex: 2, Err: "query xdp on eth0: boom"},
				},
				Maps:             []bpf.MapIdentity{{Name: "shield_quarantine", ID: 5, Type: "Hash", KeySize: 16, ValueSize: 16, MaxEntries: 4096}},
				QuarantineSHA256: sum, QuarantineCount: 2,
			},
			want: &pulsev1.BPFSnapshot{
				Hooks: []*pulsev1.HookChain{
					{Hook: "tcx_ingress", Target: "eth0", Ifindex: 2, Programs: []*pulsev1.ChainProgram{
						{Id: 90, Tag: []byte{1, 2, 3, 4, 5, 6, 7, 8}, Name: "foreign_pass", Type: "sched_cls", LinkId: 4},
						{Id: 12, Tag: []byte{0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18}, Name: "shield_ingress", Type: "sched_cls", MapIds: []uint32{5}, LinkId: 3},
					}},
					{Hook: "xdp", Target: "eth0", Ifindex: 2, Error: "query xdp on eth0: boom"},
				},
				Maps:             []*pulsev1.MapIdentity{{Name: "shield_quarantine", Id: 5, Type: "Hash", KeySize: 16, ValueSize: 16, MaxEntries: 4096}},
				QuarantineSha256: sum[:], QuarantineCount: 2,
			},
		},
		{
			name: "unreadable quarantine and a malformed tag: no digest, no tag",
			in: bpf.KernelEvidence{
				Hooks:         []bpf.HookChain{{Hook: "tcx_egress", Target: "eth0", Programs: []bpf.ChainProgram{{ID: 1, Tag: "xyz"}}}},
				QuarantineErr: errors.New("gone"), QuarantineCount: 3,
			},
			want: &pulsev1.BPFSnapshot{
				Hooks: []*pulsev1.HookChain{{Hook: "tcx_egress", Target: "eth0", Programs: []*pulsev1.ChainProgram{{Id: 1}}}},
				Maps:  []*pulsev1.MapIdentity{},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := &pulsev1.BPFSnapshot{}
			fillKernelEvidence(got, tc.in)
			if !proto.Equal(got, tc.want) {
				t.Errorf("got %v\nwant %v", got, tc.want)
			}
		})
	}
}

func TestMapsRecord(t *testing.T) {
	rec, err := mapsRecord(bpf.MapMeasurement{"shield_quarantine": 9, "sentinel_cfg": 3})
	if err != nil {
		t.Fatal(err)
	}
	if rec.Name != kernelev.MapsRecordName || !bytes.Equal(rec.Data, []byte("sentinel_cfg 3\nshield_quarantine 9\n")) {
		t.Errorf("record %q %q", rec.Name, rec.Data)
	}
	if _, err := mapsRecord(bpf.MapMeasurement{"shield_quarantine": 0}); !errors.Is(err, kernelev.ErrMalformed) {
		t.Errorf("map without ID: %v", err)
	}
}

func TestInterfacesRecord(t *testing.T) {
	rec, err := interfacesRecord(bpf.InterfaceMeasurement{"eth1": 4, "eth0": 2})
	if err != nil {
		t.Fatal(err)
	}
	if rec.Name != kernelev.InterfacesRecordName || !bytes.Equal(rec.Data, []byte("eth0 2\neth1 4\n")) {
		t.Errorf("record %q %q", rec.Name, rec.Data)
	}
	if _, err := interfacesRecord(bpf.InterfaceMeasurement{"eth0": 0}); !errors.Is(err, kernelev.ErrMalformed) {
		t.Errorf("interface without ifindex: %v", err)
	}
}
