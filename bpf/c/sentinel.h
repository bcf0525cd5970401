/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * The Sentinel event ring, shared by sentinel.c and fortress.c.
 *
 * All maps are pinned by name under <pin dir>/maps, so they outlive the agent:
 * a restarted agent reads what happened while it was being killed.
 *
 *   sentinel_cfg     array[1]  written by the agent only (agent tgid, service
 *                              manager tgid, acknowledged sequence number)
 *   sentinel_seq     array[1]  written by BPF only: last sequence number handed out
 *   sentinel_events  array[SENTINEL_SLOTS]  the ring: event with sequence s
 *                              lives in slot s % SENTINEL_SLOTS
 *   sentinel_threads lru_hash  thread id -> thread group id of the agent's threads,
 *                              for diagnostics only: root can write it, so no
 *                              program decides anything from it (whether a
 *                              signal targets the agent comes from the target's
 *                              task_struct)
 *
 * A writer takes a sequence number with an atomic add, clears the slot's seq,
 * writes the record and stores seq last. A reader that finds a slot's seq
 * different from the one it expects knows the record was overwritten (lost)
 * or is being written.
 */
#ifndef PULSE_SENTINEL_H
#define PULSE_SENTINEL_H

#include "common.h"

#define SENTINEL_SLOTS 1024 /* power of two */

enum sentinel_kind {
	SENTINEL_KIND_SIGNAL = 1,          /* a signal generated for the agent */
	SENTINEL_KIND_BPF_PROG_LOAD = 2,   /* a BPF_PROG_LOAD attempt on the host */
	SENTINEL_KIND_FORTRESS_DENIED = 3, /* Fortress refused a signal to the agent */
	SENTINEL_KIND_EXIT = 4,            /* the agent's main thread exited */
};

struct sentinel_config {
	__u32 agent_tgid;   /* the agent process; 0 disables the signal records */
	__u32 manager_tgid; /* the service manager Fortress lets signal the agent */
	__u64 acked_seq;    /* last sequence number the verifier acknowledged */
};

struct sentinel_event {
	__u64 seq;     /* 1-based; 0 while the slot is being written */
	__u64 boot_ns; /* bpf_ktime_get_boot_ns() */
	__u32 kind;
	__u32 sender_tgid;
	__u32 sender_tid;
	__u32 sender_uid;
	__u32 target_tgid;
	__u32 target_tid;
	__s32 signal;
	__s32 result; /* signal_generate result code, the LSM verdict, or the exit code */
	__u32 prog_type;
	__u32 insn_cnt;
	char sender_comm[16];
	char target_comm[16];
	char prog_name[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sentinel_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sentinel_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sentinel_seq SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SENTINEL_SLOTS);
	__type(key, __u32);
	__type(value, struct sentinel_event);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sentinel_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sentinel_threads SEC(".maps");

static __always_inline struct sentinel_config *sentinel_lookup_config(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&sentinel_cfg, &zero);
}

/* Fills the sender fields of ev from the current task. */
static __always_inline void sentinel_sender(struct sentinel_event *ev)
{
	__u64 id = bpf_get_current_pid_tgid();

	ev->sender_tgid = id >> 32;
	ev->sender_tid = (__u32)id;
	ev->sender_uid = (__u32)bpf_get_current_uid_gid();
	bpf_get_current_comm(ev->sender_comm, sizeof(ev->sender_comm));
	ev->boot_ns = bpf_ktime_get_boot_ns();
}

/* Appends ev (built on the stack) to the ring. */
static __always_inline void sentinel_append(struct sentinel_event *ev)
{
	__u32 zero = 0;
	__u64 *next = bpf_map_lookup_elem(&sentinel_seq, &zero);
	struct sentinel_event *slot;
	__u64 seq;
	__u32 idx;

	if (!next)
		return;
	seq = __sync_fetch_and_add(next, 1) + 1;
	idx = (__u32)(seq & (SENTINEL_SLOTS - 1));
	slot = bpf_map_lookup_elem(&sentinel_events, &idx);
	if (!slot)
		return;
	slot->seq = 0;
	barrier();
	slot->boot_ns = ev->boot_ns;
	slot->kind = ev->kind;
	slot->sender_tgid = ev->sender_tgid;
	slot->sender_tid = ev->sender_tid;
	slot->sender_uid = ev->sender_uid;
	slot->target_tgid = ev->target_tgid;
	slot->target_tid = ev->target_tid;
	slot->signal = ev->signal;
	slot->result = ev->result;
	slot->prog_type = ev->prog_type;
	slot->insn_cnt = ev->insn_cnt;
	__builtin_memcpy(slot->sender_comm, ev->sender_comm, sizeof(slot->sender_comm));
	__builtin_memcpy(slot->target_comm, ev->target_comm, sizeof(slot->target_comm));
	__builtin_memcpy(slot->prog_name, ev->prog_name, sizeof(slot->prog_name));
	barrier();
	slot->seq = seq;
}

#endif /* PULSE_SENTINEL_H */
