#!/usr/bin/env bash
# netd: reconcile of 100 bridged networks from empty and the idempotent re-run with 10 ports
# each (8 taps + 2 veths into a guest namespace), and AttachPort latency p50/p99. Figures only.
# Needs root (throwaway network namespaces). PROFILE=debug skips the release build.
set -euo pipefail
cd "$(dirname "$0")/../.."
profile=()
[ "${PROFILE:-release}" = release ] && profile=(--release)
cargo test -p netd "${profile[@]}" --quiet --test bench_reconcile -- --ignored --nocapture \
  --test-threads=1 2>&1 | grep -E '^(reconcile|AttachPort|SKIP)'
