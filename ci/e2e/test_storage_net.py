#!/usr/bin/env python3
"""Appliance e2e for stord's network pools (issue 12): an nfs pool (NAS) mounted from
nfs-ganesha running on this host, and an iscsi pool (SAN in) logged in to tgt running on this
host; both reached from the appliance through QEMU's user network, where 10.0.2.2 is this
host's loopback.

The peers are real daemons started here and stopped at the end, also when a test fails:
rpcbind + ganesha.nfsd (VFS FSAL) serving two directories over NFSv3 and v4, tgtd serving a
target with two LUNs (one with CHAP). What the appliance writes is read back on this host
through the peers' own protocol (libnfs's nfs-cat, libiscsi's iscsi-ls/iscsi-readcapacity16).

Run: python3 -m unittest -v ci/e2e/test_storage_net.py   (the image built with --debug-shell)
"""

import ctypes
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import xmlrpc.client
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from appliance import ApplianceTestCase, free_port  # noqa: E402
from appliance import FAULT_BAD_PARAMS, FAULT_BUSY, FAULT_CONFLICT, FAULT_NOT_FOUND  # noqa: E402


# This host as the appliance sees it through QEMU's user network.
HOST = "10.0.2.2"
IQN = "iqn.2026-12.org.cairn.test:san"
CHAP_IQN = "iqn.2026-12.org.cairn.test:chap"
CHAP_USER, CHAP_SECRET = "cairn", "0123456789abcd"
# The LUNs of IQN (number, MiB) and of CHAP_IQN.
LUNS = ((1, 48), (2, 24))
CHAP_LUNS = ((1, 16),)


def running(name):
    """Whether a process called `name` runs (rpcbind is one per host: started only if none)."""
    return subprocess.run(["pgrep", "-x", name], capture_output=True).returncode == 0


