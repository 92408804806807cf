#!/usr/bin/env bash
# VMs with the test guest: the VMM in-process (vmm/tests/bench_vm.rs: create → first serial
# line p50/p99, VMs per second, virtio-blk throughput in the guest beside the host on the same
# file: medians of VM_BENCH_BLK_ROUNDS (7) alternating rounds and the guest/host ratio, 64 MiB
# in 64 KiB requests), and the jailed VMM process under hostd (hostd/tests/bench_vm_hostd.rs: start → first
# console line, RSS). Figures only. VM_BENCH_N boots (default 100).
# PROFILE=debug skips the release build.
set -euo pipefail
cd "$(dirname "$0")/../.."
profile=()
[ "${PROFILE:-release}" = release ] && profile=(--release)
cargo build "${profile[@]}" --workspace --bins --quiet
# libtest prints its progress mark before a test's first output line: grep -o keeps the line.
cargo test -p vmm "${profile[@]}" --quiet --test bench_vm -- --ignored --nocapture \
  --test-threads=1 2>&1 | grep -oE '(cairn-vm:|SKIP ).*' || true
cargo test -p hostd "${profile[@]}" --quiet --test bench_vm_hostd -- --ignored --nocapture \
  --test-threads=1 2>&1 | grep -oE '(cairn-vm:|SKIP ).*' || true
