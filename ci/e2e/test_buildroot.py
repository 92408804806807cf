#!/usr/bin/env python3
"""buildroot-config cannot be built here (no internet for Buildroot's downloads), but its kernel
fragment is held to what the appliance really runs: every option it lists is set in the Debian
kernel config `image` built this image from (in the kernel cache after the image build), and
every module the image loads is marked on one of its options (`image check-fragment`).

Run: python3 -m unittest -v ci/e2e/test_buildroot.py   (the image built first)
"""

import subprocess
import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from appliance import ROOT, image_command  # noqa: E402


class BuildrootFragment(unittest.TestCase):
    def test_the_fragment_covers_the_debian_kernel_and_the_modules(self):
        p = subprocess.run(image_command() + ["check-fragment"], cwd=ROOT, capture_output=True,
                           text=True, timeout=600)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertRegex(p.stdout, r"check-fragment: \d+ options set in .*config-6\.1\.")

    def test_the_tree_is_a_br2_external(self):
        tree = ROOT / "buildroot-config"
        self.assertIn("name: CAIRN", (tree / "external.desc").read_text())
        defconfig = (tree / "configs" / "cairn_x86_64_defconfig").read_text()
        for want in ("BR2_PACKAGE_CAIRN=y", "linux.fragment", "post-image.sh",
                     "BR2_TARGET_GRUB2_X86_64_EFI=y"):
            self.assertIn(want, defconfig)
        script = tree / "board" / "cairn" / "post-image.sh"
        self.assertTrue(script.stat().st_mode & 0o111, "post-image.sh is not executable")
        subprocess.run(["sh", "-n", str(script)], check=True)


if __name__ == "__main__":
    unittest.main()