def die_with_parent():
    """In a peer's child before exec: SIGKILL when this test process dies, so that a run
    killed before its cleanups (a timeout, ^C twice) leaves no NFS server or target behind."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def wait_port(port, within=20):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True,
                          text=True).stdout.strip():
            return
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on port {port} after {within} s")


class Peers:
    """The NAS and SAN peers on this host, each stopped by stop() whatever happened."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="cairn-storage-net-"))
        self.procs = []
        self.tgt_targets = []
        self.tgt_control = None

    def start(self, name, cmd):
        log = open(self.dir / f"{name}.log", "w")
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir,
                             preexec_fn=die_with_parent)
        self.procs.append((name, p))
        return p

    def start_nas(self):
        """ganesha on free ports, exporting v4/ and v3/ (pseudo paths /v4 and /v3 for both
        versions), root not squashed, no grace period (a fresh server lets opens through)."""
        self.nfs_port, self.mount_port = free_port(), free_port()
        for export in ("v4", "v3"):
            (self.dir / export).mkdir()
        if not running("rpcbind"):
            # ganesha registers its v3 programs with rpcbind and will not start without one.
            self.start("rpcbind", ["rpcbind", "-f", "-w"])
            wait_port(111)
        exports = "".join(f"""
EXPORT {{
    Export_Id = {n}; Path = {self.dir / export}; Pseudo = /{export};
    Access_Type = RW; Squash = No_Root_Squash; SecType = sys;
    Protocols = 3, 4; Transports = TCP;
    FSAL {{ Name = VFS; }}
}}""" for n, export in ((1, "v4"), (2, "v3")))
        (self.dir / "recovery").mkdir()
        (self.dir / "ganesha.conf").write_text(f"""
NFS_CORE_PARAM {{
    NFS_Port = {self.nfs_port};
    MNT_Port = {self.mount_port};
    NLM_Port = {free_port()};
    Rquota_Port = {free_port()};
    Enable_NLM = false;
    Enable_RQUOTA = false;
    Protocols = 3, 4;
    Mount_Path_Pseudo = true;
}}
NFSV4 {{ Graceless = true; RecoveryBackend = fs; }}
NFS_KRB5 {{ Active_krb5 = false; }}
LOG {{ Default_Log_Level = WARN; }}
{exports}
""")
        self.start("ganesha", ["ganesha.nfsd", "-F", "-f", str(self.dir / "ganesha.conf"),
                               "-L", str(self.dir / "ganesha.nfsd.log"),
                               "-p", str(self.dir / "ganesha.pid")])
        wait_port(self.nfs_port)
        wait_port(self.mount_port)

    def nfs_url(self, path, version):
        """A libnfs URL of `path` (under the exports) as this host reads it."""
        if version == 4:
            return f"nfs://127.0.0.1{path}?version=4&nfsport={self.nfs_port}"
        return f"nfs://127.0.0.1{path}?nfsport={self.nfs_port}&mountport={self.mount_port}"

    def start_san(self):
        """tgtd on a free portal port (and its own control port, beside any other tgtd) with
        two targets: IQN (LUNS, no CHAP) and CHAP_IQN (CHAP_LUNS, CHAP user CHAP_USER)."""
        self.iscsi_port = free_port()
        self.tgt_control = str(1000 + os.getpid() % 20000)
        self.start("tgtd", ["tgtd", "-f", "-C", self.tgt_control, "--iscsi",
                            f"portal=127.0.0.1:{self.iscsi_port}"])
        wait_port(self.iscsi_port)
        for tid, iqn, luns in ((1, IQN, LUNS), (2, CHAP_IQN, CHAP_LUNS)):
            self.tgtadm("--op", "new", "--mode", "target", "--tid", str(tid), "-T", iqn)
            self.tgt_targets.append(tid)
            for lun, mib in luns:
                backing = self.lun_file(tid, lun)
                with open(backing, "wb") as f:
                    f.truncate(mib << 20)
                self.tgtadm("--op", "new", "--mode", "logicalunit", "--tid", str(tid),
                            "--lun", str(lun), "-b", str(backing))
            self.tgtadm("--op", "bind", "--mode", "target", "--tid", str(tid), "-I", "ALL")
        self.tgtadm("--op", "new", "--mode", "account", "--user", CHAP_USER,
                    "--password", CHAP_SECRET)
        self.tgtadm("--op", "bind", "--mode", "account", "--tid", "2", "--user", CHAP_USER)

    def lun_file(self, tid, lun):
        return self.dir / f"t{tid}-lun{lun}.img"

    def tgtadm(self, *args, check=True):
        p = subprocess.run(["tgtadm", "-C", self.tgt_control, "--lld", "iscsi", *args],
                           capture_output=True, text=True, timeout=30)
        if check and p.returncode != 0:
            raise AssertionError(f"tgtadm {' '.join(args)}: {p.stderr}")
        return p

    def stop(self):
        # tgtd ignores SIGTERM while it has targets: remove them, then the daemon itself.
        for tid in self.tgt_targets:
            self.tgtadm("--op", "delete", "--mode", "target", "--tid", str(tid), "--force",
                        check=False)
        if self.tgt_control:
            self.tgtadm("--op", "delete", "--mode", "system", check=False)
        for name, p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
        self.procs.clear()
        shutil.rmtree(self.dir, ignore_errors=True)


