package bpf

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
)

func TestDecideFortressStatus(t *testing.T) {
	eperm := fmt.Errorf("program fortress_task_kill: load program: %w", syscall.EPERM)
	tests := []struct {
		name        string
		probe       FortressProbe
		active      bool
		loaded      bool
		attached    bool
		listed      bool
		errno       string
		reasonParts []string
	}{
		{
			name: "kernel allows BPF-LSM",
			probe: FortressProbe{
				LSMList: "lockdown,capability,landlock,bpf", Lockdown: "[none] integrity confidentiality",
				Attached: true,
			},
			active: true, loaded: true, attached: true, listed: true,
		},
		{
			name: "lockdown refuses the load (CI kernel)",
			probe: FortressProbe{
				LSMList: "lockdown,capability,landlock,bpf", Lockdown: "none [integrity] confidentiality",
				LoadErr: eperm,
			},
			listed: true, errno: "EPERM",
			reasonParts: []string{"refused to load", "operation not permitted (EPERM)", "lockdown=integrity"},
		},
		{
			name: "bpf not an active LSM",
			probe: FortressProbe{
				LSMList: "lockdown,capability,yama,apparmor", Lockdown: "[none] integrity confidentiality",
				LoadErr: fmt.Errorf("load: %w", syscall.EINVAL),
			},
			errno:       "EINVAL",
			reasonParts: []string{"EINVAL", `bpf is not in the active LSM list "lockdown,capability,yama,apparmor"`},
		},
		{
			name: "loaded but attach refused",
			probe: FortressProbe{
				LSMList: "bpf", AttachErr: fmt.Errorf("attach: %w", syscall.EBUSY),
			},
			loaded: true, listed: true, errno: "EBUSY",
			reasonParts: []string{"refused to attach", "EBUSY"},
		},
		{
			name: "attached on a kernel that does not run bpf LSM hooks",
			probe: FortressProbe{
				LSMList: "capability,selinux\n", Attached: true,
			},
			loaded: true, attached: true,
			reasonParts: []string{"not in the active LSM list"},
		},
		{
			name: "no securityfs",
			probe: FortressProbe{
				LSMListErr: errors.New("open /sys/kernel/security/lsm: no such file or directory"), Attached: true,
			},
			loaded: true, attached: true,
			reasonParts: []string{"LSM list unreadable"},
		},
		{
			name:        "non-errno load failure",
			probe:       FortressProbe{LSMList: "bpf", LoadErr: errors.New("attach lsm/task_kill: kernel BTF missing")},
			listed:      true,
			reasonParts: []string{"kernel BTF missing"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := DecideFortressStatus(tc.probe)
			if st.Active != tc.active || st.Loaded != tc.loaded || st.Attached != tc.attached || st.LSMListed != tc.listed {
				t.Errorf("status %+v; want active=%v loaded=%v attached=%v listed=%v", st, tc.active, tc.loaded, tc.attached, tc.listed)
			}
			if st.ErrnoName != tc.errno {
				t.Errorf("errno %q, want %q", st.ErrnoName, tc.errno)
			}
			if tc.active {
				if st.Reason != "" {
					t.Errorf("active with reason %q", st.Reason)
				}
				return
			}
			if st.Reason == "" {
				t.Error("inactive without a reason")
			}
			for _, part := range tc.reasonParts {
				if !strings.Contains(st.Reason, part) {
					t.Errorf("reason %q lacks %q", st.Reason, part)
				}
			}
		})
	}
}

func TestActiveLockdown(t *testing.T) {
	for in, want := range map[string]string{
		"none [integrity] confidentiality\n": "integrity",
		"[none] integrity confidentiality":   "none",
		"":                                   "",
	} {
		if got := activeLockdown(in); got != want {
			t.Errorf("activeLockdown(%q) = %q, want %q", in, got, want)
		}
	}
}
