package bpf

import (
	"errors"
	"fmt"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// FortressStatus is what the kernel allowed Fortress to do. Active is true
// only when bpf is an active LSM and the program loaded and is attached.
type FortressStatus struct {
	Active    bool `json:"active"`
	LSMListed bool `json:"lsm_listed"`
	Loaded    bool `json:"loaded"`
	Attached  bool `json:"attached"`
	// Lockdown is the kernel lockdown mode ("none", "integrity",
	// "confidentiality"), empty when unknown.
	Lockdown string `json:"lockdown,omitempty"`
	// Reason says why Fortress is inactive, in the kernel's words where the
	// kernel refused.
	Reason string `json:"reason,omitempty"`
	// Errno is the kernel's error number when it refused a load or attach.
	Errno syscall.Errno `json:"-"`
	// ErrnoName is Errno's symbolic name ("EPERM").
	ErrnoName string `json:"errno,omitempty"`
	// ProgramID, LinkID and Tag are what the kernel reports for Fortress's
	// link and the program it runs, read when the status is taken (zero
	// when not attached): Active is derived from them, never from a log.
	ProgramID uint32 `json:"program_id,omitempty"`
	LinkID    uint32 `json:"link_id,omitempty"`
	Tag       string `json:"tag,omitempty"`
}

// FortressProbe is what the loader observed; DecideFortressStatus turns it
// into a status. Kept free of kernel calls so it is unit tested directly.
type FortressProbe struct {
	// LSMList is the content of /sys/kernel/security/lsm.
	LSMList    string
	LSMListErr error
	// Lockdown is the content of /sys/kernel/security/lockdown
	// ("none [integrity] confidentiality"); the bracketed word is active.
	Lockdown string
	// LoadErr is the error loading the program, nil when it loaded.
	LoadErr error
	// AttachErr is the error attaching it, nil when it attached (or was not
	// tried because the load failed).
	AttachErr error
	// Attached is true once the attach succeeded.
	Attached bool
}

// DecideFortressStatus derives the reported status from a probe.
func DecideFortressStatus(p FortressProbe) FortressStatus {
	st := FortressStatus{
		LSMListed: lsmListed(p.LSMList),
		Lockdown:  activeLockdown(p.Lockdown),
		Loaded:    p.LoadErr == nil,
	}
	st.Attached = st.Loaded && p.AttachErr == nil && p.Attached
	var reasons []string
	switch {
	case p.LoadErr != nil:
		reasons = append(reasons, "kernel refused to load the BPF-LSM program: "+kernelError(p.LoadErr, &st))
	case p.AttachErr != nil:
		reasons = append(reasons, "kernel refused to attach the BPF-LSM program: "+kernelError(p.AttachErr, &st))
	case !p.Attached:
		reasons = append(reasons, "BPF-LSM program not attached")
	}
	if p.LSMListErr != nil {
		reasons = append(reasons, fmt.Sprintf("active LSM list unreadable: %v", p.LSMListErr))
	} else if !st.LSMListed {
		reasons = append(reasons, fmt.Sprintf("bpf is not in the active LSM list %q (boot with lsm=...,bpf)", strings.TrimSpace(p.LSMList)))
	}
	if len(reasons) > 0 && st.Lockdown != "" && st.Lockdown != "none" {
		reasons = append(reasons, "kernel lockdown="+st.Lockdown)
	}
	st.Active = st.LSMListed && st.Loaded && st.Attached
	if !st.Active {
		st.Reason = strings.Join(reasons, "; ")
	}
	return st
}

func lsmListed(list string) bool {
	for _, l := range strings.Split(strings.TrimSpace(list), ",") {
		if strings.TrimSpace(l) == "bpf" {
			return true
		}
	}
	return false
}

func activeLockdown(s string) string {
	for _, w := range strings.Fields(s) {
		if strings.HasPrefix(w, "[") && strings.HasSuffix(w, "]") {
			return strings.Trim(w, "[]")
		}
	}
	return ""
}

// kernelError renders err as the kernel's errno ("operation not permitted
// (EPERM)") and records the errno in st; other errors as they are.
func kernelError(err error, st *FortressStatus) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		st.Errno = errno
		st.ErrnoName = unix.ErrnoName(errno)
		return fmt.Sprintf("%s (%s)", errno.Error(), st.ErrnoName)
	}
	return err.Error()
}
