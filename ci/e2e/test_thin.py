#!/usr/bin/env python3
"""Appliance e2e of thin pools: dm-thin on a virtual disk, made and driven by stord through the
device-mapper ioctls, which this dev machine's kernel lacks (Debian's kernel in QEMU has them).

The appliance gets a blank 256 MiB virtio disk (/dev/vda). The tests make a thin pool on it
through the XML-RPC API, write data into thin volumes through the debug shell, snapshot and
clone them and read the data back, back a volume up into a dir pool and restore it, and kill
stord with -9 to see it take its pool and volumes back.

Run: python3 -m unittest -v ci/e2e/test_thin.py   (the image built with --debug-shell first)
"""

import sys
import tempfile
import time
import xmlrpc.client
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from appliance import ApplianceTestCase, Qmp  # noqa: E402
from appliance import FAULT_BAD_PARAMS, FAULT_CONFLICT, FAULT_NOT_FOUND  # noqa: E402


DISK_MIB = 256
GROWN_MIB = 512
TEMPLATE = "busybox"
TARBALL = "/usr/lib/cairn/debug/busybox-rootfs.tar"
# The filler writes a 4 MiB random seed 72 times (288 MiB) onto its 1 GiB disk in the pool:
# more than the pool has left.
SEED_MIB, COPIES = 4, 72
FILLER = ["/bin/sh", "-c",
          f"head -c {SEED_MIB << 20} /dev/urandom > /seed && i=0 && "
          f"while [ $i -lt {COPIES} ]; do cat /seed >> /fill; i=$((i+1)); done && sync && "
          f"echo done > /done && exec sleep 100000"]
DEVICE = "/dev/vda"
POOL = "tp"


def mapper(volume):
    pool, name = volume.split("/")
    return f"/dev/mapper/cairn.{pool}.{name}"


