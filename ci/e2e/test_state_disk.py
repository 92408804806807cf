#!/usr/bin/env python3
"""Appliance e2e of the state partition: with a disk holding an ext4 filesystem labelled
CAIRN-STATE (what install will make), init mounts it as the state directory, so what is made
through the API — a network, an imported template, an applied host.toml — is still there after
a power-off and a fresh boot, and the applied config is the one the host runs (source `state`).
Without one the state is a tmpfs (every other e2e class), which the console says.

Run: python3 -m unittest -v ci/e2e/test_state_disk.py   (the image built first)
"""

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from appliance import ApplianceTestCase, api_config, ext4_state_disk  # noqa: E402

TARBALL = "/usr/lib/cairn/debug/busybox-rootfs.tar"
DECLARED = """
[[network]]
name = "declared"
kind = "bridged"
subnet = "10.21.0.0/24"
address = "10.21.0.1/24"
"""


class StateSurvivesAPowerOff(ApplianceTestCase):
    name = "e2e-state"
    cpus = 1
    scratch = None

    @classmethod
    def setUpClass(cls):
        cls.scratch = tempfile.TemporaryDirectory()
        cls.state_disk = ext4_state_disk(Path(cls.scratch.name) / "state.img", 512 << 20)
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        if cls.scratch:
            cls.scratch.cleanup()

    def test_1_made_through_the_api(self):
        self.assertRegex(self.console_log.read_text(errors="replace"),
                         r"cairn: state on /dev/vd[a-z] \(CAIRN-STATE\)")
        self.call("net.create", {"name": "kept", "kind": "bridged", "subnet": "10.20.0.0/24",
                                 "address": "10.20.0.1/24"})
        _, out = self.guest(f"cat {TARBALL}.sha256")
        self.call("template.import", "kept-tpl", TARBALL, out.split()[0])
        changes = self.call("host.applyConfig", api_config("kept-host", self.token, DECLARED))
        self.assertIn('network "declared": added', changes)
        self.wait_for(lambda i: i.get("hostname") == "kept-host")

    def test_2_still_there_after_a_power_off(self):
        self.wait_poweroff()
        ApplianceTestCase.setUpClass.__func__(type(self))
        info = self.wait_for(lambda i: i.get("mode") == "running")
        self.assertEqual((info["hostname"], info["config_source"]), ("kept-host", "state"),
                         info)
        deadline = time.monotonic() + 30
        while True:
            names = {n["name"] for n in self.call("net.list")}
            if {"kept", "declared"} <= names or time.monotonic() > deadline:
                break
            time.sleep(1)
        self.assertLessEqual({"kept", "declared"}, names)
        self.assertIn("kept-tpl", [t["name"] for t in self.call("template.list")])

    def wait_for(self, ready, within=60):
        """host.info once `ready(info)` holds (the services restart after an apply)."""
        deadline, info = time.monotonic() + within, {}
        while time.monotonic() < deadline:
            try:
                info = self.call("host.info")
                if ready(info):
                    return info
            except OSError:
                pass
            time.sleep(1)
        self.fail(f"host.info never got there: {info}")


if __name__ == "__main__":
    import unittest
    unittest.main()
