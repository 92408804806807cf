#!/usr/bin/env bash
# The fuzz harnesses ci/test runs for a few seconds each, run longer: the XML-RPC parser,
# writer and every action's decoding, host.toml, netd's tc dump decoder and encode→decode round
# trip, and mutated requests to the real apid on a private bus. Prints each harness's inputs,
# inputs/s and distinct outcomes. A property that breaks is not a figure: the minimized input
# is printed and the script fails.
# Budget: CAIRN_FUZZ_ITERS inputs per in-process harness (default 1000000), CAIRN_FUZZ_E2E_ITERS
# requests to apid (default 50000), from CAIRN_FUZZ_SEED (default: the tests' fixed seed; set
# another to explore new inputs). Built with the `fuzz` profile: release speed with overflow
# checks and debug assertions kept, which is what a fuzzer trips. PROFILE=debug uses the test
# build ci/test already made.
# Usage: ci/bench.d/fuzz.sh [ITERS] [E2E_ITERS]
set -euo pipefail
cd "$(dirname "$0")/../.."
export CAIRN_FUZZ_ITERS=${1:-${CAIRN_FUZZ_ITERS:-1000000}}
export CAIRN_FUZZ_E2E_ITERS=${2:-${CAIRN_FUZZ_E2E_ITERS:-50000}}
profile=(--profile fuzz)
[ "${PROFILE:-fuzz}" = debug ] && profile=()
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
harness() {
  # One cargo run per crate; the report lines are the figures, the rest only matters on
  # failure. (libtest may print "test NAME ... " on the same line as a report.)
  if cargo test "${profile[@]}" --quiet "$@" -- --nocapture --test-threads=1 >"$log" 2>&1; then
    grep -oE 'fuzz [^:]+: [0-9]+ inputs.*' "$log" | sed -E 's/: \{.*//' || true
  else
    status=1
    grep -E 'fuzz |failed|minimized|original|panicked' "$log" | cut -c1-2000
  fi
}
echo "seed ${CAIRN_FUZZ_SEED:-default}, $CAIRN_FUZZ_ITERS inputs per harness, $CAIRN_FUZZ_E2E_ITERS requests to apid"
harness -p model --test fuzz_xmlrpc --test fuzz_config
harness -p netd --lib tc::fuzz_tests
harness -p apid --test fuzz
exit $status
