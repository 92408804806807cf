#!/usr/bin/env bash
# Containers: create+start → container init running, p50/p99 over N busybox containers
# (default 200; `ct_bench.sh N` or CT_BENCH_N), Cairn beside crun running the same busybox
# rootfs in the same run; stop+delete time; host memory per running container (monitor +
# container processes, kernel Slab growth); disk used by a new container. Figures only.
# Cairn's containers include a network namespace with a veth on a bridge (netd) and an
# id-mapped user namespace; crun's get a network namespace without a link (its default spec).
# crun refuses this machine's hybrid cgroup layout unless the v2 mount is hidden, so it runs in
# a private mount namespace with /sys/fs/cgroup/unified unmounted (MACHINE-NOTES).
# Needs root. PROFILE=debug skips the release build.
set -euo pipefail
cd "$(dirname "$0")/../.."
n="${1:-${CT_BENCH_N:-200}}"
profile=()
[ "${PROFILE:-release}" = release ] && profile=(--release)
work="$(mktemp -d /tmp/cairn-ct-bench.XXXXXX)"
trap 'rm -rf "$work"' EXIT

# The sandbox runs this build's init, netd and apid beside the hostd under test.
cargo build "${profile[@]}" --workspace --bins --quiet
echo "-- Cairn ($n containers)"
# libtest prints its progress mark before a test's first output line: grep -o keeps the line.
CT_BENCH_N="$n" CT_BENCH_ROOTFS="$work/rootfs" \
  cargo test -p hostd "${profile[@]}" --quiet --test bench_ct -- --ignored --nocapture \
  --test-threads=1 2>&1 | grep -oE '(cairn[ :]|SKIP ).*' || true

if ! command -v crun >/dev/null; then
  apt-get install -y crun >/dev/null 2>&1 || { echo "crun: not installed and apt-get failed; skipped"; exit 0; }
fi
[ -d "$work/rootfs/bin" ] || { echo "crun: no busybox rootfs was made; skipped"; exit 0; }
echo "-- crun $(crun --version | head -1 | awk '{print $3}') ($n containers, same busybox rootfs)"
mkdir -p "$work/bundle"
(cd "$work/bundle" && crun spec)
python3 - "$work/bundle/config.json" "$work/rootfs" <<'PY'
import json, sys
path, rootfs = sys.argv[1], sys.argv[2]
c = json.load(open(path))
c["root"] = {"path": rootfs, "readonly": True}
c["process"]["terminal"] = False
c["process"]["args"] = ["/sbin/init"]
json.dump(c, open(path, "w"), indent=1)
PY
unshare -m --propagation private env N="$n" B="$work/bundle" R="$work/crun-state" bash -c '
umount /sys/fs/cgroup/unified 2>/dev/null || true
python3 - <<"PY"
import os, subprocess, time, statistics
n, bundle, root = int(os.environ["N"]), os.environ["B"], os.environ["R"]
crun = ["crun", "--root", root]
def pct(v, p):
    v = sorted(v); return v[min(len(v) - 1, round((len(v) - 1) * p))] * 1e3
start, stop = [], []
slab0 = int(next(l.split()[1] for l in open("/proc/meminfo") if l.startswith("Slab:")))
for i in range(n):
    t = time.perf_counter()
    subprocess.run(crun + ["run", "-d", "--bundle", bundle, f"b{i}"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    start.append(time.perf_counter() - t)
time.sleep(0.5)
slab1 = int(next(l.split()[1] for l in open("/proc/meminfo") if l.startswith("Slab:")))
rss = 0
for i in range(n):
    st = subprocess.run(crun + ["state", f"b{i}"], capture_output=True, text=True).stdout
    import json
    pid = json.loads(st).get("pid", 0)
    try:
        rss += int(next(l.split()[1] for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS:")))
    except Exception:
        pass
for i in range(n):
    t = time.perf_counter()
    subprocess.run(crun + ["kill", f"b{i}", "KILL"], stderr=subprocess.DEVNULL)
    subprocess.run(crun + ["delete", "-f", f"b{i}"], check=True)
    stop.append(time.perf_counter() - t)
print(f"crun run -d → init running: p50 {pct(start, .5):.1f} ms p99 {pct(start, .99):.1f} ms")
print(f"crun kill+delete: p50 {pct(stop, .5):.1f} ms p99 {pct(stop, .99):.1f} ms")
print(f"crun memory per running container: init RSS {rss / n:.0f} KiB (no monitor: conmon-less), kernel Slab +{(slab1 - slab0) / n:.0f} KiB")
PY
'
