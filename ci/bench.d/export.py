#!/usr/bin/env python3
"""iSCSI exports: 4 KiB sequential and random reads and writes of a LUN the appliance exports
(stord → the kernel's LIO, fileio on a dir pool's sparse file), measured from this machine,
beside tgt (tgtd on this machine, a thin LUN on a sparse file of the same size) in the same
run, alternating rounds. QEMU's iSCSI client (qemu-img bench for sequential runs at queue
depth 1 and 16, qemu-io for random ones at depth 1, its per-request times) is the initiator for
both.

Unfair by construction, and printed as such: LIO runs in the appliance's kernel under QEMU TCG
(every guest instruction emulated) behind slirp's port forward, tgt natively on this host on
loopback. The ratio says what a user of this rig sees, not what LIO on hardware does.

Figures are printed, never asserted.

Usage: ci/bench.d/export.py IMAGE_DIR ROUNDS   (IMAGE_DIR built with `image build`)
"""

import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if len(sys.argv) != 3:
    raise SystemExit(__doc__)
os.environ["CAIRN_APPLIANCE_DIR"] = str(Path(sys.argv[1]).resolve())
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "e2e"))
from appliance import ApplianceTestCase, free_port  # noqa: E402

SIZE = 256 << 20
# The part of the LUN the runs touch: written first (sequentially), so reads read data.
REGION = 64 << 20
BLOCK = 4096
SEQ_COUNT = REGION // BLOCK
RANDOM_OPS = 1000
INITIATOR = "iqn.1993-08.org.debian:01:cairn-bench"
CHAP_USER, CHAP_SECRET = "bench", "bench-secret-1"


class Appliance(ApplianceTestCase):
    name = "bench-export"
    forward_ports = (3260,)


def need(tool, package):
    if shutil.which(tool) is None:
        raise SystemExit(f"{tool} is missing: run ci/deps (package {package})")


