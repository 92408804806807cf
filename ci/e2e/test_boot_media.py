#!/usr/bin/env python3
"""Appliance e2e of the boot media `image build` makes beside the kernel and initramfs: the
hybrid ISO from a CD under SeaBIOS and under OVMF (UEFI), the same ISO as a USB stick, and the
PXE directory over QEMU's TFTP with its iPXE ROM. Each boots to an answering API with the
media's one command line, and the console shows the firmware path it took (so a medium that
silently fell back to something else cannot pass). The ISO from a CD is the image built without
a config (as a user downloads it), which boots into maintenance mode; the stick and PXE boot the
configured image into running mode.

What a booted medium does once up is the other e2e files' subject (they direct-boot, the
quickest path); here: it boots, its API answers with the image's config, init's services run.

Run: python3 -m unittest -v ci/e2e/test_boot_media.py   (the image built first; see appliance.py)
"""

import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from appliance import ApplianceTestCase  # noqa: E402

class Medium:
    """One boot of one medium; subclasses name it and say what its firmware prints."""

    boot = None
    # One CPU: these boots only check the path to the API, and QEMU's multi-threaded TCG has
    # a rare livelock with two (test_vm.py NestedVm; one 2-CPU boot spun silently for 300 s
    # on 2026-12-03 under load).
    cpus = 1
    # Text the console shows only on this path (firmware or boot loader).
    firmware_says = ()

    def test_boots_to_the_api(self):
        info = self.call("host.info")
        if self.configured:
            self.assertEqual(info["hostname"], "cairn-dev", info)
            self.assertEqual((info.get("mode"), info.get("config_source")),
                             ("running", "medium"), info)
        else:
            # No config anywhere: maintenance mode, named after the NIC it took DHCP on, and
            # the API reached with the token its console printed (appliance.py).
            self.assertEqual((info.get("mode"), info.get("config_source")),
                             ("maintenance", "none"), info)
            self.assertIn("no config", info.get("config_problem", ""), info)
            self.assertRegex(info["hostname"], r"^cairn-[0-9a-f]{6}$", info)
            self.assertEqual(info["management"].get("interface"), "eth0", info)
            self.assertTrue(info["management"].get("address", "").startswith("10.0.2.15/"),
                            info)
            self.assertEqual(info["management"].get("source"), "dhcp", info)
        self.assert_services_running()
        # The media's command line (image/src/media.rs CMDLINE), not the direct boot's.
        _, cmdline = self.guest("cat /proc/cmdline")
        self.assertIn("console=tty0 console=ttyS0,115200n8", cmdline)
        console = self.console_log.read_text(errors="replace")
        for text in self.firmware_says:
            self.assertIn(text, console, f"the {self.boot} path's firmware never said {text!r}")
        print(f"\n{self.boot}: {console.count(chr(10))} console lines; /proc/cmdline: "
              f"{cmdline.strip()}")


class IsoFromBios(Medium, ApplianceTestCase):
    name = "e2e-iso"
    boot = "iso"
    # The ISO as a user downloads it: no config, so it boots into maintenance mode.
    configured = False
    # SeaBIOS's CD boot, then GRUB's menu entry (media.rs grub_cfg).
    firmware_says = ("Booting from DVD/CD", "Cairn ")


class IsoFromUefi(Medium, ApplianceTestCase):
    name = "e2e-uefi"
    boot = "uefi"
    configured = False
    # OVMF's boot manager loading the CD's EFI image, then GRUB.
    firmware_says = ("BdsDxe: loading", "Cairn ")


class IsoAsUsbStick(Medium, ApplianceTestCase):
    name = "e2e-stick"
    boot = "stick"
    firmware_says = ("Booting from Hard Disk", "Cairn ")


class Pxe(Medium, ApplianceTestCase):
    name = "e2e-pxe"
    boot = "pxe"
    # QEMU's iPXE ROM running the script it got by DHCP (media.rs IPXE_SCRIPT).
    firmware_says = ("iPXE", "boot.ipxe")


if __name__ == "__main__":
    unittest.main()
