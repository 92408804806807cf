#!/usr/bin/env python3
"""Storage (issue 12), measured on one appliance booted in QEMU with three blank virtio disks:
vda for a thin pool (dm-thin), vdb formatted ext4 in the appliance for a dir pool (sparse raw
files), vdc carrying a small static writer program built here.

1. Latency of volume.create (1 GiB), volume.snapshot, volume.clone (from that snapshot) and
   volume.delete (the clone; the volume with its snapshot) per pool kind — dir, thin, and nfs
   from nfs-ganesha on this host when it starts — as an XML-RPC client here sees them on one
   keep-alive HTTPS connection. DATA_MIB of random bytes are written into each volume (through
   the debug shell, not timed) before its snapshot, so that a snapshot has data to keep (a dir
   pool copies it, dm-thin shares it). Beside them, on the same connection, the API's own floor:
   system.listMethods (apid alone) and pool.info (apid → D-Bus → stord). Medians and p90 of
   ROUNDS rounds (NFS_ROUNDS for nfs), the kinds alternating within each round. A call apid
   gives up on (fault 106 after its 5 s budget for a daemon's answer) is counted late and timed
   until stord is seen done with it.
2. 4 KiB random writes at queue depth 1 inside the appliance: the writer (O_DIRECT, one pwrite
   at a time, its own clock) on a thin volume's /dev/mapper device beside a dir pool volume (a
   raw sparse file on ext4), each fresh in every round: a first pass that allocates (dm-thin
   provisions 64 KiB blocks, ext4 its extents) and a second pass rewriting the same offsets.
   This is the appliance's own block layer under TCG, not a nested guest's virtio-blk.
3. Overcommit: OVER_VOLUMES volumes of 1 GiB in the thin pool (and in the dir pool, for
   contrast), then data written into a few of them; provisioned, allocated and the ratio
   (provisioned / capacity) as pool.info reports them.

Under QEMU TCG every guest instruction is emulated: absolute figures say what this rig does,
not what the appliance does on hardware; compare within a table only. Figures are printed,
never asserted.

Usage: ci/bench.d/storage.py IMAGE_DIR ROUNDS   (IMAGE_DIR built with `image build --debug-shell`)
"""

import os
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import xmlrpc.client
from pathlib import Path

if len(sys.argv) != 3:
    raise SystemExit(__doc__)
os.environ["CAIRN_APPLIANCE_DIR"] = str(Path(sys.argv[1]).resolve())
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "e2e"))
from appliance import ApplianceTestCase  # noqa: E402
from test_storage_net import HOST, Peers  # noqa: E402

THIN_DISK_MIB = 512
EXT4_DISK_MIB = 1024
# Written into each volume before its snapshot (a dir pool's snapshot copies what a volume
# holds, dm-thin shares it).
DATA_MIB = 1
# The random writes: OPS requests of 4 KiB over the first REGION bytes of a 1 GiB volume.
REGION = 256 << 20
OPS = 2000
OVER_VOLUMES = 20
# MiB written into the first few volumes of the overcommit table.
OVER_WRITES = (4, 8, 16, 32)
SECTORS = 512
# How often a late operation is asked after (s): its time is that much coarser.
POLL = 0.5
# Rounds of the nfs pool: its snapshots and clones read the whole 1 GiB volume over NFS
# (no SEEK_DATA through the mount), minutes under TCG each.
NFS_ROUNDS = 2
# model/src/fault.rs
FAULT_NOT_FOUND = 104
FAULT_BUSY = 106
# Where the ext4 disk is mounted in the appliance (its root is read-only).
MOUNT = "/run/bench-storage"