class Tgt:
    """tgtd on loopback with its own control port (another tgtd may run here)."""

    def __init__(self, scratch):
        self.control = str(random.Random().randrange(100, 1000))
        self.port = free_port()
        self.iqn = "iqn.2026-12.org.cairn:bench:tgt"
        self.file = scratch / "tgt.img"
        with open(self.file, "wb") as f:
            f.truncate(SIZE)
        self.proc = subprocess.Popen(["tgtd", "-f", "-C", self.control, "--iscsi",
                                      f"portal=127.0.0.1:{self.port}"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)
        self.adm("--op", "new", "--mode", "target", "--tid", "1", "-T", self.iqn)
        self.adm("--op", "new", "--mode", "logicalunit", "--tid", "1", "--lun", "1",
                 "-b", str(self.file))
        self.adm("--op", "update", "--mode", "logicalunit", "--tid", "1", "--lun", "1",
                 "--params", "thin_provisioning=1")
        self.adm("--op", "bind", "--mode", "target", "--tid", "1", "-I", "ALL")

    def adm(self, *args, check=True):
        subprocess.run(["tgtadm", "-C", self.control, "--lld", "iscsi", *args], check=check,
                       capture_output=True, timeout=30)

    def opts(self):
        return (f"driver=iscsi,transport=tcp,portal=127.0.0.1:{self.port},target={self.iqn},"
                f"lun=1,initiator-name={INITIATOR}")

    def stop(self):
        # tgtd ignores SIGTERM while it has targets.
        self.adm("--op", "delete", "--mode", "target", "--tid", "1", "--force", check=False)
        self.adm("--op", "delete", "--mode", "system", check=False)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def sequential(opts, write, depth):
    """MiB/s of SEQ_COUNT sequential 4 KiB requests, `depth` in flight."""
    cmd = ["qemu-img", "bench", "-c", str(SEQ_COUNT), "-d", str(depth), "-s", str(BLOCK),
           "-t", "none", "--image-opts", opts] + (["-w", "--pattern=90"] if write else [])
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    took = re.search(r"Run completed in ([0-9.]+) seconds", p.stdout)
    if p.returncode != 0 or not took:
        raise SystemExit(f"{' '.join(cmd)} failed: {p.stdout}{p.stderr}")
    return REGION / 2**20 / float(took.group(1))


def scattered(opts, write, seed):
    """RANDOM_OPS 4 KiB requests at random offsets in the region, one at a time: their median
    latency (ms), and IOPS over their summed times (as qemu-img bench's totals are)."""
    r = random.Random(seed)
    verb = "write -P 0x5a" if write else "read"
    args = []
    for _ in range(RANDOM_OPS):
        args += ["-c", f"{verb} {r.randrange(REGION // BLOCK) * BLOCK} {BLOCK}"]
    p = subprocess.run(["qemu-io", "--image-opts", opts, *args], capture_output=True,
                       text=True, timeout=1800)
    rates = [float(x) for x in re.findall(r"and ([0-9.]+) ops/sec", p.stdout)]
    if p.returncode != 0 or len(rates) != RANDOM_OPS:
        raise SystemExit(f"qemu-io failed ({len(rates)} of {RANDOM_OPS} answered): "
                         f"{p.stdout[-2000:]}{p.stderr[-2000:]}")
    return statistics.median(1000 / x for x in rates), len(rates) / sum(1 / x for x in rates)


def main():
    rounds = int(sys.argv[2])
    need("tgtd", "tgt")
    need("qemu-img", "qemu-utils")
    with tempfile.TemporaryDirectory() as scratch:
        tgt = Tgt(Path(scratch))
        Appliance.setUpClass()
        try:
            run(Appliance("run"), tgt, rounds)
        finally:
            Appliance.tearDownClass()
            tgt.stop()


def run(appliance, tgt, rounds):
    appliance.call("pool.create", {"name": "bench", "kind": "dir"})
    appliance.call("volume.create", {"volume": "bench/lun", "size": f"{SIZE}"})
    info = appliance.call("export.create", {"volume": "bench/lun", "initiators": [
        {"iqn": INITIATOR, "chap_user": CHAP_USER, "chap_secret": CHAP_SECRET}]})
    lio = (f"driver=iscsi,transport=tcp,portal=127.0.0.1:{appliance.forwarded[3260]},"
           f"target={info['iqn']},lun=0,initiator-name={INITIATOR},user={CHAP_USER},"
           f"password={CHAP_SECRET}")
    peers = {"LIO (appliance, TCG)": lio, "tgt (host)": tgt.opts()}
    runs = [
        ("seq write QD1 MiB/s", lambda o, i: sequential(o, True, 1)),
        ("seq read QD1 MiB/s", lambda o, i: sequential(o, False, 1)),
        ("seq write QD16 MiB/s", lambda o, i: sequential(o, True, 16)),
        ("seq read QD16 MiB/s", lambda o, i: sequential(o, False, 16)),
        ("rand write QD1 IOPS", lambda o, i: scattered(o, True, i)[1]),
        ("rand write QD1 p50 ms", lambda o, i: scattered(o, True, i + 100)[0]),
        ("rand read QD1 IOPS", lambda o, i: scattered(o, False, i)[1]),
        ("rand read QD1 p50 ms", lambda o, i: scattered(o, False, i + 100)[0]),
    ]
    figures = {(what, peer): [] for what, _ in runs for peer in peers}
    for i in range(rounds):
        for what, measure in runs:
            for peer, opts in peers.items():
                figures[(what, peer)].append(measure(opts, i))
    print(f"{rounds} rounds, 4 KiB requests over a {REGION >> 20} MiB region of a "
          f"{SIZE >> 20} MiB thin LUN; medians")
    print("UNFAIR BY CONSTRUCTION: LIO runs under QEMU TCG behind slirp, tgt natively here")
    lio_name, tgt_name = list(peers)
    print(f"{'':24}{lio_name:>22}{tgt_name:>14}{'LIO/tgt':>10}")
    for what, _ in runs:
        a = statistics.median(figures[(what, lio_name)])
        b = statistics.median(figures[(what, tgt_name)])
        print(f"{what:24}{a:22.2f}{b:14.2f}{a / b:10.3f}")
    allocated = appliance.call("volume.info", "bench/lun")["allocated_bytes"]
    print(f"the exported volume holds {allocated >> 20} MiB of its {SIZE >> 20} MiB (thin)")
    appliance.call("export.delete", info["name"])


if __name__ == "__main__":
    main()
