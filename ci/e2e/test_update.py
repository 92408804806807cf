#!/usr/bin/env python3
"""Appliance e2e of A/B updates on a disk installed from the live ISO: version N (this build)
is installed; a "next" image N+1 is built (`image build --os-version`) and its update bundle
served over HTTP from this machine's loopback. Checked in order:

  - a bundle with one flipped byte is refused and nothing is written to any slot;
  - QEMU killed while the slot is being written: the host boots N, unchanged;
  - N -> N+1 uploaded with `cairnctl update FILE --reboot` (PUT /uploads/NAME, then
    host.update("upload:NAME")): the host reboots into N+1 (slot b), host.info says so and a
    network made before the update is still there; a hardware watchdog (QEMU's i6300esb) was
    armed for the trial boot and is stopped once the update is confirmed;
  - with [update] public_key pinned, an unsigned bundle and one signed by another key (both
    made with the stock minisign tool) are refused;
  - host.rollback boots N again;
  - an N+1 whose apid never starts (a broken build) goes back to N by itself within its two
    boot attempts, and N reports the failed update.

Run: python3 -m unittest -v ci/e2e/test_update.py   (the image built first)
"""

import functools
import hashlib
import http.server
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import xmlrpc.client
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from appliance import (APPLIANCE, ROOT, ApplianceTestCase, api_config, free_port,  # noqa: E402
                       image_command, pid_alive)

NEXT = ROOT / "target" / "appliance-next"
NEXT_VERSION = "0.1.1-next"
BROKEN_VERSION = "0.1.2-broken"
# The slot B partition on the installed disk (model::install: 322 MiB in).
SLOT_B_OFFSET = 322 << 20


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def newc(entries):
    """An uncompressed newc cpio of (name, mode, data) entries and its trailer."""
    out = b""
    for ino, (name, mode, data) in enumerate(entries + [("TRAILER!!!", 0, b"")], 1):
        raw = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(raw), 0]
        head = b"070701" + b"".join(b"%08X" % f for f in fields)
        out += head + raw
        out += b"\0" * (-len(out) % 4) + data
        out += b"\0" * (-len(out) % 4)
    return out


def bundle(path, version, parts, signature=None):
    """A bundle as image's: MANIFEST, MANIFEST.minisig when given, then the parts."""
    manifest = f"cairn-update 1\nversion {version}\n" + "".join(
        f"part {name} {len(data)} {hashlib.sha256(data).hexdigest()}\n"
        for name, data in parts)
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        members = [("MANIFEST", manifest.encode())]
        if signature is not None:
            members.append(("MANIFEST.minisig", signature(manifest)))
        for name, data in members + list(parts):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, fileobj=__import__("io").BytesIO(data))
    return manifest


def minisign_key(directory, tag):
    """A minisign key pair made by the stock tool: (public key line, signing function)."""
    pub, sec = directory / f"{tag}.pub", directory / f"{tag}.key"
    subprocess.run(["minisign", "-G", "-W", "-f", "-p", str(pub), "-s", str(sec)], check=True,
                   capture_output=True)

    def sign(text):
        m = directory / f"{tag}-MANIFEST"
        m.write_text(text)
        subprocess.run(["minisign", "-S", "-s", str(sec), "-m", str(m)], check=True,
                       capture_output=True)
        return (directory / f"{tag}-MANIFEST.minisig").read_bytes()

    return pub.read_text().splitlines()[1], sign


