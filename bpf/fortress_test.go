package bpf

import (
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
)

// probeLSM asks the kernel directly, with a minimal program of our own,
// whether a BPF-LSM program on task_kill can be loaded and attached.
func probeLSM(t *testing.T) (loadErr, attachErr error) {
	t.Helper()
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "pulse_lsm_probe", Type: ebpf.LSM, AttachType: ebpf.AttachLSMMac, AttachTo: "task_kill",
		License: "GPL", Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
	})
	if err != nil {
		return err, nil
	}
	defer p.Close()
	l, err := link.AttachLSM(link.LSMOptions{Program: p})
	if err != nil {
		return nil, err
	}
	l.Close()
	return nil, nil
}

// TestFortressStatusOnThisKernel: the reported status is what the kernel
// says to an independent probe. On the CI kernel (lockdown=integrity) the
// load is refused with EPERM, and Fortress must say so.
func TestFortressStatusOnThisKernel(t *testing.T) {
	requireKernel(t)
	m, rm := loadTestManager(t, Options{})
	st := m.Fortress().Status()
	t.Logf("fortress status: %+v", st)
	lsm, _ := os.ReadFile("/sys/kernel/security/lsm")
	if st.LSMListed != strings.Contains(","+strings.TrimSpace(string(lsm))+",", ",bpf,") {
		t.Errorf("LSMListed %v for active LSM list %q", st.LSMListed, lsm)
	}
	loadErr, attachErr := probeLSM(t)
	recs, _ := rm.snapshot()
	measured := containsName(recs, "fortress_task_kill")
	switch {
	case loadErr != nil:
		var errno syscall.Errno
		if !errors.As(loadErr, &errno) {
			t.Fatalf("probe load failed without an errno: %v", loadErr)
		}
		if st.Active || st.Loaded || st.Attached {
			t.Errorf("status %+v although the kernel refuses LSM programs (%v)", st, loadErr)
		}
		if st.ProgramID != 0 || st.LinkID != 0 || st.Tag != "" {
			t.Errorf("status %+v names kernel IDs for a program the kernel refused", st)
		}
		if st.Errno != errno || !strings.Contains(st.Reason, st.ErrnoName) || !strings.Contains(st.Reason, errno.Error()) {
			t.Errorf("status errno %v reason %q; kernel said %v", st.Errno, st.Reason, errno)
		}
		if measured {
			t.Error("a program the kernel refused was measured")
		}
		if _, err := os.Stat(m.PinDir() + "/fortress_task_kill"); err == nil {
			t.Error("refused fortress program pinned")
		}
	case attachErr != nil:
		if st.Active || st.Attached || !st.Loaded || st.Reason == "" {
			t.Errorf("status %+v although attach is refused (%v)", st, attachErr)
		}
	default:
		if st.Active != st.LSMListed || !st.Loaded || !st.Attached || !measured {
			t.Errorf("kernel allows BPF-LSM but status is %+v (measured %v)", st, measured)
		}
		if st.Active && (st.ProgramID == 0 || st.LinkID == 0 || st.Tag == "") {
			t.Errorf("active status %+v lacks the kernel's link and program IDs", st)
		}
	}
}

func containsName(recs []ProgramMeasurement, name string) bool {
	for _, r := range recs {
		if r.Name == name {
			return true
		}
	}
	return false
}
