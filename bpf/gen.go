package bpf

// The eBPF objects are compiled from c/ by bpf2go (version pinned by go.mod)
// and committed, so building the Go code never needs clang. Regenerate with
// `go generate ./bpf` (Debian: clang, llvm, libbpf-dev); bpf/gen-check.sh
// fails when the committed output is stale.
//
// -mcpu=v3 is needed for the atomic fetch-and-add of the Sentinel sequence
// number (Linux >= 5.12). bpf2go passes -fdebug-prefix-map, -fno-ident and
// strips DWARF (BTF stays), so the objects do not depend on the checkout path.

//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -target bpfel -cc clang -strip llvm-strip -cflags "-O2 -mcpu=v3 -Wall -Werror" -type shield_addr -type shield_entry shield c/shield.c
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -target bpfel -cc clang -strip llvm-strip -cflags "-O2 -mcpu=v3 -Wall -Werror" -type sentinel_event -type sentinel_config sentinel c/sentinel.c
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -target bpfel -cc clang -strip llvm-strip -cflags "-O2 -mcpu=v3 -Wall -Werror" fortress c/fortress.c
