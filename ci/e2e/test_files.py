#!/usr/bin/env python3
"""Appliance e2e for files in and out (issue 13): a 200 MiB template uploaded with `cairnctl
template import NAME FILE` (PUT /uploads/NAME, then template.import of upload:NAME as a task)
while apid's memory stays flat; `cairnctl ct push|pull` of a binary file with its bytes and
mode intact; escapes through a container's links and /proc refused.

The template is busybox (the host's busybox-static, as the sandbox tests build it) padded with
200 MiB of random bytes, so that it must import and its containers run.

Run: python3 -m unittest -v ci/e2e/test_files.py   (the image built with --debug-shell first)
"""

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from appliance import ApplianceTestCase  # noqa: E402
from appliance import FAULT_BAD_PARAMS, FAULT_NOT_FOUND, ext4_state_disk  # noqa: E402

BUSYBOX = "/bin/busybox"
PAD_MIB = 200
RSS_GROWTH_LIMIT_KIB = 32 * 1024
CT = "files1"


def busybox_tarball(dir: Path) -> Path:
    """A busybox rootfs tar with a PAD_MIB random file in it."""
    root = dir / "root"
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "root",
              "run"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "bin/busybox").write_bytes(Path(BUSYBOX).read_bytes())
    os.chmod(root / "bin/busybox", 0o755)
    applets = subprocess.run([BUSYBOX, "--list-full"], capture_output=True, text=True,
                             check=True).stdout.split()
    for applet in applets:
        link = root / applet
        if applet == "bin/busybox" or ".." in applet or link.is_symlink():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to("/bin/busybox")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\n")
    with open(root / "pad.bin", "wb") as f:
        for _ in range(PAD_MIB):
            f.write(os.urandom(1 << 20))
    tarball = dir / "big-template.tar"
    with tarfile.open(tarball, "w", format=tarfile.GNU_FORMAT) as tar:
        tar.add(root, arcname=".")
    return tarball


