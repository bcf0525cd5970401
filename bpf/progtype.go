package bpf

import (
	"strconv"

	"github.com/cilium/ebpf"
)

// progTypeNames are the kernel's enum bpf_prog_type values as bpftool names
// them (libbpf's prog_type_name table), so `pulse-agent snapshot --json` and
// `bpftool prog show -j` agree.
var progTypeNames = [...]string{
	"unspec", "socket_filter", "kprobe", "sched_cls", "sched_act", "tracepoint",
	"xdp", "perf_event", "cgroup_skb", "cgroup_sock", "lwt_in", "lwt_out",
	"lwt_xmit", "sock_ops", "sk_skb", "cgroup_device", "sk_msg",
	"raw_tracepoint", "cgroup_sock_addr", "lwt_seg6local", "lirc_mode2",
	"sk_reuseport", "flow_dissector", "cgroup_sysctl",
	"raw_tracepoint_writable", "cgroup_sockopt", "tracing", "struct_ops",
	"ext", "lsm", "sk_lookup", "syscall", "netfilter",
}

// ProgramTypeName returns bpftool's name for a kernel program type number.
func ProgramTypeName(t uint32) string {
	if int(t) < len(progTypeNames) {
		return progTypeNames[t]
	}
	return "type_" + strconv.FormatUint(uint64(t), 10)
}

func typeName(t ebpf.ProgramType) string { return ProgramTypeName(uint32(t)) }
