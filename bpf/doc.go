// Package bpf holds Pulse's own eBPF programs and their loader: Shield (a tcx
// or XDP packet filter with a pinned quarantine map), Sentinel (tracepoints
// recording signals aimed at the agent and eBPF program loads into a pinned
// ring that outlives the agent) and Fortress (a BPF-LSM supervisor whose status
// is what the kernel allows). Every program is measured through a [Measurer]
// after the kernel has loaded it and before it is attached or pinned.
//
// See docs/ebpf.md for the design decisions.
package bpf
