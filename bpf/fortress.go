package bpf

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/hashicorp/go-hclog"
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
	log    hclog.Logger
	mu     sync.Mutex
	probe  FortressProbe
	status FortressStatus
	prog   *program
}

// loadFortress tries to load Fortress into the kernel (attaching nothing).
// A refusal is recorded in the status, not returned: the kernel decides
// whether Fortress can run, the verifier's policy whether that is acceptable.
func (m *Manager) loadFortress() *Fortress {
	f := &Fortress{m: m, log: m.log.Named("fortress")}
	lsm, err := os.ReadFile(filepath.Join(SecurityFSPath, "lsm"))
	f.probe.LSMList, f.probe.LSMListErr = string(lsm), err
	if lock, err := os.ReadFile(filepath.Join(SecurityFSPath, "lockdown")); err == nil {
		f.probe.Lockdown = string(lock)
	}
	_, progs, err := m.loadObject(fortressObject, nil)
	if err == nil && len(progs) != 1 {
		err = fmt.Errorf("fortress object has %d programs, want 1", len(progs))
	}
	if err != nil {
		f.probe.LoadErr = err
		f.status = DecideFortressStatus(f.probe)
		f.log.Warn("fortress inactive", "reason", f.status.Reason, "error", err)
		return f
	}
	f.prog = progs[0]
	return f
}

// attach attaches the loaded (and already measured) Fortress program. A
// kernel refusal becomes the status; only failing to pin an attached
// program is returned.
func (f *Fortress) attach() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.prog == nil {
		return nil
	}
	if err := f.m.attach(f.prog, fortressAttachment()); err != nil {
		f.probe.AttachErr = err
	} else if err := f.m.pinProgram(f.prog); err != nil {
		return err
	} else {
		f.probe.Attached = true
	}
	f.status = DecideFortressStatus(f.probe)
	if f.status.Active {
		f.log.Info("fortress active", "program_id", f.prog.id)
	} else {
		f.log.Warn("fortress inactive", "reason", f.status.Reason)
	}
	return nil
}

// Status reports what the kernel allowed, read from the kernel now: for an
// attached Fortress, the link's ID and the ID and tag of the program the
// kernel says it runs, which must be the program the agent loaded and
// measured. Active holds only while they are.
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
		return fortressLost(st, "fortress link released")
	}
	info, err := l.Info()
	if err != nil {
		return fortressLost(st, fmt.Sprintf("fortress link unreadable: %v", err))
	}
	st.LinkID = uint32(info.ID)
	st.ProgramID = uint32(info.Program)
	if st.ProgramID != f.prog.id {
		return fortressLost(st, fmt.Sprintf("fortress link %d runs program %d, not the measured program %d", st.LinkID, st.ProgramID, f.prog.id))
	}
	p, err := ebpf.NewProgramFromID(ebpf.ProgramID(st.ProgramID))
	if err != nil {
		return fortressLost(st, fmt.Sprintf("fortress program %d: %v", st.ProgramID, err))
	}
	defer p.Close()
	pi, err := p.Info()
	if err != nil {
		return fortressLost(st, fmt.Sprintf("fortress program %d info: %v", st.ProgramID, err))
	}
	st.Tag = pi.Tag
	if pi.Tag != f.prog.tag {
		return fortressLost(st, fmt.Sprintf("fortress program %d has tag %s, the measured one %s", st.ProgramID, pi.Tag, f.prog.tag))
	}
	return st
}

// fortressLost is st with Fortress no longer active for reason; the IDs
// read so far stay, so the verifier sees what the kernel runs instead.
func fortressLost(st FortressStatus, reason string) FortressStatus {
	st.Active, st.Attached = false, false
	st.Reason = reason
	return st
}
