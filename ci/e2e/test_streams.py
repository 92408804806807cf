#!/usr/bin/env python3
"""Appliance e2e for interactive exec (issue 13): `cairnctl ct exec -t NAME -- sh` and
`cairnctl ct enter NAME` driven under a pseudo-terminal, as a user at a terminal runs them,
through the API's WebSocket stream (/streams/exec) to hostd's exec on a pty in a busybox
container made from the image's bundled template.

The size of the terminal outside is what `stty size` reports inside, at the start and after a
resize mid-session (SIGWINCH to cairnctl, sent on as {"resize"}); Ctrl-C (0x03) typed outside
interrupts a `sleep 100` inside (the container's terminal makes it SIGINT); `exit 7` makes
cairnctl exit with 7; `enter` gives a login shell; a missing container and a wrong token are
told on stderr.

Run: python3 -m unittest -v ci/e2e/test_streams.py   (the image built with --debug-shell first)
"""

import os
import sys
import time
import xmlrpc.client
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from appliance import ApplianceTestCase, FAULT_CONFLICT  # noqa: E402
from ptyterm import PtyCairnctl, set_size  # noqa: E402

TEMPLATE = "busybox"
CT = "tty1"


class InteractiveExec(PtyCairnctl, ApplianceTestCase):
    retype_s = 3
    name = "e2e-streams"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        try:
            self = cls("run")  # the helpers are instance methods; any instance will do
            try:
                self.call("template.import", TEMPLATE, "bundled:busybox", "")
            except xmlrpc.client.Fault as f:
                if f.faultCode != FAULT_CONFLICT:
                    raise
            self.call("ct.create", {"name": CT, "template": TEMPLATE,
                                    "command": ["/bin/sleep", "1000000"]})
            self.call("ct.start", CT)
        except BaseException:
            # unittest does not run tearDownClass when setUpClass fails: stop QEMU here.
            cls.tearDownClass()
            raise

    def test_1_size_resize_ctrl_c_and_exit_code(self):
        pid, fd = self.spawn("ct", "exec", "-t", CT, "--", "/bin/sh", rows=33, cols=111)
        seen = bytearray()
        # The size set outside before the start is the pty's inside.
        self.read_until(fd, b"33 111", seen, typed=b"stty size\n")
        # A resize mid-session: the kernel tells cairnctl (SIGWINCH), cairnctl tells apid.
        set_size(fd, 44, 122)
        self.read_until(fd, b"44 122", seen, typed=b"stty size\n")
        # Ctrl-C reaches the foreground job inside: the sleep ends long before its 100 s, and
        # the shell reads the next line.
        os.write(fd, b"sleep 100\n")
        self.read_until(fd, b"sleep 100\r\n", seen)
        time.sleep(1)
        t = time.monotonic()
        os.write(fd, b"\x03")
        self.read_until(fd, b"back-42", seen, typed=b"echo back-$((6*7))\n", within=30)
        self.assertLess(time.monotonic() - t, 30)
        # The remote exit code is cairnctl's.
        os.write(fd, b"exit 7\n")
        code = self.wait_exit(pid, fd, seen)
        self.assertEqual(code, 7, bytes(seen).decode(errors="replace"))
        # The container runs on.
        self.assertEqual(self.call("ct.info", CT)["state"], "running")

    def test_2_enter_is_a_login_shell(self):
        pid, fd = self.spawn("ct", "enter", CT)
        seen = bytearray()
        self.read_until(fd, b"in-5", seen, typed=b"echo in-$((2+3))\n")
        # A login shell: busybox sh with -l (the template has no bash).
        self.read_until(fd, b"login-yes", seen,
                        typed=b"case $- in *l*) echo login-yes;; *) echo login-no-$-;; esac\n")
        os.write(fd, b"exit 3\n")
        self.assertEqual(self.wait_exit(pid, fd, seen), 3)

    def test_3_errors_are_told(self):
        pid, fd = self.spawn("ct", "exec", "-t", "nosuch", "--", "/bin/sh")
        seen = bytearray()
        code = self.wait_exit(pid, fd, seen)
        text = bytes(seen).decode(errors="replace")
        self.assertNotEqual(code, 0, text)
        self.assertIn("104", text)
        self.assertIn("nosuch", text)
        pid, fd = self.spawn("ct", "exec", "-t", CT, "--", "/bin/sh", token="wrong")
        seen = bytearray()
        code = self.wait_exit(pid, fd, seen)
        self.assertNotEqual(code, 0)
        self.assertIn("unauthorized", bytes(seen).decode(errors="replace"))
        # A program the container lacks: the terminal says so and the code is the shell's 127.
        pid, fd = self.spawn("ct", "exec", "-t", CT, "--", "/no/such")
        seen = bytearray()
        code = self.wait_exit(pid, fd, seen)
        self.assertEqual(code, 127, bytes(seen).decode(errors="replace"))
        self.assertIn("/no/such", bytes(seen).decode(errors="replace"))


if __name__ == "__main__":
    import unittest
    unittest.main()
