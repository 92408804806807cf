#!/usr/bin/env python3
"""Appliance e2e of the last config source: an image without a config, booted with a second
disk holding a FAT filesystem labelled CAIRN-CONFIG (as mkfs.fat and mformat write it: FAT
labels hold 11 characters, CAIRN-CONFI) with a host.toml on it, runs that config
(`config_source` `label`) instead of entering maintenance mode; the vfat modules are loaded
only for it.

Run: python3 -m unittest -v ci/e2e/test_config_label.py   (the image built first)
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from appliance import APPLIANCE, ApplianceTestCase, api_config  # noqa: E402


class ConfigFromALabelledStick(ApplianceTestCase):
    name = "e2e-config-label"
    cpus = 1
    configured = False
    boots_running = True
    scratch = None

    @classmethod
    def setUpClass(cls):
        cls.scratch = tempfile.TemporaryDirectory()
        stick = Path(cls.scratch.name) / "stick.img"
        toml = Path(cls.scratch.name) / "host.toml"
        toml.write_text(api_config("from-a-stick", (APPLIANCE / "token").read_text().strip()))
        env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
        subprocess.run(["mformat", "-C", "-T", "65536", "-h", "2", "-s", "32",
                        "-v", "CAIRN-CONFIG", "-i", str(stick), "::"], check=True, env=env,
                       capture_output=True)
        subprocess.run(["mcopy", "-i", str(stick), str(toml), "::/host.toml"], check=True,
                       env=env)
        cls.disks = (stick,)
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        if cls.scratch:
            cls.scratch.cleanup()

    def test_runs_the_sticks_config(self):
        info = self.call("host.info")
        self.assertEqual((info["hostname"], info["mode"], info["config_source"]),
                         ("from-a-stick", "running", "label"), info)
        console = self.console_log.read_text(errors="replace")
        self.assertRegex(console, r"cairn: config from /dev/vda \(CAIRN-CONFIG, vfat\)")
        self.assertNotIn("one-time API token", console, "no maintenance mode")
        _, mods = self.guest("cat /proc/modules")
        self.assertIn("vfat", mods)
        # Only read at boot: nothing of the stick stays mounted.
        _, mounts = self.guest("cat /proc/mounts")
        self.assertNotIn("/dev/vda", mounts)


if __name__ == "__main__":
    import unittest
    unittest.main()
