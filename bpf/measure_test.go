package bpf

import (
	"crypto/sha1" //nolint:gosec // recomputing the kernel's legacy tag
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
)

func TestZeroMapImmediates(t *testing.T) {
	insns := asm.Instructions{
		asm.LoadMapPtr(asm.R1, 7),                          // BPF_PSEUDO_MAP_FD: fd zeroed
		asm.LoadMapValue(asm.R2, 9, 16),                    // BPF_PSEUDO_MAP_VALUE: fd and offset zeroed
		asm.LoadImm(asm.R3, 0x1122334455667788, asm.DWord), // plain constant kept
		asm.Mov.Imm(asm.R0, 42),
		asm.Return(),
	}
	raw, err := canonicalInstructions(insns)
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) != 8*asm.InstructionSize {
		t.Fatalf("len %d", len(raw))
	}
	imm := func(slot int) int32 { return int32(binary.LittleEndian.Uint32(raw[slot*8+4:])) }
	for _, slot := range []int{0, 1, 2, 3} {
		if imm(slot) != 0 {
			t.Errorf("slot %d: imm %#x not zeroed", slot, imm(slot))
		}
	}
	if imm(4) != 0x55667788 || imm(5) != 0x11223344 {
		t.Errorf("plain 64-bit constant changed: %#x %#x", imm(4), imm(5))
	}
	if imm(6) != 42 {
		t.Errorf("mov immediate changed: %d", imm(6))
	}
	// Two encodings that differ only in map fds hash the same.
	other := asm.Instructions{asm.LoadMapPtr(asm.R1, 100), asm.LoadMapValue(asm.R2, 3, 16), insns[2], insns[3], insns[4]}
	d1, _, _ := instructionDigest(insns)
	d2, _, _ := instructionDigest(other)
	if d1 != d2 {
		t.Error("digest depends on map fds")
	}
	changed := asm.Instructions{insns[0], insns[1], insns[2], asm.Mov.Imm(asm.R0, 43), insns[4]}
	if d3, _, _ := instructionDigest(changed); d3 == d1 {
		t.Error("digest ignores a changed instruction")
	}
}

func TestTagMatches(t *testing.T) {
	raw := []byte("0123456789abcdef")
	s256 := sha256.Sum256(raw)
	s1 := sha1.Sum(raw) //nolint:gosec
	for name, tc := range map[string]struct {
		tag  string
		want bool
	}{
		"sha256 (6.18+)":  {hex.EncodeToString(s256[:8]), true},
		"sha1 (<6.18)":    {hex.EncodeToString(s1[:8]), true},
		"other":           {"0000000000000000", false},
		"full sha256 hex": {hex.EncodeToString(s256[:]), false},
	} {
		if got := tagMatches(tc.tag, raw); got != tc.want {
			t.Errorf("%s: tagMatches = %v, want %v", name, got, tc.want)
		}
	}
}

// TestFortressCORE checks the loader's own CO-RE pass: the task_struct
// field loads in Fortress get the running kernel's offsets, and the
// relocation metadata is gone so the library hands the instructions over
// unchanged.
func TestFortressCORE(t *testing.T) {
	kernel, err := btf.LoadKernelSpec()
	if err != nil {
		t.Skipf("no kernel BTF: %v", err)
	}
	var task *btf.Struct
	if err := kernel.TypeByName("task_struct", &task); err != nil {
		t.Fatal(err)
	}
	want := map[string]int16{}
	for _, mem := range task.Members {
		if mem.Name == "tgid" || mem.Name == "pid" {
			want[mem.Name] = int16(mem.Offset.Bytes())
		}
	}
	spec, err := loadFortress()
	if err != nil {
		t.Fatal(err)
	}
	ps := spec.Programs["fortress_task_kill"]
	var reloOffsets []int
	for i := range ps.Instructions {
		if btf.CORERelocationMetadata(&ps.Instructions[i]) != nil {
			reloOffsets = append(reloOffsets, i)
		}
	}
	if len(reloOffsets) == 0 {
		t.Fatal("fortress has no CO-RE relocations")
	}
	before, _, err := instructionDigest(ps.Instructions)
	if err != nil {
		t.Fatal(err)
	}
	digest, _, err := prepareProgram(ps, kernel)
	if err != nil {
		t.Fatal(err)
	}
	if hasCORE(ps) {
		t.Error("relocation metadata left on the instructions")
	}
	seen := map[int16]bool{}
	for _, i := range reloOffsets {
		ins := ps.Instructions[i]
		if ins.OpCode.Class().IsLoad() {
			seen[ins.Offset] = true
		}
	}
	if !seen[want["tgid"]] {
		t.Errorf("no load at task_struct.tgid offset %d; relocated load offsets %v", want["tgid"], seen)
	}
	if got, _, _ := instructionDigest(ps.Instructions); got != digest {
		t.Error("prepareProgram digest differs from the prepared instructions' digest")
	}
	if before == digest && want["tgid"] != 4 {
		t.Error("digest unchanged by relocation")
	}
	if _, err := applyCORE(ps.Instructions, nil); err != nil {
		t.Errorf("already relocated instructions need BTF: %v", err)
	}
	spec2, _ := loadFortress()
	if _, err := applyCORE(spec2.Programs["fortress_task_kill"].Instructions, nil); err == nil {
		t.Error("CO-RE without kernel BTF accepted")
	}
}

func TestProgramTypeName(t *testing.T) {
	for typ, want := range map[ebpf.ProgramType]string{
		ebpf.SchedCLS: "sched_cls", ebpf.XDP: "xdp", ebpf.TracePoint: "tracepoint",
		ebpf.LSM: "lsm", ebpf.SocketFilter: "socket_filter", ebpf.Netfilter: "netfilter",
	} {
		if got := typeName(typ); got != want {
			t.Errorf("%v: %q, want %q", typ, got, want)
		}
	}
	if got := ProgramTypeName(999); got != "type_999" {
		t.Errorf("unknown type: %q", got)
	}
}
