// SPDX-License-Identifier: GPL-2.0-only
/*
 * Sentinel: records who signals the agent and who loads eBPF programs on the
 * host into the pinned ring described in sentinel.h, so the records survive
 * the agent being killed and are reported in its next pulse after restart.
 *
 * Whether a signal is aimed at the agent is decided from the kernel's own
 * task_struct of the target (sentinel_signal is a BTF tracepoint program on
 * signal_generate, whose arguments the verifier types from the kernel's BTF),
 * never from a map: every pinned map is writable by root on the device.
 *
 * Classic tracepoint records are read through hand-written structs that
 * mirror the "format" files in tracefs; the loader checks those offsets
 * against the running kernel before attaching. task_struct is read through
 * CO-RE (preserve_access_index), relocated against the running kernel's BTF
 * by the agent before it hashes the instructions.
 */
#include "sentinel.h"

char __license[] SEC("license") = "GPL";

#define CLONE_THREAD 0x00010000
#define BPF_PROG_LOAD 5

/* events/task/task_newtask/format */
struct task_newtask_args {
	__u64 common;
	int pid;
	char comm[16];
	__u64 clone_flags;
};

/* events/syscalls/sys_enter_bpf/format */
struct sys_enter_bpf_args {
	__u64 common;
	int syscall_nr;
	__u64 cmd;
	__u64 uattr;
	__u64 size;
};

/* The prefix of union bpf_attr for BPF_PROG_LOAD (uapi/linux/bpf.h). */
struct prog_load_attr {
	__u32 prog_type;
	__u32 insn_cnt;
	__u64 insns;
	__u64 license;
	__u32 log_level;
	__u32 log_size;
	__u64 log_buf;
	__u32 kern_version;
	__u32 prog_flags;
	char prog_name[16];
};

/* Only the fields Sentinel reads, relocated against the running kernel's BTF
 * (CO-RE) by the agent before it hashes the instructions. */
struct task_struct {
	int exit_code;
	int pid;
	int tgid;
	char comm[16];
} __attribute__((preserve_access_index));

/*
 * A signal is generated for a task: record it when the task belongs to the
 * agent's thread group, as the target's own task_struct says.
 *
 * tp_btf/signal_generate runs with the raw tracepoint arguments
 *   trace_signal_generate(int sig, struct kernel_siginfo *info,
 *                         struct task_struct *task, int group, int result)
 * which the kernel's verifier types from BTF (btf_trace_signal_generate): the
 * load fails unless ctx[2] really is a task_struct pointer; the agent also
 * checks the whole prototype before loading (signalGenerateProto).
 */
SEC("tp_btf/signal_generate")
int sentinel_signal(unsigned long long *ctx)
{
	struct task_struct *task = (struct task_struct *)ctx[2];
	struct sentinel_event ev = {};
	struct sentinel_config *cfg = sentinel_lookup_config();
	__u32 tgid;

	if (!cfg || cfg->agent_tgid == 0 || !task)
		return 0;
	tgid = (__u32)task->tgid;
	if (tgid != cfg->agent_tgid)
		return 0;
	sentinel_sender(&ev);
	/* The agent signalling itself (Go's preemption SIGURG, SIGPIPE...) is noise. */
	if (ev.sender_tgid == cfg->agent_tgid)
		return 0;
	ev.kind = SENTINEL_KIND_SIGNAL;
	ev.target_tgid = tgid;
	ev.target_tid = (__u32)task->pid;
	ev.signal = (int)ctx[0];
	ev.result = (int)ctx[4];
	bpf_probe_read_kernel(ev.target_comm, sizeof(ev.target_comm), task->comm);
	sentinel_append(&ev);
	return 0;
}

/* The agent starts a thread: remember it in sentinel_threads, a record for
 * diagnostics only (root can write the map: no program decides anything from
 * it). */
SEC("tracepoint/task/task_newtask")
int sentinel_newtask(struct task_newtask_args *ctx)
{
	struct sentinel_config *cfg = sentinel_lookup_config();
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u32 tid;

	if (!cfg || cfg->agent_tgid == 0 || tgid != cfg->agent_tgid)
		return 0;
	if (!(ctx->clone_flags & CLONE_THREAD))
		return 0;
	tid = (__u32)ctx->pid;
	bpf_map_update_elem(&sentinel_threads, &tid, &tgid, BPF_ANY);
	return 0;
}

/* A task exits: forget it if it was one of the agent's threads, and record
 * the agent's main thread exiting with its exit code (wait status: the
 * terminating signal in the low 7 bits, or the exit status << 8). */
SEC("tracepoint/sched/sched_process_exit")
int sentinel_exit(void *ctx)
{
	struct sentinel_event ev = {};
	struct sentinel_config *cfg;
	struct task_struct *task;
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	int code = 0;

	bpf_map_delete_elem(&sentinel_threads, &tid);
	cfg = sentinel_lookup_config();
	if (!cfg || cfg->agent_tgid == 0 || tid != cfg->agent_tgid)
		return 0;
	task = (struct task_struct *)bpf_get_current_task();
	bpf_probe_read_kernel(&code, sizeof(code), &task->exit_code);
	sentinel_sender(&ev);
	ev.kind = SENTINEL_KIND_EXIT;
	ev.target_tgid = cfg->agent_tgid;
	ev.target_tid = tid;
	ev.result = code;
	sentinel_append(&ev);
	return 0;
}

/* Someone asks the kernel to load an eBPF program. */
SEC("tracepoint/syscalls/sys_enter_bpf")
int sentinel_bpf(struct sys_enter_bpf_args *ctx)
{
	struct sentinel_event ev = {};
	struct prog_load_attr attr = {};
	struct sentinel_config *cfg;

	if (ctx->cmd != BPF_PROG_LOAD)
		return 0;
	cfg = sentinel_lookup_config();
	sentinel_sender(&ev);
	/* The agent's own loads are measured into the runtime log instead. */
	if (cfg && cfg->agent_tgid != 0 && ev.sender_tgid == cfg->agent_tgid)
		return 0;
	ev.kind = SENTINEL_KIND_BPF_PROG_LOAD;
	if (bpf_probe_read_user(&attr, sizeof(attr), (void *)ctx->uattr) == 0) {
		ev.prog_type = attr.prog_type;
		ev.insn_cnt = attr.insn_cnt;
		__builtin_memcpy(ev.prog_name, attr.prog_name, sizeof(ev.prog_name));
	} else {
		ev.result = -1; /* attr unreadable */
	}
	sentinel_append(&ev);
	return 0;
}