class StorageNet(ApplianceTestCase):
    name = "e2e-storage-net"
    mount_dir = None
    # test_25 boots the VMM's test guest (from the kit) on a LUN.
    guest_kit = True
    # One CPU, as ci/e2e/test_vm.py explains: nested starts on two met the rig's own wedge.
    cpus = 1

    @classmethod
    def setUpClass(cls):
        cls.peers = Peers()
        # Class cleanups run also when setUpClass fails, unlike tearDownClass.
        cls.addClassCleanup(cls.peers.stop)
        cls.peers.start_nas()
        cls.peers.start_san()
        super().setUpClass()

    def guest_mounts(self):
        return self.guest("cat /proc/self/mountinfo")[1]

    def host(self, *cmd):
        p = subprocess.run(list(cmd), capture_output=True, timeout=120)
        self.assertEqual(p.returncode, 0, f"{cmd}: {p.stderr.decode(errors='replace')}")
        return p.stdout

    def write_pattern(self, path, mib):
        """Random bytes into the first `mib` MiB of `path` in the guest; their sha256 and the
        whole file's."""
        _, out = self.guest(
            f"dd if=/dev/urandom of={path} bs=1M count={mib} conv=notrunc,fsync 2>/dev/null"
            f" && sha256sum {path}", timeout=120)
        return out.split()[0]

    def test_10_nfs_v4_pool_read_back_from_the_nas(self):
        info = self.call("pool.create", {"name": "nas4", "kind": "nfs",
                                         "source": f"{HOST}:/v4",
                                         "options": f"port={self.peers.nfs_port}"})
        self.assertEqual(info["kind"], "nfs")
        # Where stord mounts its nfs pools (test_12 checks a failed create leaves none there).
        type(self).mount_dir = str(Path(info["path"]).parent)
        self.assertGreater(info["capacity_bytes"], 0)
        mount = [l for l in self.guest_mounts().splitlines() if info["path"] in l]
        self.assertEqual(len(mount), 1, self.guest_mounts())
        self.assertIn(" nfs4 ", mount[0])
        self.assertIn("vers=4.1", mount[0])
        self.assertIn(f"addr={HOST}", mount[0])

        vol = self.call("volume.create", {"volume": "nas4/disk", "size": "16M"})
        self.assertEqual(vol["size_bytes"], 16 << 20)
        digest = self.write_pattern(vol["path"], 4)
        listing = self.host("nfs-ls", self.peers.nfs_url("/v4/volumes", 4)).decode()
        self.assertIn("disk.raw", listing)
        data = self.host("nfs-cat", self.peers.nfs_url("/v4/volumes/disk.raw", 4))
        self.assertEqual(len(data), 16 << 20)
        self.assertEqual(hashlib.sha256(data).hexdigest(), digest)

        # A pool that holds volumes stays; emptied, it goes and leaves the export as found.
        why = self.fault(FAULT_CONFLICT, "pool.delete", "nas4")
        self.assertIn("disk", why)
        self.assertTrue(self.call("volume.delete", "nas4/disk"))
        self.assertTrue(self.call("pool.delete", "nas4"))
        self.assertNotIn(info["path"], self.guest_mounts())
        self.assertEqual(os.listdir(self.peers.dir / "v4"), [])

    def test_11_nfs_v3_pool_through_cairnctl(self):
        p = self.cairnctl("pool", "create", "nas3", "--kind", "nfs", "--source",
                          f"{HOST}:/v3", "--options",
                          f"vers=3,port={self.peers.nfs_port},"
                          f"mountport={self.peers.mount_port}")
        self.assertEqual(p.returncode, 0, p.stderr)
        mount = [l for l in self.guest_mounts().splitlines() if "/v3 " in l]
        self.assertEqual(len(mount), 1, self.guest_mounts())
        self.assertIn("vers=3", mount[0])
        self.assertIn("nolock", mount[0])
        p = self.cairnctl("volume", "create", "nas3/data", "--size", "8M")
        self.assertEqual(p.returncode, 0, p.stderr)
        path = self.call("volume.info", "nas3/data")["path"]
        digest = self.write_pattern(path, 2)
        data = self.host("nfs-cat", self.peers.nfs_url("/v3/volumes/data.raw", 3))
        self.assertEqual(hashlib.sha256(data).hexdigest(), digest)
        self.assertTrue(self.call("volume.delete", "nas3/data"))
        p = self.cairnctl("pool", "delete", "nas3")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertNotIn("/v3 ", self.guest_mounts())

    def test_12_nfs_bad_input(self):
        before = self.guest_mounts()
        for spec, code, says in [
            ({"source": "nas"}, FAULT_BAD_PARAMS, "not an NFS export"),
            # A mount point given that something else is mounted on.
            ({"source": f"{HOST}:/v4", "options": f"port={self.peers.nfs_port}",
              "path": "/run"}, FAULT_CONFLICT, "tmpfs tmpfs mounted on it"),
            ({}, FAULT_BAD_PARAMS, "needs source"),
            ({"source": f"{HOST}:/v4", "options": "addr=1.2.3.4"}, FAULT_BAD_PARAMS,
             "stord's to set"),
            ({"source": f"{HOST}:/v4", "options": "vers=3;rm"}, FAULT_BAD_PARAMS, "not one of"),
            # Nothing listens on that port of this host.
            ({"source": f"{HOST}:/v4", "options": f"port={free_port()}"}, FAULT_BUSY,
             "does not answer"),
            # An address nobody answers from (TEST-NET-1).
            ({"source": "192.0.2.1:/x"}, FAULT_BUSY, "does not answer"),
            ({"source": f"{HOST}:/nope", "options": f"port={self.peers.nfs_port}"},
             FAULT_NOT_FOUND, "no such export"),
        ]:
            started = time.monotonic()
            why = self.fault(code, "pool.create", {"name": "bad", "kind": "nfs", **spec})
            self.assertIn(says, why, spec)
            # Bounded: the probe's 5 s, the mount's own soft timeouts; never a hang.
            self.assertLess(time.monotonic() - started, 60, spec)
        self.assertNotIn("bad", [p["name"] for p in self.call("pool.list")])
        self.assertEqual(self.guest_mounts().count(" nfs"), before.count(" nfs"))
        self.guest(f"! test -e {getattr(self, 'mount_dir', '/nonexistent')}/bad")

    # --- SAN in: an iscsi pool on tgt -------------------------------------------------------

    def san_source(self, iqn=IQN, chap=None, portals=None):
        cred = f"{chap[0]}%{chap[1]}@" if chap else ""
        portals = portals or [f"{HOST}:{self.peers.iscsi_port}"]
        return f"iscsi://{cred}{','.join(portals)}/{iqn}"

    def test_20_iscsi_pool_of_luns(self):
        info = self.call("pool.create", {"name": "san", "kind": "iscsi",
                                         "source": self.san_source()})
        self.assertEqual(info["kind"], "iscsi")
        self.assertEqual(info["volumes"], len(LUNS))
        self.assertEqual(info["capacity_bytes"], sum(mib << 20 for _, mib in LUNS))
        vols = {v["volume"]: v for v in self.call("volume.list", "san")}
        self.assertEqual(sorted(vols), [f"san/lun{n}" for n, _ in LUNS])
        for n, mib in LUNS:
            v = self.call("volume.info", f"san/lun{n}")
            self.assertEqual(v["size_bytes"], mib << 20)
            self.assertRegex(v["path"], r"^/dev/sd[a-z]+$")
            self.guest(f"test -b {v['path']}")
        # The session is the kernel's, to this host's tgt.
        _, out = self.guest("cat /sys/class/iscsi_session/session*/targetname")
        self.assertIn(IQN, out)

        # Written in the appliance, read back from the LUN's file on the target's side.
        lun2 = self.call("volume.info", "san/lun2")["path"]
        _, out = self.guest(f"dd if=/dev/urandom of=/tmp/pattern bs=1M count=2 2>/dev/null && "
                            f"dd if=/tmp/pattern of={lun2} bs=1M conv=fsync 2>/dev/null && "
                            f"sha256sum /tmp/pattern")
        with open(self.peers.lun_file(1, 2), "rb") as f:
            self.assertEqual(hashlib.sha256(f.read(2 << 20)).hexdigest(), out.split()[0])

        # The SAN makes LUNs: volume.create/delete/grow are refused with what to do.
        for method, arg in [("volume.create", {"volume": "san/extra", "size": "1M"}),
                            ("volume.delete", "san/lun1")]:
            why = self.fault(FAULT_CONFLICT, method, arg)
            self.assertIn("the SAN makes LUNs; a LUN is a volume of pool \"san\"", why)
        self.fault(FAULT_NOT_FOUND, "volume.info", "san/lun9")

    def test_21_a_lun_in_use_keeps_its_pool(self):
        """A guest's disk on a LUN: held, the pool cannot go; released, it can (logged out)."""
        # Never started: vm.create holds its disks. Any ELF passes the kernel check.
        self.call("vm.create", {"name": "onlun", "vcpus": 1, "memory_mib": 32,
                                "kernel": "/usr/bin/stord",
                                "disks": [{"volume": "san/lun1"}]})
        try:
            self.assertEqual(self.call("volume.info", "san/lun1")["used_by"], ["vm:onlun"])
            why = self.fault(FAULT_CONFLICT, "pool.delete", "san")
            self.assertIn("lun1", why)
        finally:
            self.call("vm.delete", "onlun")
        self.assertEqual(self.call("volume.info", "san/lun1").get("used_by", []), [])
        self.assertTrue(self.call("pool.delete", "san"))
        self.assertNotIn(IQN, self.sessions())

    def test_22_iscsi_pool_with_chap(self):
        why = self.fault(FAULT_BAD_PARAMS, "pool.create", {
            "name": "chap", "kind": "iscsi", "source": self.san_source(CHAP_IQN)})
        self.assertIn("wants CHAP", why)
        why = self.fault(FAULT_BAD_PARAMS, "pool.create", {
            "name": "chap", "kind": "iscsi",
            "source": self.san_source(CHAP_IQN, ("cairn", "wrong-secret-1"))})
        self.assertIn("wrong CHAP user or secret", why)
        self.assertNotIn("wrong-secret-1", why)
        p = self.cairnctl("pool", "create", "chap", "--kind", "iscsi", "--source",
                          self.san_source(CHAP_IQN, (CHAP_USER, CHAP_SECRET)))
        self.assertEqual(p.returncode, 0, p.stderr)
        info = self.call("pool.info", "chap")
        self.assertNotIn(CHAP_SECRET, str(info))
        self.assertEqual(info["capacity_bytes"], CHAP_LUNS[0][1] << 20)
        self.assertEqual([v["volume"] for v in self.call("volume.list", "chap")], ["chap/lun1"])
        self.assertTrue(self.call("pool.delete", "chap"))

    def sessions(self):
        _, out = self.guest("cat /sys/class/iscsi_session/session*/targetname 2>/dev/null",
                            check=False)
        return sorted(out.split())

    def test_23_iscsi_bad_input(self):
        port = self.peers.iscsi_port
        before = self.sessions()
        for source, code, says in [
            ("iscsi://nowhere", FAULT_BAD_PARAMS, "no /IQN"),
            (f"iscsi://{HOST}:{port}/not-an-iqn", FAULT_BAD_PARAMS, "not a target name"),
            (f"iscsi://{HOST}:{free_port()}/{IQN}", FAULT_BUSY, "does not answer"),
            (f"iscsi://{HOST}:{port}/{IQN}.nope", FAULT_NOT_FOUND, "does not offer target"),
        ]:
            started = time.monotonic()
            why = self.fault(code, "pool.create", {"name": "bad", "kind": "iscsi",
                                                   "source": source})
            self.assertIn(says, why, source)
            self.assertLess(time.monotonic() - started, 60, source)
        self.assertNotIn("bad", [p["name"] for p in self.call("pool.list")])
        self.assertEqual(self.sessions(), before, "a failed create left a session")

    def test_24_second_portal_that_does_not_answer(self):
        """Two portals, one dead: the pool is made through the other."""
        dead = f"{HOST}:{free_port()}"
        live = f"{HOST}:{self.peers.iscsi_port}"
        info = self.call("pool.create", {"name": "multi", "kind": "iscsi",
                                         "source": self.san_source(portals=[dead, live])})
        self.assertEqual(info["volumes"], len(LUNS))
        self.assertTrue(self.call("pool.delete", "multi"))

    def test_25_a_vm_on_a_lun(self):
        """A guest's disk on a LUN: the VMM's test guest (cairn.test=blk) reads sector 0,
        which this host wrote into the LUN's file on the target's side, and writes sectors
        1-8, which this host then finds in that file: guest -> VMM -> /dev/sdX -> iSCSI ->
        tgt and back."""
        text = b"written on the SAN host"
        # Before the login: the appliance then reads the LUN afresh (no page cache of it).
        with open(self.peers.lun_file(1, 1), "r+b") as f:
            f.write(text + b"\n")
        kit = self.mount_guest_kit()
        self.call("pool.create", {"name": "vmsan", "kind": "iscsi",
                                  "source": self.san_source()})
        try:
            self.call("vm.create", {"name": "lunvm", "vcpus": 1, "memory_mib": 32,
                                    "kernel": f"{kit}/test-guest", "cmdline": "cairn.test=blk",
                                    "disks": [{"volume": "vmsan/lun1"}]})
            try:
                self.assertEqual(self.call("volume.info", "vmsan/lun1")["used_by"],
                                 ["vm:lunvm"])
                self.call("vm.start", "lunvm")
                deadline = time.monotonic() + 120
                while (self.call("vm.info", "lunvm")["state"] not in ("stopped", "crashed")
                       and time.monotonic() < deadline):
                    time.sleep(0.5)
                console = self.call("vm.console", "lunvm", 65536)
                self.assertIn(f"blk: sector0={text.decode()}", console)
                self.assertIn("blk: wrote 8 sectors, flushed, read back ok", console)
            finally:
                try:
                    self.call("vm.stop", "lunvm", 0)
                except xmlrpc.client.Fault:
                    pass  # it stopped by itself (the test guest resets when done)
                self.call("vm.delete", "lunvm")
        finally:
            self.call("pool.delete", "vmsan")
        with open(self.peers.lun_file(1, 1), "rb") as f:
            sectors = f.read(9 * 512)[512:]
        for n in range(1, 9):
            sector = sectors[(n - 1) * 512:n * 512]
            line = f"cairn-guest-sector-{n}\n".encode()
            self.assertEqual(sector[:504], (line * 24)[:504], f"sector {n}")

    def test_30_pools_come_back_after_a_stord_restart(self):
        """stord's records: after a restart the nfs pool is found mounted (not mounted again)
        and the iscsi pool logged in (its session kept), their volumes as they were."""
        self.call("pool.create", {"name": "back4", "kind": "nfs", "source": f"{HOST}:/v4",
                                  "options": f"port={self.peers.nfs_port}"})
        self.call("volume.create", {"volume": "back4/keep", "size": "4M"})
        self.call("pool.create", {"name": "backsan", "kind": "iscsi",
                                  "source": self.san_source()})
        luns = {v["volume"]: v["path"] for v in self.call("volume.list", "backsan")}
        sessions = self.sessions()
        self.call("host.restartService", "stord")
        self.assert_services_running(within=60)
        deadline = time.monotonic() + 60
        while True:
            try:
                names = [p["name"] for p in self.call("pool.list")]
                if {"back4", "backsan"} <= set(names):
                    break
            except xmlrpc.client.Fault as f:
                # 106 while the new stord is not on the bus yet.
                self.assertEqual(f.faultCode, FAULT_BUSY, f.faultString)
            self.assertLess(time.monotonic(), deadline, "the pools did not come back")
            time.sleep(1)
        self.assertEqual(self.call("volume.info", "back4/keep")["size_bytes"], 4 << 20)
        self.assertEqual({v["volume"]: v["path"] for v in self.call("volume.list", "backsan")},
                         luns)
        self.assertEqual(self.sessions(), sessions)
        mounts = [l for l in self.guest_mounts().splitlines() if "/back4 " in l]
        self.assertEqual(len(mounts), 1, mounts)
        self.assertTrue(self.call("volume.delete", "back4/keep"))
        self.assertTrue(self.call("pool.delete", "back4"))
        self.assertTrue(self.call("pool.delete", "backsan"))
        self.assertNotIn("/back4 ", self.guest_mounts())
        self.assertNotIn(IQN, self.sessions())


if __name__ == "__main__":
    unittest.main()
