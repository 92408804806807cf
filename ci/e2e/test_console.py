#!/usr/bin/env python3
"""Appliance e2e for console attach (issue 13): `cairnctl ct console NAME` and `cairnctl vm
console NAME` driven under a pseudo-terminal, as a user at a terminal runs them, through the
API's WebSocket stream (/streams/console) to hostd, the container's monitor and the VM's VMM.

For each kind: cairnctl prints its detach key (Ctrl-]) on attach, a line typed there reaches
the guest and the guest's answer comes back on the terminal, Ctrl-] (0x1d) ends cairnctl with
status 0, and the guest runs on (the API says so and its console log shows what ran). The
container is a busybox shell as PID 1 from the image's bundled template; the VM is the VMM's
test guest from the guest kit in its `echoes` mode (it prints `echo: ready`, then reads
console lines and prints each back as `echo: <line> (<n> bytes)`), which boots in well under
a second even nested under TCG.

Run: python3 -m unittest -v ci/e2e/test_console.py   (the image built with --debug-shell first)
"""

import os
import sys
import time
import xmlrpc.client
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from appliance import ApplianceTestCase, FAULT_CONFLICT  # noqa: E402
from ptyterm import PtyCairnctl  # noqa: E402

TEMPLATE = "busybox"
CT = "con1"
VM = "echoes"
DETACH = b"\x1d"
# Nested under TCG the test guest's first line takes a few seconds at most; generous bounds.
WAIT_S = 60


class ConsoleAttach(PtyCairnctl, ApplianceTestCase):
    name = "e2e-console"
    guest_kit = True
    # One appliance CPU, as test_vm's NestedVm explains (the rig's wedge needs two).
    cpus = 1

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        try:
            self = cls("run")  # the helpers are instance methods; any instance will do
            cls.kit = self.mount_guest_kit()
            try:
                self.call("template.import", TEMPLATE, "bundled:busybox", "")
            except xmlrpc.client.Fault as f:
                if f.faultCode != FAULT_CONFLICT:
                    raise
        except BaseException:
            # unittest does not run tearDownClass when setUpClass fails: stop QEMU here.
            cls.tearDownClass()
            raise

    def cleanup(self, *calls):
        for method, *args in calls:
            try:
                self.call(method, *args)
            except xmlrpc.client.Fault as f:
                print(f"cleanup {method}{tuple(args)}: {f.faultString}")

    def detach(self, pid, fd, seen):
        """Types Ctrl-] and waits for cairnctl to end; its exit status."""
        os.write(fd, DETACH)
        return self.wait_exit(pid, fd, seen, within=20)

    def session(self, kind, name, line, want):
        """Attaches, types `line`, waits for `want`, detaches; returns what was shown."""
        pid, fd = self.spawn(kind, "console", name)
        seen = bytearray()
        self.read_until(fd, b"Ctrl-]", seen)
        os.write(fd, line)
        self.read_until(fd, want, seen, typed=line)
        code = self.detach(pid, fd, seen)
        self.assertEqual(code, 0, f"cairnctl {kind} console ended with {code}:\n"
                                  f"{bytes(seen).decode(errors='replace')}")
        return bytes(seen)

    def test_container_console(self):
        self.call("ct.create", {"name": CT, "template": TEMPLATE, "command": ["/bin/sh"]})
        self.addCleanup(self.cleanup, ("ct.stopTimeout", CT, 0), ("ct.delete", CT))
        self.call("ct.start", CT)
        self.session("ct", CT, b"echo typed-$((6*7))\n", b"typed-42")
        self.assertEqual(self.call("ct.info", CT)["state"], "running")
        # Attaching again after a detach works, and what ran shows in the log too (the
        # non-interactive way, `cairnctl ct console --log`).
        self.session("ct", CT, b"echo again-$((9*9))\n", b"again-81")
        self.assertEqual(self.call("ct.info", CT)["state"], "running")
        out = self.cairnctl("ct", "console", CT, "--log")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("typed-42", out.stdout)
        self.assertIn("again-81", out.stdout)

    def test_vm_console(self):
        self.call("vm.create", {"name": VM, "vcpus": 1, "memory_mib": 32,
                                "kernel": f"{self.kit}/test-guest",
                                "cmdline": "cairn.test=echoes"})
        self.addCleanup(self.cleanup, ("vm.stop", VM, 0), ("vm.delete", VM))
        self.call("vm.start", VM)
        deadline = time.monotonic() + WAIT_S
        while "echo: ready" not in self.call("vm.console", VM, 4096):
            self.assertLess(time.monotonic(), deadline,
                            f"the test guest never said ready:\n{self.console_tail()}")
            time.sleep(0.5)
        self.session("vm", VM, b"hello console\n", b"echo: hello console (13 bytes)")
        self.assertEqual(self.call("vm.info", VM)["state"], "running")
        self.session("vm", VM, b"once more\n", b"echo: once more (9 bytes)")
        self.assertEqual(self.call("vm.info", VM)["state"], "running")
        out = self.cairnctl("vm", "console", VM, "--log")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("echo: once more (9 bytes)", out.stdout)


if __name__ == "__main__":
    import unittest
    unittest.main()