class UpdateAnInstalledHost(ApplianceTestCase):
    name = "e2e-update"
    cpus = 1
    boot = "iso"
    configured = False
    scratch = None
    server = None

    @classmethod
    def setUpClass(cls):
        cls.scratch = tempfile.TemporaryDirectory()
        root = Path(cls.scratch.name)
        cmd = image_command() + ["build", "--no-compile", "--debug-shell", "--os-version",
                                 NEXT_VERSION, "--out", str(NEXT)]
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
        if p.returncode != 0:
            raise AssertionError(f"`{' '.join(cmd)}` failed:\n{p.stdout}\n{p.stderr}")
        shutil.copy(NEXT / f"cairn-{NEXT_VERSION}.update", root / "next.update")
        vmlinuz = (NEXT / "vmlinuz").read_bytes()
        initrd = (NEXT / "initrd.img").read_bytes()
        # One flipped byte in the middle of the initramfs.
        flipped = bytearray((root / "next.update").read_bytes())
        flipped[len(flipped) // 2] ^= 0x01
        (root / "flipped.update").write_bytes(bytes(flipped))
        # A broken build: a second archive after the first makes apid busybox, which exits.
        broken = initrd + b"\0" * (-len(initrd) % 4) + newc(
            [("usr/bin/apid", 0o120777, b"/usr/lib/cairn/debug/bin/busybox")])
        bundle(root / "broken.update", BROKEN_VERSION,
               [("vmlinuz", vmlinuz), ("initrd.img", broken)])
        cls.key, sign = minisign_key(root, "ours")
        _, sign_other = minisign_key(root, "theirs")
        bundle(root / "theirs.update", NEXT_VERSION,
               [("vmlinuz", vmlinuz), ("initrd.img", initrd)], sign_other)
        port = free_port()
        handler = functools.partial(Quiet, directory=str(root))
        cls.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
        threading.Thread(target=cls.server.serve_forever, daemon=True).start()
        cls.served = f"http://10.0.2.2:{port}"
        cls.blank = root / "disk.img"
        with open(cls.blank, "wb") as f:
            f.truncate(2 << 30)
        cls.disks = (cls.blank,)
        cls.token_value = (APPLIANCE / "token").read_text().strip()
        cls.config = api_config("updated", cls.token_value)
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        if cls.server:
            cls.server.shutdown()
            cls.server.server_close()
        if cls.scratch:
            cls.scratch.cleanup()

    def boot_disk(self, allow_reboot=False):
        cls = type(self)
        ApplianceTestCase.tearDownClass.__func__(cls)
        cls.boot, cls.configured, cls.allow_reboot = "disk", True, allow_reboot
        ApplianceTestCase.setUpClass.__func__(cls)

    def wait_exit(self, within=300):
        """QEMU ends at the appliance's reboot (-no-reboot)."""
        deadline = time.monotonic() + within
        while pid_alive(self.pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        self.assertFalse(pid_alive(self.pid), f"no reboot:\n{self.console_tail()}")

    def wait_update(self, within=300):
        deadline, report = time.monotonic() + within, {}
        while time.monotonic() < deadline:
            report = self.call("host.updateStatus")
            if report["state"] != "running":
                return report
            time.sleep(0.5)
        self.fail(f"the update did not end: {report}")

    def slot_b(self):
        with open(self.blank, "rb") as f:
            f.seek(SLOT_B_OFFSET)
            return hashlib.sha256(f.read(4 << 20)).hexdigest()

    def os(self):
        return self.call("host.info")["os"]

    def apply(self, text):
        """host.applyConfig, then the API back once every service has restarted with it."""
        changes = self.call("host.applyConfig", text)
        time.sleep(3)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                states = {s["name"]: s["state"] for s in self.call("host.info")["services"]}
                if set(states.values()) == {"running"}:
                    return changes
            except (OSError, xmlrpc.client.Error):
                pass
            time.sleep(1)
        self.fail("the services did not come back after host.applyConfig")

    def test_1_install_n(self):
        self.assertTrue(self.call("host.install", "vda", self.config))
        deadline = time.monotonic() + 300
        while self.call("host.installStatus")["state"] == "running":
            self.assertLess(time.monotonic(), deadline)
            time.sleep(1)
        self.assertEqual(self.call("host.installStatus")["state"], "done")
        self.wait_poweroff()

    def test_2_bad_bundles_and_a_cut_change_nothing(self):
        self.boot_disk()
        os_ = self.os()
        self.assertEqual((os_["slot"], os_["versions"]), ("a", {"a": "0.1.0"}), os_)
        self.call("net.create", {"name": "before", "kind": "bridged"})
        untouched = self.slot_b()
        self.assertTrue(self.call("host.update", f"{self.served}/flipped.update"))
        report = self.wait_update()
        self.assertEqual(report["state"], "failed", report)
        self.assertIn("sha256", report["error"])
        self.assertEqual(self.slot_b(), untouched, "a refused bundle wrote to slot b")
        self.assertEqual(self.os()["versions"], {"a": "0.1.0"})
        # Cut the power while slot b is being written.
        self.call("host.update", f"{self.served}/next.update")
        deadline = time.monotonic() + 300
        while not self.call("host.updateStatus")["step"].startswith("writing slot"):
            self.assertLess(time.monotonic(), deadline, self.call("host.updateStatus"))
            time.sleep(0.1)
        subprocess.run(["kill", "-9", str(self.pid)], check=True)
        self.boot_disk()
        os_ = self.os()
        self.assertEqual((os_["os_version"], os_["slot"], os_["versions"]),
                         ("0.1.0", "a", {"a": "0.1.0"}), os_)
        self.assertNotIn("trying the update", self.console_log.read_text(errors="replace"))

    def test_3_n_to_n_plus_1(self):
        # Uploaded by cairnctl (PUT /uploads/NAME, streamed), then host.update("upload:…").
        started = time.monotonic()
        p = self.cairnctl("update", str(Path(self.scratch.name) / "next.update"), "--reboot",
                          timeout=300)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("uploaded next.update:", p.stderr)
        self.assertEqual(p.stdout.strip(), "written; the host reboots into it")
        self.wait_exit()
        self.boot_disk()
        print(f"\nupdate: first byte uploaded -> N+1 answering in "
              f"{time.monotonic() - started:.1f}s")
        console = self.console_log.read_text(errors="replace")
        self.assertIn(f"cairn: trying the update to {NEXT_VERSION} on slot b", console)
        deadline = time.monotonic() + 60
        while "ok:" not in self.os()["last_update"] and time.monotonic() < deadline:
            time.sleep(1)
        os_ = self.os()
        self.assertEqual((os_["os_version"], os_["slot"]), (NEXT_VERSION, "b"), os_)
        self.assertEqual(os_["versions"], {"a": "0.1.0", "b": NEXT_VERSION})
        self.assertEqual(os_["last_update"], f"ok: {NEXT_VERSION} on slot b")
        self.assertIn("before", {n["name"] for n in self.call("net.list")})
        # QEMU's i6300esb watched the trial boot, and is stopped once the update is confirmed.
        console = self.console_log.read_text(errors="replace")
        self.assertIn("cairn: watchdog i6300ESB timer armed for the trial (60 s)", console)
        self.assertIn("cairn: watchdog disarmed", console)
        _, state = self.guest("cat /sys/class/watchdog/watchdog0/state")
        self.assertEqual(state.strip(), "inactive")

    def test_4_a_pinned_key_refuses_what_it_did_not_sign(self):
        changes = self.apply(self.config + f'\n[update]\npublic_key = "{self.key}"\n')
        self.assertEqual(changes, ["update: a signing key is pinned (bundles must be signed)"])
        try:
            for name, want in (("next", "not signed"), ("theirs", "not the pinned key's")):
                self.call("host.update", f"{self.served}/{name}.update")
                report = self.wait_update()
                self.assertEqual(report["state"], "failed", report)
                self.assertIn(want, report["error"])
            self.assertEqual(self.os()["versions"], {"a": "0.1.0", "b": NEXT_VERSION})
        finally:
            self.apply(self.config)

    def test_5_rollback_by_hand(self):
        what = self.call("host.rollback")
        self.assertIn("to 0.1.0 on slot a", what)
        self.wait_exit()
        self.boot_disk()
        os_ = self.os()
        self.assertEqual((os_["os_version"], os_["slot"]), ("0.1.0", "a"), os_)
        self.assertTrue(os_["last_update"].startswith("rolled back by hand"), os_)

    def test_6_a_broken_update_goes_back_by_itself(self):
        self.assertTrue(self.call("host.update", f"{self.served}/broken.update", True))
        self.wait_exit()
        # GRUB's two tries of the broken slot, each ended by init, then slot a again: one QEMU
        # that reboots in place, ready once N answers.
        self.boot_disk(allow_reboot=True)
        console = self.console_log.read_text(errors="replace")
        self.assertEqual(console.count(f"cairn: trying the update to {BROKEN_VERSION}"), 2,
                         console[-3000:])
        self.assertIn("apid keeps failing on the updated system; rebooting", console)
        os_ = self.os()
        self.assertEqual((os_["os_version"], os_["slot"]), ("0.1.0", "a"), os_)
        self.assertTrue(os_["last_update"].startswith(f"failed: {BROKEN_VERSION} on slot b"),
                        os_)


if __name__ == "__main__":
    import unittest
    unittest.main()