class Files(ApplianceTestCase):
    name = "e2e-files"

    @classmethod
    def setUpClass(cls):
        if not Path(BUSYBOX).is_file():
            raise AssertionError(f"{BUSYBOX} is missing (Debian's busybox-static): "
                                 "the template is built from it")
        cls.scratch = tempfile.TemporaryDirectory(prefix="cairn-e2e-files-")
        cls.tarball = busybox_tarball(Path(cls.scratch.name))
        # State on ext4, as on an installed host: the template's idmapped lower layer needs a
        # filesystem that supports idmapped mounts (the appliance kernel's tmpfs does not, and
        # without it the container's root could not write into the template's directories).
        cls.state_disk = ext4_state_disk(Path(cls.scratch.name) / "state.img", 2 << 30)
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        cls.scratch.cleanup()

    def apid_memory(self):
        """apid's (VmRSS, VmHWM) in KiB, read in the appliance."""
        _, out = self.guest("cat /proc/$(pidof apid)/status")
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        return (int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0]))

    def sh(self, script):
        """Runs `script` in the container; its stdout."""
        out = self.call("ct.exec", CT, ["/bin/sh", "-c", script])
        self.assertEqual(out["exit_code"], 0, f"{script}: {out}")
        return out["stdout"]

    def ctl_ok(self, *args, timeout=120):
        p = self.cairnctl(*args, timeout=timeout)
        self.assertEqual(p.returncode, 0, f"cairnctl {' '.join(args)}:\n{p.stdout}\n{p.stderr}")
        return p

    def test_1_a_large_template_is_uploaded_and_imported_in_bounded_memory(self):
        size = self.tarball.stat().st_size
        self.assertGreater(size, PAD_MIB << 20)
        rss_before, _ = self.apid_memory()
        started = time.monotonic()
        p = self.ctl_ok("template", "import", "big", str(self.tarball), timeout=1200)
        took = time.monotonic() - started
        rss_after, hwm = self.apid_memory()
        print(f"\nfiles: {size >> 20} MiB template uploaded and imported in {took:.0f} s; "
              f"apid VmRSS {rss_before} -> {rss_after} KiB, VmHWM {hwm} KiB")
        self.assertIn("uploaded big-template.tar", p.stderr)
        self.assertLess(hwm - rss_before, RSS_GROWTH_LIMIT_KIB,
                        f"apid's peak grew by {hwm - rss_before} KiB for a {size} byte upload")
        digest = "sha256:" + hashlib.sha256(self.tarball.read_bytes()).hexdigest()
        listed = {t["name"]: t for t in self.call("template.list")}
        self.assertIn("big", listed)
        self.assertEqual(listed["big"]["sha256"], digest)
        self.call("ct.create", {"name": CT, "template": "big",
                                "command": ["/bin/sh", "-c", "sleep 100000"]})
        self.call("ct.start", CT)

    def test_2_push_and_pull_keep_bytes_and_mode(self):
        local = Path(self.scratch.name) / "tool.bin"
        data = os.urandom(300 * 1024 + 17)
        local.write_bytes(data)
        os.chmod(local, 0o751)
        self.ctl_ok("ct", "push", str(local), f"{CT}:/usr/bin/tool")
        self.assertEqual(self.sh("stat -c '%a %u %g %s' /usr/bin/tool").strip(),
                         f"751 0 0 {len(data)}")
        back = Path(self.scratch.name) / "back"
        back.mkdir()
        self.ctl_ok("ct", "pull", f"{CT}:/usr/bin/tool", str(back))
        self.assertEqual((back / "tool").read_bytes(), data)
        self.assertEqual((back / "tool").stat().st_mode & 0o7777, 0o751)
        # A stopped container takes files too; they are there when it runs again.
        self.call("ct.stopTimeout", CT, 0)
        self.ctl_ok("ct", "push", "--mode", "0640", str(local), f"{CT}:/root/while-stopped")
        self.call("ct.start", CT)
        self.assertEqual(self.sh("stat -c '%a %s' /root/while-stopped").strip(),
                         f"640 {len(data)}")

    def test_3_escapes_are_refused(self):
        # On the appliance, outside any container: what a link must not reach.
        self.guest("echo HOST-ONLY > /run/cairn-e2e-files-marker")
        self.sh("ln -s ../../../../../../run/cairn-e2e-files-marker /tmp/dots"
                " && ln -s /run /tmp/abs")
        out = Path(self.scratch.name) / "escaped"
        for source, code in [
            (f"{CT}:/tmp/dots", FAULT_NOT_FOUND),
            (f"{CT}:/tmp/abs/cairn-e2e-files-marker", FAULT_NOT_FOUND),
            (f"{CT}:/proc/1/root/run/cairn-e2e-files-marker", FAULT_BAD_PARAMS),
            (f"{CT}:/../../run/cairn-e2e-files-marker", FAULT_BAD_PARAMS),
        ]:
            p = self.cairnctl("ct", "pull", source, str(out))
            self.assertNotEqual(p.returncode, 0, f"{source}: {p.stdout}")
            self.assertIn(f"({code})", p.stderr, f"{source}: {p.stderr}")
            self.assertFalse(out.exists(), source)
        # A push through the container's link to /run lands in the container's /run.
        self.ctl_ok("ct", "push", str(self.tarball.parent / "root/etc/passwd"),
                    f"{CT}:/tmp/abs/cairn-e2e-files-planted")
        rc, _ = self.guest("test -e /run/cairn-e2e-files-planted", check=False)
        self.assertNotEqual(rc, 0, "a push through a container's link reached the host")
        self.assertIn("root:x:0:0", self.sh("cat /run/cairn-e2e-files-planted"))
        p = self.cairnctl("ct", "pull", f"{CT}:/nosuch-dir/x", str(out))
        self.assertIn(f"({FAULT_NOT_FOUND})", p.stderr)
        self.assertIn("/nosuch-dir/x", p.stderr)
        p = self.cairnctl("ct", "pull", "nosuch:/etc/passwd", str(out))
        self.assertIn(f"({FAULT_NOT_FOUND})", p.stderr)

    def test_4_a_raw_disk_image_becomes_a_pool_volume(self):
        self.call("pool.create", {"name": "images", "kind": "dir"})
        image = Path(self.scratch.name) / "disk.raw"
        with open(image, "wb") as f:
            f.truncate(64 << 20)
            f.seek(1 << 20)
            f.write(os.urandom(8 << 20))
        want = hashlib.sha256(image.read_bytes()).hexdigest()
        p = self.ctl_ok("volume", "import", "images/disk", str(image), timeout=600)
        self.assertIn("uploaded disk.raw", p.stderr)
        info = self.call("volume.info", "images/disk")
        self.assertEqual(info["size_bytes"], 64 << 20)
        self.assertLess(info["allocated_bytes"], 24 << 20, f"holes stay holes: {info}")
        _, out = self.guest(f"sha256sum {info['path']}")
        self.assertEqual(out.split()[0], want, "the volume holds the image's bytes")
        rc, _ = self.guest("ls /var/lib/cairn/apid/uploads/disk.raw", check=False)
        self.assertNotEqual(rc, 0, "the upload is consumed")
        # A qcow2 image is refused with what to do, and nothing is made.
        qcow = Path(self.scratch.name) / "disk.qcow2"
        qcow.write_bytes(b"QFI\xfb" + bytes(65532))
        p = self.cairnctl("volume", "import", "images/q", str(qcow))
        self.assertNotEqual(p.returncode, 0, p.stdout)
        self.assertRegex(p.stderr, rf"\((fault )?{FAULT_BAD_PARAMS}\)")
        self.assertIn("qemu-img convert -O raw", p.stderr)
        self.assertEqual([v["volume"] for v in self.call("volume.list", "images")],
                         ["images/disk"])
        # The source must be an upload: no host path reaches stord through the API.
        self.assertIn("upload:NAME", self.fault(FAULT_BAD_PARAMS, "volume.import", "images/x",
                                                "/etc/shadow"))


if __name__ == "__main__":
    import unittest
    unittest.main()
