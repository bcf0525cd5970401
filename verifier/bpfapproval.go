package verifier

import (
	"time"

	"github.com/pulse-attest/pulse/policy"
)

// bpfChangeApproved reports whether a change of the eBPF program set is
// approved. Only an update of the agent build approves one, and only
// through a policy update_window open now that rolls out the new build and
// carries its build manifest (ebpf_objects): every program of the new set
// must have been measured as loaded from one of the manifest's objects.
// Programs change with the build that ships them, and only to what that
// build ships. So a window never approves a change of programs on its own
// (a device already on the build would otherwise load any code while a
// fleet-wide rollout window is open), nor does a build merely on the allow
// list, nor a window opened with pulsectl agents approve-update (it names
// a binary, not the programs it brings), nor an approved build bringing
// programs from objects it does not ship.
func bpfChangeApproved(to string, rt *policy.RuntimeEvidence, binChanged bool, pol *policy.Policy, now time.Time) bool {
	if !binChanged || pol == nil || rt == nil {
		return false
	}
	objects := make(map[string]string, len(rt.BPFPrograms))
	for name := range rt.BPFPrograms {
		objects[name] = rt.BPFObjects[name]
	}
	return pol.BPFSetApproved(to, objects, now)
}
