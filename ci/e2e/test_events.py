#!/usr/bin/env python3
"""Appliance e2e of events and logs (issue 13): event.list gives a container's
create/start/stop/delete in order, and a VM whose VMM is killed with -9 as crashed; a host.toml
item that fails is listed with its reason by host.info (and as an event); `cairnctl logs hostd`
shows hostd's lines and `cairnctl monitor --once` the events.

Run: python3 -m unittest -v ci/e2e/test_events.py   (the image built with --debug-shell first)
"""

import json
import sys
import time
import unittest
import xmlrpc.client
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from appliance import ApplianceTestCase, api_config  # noqa: E402
from appliance import FAULT_BAD_PARAMS, FAULT_CONFLICT  # noqa: E402

TEMPLATE = "busybox"
TARBALL = "/usr/lib/cairn/debug/busybox-rootfs.tar"
VM = "evvm"
# The VMM's test guest echoing its console input: it runs until stopped.
VM_CMDLINE = "cairn.test=echoes"


class Events(ApplianceTestCase):
    name = "e2e-events"
    guest_kit = True
    cpus = 1

    def follow(self, since, what, name, want, within=60):
        """The kinds of the events about `what` `name` after `since`, followed with long polls
        until every kind in `want` came (or `within` seconds passed); and the next `since`."""
        seen, deadline = [], time.monotonic() + within
        while time.monotonic() < deadline:
            page = self.call("event.list", since, 5)
            for e in page["events"]:
                self.assertNotEqual(e["kind"], "lost", e)
                self.assertGreater(e["seq"], since)
                if e["what"] == what and e.get("name") == name:
                    seen.append(e["kind"])
            since = page["next"]
            if all(k in seen for k in want):
                return seen, since
        self.fail(f"events of {what} {name}: {seen}, want {want}\n{self.console_tail()}")

    def test_1_a_containers_lifecycle_in_order(self):
        _, out = self.guest(f"cat {TARBALL}.sha256")
        try:
            self.call("template.import", TEMPLATE, TARBALL, out.split()[0])
        except xmlrpc.client.Fault as f:
            if f.faultCode != FAULT_CONFLICT:
                raise
        since = self.call("event.list")["next"]
        self.call("ct.create", {"name": "ev1", "template": TEMPLATE,
                                "command": ["/bin/sh", "-c", "sleep 1000"]})
        self.call("ct.start", "ev1")
        self.call("ct.stopTimeout", "ev1", 0)
        self.call("ct.delete", "ev1")
        seen, _ = self.follow(since, "ct", "ev1", ["created", "started", "stopped", "deleted"])
        self.assertEqual(seen, ["created", "started", "stopped", "deleted"])
        # cairnctl monitor shows them too.
        p = self.cairnctl("--json", "monitor", "--once", "--since", str(since), "--type", "ct")
        self.assertEqual(p.returncode, 0, p.stderr)
        kinds = [e["kind"] for e in map(json.loads, p.stdout.splitlines())
                 if e.get("name") == "ev1"]
        self.assertEqual(kinds, ["created", "started", "stopped", "deleted"], p.stdout)

    def test_2_a_vmm_killed_with_9_is_a_crash(self):
        kit = self.mount_guest_kit()
        since = self.call("event.list")["next"]
        self.call("vm.create", {"name": VM, "vcpus": 1, "memory_mib": 32,
                                "kernel": f"{kit}/test-guest", "cmdline": VM_CMDLINE})
        self.addCleanup(self.call, "vm.delete", VM)
        self.call("vm.start", VM)
        pid = self.call("vm.info", VM).get("pid")
        self.assertTrue(pid, self.call("vm.info", VM))
        self.guest(f"kill -9 {pid}")
        seen, _ = self.follow(since, "vm", VM, ["created", "started", "crashed"])
        self.assertEqual(seen, ["created", "started", "crashed"])
        self.assertEqual(self.call("vm.info", VM)["state"], "crashed")

    def test_3_cairnctl_logs_shows_hostds_lines(self):
        p = self.cairnctl("logs", "hostd")
        self.assertEqual(p.returncode, 0, p.stderr)
        lines = p.stdout.splitlines()
        self.assertTrue(lines, p.stderr)
        self.assertTrue(all(" hostd " in line for line in lines), lines[:5])
        self.assertTrue(any("hostd ready" in line for line in lines), lines[-20:])
        page = self.call("host.log", "", "warn")
        self.assertTrue(all(line["level"] in ("warn", "error") for line in page["lines"]))
        with self.assertRaises(xmlrpc.client.Fault) as cm:
            self.call("host.log", "nosuchd")
        self.assertEqual(cm.exception.faultCode, FAULT_BAD_PARAMS)

    def test_4_a_failed_host_toml_item_is_listed_with_its_reason(self):
        # A template whose file does not exist, and a container on it: both fail to apply.
        config = api_config("events-host", self.token, f"""
[[template]]
name = "missing"
source = "/var/lib/cairn/no-such-template.tar"
sha256 = "sha256:{'0' * 64}"

[[container]]
name = "ghost"
template = "missing"
""")
        self.call("host.applyConfig", config)
        # The services restart with it (apid too: its event numbers start again).
        deadline, failures = time.monotonic() + 90, []
        while time.monotonic() < deadline:
            try:
                failures = self.call("host.info").get("config_failures", [])
            except (OSError, xmlrpc.client.ProtocolError, xmlrpc.client.Fault):
                failures = []
            if len(failures) >= 2:
                break
            time.sleep(1)
        items = {f["item"]: f for f in failures}
        self.assertIn("template missing", items, failures)
        self.assertEqual(items["template missing"]["daemon"], "hostd")
        self.assertIn("no-such-template.tar", items["template missing"]["reason"])
        self.assertIn("container ghost", items, failures)
        events = self.call("event.list")["events"]
        self.assertTrue(any(e["what"] == "config" and e["kind"] == "failed"
                            and e.get("name") == "template missing" for e in events), events)
        p = self.cairnctl("info")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("template missing", p.stdout)


if __name__ == "__main__":
    unittest.main()
