#!/usr/bin/env python3
"""Appliance e2e of install to disk: the live ISO (no config: maintenance mode) with a blank
virtual disk and one holding a filesystem; host.disks tells them apart, the used one is
refused without force, the blank one takes Cairn through host.install with a host.toml; then
QEMU boots that disk alone — from SeaBIOS, later from OVMF — to the API running the installed
config from the state partition. What is made through the API on the installed host (a
network, a template, a container with its live limit changed and marked autostart) is there
after a power-off and a boot from the disk through the other firmware, the container running.

Run: python3 -m unittest -v ci/e2e/test_install.py   (the image built first)
"""

import functools
import http.server
import subprocess
import sys
import tempfile
import threading
import time
import xmlrpc.client
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from appliance import APPLIANCE, ApplianceTestCase, api_config, free_port, pid_alive  # noqa: E402,E501

TARBALL = "/usr/lib/cairn/debug/busybox-rootfs.tar"
# The test guest's kernel where the installed host keeps it: on its state partition.
GUEST_KERNEL = "/var/lib/cairn/test-guest"


class InstallFromTheIso(ApplianceTestCase):
    name = "e2e-install"
    cpus = 1
    boot = "iso"
    configured = False
    scratch = None

    @classmethod
    def setUpClass(cls):
        cls.scratch = tempfile.TemporaryDirectory()
        cls.blank = Path(cls.scratch.name) / "blank.img"
        cls.used = Path(cls.scratch.name) / "used.img"
        with open(cls.blank, "wb") as f:
            f.truncate(2 << 30)
        with open(cls.used, "wb") as f:
            f.truncate(1 << 30)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "data", str(cls.used)], check=True)
        cls.disks = (cls.blank, cls.used)
        # The installed host opens its API with the configured image's token, which the
        # harness reads when it boots the disk as a configured appliance.
        cls.installed = api_config("installed", (APPLIANCE / "token").read_text().strip())
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        if cls.scratch:
            cls.scratch.cleanup()

    def reboot_from_disk(self, firmware):
        """Boots the installed disk (with the guest kit beside it, vdb); a QEMU an earlier
        failed test left is ended first."""
        cls = type(self)
        ApplianceTestCase.tearDownClass.__func__(cls)
        cls.boot, cls.disks, cls.configured, cls.guest_kit = firmware, (cls.blank,), True, True
        ApplianceTestCase.setUpClass.__func__(cls)

    def test_1_disks_are_told_apart(self):
        disks = {d["name"]: d for d in self.call("host.disks")}
        self.assertEqual((disks["vda"]["holds"], disks["vda"]["unusable"]), ("", ""), disks)
        self.assertEqual(disks["vda"]["size_bytes"], 2 << 30)
        self.assertEqual(disks["vdb"]["holds"], 'an ext2/3/4 filesystem labelled "data"')
        self.assertEqual(self.call("host.installStatus")["state"], "idle")

    def test_2_bad_installs_change_nothing(self):
        with self.assertRaises(xmlrpc.client.Fault) as cm:
            self.call("host.install", "vdb", self.installed)
        self.assertEqual(cm.exception.faultCode, 105, cm.exception.faultString)
        self.assertIn('filesystem labelled "data"', cm.exception.faultString)
        self.assertIn("force", cm.exception.faultString)
        with self.assertRaises(xmlrpc.client.Fault) as cm:
            self.call("host.install", "sdz")
        self.assertEqual(cm.exception.faultCode, 104, cm.exception.faultString)
        with self.assertRaises(xmlrpc.client.Fault) as cm:
            self.call("host.install", "vda", self.installed + "\n[oops\n")
        self.assertEqual(cm.exception.faultCode, 102, cm.exception.faultString)
        self.assertRegex(cm.exception.faultString, r"host\.toml:\d+:\d+")
        disks = {d["name"]: d for d in self.call("host.disks")}
        self.assertEqual(disks["vda"]["holds"], "", "a refused install wrote to the blank disk")
        self.assertEqual(disks["vdb"]["holds"], 'an ext2/3/4 filesystem labelled "data"')

    def test_3_install_onto_the_blank_disk(self):
        started = time.monotonic()
        self.assertTrue(self.call("host.install", "vda", self.installed))
        deadline, report, steps = time.monotonic() + 600, {}, []
        while time.monotonic() < deadline:
            report = self.call("host.installStatus")
            if not steps or steps[-1] != report["step"]:
                steps.append(report["step"])
            if report["state"] != "running":
                break
            time.sleep(1)
        print(f"\ninstall: {time.monotonic() - started:.1f} s through {steps}")
        self.assertEqual(report["state"], "done", report)
        self.assertGreater(report["total_bytes"], 20 << 20, report)
        self.assertEqual(report["done_bytes"], report["total_bytes"], report)
        disks = {d["name"]: d for d in self.call("host.disks")}
        self.assertEqual(disks["vda"]["holds"], "a GPT partition table")
        self.wait_poweroff()

    def test_4_the_disk_boots_alone_from_bios(self):
        self.reboot_from_disk("disk")
        console = self.console_log.read_text(errors="replace")
        self.assertIn("Cairn (slot A)", console, "GRUB's menu of the installed disk")
        self.assertRegex(console, r"cairn: state on /dev/vda5 \(CAIRN-STATE\)")
        info = self.call("host.info")
        self.assertEqual((info["hostname"], info["mode"], info["config_source"]),
                         ("installed", "running", "state"), info)
        _, cmdline = self.guest("cat /proc/cmdline")
        self.assertIn("cairn.slot=a", cmdline)
        self.assertNotIn("retain_initrd", cmdline)
        # A write under /usr fails: the OS is read-only on disk as on the ISO.
        status, out = self.guest("touch /usr/x", check=False)
        self.assertNotEqual(status, 0, out)
        self.assertIn("Read-only file system", out)

        self.call("net.create", {"name": "kept", "kind": "bridged", "subnet": "10.20.0.0/24",
                                 "address": "10.20.0.1/24"})
        _, out = self.guest(f"cat {TARBALL}.sha256")
        self.call("template.import", "kept-tpl", TARBALL, out.split()[0])
        self.call("ct.create", {"name": "keeper", "template": "kept-tpl",
                                "command": ["/bin/sleep", "100000"], "autostart": True,
                                "resources": {"memory": 64 << 20}})
        self.call("ct.create", {"name": "idle", "template": "kept-tpl",
                                "command": ["/bin/sleep", "100000"]})
        self.call("ct.start", "keeper")
        self.call("ct.start", "idle")
        self.call("ct.set", "keeper", {"memory": 96 << 20})
        # A VM of the VMM's test guest (ticking forever), its kernel on the state partition.
        kit = self.mount_guest_kit()
        self.guest(f"cp {kit}/test-guest {GUEST_KERNEL}")
        self.call("vm.create", {"name": "ticker", "vcpus": 1, "memory_mib": 32,
                                "kernel": GUEST_KERNEL, "cmdline": "cairn.test=ticks",
                                "autostart": True})
        self.call("vm.start", "ticker")
        self.assertEqual(self.call("vm.info", "ticker")["state"], "running")
        self.wait_poweroff()

    def test_5_what_was_made_is_there_after_a_uefi_boot(self):
        self.reboot_from_disk("disk-uefi")
        console = self.console_log.read_text(errors="replace")
        self.assertIn("Cairn (slot A)", console)
        self.assertEqual(self.call("host.info")["hostname"], "installed")
        self.assertIn("kept", {n["name"] for n in self.call("net.list")})
        self.assertIn("kept-tpl", [t["name"] for t in self.call("template.list")])
        deadline = time.monotonic() + 60
        while True:
            cts = {c["name"]: c for c in self.call("ct.list")}
            if cts.get("keeper", {}).get("state") == "running" or time.monotonic() > deadline:
                break
            time.sleep(1)
        self.assertEqual(cts["keeper"]["state"], "running", cts)
        self.assertEqual(cts["keeper"]["resources"]["memory"], 96 << 20, cts["keeper"])
        self.assertEqual(cts["idle"]["state"], "stopped", "no autostart: left stopped")
        vm = self.call("vm.info", "ticker")
        self.assertEqual(vm["state"], "running", vm)
        deadline = time.monotonic() + 60
        while "tick 3" not in self.call("vm.console", "ticker") and time.monotonic() < deadline:
            time.sleep(1)
        self.assertIn("tick 3", self.call("vm.console", "ticker"), "the autostarted VM runs")

    def test_6_a_power_cut_in_a_burst_of_writes_tears_no_record(self):
        """QEMU killed while limits and networks are being written through the API: after the
        next boot every record is the old or the new one — all load, and each value read back
        is one that was written."""
        written, stop = [96 << 20], threading.Event()

        def burst():
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    self.call("ct.set", "keeper", {"memory": (100 + i) << 20})
                    written.append((100 + i) << 20)
                    self.call("net.create", {"name": f"burst{i}", "kind": "bridged"})
                except (OSError, xmlrpc.client.Error):
                    return

        writer = threading.Thread(target=burst)
        writer.start()
        time.sleep(4)
        subprocess.run(["kill", "-9", str(self.pid)], check=True)
        stop.set()
        writer.join(60)
        self.assertGreater(len(written), 2, "the burst wrote nothing before the cut")
        self.reboot_from_disk("disk")
        deadline = time.monotonic() + 60
        while True:
            cts = {c["name"]: c for c in self.call("ct.list")}
            if cts.get("keeper", {}).get("state") == "running" or time.monotonic() > deadline:
                break
            time.sleep(1)
        self.assertNotIn("EXT4-fs error", self.console_log.read_text(errors="replace"),
                         "the state filesystem came back damaged from the power cut")
        self.assertEqual(set(cts), {"keeper", "idle"}, "a container record was lost")
        self.assertEqual(cts["keeper"]["state"], "running", cts)
        # An answered write is on the disk (synced before the answer); the one in flight at
        # the cut may have landed or not — either way whole.
        self.assertIn(cts["keeper"]["resources"]["memory"],
                      (written[-1], written[-1] + (1 << 20)), cts["keeper"])
        nets = {n["name"] for n in self.call("net.list")}
        self.assertIn("kept", nets)
        for name in (n for n in nets if n.startswith("burst")):
            self.assertEqual(self.call("net.info", name)["name"], name)


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class UnattendedPxeInstall(ApplianceTestCase):
    """`cairn.install=vda` beside a `cairn.config=` URL on the PXE command line: the host
    fetches its config, installs itself onto the blank disk with it and reboots (QEMU runs
    with -no-reboot, so it exits); the disk then boots alone, running the fetched config."""
    name = "e2e-install-pxe"
    cpus = 1
    boot = "pxe"
    configured = False
    scratch = None
    server = None

    @classmethod
    def setUpClass(cls):
        cls.scratch = tempfile.TemporaryDirectory()
        root = Path(cls.scratch.name)
        cls.blank = root / "blank.img"
        with open(cls.blank, "wb") as f:
            f.truncate(2 << 30)
        cls.disks = (cls.blank,)
        token = (APPLIANCE / "token").read_text().strip()
        (root / "host.toml").write_text(api_config("unattended", token))
        port = free_port()
        handler = functools.partial(Quiet, directory=str(root))
        cls.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
        threading.Thread(target=cls.server.serve_forever, daemon=True).start()
        cls.append = f"cairn.config=http://10.0.2.2:{port}/host.toml cairn.install=vda"
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        if cls.server:
            cls.server.shutdown()
            cls.server.server_close()
        if cls.scratch:
            cls.scratch.cleanup()

    def test_1_installs_itself_and_reboots(self):
        deadline = time.monotonic() + 300
        while pid_alive(self.pid) and time.monotonic() < deadline:
            time.sleep(1)
        self.assertFalse(pid_alive(self.pid), f"no reboot after the install:\n{self.console_tail()}")
        console = self.console_log.read_text(errors="replace")
        self.assertIn("cairn: cairn.install=vda: installing", console)
        self.assertIn("cairn: installed onto vda; rebooting into it", console)

    def test_2_the_disk_runs_the_fetched_config(self):
        cls = type(self)
        ApplianceTestCase.tearDownClass.__func__(cls)
        cls.boot, cls.append, cls.configured = "disk", None, True
        ApplianceTestCase.setUpClass.__func__(cls)
        info = self.call("host.info")
        self.assertEqual((info["hostname"], info["mode"], info["config_source"]),
                         ("unattended", "running", "state"), info)


if __name__ == "__main__":
    import unittest
    unittest.main()
