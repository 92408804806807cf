#!/usr/bin/env python3
"""Appliance end-to-end test of the foundation: host.info, auth, hardening against bad bodies,
multicall, the DHCP-configured management address, cairnctl, and poweroff through the API.

Run: python3 -m unittest -v ci/e2e/test_appliance.py   (the image built first; see appliance.py)
"""

import hashlib
import json
import os
import ssl
import subprocess
import sys
import tempfile
import time
import xmlrpc.client
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from appliance import ApplianceTestCase  # noqa: E402
from appliance import FAULT_PARSE, FAULT_UNAUTHORIZED, FAULT_UNKNOWN_METHOD  # noqa: E402


class Appliance(ApplianceTestCase):
    name = "e2e"

    def test_1_host_info(self):
        info = self.call("host.info")
        self.assertEqual(info["hostname"], "cairn-dev")
        self.assertIsInstance(info["services"], list)
        for s in info["services"]:
            self.assertIn("name", s)
            self.assertIn("state", s)
        self.assert_services_running()
        # The serial log is read as a log: Cairn's lines carry no colour escape codes (the
        # firmware's screen clearing before the kernel is not ours).
        logged = [line for line in self.console_log.read_text(errors="replace").splitlines()
                  if any(level in line for level in (" INFO ", " WARN ", " ERROR "))]
        self.assertTrue(logged, "no log lines on the serial console")
        self.assertEqual([line for line in logged if "\x1b[" in line], [],
                         "ANSI escape codes in the serial console's log lines")

    def test_2_wrong_token_is_refused(self):
        try:
            self.call("host.info", token="not-the-token")
        except xmlrpc.client.ProtocolError as e:
            self.assertEqual(e.errcode, 401)
        except xmlrpc.client.Fault as f:
            self.assertEqual(f.faultCode, FAULT_UNAUTHORIZED)
        else:
            self.fail("a wrong token was accepted")

    def test_3_malformed_xml_is_a_parse_fault(self):
        self.assertFault(b"<methodCall><methodName>host.info</methodName><params>", FAULT_PARSE)
        self.assertFault(b"\x00\xff not xml at all", FAULT_PARSE)

    def test_4_doctype_and_entities_are_refused(self):
        body = (b'<?xml version="1.0"?>\n<!DOCTYPE x [<!ENTITY e "boom">]>\n'
                b"<methodCall><methodName>host.info</methodName><params><param>"
                b"<value><string>&e;</string></value></param></params></methodCall>")
        self.assertFault(body, FAULT_PARSE)
        # The daemon survived both.
        self.assertEqual(self.call("host.info")["hostname"], "cairn-dev")

    def test_5_multicall(self):
        res = self.call("system.multicall", [
            {"methodName": "host.info", "params": []},
            {"methodName": "no.such", "params": []},
        ])
        self.assertEqual(len(res), 2, res)
        self.assertIsInstance(res[0], list)
        self.assertEqual(len(res[0]), 1, res[0])
        self.assertEqual(res[0][0]["hostname"], "cairn-dev")
        self.assertIsInstance(res[1], dict)
        self.assertEqual(res[1]["faultCode"], FAULT_UNKNOWN_METHOD, res[1])
        self.assertIn("faultString", res[1])

    def test_6_list_methods(self):
        methods = self.call("system.listMethods")
        for m in ("host.info", "host.services", "host.poweroff"):
            self.assertIn(m, methods)

    def test_7_management_address_from_dhcp(self):
        # netd's DHCP client leased the address from QEMU's built-in DHCP server; the lease may
        # land a moment after apid is ready, so allow it a few seconds.
        deadline = time.monotonic() + 20
        while True:
            mgmt = self.call("host.info")["management"]
            if mgmt.get("source") == "dhcp" or time.monotonic() > deadline:
                break
            time.sleep(1)
        self.assertEqual(mgmt, {"interface": "eth0", "address": "10.0.2.15/24", "source": "dhcp"})

    def test_8_cairnctl(self):
        p = self.cairnctl("--json", "info")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(json.loads(p.stdout)["hostname"], "cairn-dev")
        p = self.cairnctl("services")
        self.assertEqual(p.returncode, 0, p.stderr)
        rows = [line.split() for line in p.stdout.splitlines()]
        self.assertEqual(rows[0][:2], ["NAME", "STATE"], p.stdout)
        self.assertEqual({r[0]: r[1] for r in rows[1:]},
                         {n: "running" for n in ("netd", "stord", "hostd", "apid")}, p.stdout)
        # The table names the API's own address (QEMU's user network gives 10.0.2.15).
        p = self.cairnctl("info")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stdout, r"(?m)^management +eth0 10\.0\.2\.15/\d+ \(dhcp\)$",
                         p.stdout)
        p = self.cairnctl("info", token="wrong")
        self.assertEqual(p.returncode, 1)
        self.assertIn("unauthorized", p.stderr)

    def test_8a_cairnctl_remote_pinned(self):
        # A remote pinned to the appliance's certificate by its fingerprint (SHA256:<hex of the
        # DER's sha256>, as the console prints it), in a config directory of the test's own.
        url = f"https://127.0.0.1:{self.port}"
        der = ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate(("127.0.0.1", self.port)))
        fp = "SHA256:" + hashlib.sha256(der).hexdigest()
        ctl = str(Path(__file__).resolve().parents[2] / "target" / "debug" / "cairnctl")
        with tempfile.TemporaryDirectory(prefix="cairnctl-home-") as home:
            env = {k: v for k, v in os.environ.items() if not k.startswith("CAIRN_")}
            env["XDG_CONFIG_HOME"] = home

            def run(*args):
                return subprocess.run([ctl, *args], capture_output=True, text=True, env=env,
                                      stdin=subprocess.DEVNULL, timeout=60)
            p = run("remote", "add", "dev", url, "--token", self.token,
                    "--accept-fingerprint", fp)
            self.assertEqual(p.returncode, 0, p.stderr)
            p = run("--remote", "dev", "--json", "info")
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual(json.loads(p.stdout)["hostname"], "cairn-dev")
            p = run("info")  # the default remote
            self.assertEqual(p.returncode, 0, p.stderr)
            # Another pinned certificate than the one served is refused, loudly.
            p = run("--url", url, "--token", self.token,
                    "--accept-fingerprint", "SHA256:" + "0" * 64, "info")
            self.assertEqual(p.returncode, 1, p.stdout)
            self.assertIn("CERTIFICATE HAS CHANGED", p.stderr)
            self.assertIn(fp, p.stderr)

    def test_8b_debug_shell(self):
        # The debug image's shell runs inside the appliance, as the appliance tests need it.
        _, out = self.guest("cat /proc/sys/kernel/hostname")
        self.assertEqual(out.strip(), "cairn-dev")
        rc, out = self.guest("ip -o link show eth0", check=False)
        self.assertEqual(rc, 0, out)
        rc, _ = self.guest("false", check=False)
        self.assertEqual(rc, 1)

    def test_8c_the_os_is_read_only(self):
        # Even root cannot change the OS: /usr, /etc and init are on a read-only mount.
        for path in ("/usr/bin/cairn-was-here", "/etc/cairn/host.toml", "/cairn-was-here"):
            rc, out = self.guest(f"echo x >> {path} 2>&1", check=False)
            self.assertNotEqual(rc, 0, f"{path} was writable")
            self.assertIn("Read-only file system", out, path)
        _, out = self.guest("grep -E '^[^ ]+ / ' /proc/mounts")
        self.assertIn(" ro", out, out)
        # State, runtime and scratch space stay writable.
        for d in ("/var/lib/cairn", "/run", "/tmp"):
            self.guest(f"echo x > {d}/.probe && rm {d}/.probe")

    def test_9_poweroff(self):
        self.wait_poweroff()

if __name__ == "__main__":
    unittest.main(verbosity=2)