# The writer run inside the appliance: the image has busybox (dd forks a process per request,
# which would measure fork under TCG), no fio.
WRITER_C = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: randw PATH REGION_BYTES OPS SEED\n");
        return 2;
    }
    long long blocks = atoll(argv[2]) / 4096;
    int ops = atoi(argv[3]);
    if (blocks <= 0 || ops <= 0) {
        fprintf(stderr, "randw: REGION_BYTES and OPS must be positive\n");
        return 2;
    }
    int fd = open(argv[1], O_WRONLY | O_DIRECT);
    if (fd < 0) {
        perror(argv[1]);
        return 1;
    }
    void *buf;
    double *took = malloc(sizeof(double) * ops);
    if (posix_memalign(&buf, 4096, 4096) || !took) {
        fprintf(stderr, "randw: out of memory\n");
        return 1;
    }
    memset(buf, 0x5a, 4096);
    srandom(strtoul(argv[4], NULL, 10));
    double start = now();
    for (int i = 0; i < ops; i++) {
        off_t at = (off_t)(random() % blocks) * 4096;
        double t = now();
        if (pwrite(fd, buf, 4096, at) != 4096) {
            perror("pwrite");
            return 1;
        }
        took[i] = now() - t;
    }
    double total = now() - start;
    close(fd);
    qsort(took, ops, sizeof(double), by_value);
    printf("%.1f %.1f %.1f\n", ops / total, took[ops / 2] * 1e6, took[ops * 9 / 10] * 1e6);
    return 0;
}
"""


def build_writer(scratch):
    """The writer, static (the appliance has no libc of its own to offer it), as a raw disk
    image padded to whole sectors; its length."""
    cc = shutil.which("gcc") or shutil.which("gcc-12")
    if cc is None:
        raise SystemExit("gcc is missing: run ci/deps (package gcc-12)")
    src, exe = scratch / "randw.c", scratch / "randw"
    src.write_text(WRITER_C)
    subprocess.run([cc, "-O2", "-static", "-o", str(exe), str(src)], check=True)
    subprocess.run(["strip", str(exe)], check=True)
    length = exe.stat().st_size
    disk = scratch / "tool.img"
    shutil.copy(exe, disk)
    with open(disk, "r+b") as f:
        f.truncate(-(-length // (1 << 20)) << 20)
    return disk, length


def blank(path, mib):
    with open(path, "wb") as f:
        f.truncate(mib << 20)
    return path


class Appliance(ApplianceTestCase):
    name = "bench-storage"


def pct(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def ms(fn):
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


class Bench:
    def __init__(self, appliance, tool_len):
        self.a = appliance
        # One keep-alive connection for every timed call: a TLS handshake per call (which
        # appliance.call makes) would be most of what is measured.
        self.api = xmlrpc.client.ServerProxy(appliance.url,
                                             context=ssl._create_unverified_context())
        self.tool_len = tool_len

    def rpc(self, method, *params):
        return getattr(self.api, method)(*params)

    def sh(self, command, timeout=300):
        return self.a.guest(command, timeout=timeout)[1]

    def disk_by_size(self, mib):
        out = self.sh(f"for d in /sys/block/vd*; do [ \"$(cat $d/size)\" = "
                      f"{(mib << 20) // SECTORS} ] && echo /dev/${{d##*/}}; done; true").split()
        if len(out) != 1:
            raise SystemExit(f"want one virtio disk of {mib} MiB in the appliance, found {out}")
        return out[0]

    def setup(self, nfs_peers):
        tool = self.disk_by_size(-(-self.tool_len // (1 << 20)))
        self.sh(f"head -c {self.tool_len} {tool} > /tmp/randw && chmod 755 /tmp/randw")
        ext4 = self.disk_by_size(EXT4_DISK_MIB)
        # By its path: the shell's busybox has an mke2fs applet of its own, without -t; no
        # mke2fs.conf in the image (its built-in profile knows ext4, as hostd's ct disks use it).
        self.sh(f"MKE2FS_CONFIG=/nonexistent /usr/sbin/mke2fs -q -F -t ext4 -m 0 {ext4} && "
                f"mkdir -p {MOUNT} && mount -t ext4 {ext4} {MOUNT}", timeout=120)
        self.kinds = {}
        self.rpc("pool.create", {"name": "dp", "kind": "dir", "path": f"{MOUNT}/pool",
                                 "overcommit": 100.0})
        self.kinds["dir (ext4 on virtio)"] = "dp"
        self.rpc("pool.create", {"name": "tp", "kind": "thin",
                                 "path": self.disk_by_size(THIN_DISK_MIB), "overcommit": 100.0})
        self.kinds["thin (dm-thin on virtio)"] = "tp"
        if nfs_peers is not None:
            self.rpc("pool.create", {"name": "np", "kind": "nfs", "source": f"{HOST}:/v4",
                                     "options": f"port={nfs_peers.nfs_port}"})
            self.kinds["nfs (ganesha here, v4)"] = "np"

    def write(self, path, mib):
        self.sh(f"dd if=/dev/urandom of={path} bs=1M count={mib} conv=notrunc,fsync "
                f"2>/dev/null")

    def timed(self, method, *params, done):
        """ms of one call and whether it was late: when apid gives up waiting for stord
        (fault 106 after its budget for a daemon's answer), `done()` is polled every
        POLL seconds until stord has finished anyway, and the time until then is taken."""
        started = time.perf_counter()
        try:
            self.rpc(method, *params)
            return (time.perf_counter() - started) * 1000, False
        except xmlrpc.client.Fault as f:
            if f.faultCode != FAULT_BUSY or "did not answer" not in f.faultString:
                raise
        deadline = time.monotonic() + 900
        while not done():
            if time.monotonic() > deadline:
                raise SystemExit(f"{method}{params}: not done 900 s after apid gave up on it")
            time.sleep(POLL)
        return (time.perf_counter() - started) * 1000, True

    def there(self, volume, snapshot=None, gone=False):
        """Whether stord answers that `volume` (with `snapshot`) is there, or with `gone`
        that it is not; False while stord is too busy to answer."""
        try:
            info = self.rpc("volume.info", volume)
        except xmlrpc.client.Fault as f:
            if f.faultCode == FAULT_NOT_FOUND:
                return gone
            if f.faultCode == FAULT_BUSY:
                return False
            raise
        return not gone and (snapshot is None
                             or snapshot in [s["name"] for s in info["snapshots"]])

    def latency(self, rounds):
        steps = ("create 1 GiB", "snapshot", "clone of snapshot", "delete clone",
                 "delete (+snapshot)")
        floors = ("system.listMethods", "pool.info")
        times = {(kind, step): [] for kind in self.kinds for step in steps + floors}
        for i in range(rounds):
            for kind, pool in self.kinds.items():
                vol, clone = f"{pool}/v{i}", f"{pool}/c{i}"
                t = times
                if pool == "np" and i >= NFS_ROUNDS:
                    continue
                t[(kind, floors[0])].append((ms(lambda: self.rpc("system.listMethods")), False))
                t[(kind, floors[1])].append((ms(lambda: self.rpc("pool.info", pool)), False))
                t[(kind, steps[0])].append(self.timed(
                    "volume.create", {"volume": vol, "size": "1G"},
                    done=lambda: self.there(vol)))
                self.write(self.rpc("volume.info", vol)["path"], DATA_MIB)
                t[(kind, steps[1])].append(self.timed(
                    "volume.snapshot", vol, "s", done=lambda: self.there(vol, "s")))
                t[(kind, steps[2])].append(self.timed(
                    "volume.clone", f"{vol}@s", clone, done=lambda: self.there(clone)))
                t[(kind, steps[3])].append(self.timed(
                    "volume.delete", clone, done=lambda: self.there(clone, gone=True)))
                t[(kind, steps[4])].append(self.timed(
                    "volume.delete", vol, done=lambda: self.there(vol, gone=True)))
        print(f"\n-- volume operations, ms as an XML-RPC client here sees them (one keep-alive "
              f"connection); {rounds} rounds, {DATA_MIB} MiB written into each volume before "
              f"its snapshot; median / p90 [n late: apid gave up after its 5 s budget for "
              f"stord's answer; their time is until stord was seen done, +-{POLL} s]")
        kinds = list(self.kinds)
        print(f"{'':22}" + "".join(f"{k:>34}" for k in kinds))
        print(f"{'rounds':22}" + "".join(f"{len(times[(k, floors[0])]):34}" for k in kinds))
        for step in steps + floors:
            label = step if step in steps else f"floor: {step}"
            cells = []
            for k in kinds:
                took = [v for v, _ in times[(k, step)]]
                late = sum(1 for _, was in times[(k, step)] if was)
                cells.append(f"{statistics.median(took):.1f} / {pct(took, 0.9):.1f}"
                             + (f" [{late} late]" if late else ""))
            print(f"{label:22}" + "".join(f"{c:>34}" for c in cells))

    def random_writes(self, rounds):
        targets = {"thin volume (dm-thin)": "tp", "raw file (dir pool, ext4)": "dp"}
        passes = ("first write (allocating)", "rewrite (allocated)")
        got = {(t, p): [] for t in targets for p in passes}
        for i in range(rounds):
            for target, pool in targets.items():
                vol = f"{pool}/io{i}"
                path = self.rpc("volume.create", {"volume": vol, "size": "1G"})["path"]
                for p in passes:
                    # The same seed in both passes: the rewrite hits exactly what the first
                    # pass allocated.
                    out = self.sh(f"/tmp/randw {path} {REGION} {OPS} {i + 1}")
                    iops, p50, p90 = (float(x) for x in out.split())
                    got[(target, p)].append((iops, p50, p90))
                self.rpc("volume.delete", vol)
        print(f"\n-- 4 KiB random writes, queue depth 1, O_DIRECT, inside the appliance (its "
              f"kernel's block layer under TCG, virtio-blk to a sparse file here; not a nested "
              f"guest); {OPS} requests over {REGION >> 20} MiB of a fresh 1 GiB volume, "
              f"{rounds} rounds; medians")
        print(f"{'':28}{'pass':>26}{'IOPS':>10}{'p50 us':>10}{'p90 us':>10}")
        for p in passes:
            for target in targets:
                rows = got[(target, p)]
                print(f"{target:28}{p:>26}" + "".join(
                    f"{statistics.median(r[j] for r in rows):10.1f}" for j in range(3)))
        for p in passes:
            thin = statistics.median(r[0] for r in got[("thin volume (dm-thin)", p)])
            raw = statistics.median(r[0] for r in got[("raw file (dir pool, ext4)", p)])
            print(f"thin/raw IOPS, {p}: {thin / raw:.3f}")

    def overcommit(self):
        print(f"\n-- overcommit: {OVER_VOLUMES} volumes of 1 GiB, then "
              f"{'+'.join(map(str, OVER_WRITES))} MiB written into {len(OVER_WRITES)} of them "
              f"(pool.info; ratio = provisioned / capacity)")
        print(f"{'pool':8}{'step':>30}{'capacity MiB':>14}{'provisioned MiB':>17}"
              f"{'allocated MiB':>15}{'ratio':>8}{'alloc/prov':>12}")
        for pool in ("tp", "dp"):
            def row(step):
                info = self.rpc("pool.info", pool)
                prov, alloc = info["provisioned_bytes"], info["allocated_bytes"]
                print(f"{pool + ' ' + info['kind']:8}{step:>30}{info['capacity_bytes'] >> 20:14}"
                      f"{prov >> 20:17}{alloc / 2**20:15.1f}{info['overcommit_ratio']:8.2f}"
                      f"{alloc / prov if prov else 0:12.4f}")
            row("empty")
            for n in range(OVER_VOLUMES):
                self.rpc("volume.create", {"volume": f"{pool}/o{n}", "size": "1G"})
            row(f"{OVER_VOLUMES} volumes created")
            for n, mib in enumerate(OVER_WRITES):
                self.write(self.rpc("volume.info", f"{pool}/o{n}")["path"], mib)
            row(f"{sum(OVER_WRITES)} MiB written")
            for n in range(OVER_VOLUMES):
                self.rpc("volume.delete", f"{pool}/o{n}")


def start_nas():
    """ganesha as ci/e2e/test_storage_net.py runs it, or None (and why) when it does not
    start: the nfs column is optional here, the e2e test is where nfs pools must work."""
    peers = Peers()
    try:
        peers.start_nas()
        return peers
    except (OSError, AssertionError, subprocess.SubprocessError) as e:
        print(f"nfs: left out, ganesha did not start here: {e}")
        peers.stop()
        return None


def main():
    rounds = int(sys.argv[2])
    print("UNDER QEMU TCG (every guest instruction emulated): absolute figures are this rig's, "
          "compare within a table")
    with tempfile.TemporaryDirectory(prefix="cairn-bench-storage-") as scratch:
        scratch = Path(scratch)
        tool, tool_len = build_writer(scratch)
        Appliance.disks = (blank(scratch / "thin.img", THIN_DISK_MIB),
                           blank(scratch / "ext4.img", EXT4_DISK_MIB), tool)
        nas = start_nas()
        try:
            Appliance.setUpClass()
            try:
                bench = Bench(Appliance("run"), tool_len)
                bench.setup(nas)
                bench.latency(rounds)
                bench.random_writes(rounds)
                bench.overcommit()
            finally:
                Appliance.tearDownClass()
        finally:
            if nas is not None:
                nas.stop()


if __name__ == "__main__":
    main()
