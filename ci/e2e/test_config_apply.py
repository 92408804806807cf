#!/usr/bin/env python3
"""Appliance e2e of host.applyConfig from maintenance mode: the image built without a config
boots into maintenance, refuses a config with errors (fault 102 at file:line:col, nothing
changed), tells what a good one changes in a dry run, then takes it without a reboot — the
host runs with the new hostname, network and token, the maintenance token no longer opens
it, and `cairnctl config apply --dry-run` of the same file finds nothing to change.

Run: python3 -m unittest -v ci/e2e/test_config_apply.py   (the image built first)
"""

import sys
import tempfile
import time
import xmlrpc.client
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from appliance import ApplianceTestCase, api_config  # noqa: E402
from appliance import FAULT_BAD_PARAMS, FAULT_UNAUTHORIZED  # noqa: E402

NEW_TOKEN = "applied-config-token"
GOOD = api_config("applied-host", NEW_TOKEN, """
[[network]]
name = "lan"
kind = "bridged"
subnet = "10.10.0.0/24"
address = "10.10.0.1/24"
""")


class ApplyFromMaintenance(ApplianceTestCase):
    name = "e2e-apply"
    configured = False
    cpus = 1

    def test_1_a_bad_config_changes_nothing(self):
        bad = GOOD.replace('kind = "bridged"', 'kind = "bridged"\nuplink = 5', 1)
        with self.assertRaises(xmlrpc.client.Fault) as cm:
            self.call("host.applyConfig", bad)  # dry_run left out: false
        self.assertEqual(cm.exception.faultCode, FAULT_BAD_PARAMS, cm.exception.faultString)
        self.assertIn("host.toml:", cm.exception.faultString)
        self.assertEqual(self.call("host.info")["mode"], "maintenance")

    def test_2_dry_run_then_apply(self):
        dry = self.call("host.applyConfig", GOOD, True)
        for line in ("mode: maintenance -> running", 'network "lan": added'):
            self.assertIn(line, dry)
        self.assertTrue(any(c.startswith('hostname: "cairn-') for c in dry), dry)
        self.assertEqual(self.call("host.info")["mode"], "maintenance", "a dry run applied")

        self.assertEqual(self.call("host.applyConfig", GOOD, False), dry)
        # The services restart with the new config a second later; then only its token opens
        # the API.
        maintenance_token, type(self).token = type(self).token, NEW_TOKEN
        type(self).url = f"https://api:{NEW_TOKEN}@127.0.0.1:{self.port}/RPC2"
        deadline, info = time.monotonic() + 60, None
        while time.monotonic() < deadline:
            try:
                info = self.call("host.info")
                if info.get("hostname") == "applied-host" and info.get("mode") == "running":
                    break
            except (OSError, xmlrpc.client.ProtocolError, xmlrpc.client.Fault):
                pass
            time.sleep(1)
        self.assertIsNotNone(info, "the API never answered with the new token")
        self.assertEqual((info["hostname"], info["mode"], info["config_source"]),
                         ("applied-host", "running", "state"), info)
        self.assertNotIn("config_problem", info)
        deadline = time.monotonic() + 30
        while "lan" not in [n["name"] for n in self.call("net.list")]:
            self.assertLess(time.monotonic(), deadline, "netd never made the applied network")
            time.sleep(1)
        try:
            self.call("host.info", token=maintenance_token)
            self.fail("the maintenance token still opens the API")
        except xmlrpc.client.ProtocolError as e:
            self.assertEqual(e.errcode, 401)
        except xmlrpc.client.Fault as f:
            self.assertEqual(f.faultCode, FAULT_UNAUTHORIZED)
        _, hostname = self.guest("cat /proc/sys/kernel/hostname")
        self.assertEqual(hostname.strip(), "applied-host")

    def test_3_cairnctl_finds_nothing_more_to_change(self):
        with tempfile.NamedTemporaryFile("w", suffix=".toml") as f:
            f.write(GOOD)
            f.flush()
            p = self.cairnctl("config", "apply", "--dry-run", f.name, token=NEW_TOKEN)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout.strip(), "no changes", p.stdout)


if __name__ == "__main__":
    import unittest
    unittest.main()
