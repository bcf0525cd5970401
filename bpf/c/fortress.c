// SPDX-License-Identifier: GPL-2.0-only
/*
 * Fortress: a BPF-LSM supervisor that refuses signals aimed at the agent
 * unless they come from the agent itself or from its service manager, and
 * records each refusal in the Sentinel ring.
 *
 * Whether it runs is the kernel's decision: BPF-LSM needs CONFIG_BPF_LSM, "bpf"
 * in the active LSM list, and a lockdown / policy that lets LSM programs load.
 * The agent reports exactly what the kernel allowed.
 *
 * task_struct is read through CO-RE (preserve_access_index); the agent applies
 * the relocation itself before hashing the instructions, so the measured digest
 * is the one handed to the kernel.
 */
#include "sentinel.h"

char __license[] SEC("license") = "GPL";

#define EPERM 1
#define SIGCHLD 17
#define SIGCONT 18
#define SIGURG 23
#define SIGWINCH 28

struct task_struct {
	int pid;
	int tgid;
} __attribute__((preserve_access_index));

/* int security_task_kill(struct task_struct *p, struct kernel_siginfo *info,
 *                        int sig, const struct cred *cred); ctx[4] is the
 * verdict of the LSM programs before this one. */
SEC("lsm/task_kill")
int fortress_task_kill(unsigned long long *ctx)
{
	struct task_struct *p = (struct task_struct *)ctx[0];
	int sig = (int)ctx[2];
	int prev = (int)ctx[4];
	struct sentinel_event ev = {};
	struct sentinel_config *cfg;
	__u32 tgid;

	if (prev != 0)
		return prev;
	cfg = sentinel_lookup_config();
	if (!cfg || cfg->agent_tgid == 0)
		return 0;
	tgid = (__u32)p->tgid;
	if (tgid != cfg->agent_tgid)
		return 0;
	/* Harmless signals and existence probes stay allowed. */
	if (sig == 0 || sig == SIGCHLD || sig == SIGCONT || sig == SIGURG || sig == SIGWINCH)
		return 0;
	sentinel_sender(&ev);
	if (ev.sender_tgid == cfg->agent_tgid ||
	    (cfg->manager_tgid != 0 && ev.sender_tgid == cfg->manager_tgid))
		return 0;
	ev.kind = SENTINEL_KIND_FORTRESS_DENIED;
	ev.target_tgid = tgid;
	ev.target_tid = (__u32)p->pid;
	ev.signal = sig;
	ev.result = -EPERM;
	sentinel_append(&ev);
	return -EPERM;
}
