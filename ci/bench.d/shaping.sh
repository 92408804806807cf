#!/usr/bin/env bash
# Traffic shaping: achieved layer-2 rate, error and RTT under load for Cairn's netd::tc beside
# the same htb / IFB+htb layout set up by plain iproute2 `tc`, at 10, 100 and 500 Mbit/s in
# both directions, in one run on the same veth pair. Needs root, iproute2 and ping.
# Figures are printed, never asserted (tests/shaping.rs asserts the ±2%).
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo test --release --quiet -p netd --test shaping -- \
    --ignored --exact bench_shaping_table --nocapture --test-threads=1
