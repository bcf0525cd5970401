// SPDX-License-Identifier: GPL-2.0-only
/*
 * Shield: drops traffic to and from quarantined IPv4/IPv6 addresses.
 *
 * The verifier orders healthy agents to isolate a compromised host; the agent
 * writes the host's address into shield_quarantine (pinned, so the quarantine
 * outlives an agent restart) and these programs drop matching packets.
 *
 * Two attach flavours share one parser:
 *   - tcx ingress/egress (default, Linux >= 6.6): ingress drops packets whose
 *     source is quarantined, egress drops packets whose destination is.
 *   - xdp (fallback for older kernels): ingress only, source address only.
 *
 * Addresses are stored as 16 bytes; IPv4 uses the IPv4-mapped IPv6 form
 * ::ffff:a.b.c.d so one map serves both families.
 */
#include "common.h"
#include <bpf/bpf_endian.h>

char __license[] SEC("license") = "GPL";

#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88A8

/* tc return codes (TCX_NEXT lets later programs in the chain decide). */
#define TCX_NEXT -1
#define TCX_DROP 2
#define XDP_DROP 1
#define XDP_PASS 2

/* The prefix of struct __sk_buff that the programs read (uapi/linux/bpf.h). */
struct __sk_buff {
	__u32 len;
	__u32 pkt_type;
	__u32 mark;
	__u32 queue_mapping;
	__u32 protocol;
	__u32 vlan_present;
	__u32 vlan_tci;
	__u32 vlan_proto;
	__u32 priority;
	__u32 ingress_ifindex;
	__u32 ifindex;
	__u32 tc_index;
	__u32 cb[5];
	__u32 hash;
	__u32 tc_classid;
	__u32 data;
	__u32 data_end;
};

struct xdp_md {
	__u32 data;
	__u32 data_end;
	__u32 data_meta;
	__u32 ingress_ifindex;
	__u32 rx_queue_index;
	__u32 egress_ifindex;
};

struct shield_addr {
	__u8 bytes[16];
};

struct shield_entry {
	__u64 added_unix_ns; /* written by the agent */
	__u64 drops;         /* incremented here */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct shield_addr);
	__type(value, struct shield_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} shield_quarantine SEC(".maps");

enum { DIR_SOURCE = 0, DIR_DEST = 1 };

/*
 * Returns the quarantine entry matching the packet's source (DIR_SOURCE) or
 * destination (DIR_DEST) address, or NULL. data points at the Ethernet header.
 */
static __always_inline struct shield_entry *match(void *data, void *data_end, int dir)
{
	struct shield_addr key = {};
	__u8 *p = data;
	__u16 proto;

	if (p + ETH_HLEN > (__u8 *)data_end)
		return NULL;
	proto = *(__u16 *)(p + 12);
	p += ETH_HLEN;

	/* Up to two VLAN tags (802.1ad outer, 802.1Q inner). */
#pragma unroll
	for (int i = 0; i < 2; i++) {
		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if (p + 4 > (__u8 *)data_end)
			return NULL;
		proto = *(__u16 *)(p + 2);
		p += 4;
	}

	if (proto == bpf_htons(ETH_P_IP)) {
		if (p + 20 > (__u8 *)data_end)
			return NULL;
		key.bytes[10] = 0xff;
		key.bytes[11] = 0xff;
		__builtin_memcpy(&key.bytes[12], p + (dir == DIR_SOURCE ? 12 : 16), 4);
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		if (p + 40 > (__u8 *)data_end)
			return NULL;
		__builtin_memcpy(key.bytes, p + (dir == DIR_SOURCE ? 8 : 24), 16);
	} else {
		return NULL;
	}
	return bpf_map_lookup_elem(&shield_quarantine, &key);
}

static __always_inline int quarantined(void *data, void *data_end, int dir)
{
	struct shield_entry *e = match(data, data_end, dir);

	if (!e)
		return 0;
	__sync_fetch_and_add(&e->drops, 1);
	return 1;
}

SEC("tcx/ingress")
int shield_ingress(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;

	return quarantined(data, data_end, DIR_SOURCE) ? TCX_DROP : TCX_NEXT;
}

SEC("tcx/egress")
int shield_egress(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;

	return quarantined(data, data_end, DIR_DEST) ? TCX_DROP : TCX_NEXT;
}

SEC("xdp")
int shield_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	return quarantined(data, data_end, DIR_SOURCE) ? XDP_DROP : XDP_PASS;
}
