/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Shared definitions for Pulse's eBPF programs.
 *
 * The programs deliberately avoid vmlinux.h and kernel UAPI headers: every
 * structure they read is declared here by hand (tracepoint records follow the
 * "format" files under /sys/kernel/tracing/events), so generating the objects
 * needs only clang and libbpf's bpf_helpers.h, and the objects are identical
 * on every build host with the same clang.
 */
#ifndef PULSE_COMMON_H
#define PULSE_COMMON_H

typedef unsigned char __u8;
typedef signed char __s8;
typedef unsigned short __u16;
typedef short __s16;
typedef unsigned int __u32;
typedef int __s32;
typedef unsigned long long __u64;
typedef long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;

#include <bpf/bpf_helpers.h>

/* Map types, flags and helper constants from include/uapi/linux/bpf.h. */
#define BPF_MAP_TYPE_HASH 1
#define BPF_MAP_TYPE_ARRAY 2
#define BPF_MAP_TYPE_LRU_HASH 9
#define BPF_ANY 0
#define BPF_NOEXIST 1
#define BPF_F_NO_PREALLOC (1U << 0)

#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

/* A compiler barrier: keeps the stores before it ahead of the stores after it. */
#define barrier() asm volatile("" ::: "memory")

#endif /* PULSE_COMMON_H */