class ThinPools(ApplianceTestCase):
    name = "e2e-thin"

    @classmethod
    def setUpClass(cls):
        cls.scratch = tempfile.TemporaryDirectory(prefix="cairn-thin-")
        disk = Path(cls.scratch.name) / "thin.img"
        with open(disk, "wb") as f:
            f.truncate(DISK_MIB << 20)
        cls.disks = (disk,)
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        cls.scratch.cleanup()

    def sha(self, path, mib):
        _, out = self.guest(f"head -c {mib << 20} {path} | sha256sum")
        return out.split()[0]

    def test_1_a_pool_on_a_disk_that_holds_data_needs_force(self):
        # An ext4 superblock's magic where mkfs would put it.
        self.guest(f"printf '\\123\\357' | dd of={DEVICE} bs=1 seek=1080 conv=notrunc 2>/dev/null"
                   f" && sync")
        spec = {"name": POOL, "kind": "thin", "path": DEVICE, "overcommit": 40.0}
        why = self.fault(FAULT_CONFLICT, "pool.create", spec)
        self.assertIn("ext2/3/4 filesystem", why)
        self.assertEqual([p["name"] for p in self.call("pool.list")], [], "nothing half-made")
        self.fault(FAULT_BAD_PARAMS, "pool.create",
                   {"name": "nodev", "kind": "thin", "path": "/etc/hostname"})
        self.fault(FAULT_BAD_PARAMS, "pool.create", {"name": "nopath", "kind": "thin"})

        info = self.call("pool.create", dict(spec, force=True))
        self.assertEqual((info["kind"], info["path"]), ("thin", DEVICE))
        # The disk less the header (1 MiB) and the metadata (8 MiB).
        self.assertEqual(info["capacity_bytes"], (DISK_MIB - 9) << 20, info)
        self.assertEqual(info["allocated_bytes"], 0, info)
        _, out = self.guest("ls /dev/mapper")
        for dev in (f"cairn.{POOL}", f"cairn.{POOL}:meta", f"cairn.{POOL}:data"):
            self.assertIn(dev, out.split())

    def test_2_thin_volumes_overcommit_and_bad_input(self):
        a = self.call("volume.create", {"volume": f"{POOL}/a", "size": "1G"})
        self.assertEqual((a["size_bytes"], a["allocated_bytes"]), (1 << 30, 0), a)
        self.assertEqual(a["path"], mapper(f"{POOL}/a"))
        self.call("volume.create", {"volume": f"{POOL}/b", "size": "2G"})
        _, out = self.guest(f"blockdev --getsize64 {mapper(POOL + '/b')}")
        self.assertEqual(int(out.strip()), 2 << 30)
        info = self.call("pool.info", POOL)
        self.assertEqual(info["provisioned_bytes"], 3 << 30)
        self.assertGreater(info["overcommit_ratio"], 12.0, info)
        why = self.fault(FAULT_CONFLICT, "volume.create", {"volume": f"{POOL}/huge", "size": "10G"})
        self.assertIn("overcommit limit", why)
        self.fault(FAULT_BAD_PARAMS, "volume.create", {"volume": f"{POOL}/zero", "size": "0"})
        self.fault(FAULT_NOT_FOUND, "volume.create", {"volume": "nopool/x", "size": "1G"})
        self.fault(FAULT_BAD_PARAMS, "volume.create",
                   {"volume": f"{POOL}/full", "size": "1G", "full": True})
        self.fault(FAULT_CONFLICT, "volume.create", {"volume": f"{POOL}/a", "size": "1G"})
        names = sorted(v["volume"] for v in self.call("volume.list", POOL))
        self.assertEqual(names, [f"{POOL}/a", f"{POOL}/b"], "nothing half-made")
        grown = self.call("volume.grow", f"{POOL}/b", "2560M")
        self.assertEqual(grown["size_bytes"], 2560 << 20)
        self.fault(FAULT_BAD_PARAMS, "volume.grow", f"{POOL}/b", "1G")

    def test_3_data_survives_snapshot_write_and_clone(self):
        dev = mapper(f"{POOL}/a")
        self.guest("head -c 8388608 /dev/urandom > /tmp/orig")
        self.guest(f"dd if=/tmp/orig of={dev} bs=1M conv=fsync 2>/dev/null")
        orig = self.sha("/tmp/orig", 8)
        self.assertEqual(self.sha(dev, 8), orig)
        used = self.call("volume.info", f"{POOL}/a")["allocated_bytes"]
        self.assertTrue(8 << 20 <= used <= 9 << 20, used)

        snap = self.call("volume.snapshot", f"{POOL}/a", "s1")
        self.assertEqual([s["name"] for s in snap["snapshots"]], ["s1"])
        # Overwrite the first half of the volume after the snapshot.
        self.guest(f"head -c 4194304 /dev/urandom | dd of={dev} bs=1M conv=fsync,notrunc "
                   f"2>/dev/null")
        self.assertNotEqual(self.sha(dev, 8), orig)

        clone = self.call("volume.clone", f"{POOL}/a@s1", f"{POOL}/c")
        self.assertEqual(clone["size_bytes"], 1 << 30)
        self.assertEqual(self.sha(mapper(f"{POOL}/c"), 8), orig,
                         "the clone of the snapshot holds the data from before the write")
        # Shared blocks: the clone took no new data blocks (4 MiB were rewritten in a).
        used = self.call("pool.info", POOL)["allocated_bytes"]
        self.assertLess(used, 13 << 20, used)

    def test_4_backup_into_a_dir_pool_and_restore(self):
        self.call("pool.create", {"name": "bk", "kind": "dir"})
        # Small: the copy runs within the API's 5 s budget for a daemon's answer, under TCG.
        self.call("volume.create", {"volume": f"{POOL}/s", "size": "16M"})
        dev = mapper(f"{POOL}/s")
        self.guest(f"head -c 4194304 /dev/urandom | dd of={dev} bs=1M seek=8 conv=fsync "
                   f"2>/dev/null")
        want = self.sha(dev, 16)
        backup = self.call("volume.backup", f"{POOL}/s", "bk")
        self.assertEqual(backup["sha256"], want)
        self.assertEqual(backup["size_bytes"], 16 << 20)
        self.assertLessEqual(backup["allocated_bytes"], 5 << 20, "holes stay holes")
        _, out = self.guest("ls /dev/mapper")
        self.assertFalse([d for d in out.split() if "@backup" in d], "backup snapshot dropped")
        restored = self.call("volume.restore", backup["backup"], f"{POOL}/r")
        self.assertEqual(self.sha(restored["path"], 16), want)
        self.assertLessEqual(restored["allocated_bytes"], 5 << 20, restored)

    def test_5_stord_killed_takes_its_pool_back(self):
        before = sorted(v["volume"] for v in self.call("volume.list", POOL))
        want = self.sha(mapper(f"{POOL}/c"), 8)
        _, pid = self.guest("pidof stord")
        self.guest("kill -9 $(pidof stord)")
        deadline = time.monotonic() + 30
        while True:
            _, now = self.guest("pidof stord", check=False)
            try:
                if now.strip() and now.strip() != pid.strip():
                    listed = self.call("volume.list", POOL)
                    break
            except (xmlrpc.client.Fault, OSError):
                pass
            self.assertLess(time.monotonic(), deadline, "stord did not come back")
            time.sleep(1)
        self.assertEqual(sorted(v["volume"] for v in listed), before)
        self.call("volume.delete", f"{POOL}/c")
        self.assertEqual(self.call("volume.info", f"{POOL}/a")["snapshots"][0]["name"], "s1")
        # A snapshot is deleted alone: its thin id goes back to the pool, the volume stays.
        # (volume.info leaves out an empty list of snapshots.)
        info = self.call("volume.deleteSnapshot", f"{POOL}/a@s1")
        self.assertEqual(info.get("snapshots", []), [], info)
        self.assertEqual(self.call("volume.info", f"{POOL}/a").get("snapshots", []), [])
        self.fault(FAULT_NOT_FOUND, "volume.deleteSnapshot", f"{POOL}/a@s1")
        self.fault(FAULT_BAD_PARAMS, "volume.deleteSnapshot", f"{POOL}/a")
        self.call("volume.delete", f"{POOL}/a")
        _, out = self.guest("ls /dev/mapper")
        self.assertNotIn(f"cairn.{POOL}.a", out.split())
        self.assertNotEqual(want, "")

    def wait_for(self, what, check, limit):
        deadline = time.monotonic() + limit
        while True:
            got = check()
            if got:
                return got
            if time.monotonic() > deadline:
                self.fail(f"{what}: not within {limit} s; pool: {self.call('pool.info', POOL)}; "
                          f"container: {self.call('ct.info', 'filler')}")
            time.sleep(2)

    def test_6_a_full_pool_holds_its_writer_until_the_disk_grows(self):
        _, out = self.guest(f"cat {TARBALL}.sha256")
        self.call("template.import", TEMPLATE, TARBALL, out.split()[0])
        self.call("ct.create", {"name": "filler", "template": TEMPLATE, "command": FILLER,
                                "pool": POOL, "disk": 1 << 30})
        self.addCleanup(self.remove_filler)
        self.call("ct.start", "filler")
        held = "paused until the pool has room: ct:filler"
        info = self.wait_for("the pool full and its writer held",
                             lambda: (lambda i: i if held in " ".join(i.get("warnings", [])) else None)(
                                 self.call("pool.info", POOL)), 300)
        self.assertIn("critical: out of data space", " ".join(info.get("warnings", [])))
        self.assertEqual(self.call("ct.info", "filler")["state"], "paused")

        qmp = Qmp(self.qmp_socket)
        try:
            self.assertEqual(qmp.execute("block_resize", device="disk0", size=GROWN_MIB << 20), {})
        finally:
            qmp.close()
        info = self.wait_for("the pool grown and its writer going on",
                             lambda: (lambda i: i if not i.get("warnings") else None)(
                                 self.call("pool.info", POOL)), 120)
        self.assertEqual(info["capacity_bytes"], (GROWN_MIB - 9) << 20, info)
        self.wait_for("the writer done",
                      lambda: self.call("ct.exec", "filler", ["cat", "/done"])["stdout"].strip()
                      == "done", 300)
        self.assertEqual(self.call("ct.info", "filler")["state"], "running")
        # Every byte written, read back from the volume (not the page cache).
        _, where = self.guest("find /var/lib/cairn -path '*filler/disk/upper/fill'")
        upper = where.strip().rsplit("/", 1)[0]
        self.assertTrue(upper, "the filler's layer is not on its volume")
        self.guest("sync && echo 3 > /proc/sys/vm/drop_caches")
        # In a subshell: the debug shell's own working directory must not hold the volume's
        # filesystem (a lazy unmount would keep it, and the volume open, for as long).
        _, sums = self.guest(f"(cd {upper} && i=0 && while [ $i -lt {COPIES} ]; do cat seed; "
                             f"i=$((i+1)); done | sha256sum && sha256sum < fill && "
                             f"wc -c < fill)", timeout=600)
        want, got, size = [line.split()[0] for line in sums.strip().splitlines()]
        self.assertEqual(int(size), SEED_MIB * COPIES << 20)
        self.assertEqual(got, want, "data written while the pool was full is intact")

    def remove_filler(self):
        for method, args in (("ct.stopTimeout", ("filler", 0)), ("ct.delete", ("filler",))):
            try:
                self.call(method, *args)
            except xmlrpc.client.Fault as f:
                print(f"cleanup {method}: {f.faultString}")

    def test_9_pool_delete(self):
        for v in self.call("volume.list", POOL):
            self.call("volume.delete", v["volume"])
        self.assertTrue(self.call("pool.delete", POOL))
        _, out = self.guest("ls /dev/mapper")
        self.assertFalse([d for d in out.split() if d.startswith("cairn.")], out)
        # The device is free again: a new pool takes it without force.
        self.call("pool.create", {"name": "again", "kind": "thin", "path": DEVICE})
        self.assertTrue(self.call("pool.delete", "again"))


if __name__ == "__main__":
    import unittest
    unittest.main()
