package bpf

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// fortressAttachment is Fortress's LSM hook: security_task_kill.
func fortressAttachment() attachment {
	return attachment{
		program:  "fortress_task_kill",
		point:    "lsm/task_kill",
		linkName: "fortress_task_kill",
		attach: func(p *ebpf.Program) (link.Link, error) {
			return link.AttachLSM(link.LSMOptions{Program: p})
		},
	}
}

// Fortress is the BPF-LSM supervisor. It refuses signals to the agent from
// anyone but the agent and its service manager, when the kernel lets it run.
type Fortress struct {
	m      *Manager
	mu     sync.Mutex
	status FortressStatus
	prog   *program
}

// loadFortress tries to load, measure and attach Fortress. A kernel refusal
// is recorded in the status; only a Measurer error is returned (fail closed).
func (m *Manager) loadFortress(ctx context.Context) (*Fortress, error) {
	log := m.log.Named("fortress")
	f := &Fortress{m: m}
	var probe FortressProbe
	lsm, err := os.ReadFile(filepath.Join(SecurityFSPath, "lsm"))
	probe.LSMList, probe.LSMListErr = string(lsm), err
	if lock, err := os.ReadFile(filepath.Join(SecurityFSPath, "lockdown")); err == nil {
		probe.Lockdown = string(lock)
	}

	_, progs, err := m.loadObject(fortressObject, nil)
	if err != nil {
		probe.LoadErr = err
		f.status = DecideFortressStatus(probe)
		log.Warn("fortress inactive", "reason", f.status.Reason, "error", err)
		return f, nil
	}
	if len(progs) != 1 {
		return nil, fmt.Errorf("ebpf: fortress object has %d programs, want 1", len(progs))
	}
	p := progs[0]
	f.prog = p
	a := fortressAttachment()
	if err := m.measure(ctx, p, a.point); err != nil {
		return nil, err
	}
	if err := m.attach(p, a); err != nil {
		probe.AttachErr = err
	} else if err := m.pinProgram(p); err != nil {
		return nil, fmt.Errorf("ebpf: %w", err)
	} else {
		probe.Attached = true
	}
	f.status = DecideFortressStatus(probe)
	if f.status.Active {
		log.Info("fortress active", "program_id", p.id)
	} else {
		log.Warn("fortress inactive", "reason", f.status.Reason)
	}
	return f, nil
}

// Status reports what the kernel allowed. For an attached Fortress it checks
// that the agent's link still runs the program.
func (f *Fortress) Status() FortressStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.status
	if !st.Attached || f.prog == nil {
		return st
	}
	f.m.mu.Lock()
	l := f.m.links[fortressAttachment().linkName]
	f.m.mu.Unlock()
	if l == nil {
		st.Active, st.Attached = false, false
		st.Reason = "fortress link released"
		return st
	}
	info, err := l.Info()
	if err != nil || uint32(info.Program) != f.prog.id {
		st.Active, st.Attached = false, false
		st.Reason = fmt.Sprintf("fortress link no longer runs program %d (%v)", f.prog.id, err)
	}
	return st
}
