#!/usr/bin/env bash
# `cairnctl config check` (the validation init runs at boot) on big host.toml files: wall and
# CPU time (medians of RUNS; time(1) counts CPU in 10 ms steps) and peak RSS, for N networks
# that all share one subnet (every pair overlaps: the worst case for the overlap check and for
# the number of diagnostics) and for N networks with disjoint subnets (a valid file).
# Figures only.
# Usage: ci/bench.d/config_check.sh [CAIRNCTL] [RUNS] [N...]; defaults: the release build (made
# if missing), 5 runs, 1000 and 20000 networks.
set -euo pipefail
cd "$(dirname "$0")/../.."
release=${CARGO_TARGET_DIR:-target}/release
ctl=${1:-$release/cairnctl}
runs=${2:-5}
shift $(( $# > 2 ? 2 : $# ))
sizes=(1000 20000)
if [ $# -gt 0 ]; then sizes=("$@"); fi
if [ ! -x "$ctl" ]; then
  cargo build --release -p cairnctl --quiet
  ctl=$release/cairnctl
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

python3 - "$ctl" "$runs" "$dir" "${sizes[@]}" <<'EOF'
import os, statistics, subprocess, sys, time

ctl, runs, tmp = sys.argv[1], int(sys.argv[2]), sys.argv[3]
HEAD = '[host]\nhostname = "bench"\n[host.management]\ninterface = "eth0"\ndhcp = true\n'

def write(path, n, overlapping):
    with open(path, "w") as f:
        f.write(HEAD)
        for i in range(n):
            subnet = "10.0.0.0/24" if overlapping else f"10.{i >> 8}.{i & 255}.0/24"
            f.write(f'\n[[network]]\nname = "n{i}"\nkind = "bridged"\nsubnet = "{subnet}"\n')

def measure(path):
    times, cpus, rss, lines = [], [], 0, 0
    for _ in range(runs):
        # /usr/bin/time reports cairnctl's own peak RSS; a fork from Python would carry
        # Python's in the child's high-water mark.
        start = time.monotonic()
        out = subprocess.run(["/usr/bin/time", "-f", "%M %U %S", ctl, "config", "check", path],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        times.append(time.monotonic() - start)
        err = out.stderr.decode().splitlines()
        peak, user, system = err[-1].split()
        rss = max(rss, int(peak))
        cpus.append(float(user) + float(system))
        # Diagnostics start with the file name; time(1) adds its own lines.
        lines = sum(1 for line in err if line.startswith(path))
    return statistics.median(times), statistics.median(cpus), rss, lines

for n in map(int, sys.argv[4:]):
    for overlapping in (True, False):
        path = os.path.join(tmp, f"host-{n}-{int(overlapping)}.toml")
        write(path, n, overlapping)
        t, cpu, rss, lines = measure(path)
        kind = "overlapping" if overlapping else "disjoint   "
        # CPU time beside wall time: on a shared build machine the wall time is mostly waiting.
        print(f"config check {n:>6} networks, {kind}: {t * 1000:9.1f} ms wall, "
              f"{cpu * 1000:7.0f} ms CPU (medians of {runs}), peak RSS {rss / 1024:6.1f} MiB, "
              f"{lines} diagnostics")
EOF
