#!/usr/bin/env python3
"""Appliance e2e for containers' cgroup v2 limits, which this dev machine cannot enforce (its v2
hierarchy has no controllers): exercised in the appliance under QEMU through the XML-RPC API,
with busybox containers made from the debug image's template.

The appliance has 2 vCPUs under TCG, so the measurements are short (~3 s each) and their
tolerances are the issue's: a CPU limit within ±5 points, weights within ±25% of their ratio.
CPU use is read as the API reports it (ct.info usage.cpu_usec) over wall time measured here,
each sample timed at the midpoint of its call.

Run: python3 -m unittest -v ci/e2e/test_ct.py   (the image built with --debug-shell first)
"""

import sys
import time
import xmlrpc.client
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from appliance import ApplianceTestCase  # noqa: E402
from appliance import FAULT_BAD_PARAMS, FAULT_CONFLICT, FAULT_NOT_FOUND  # noqa: E402


TEMPLATE = "busybox"
TARBALL = "/usr/lib/cairn/debug/busybox-rootfs.tar"
BUSY_LOOP = ["/bin/sh", "-c", "while :; do :; done"]
WINDOW_S = 3.0


class Containers(ApplianceTestCase):
    name = "e2e-ct"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        try:
            cls.import_template()
        except BaseException:
            # unittest does not run tearDownClass when setUpClass fails: stop QEMU here.
            cls.tearDownClass()
            raise

    @classmethod
    def import_template(cls):
        """Imports the debug image's busybox template (already there after a restart)."""
        # The helpers are instance methods; any instance of the class will do for them.
        self = cls("run")
        rc, out = self.guest(f"cat {TARBALL}.sha256", check=False)
        if rc != 0:
            raise AssertionError(f"the debug image has no busybox template "
                                 f"({TARBALL}.sha256: {out.strip()})")
        digest = out.strip().split()[0]
        try:
            self.call("template.import", TEMPLATE, TARBALL, digest)
        except xmlrpc.client.Fault as f:
            if f.faultCode == FAULT_CONFLICT:
                return  # imported by an earlier run against the same appliance
            raise

    def run_ct(self, name, resources, command=BUSY_LOOP):
        """Creates and starts a container running `command` as PID 1; removed after the test."""
        self.call("ct.create", {"name": name, "template": TEMPLATE, "command": command,
                                "resources": resources})
        self.addCleanup(self.remove_ct, name)
        self.call("ct.start", name)

    def remove_ct(self, name):
        for method, args in (("ct.stopTimeout", (name, 0)), ("ct.delete", (name,))):
            try:
                self.call(method, *args)
            except xmlrpc.client.Fault as f:
                print(f"cleanup {method}({name}): {f.faultString}")

    def cpu_sample(self, names):
        """{name: cpu_usec} and the wall time at the middle of the calls that read them."""
        t0 = time.monotonic()
        usec = {n: self.call("ct.info", n)["usage"]["cpu_usec"] for n in names}
        return usec, (t0 + time.monotonic()) / 2

    def cpu_shares(self, names, seconds=WINDOW_S):
        """Fraction of one CPU each container used over `seconds`."""
        a, ta = self.cpu_sample(names)
        time.sleep(seconds)
        b, tb = self.cpu_sample(names)
        return {n: (b[n] - a[n]) / 1e6 / (tb - ta) for n in names}

    def cgroup_file(self, name, file):
        _, out = self.guest(f"cat /sys/fs/cgroup/cairn.slice/ct-{name}/{file}")
        return out.strip()

    def test_1_cpu_limit_and_live_change(self):
        self.run_ct("spin", {"cpu_limit": 25})
        self.assertEqual(self.cgroup_file("spin", "cpu.max"), "25000 100000")
        time.sleep(0.5)  # past the start, into steady throttling
        share = self.cpu_shares(["spin"])["spin"]
        print(f"\ncpu_limit 25: {share:.3f} of a CPU")
        self.assertAlmostEqual(share, 0.25, delta=0.05)
        # Live: same processes, new quota.
        pid = self.call("ct.info", "spin").get("pid")
        self.call("ct.set", "spin", {"cpu_limit": 50})
        self.assertEqual(self.cgroup_file("spin", "cpu.max"), "50000 100000")
        time.sleep(0.5)
        share = self.cpu_shares(["spin"])["spin"]
        print(f"cpu_limit 50: {share:.3f} of a CPU")
        self.assertAlmostEqual(share, 0.50, delta=0.05)
        info = self.call("ct.info", "spin")
        self.assertEqual(info["state"], "running", info)
        self.assertEqual(info.get("pid"), pid, "ct.set must not restart the container")
        self.assertEqual(info["resources"].get("cpu_limit"), 50, info)

    def test_2_memory_hog_is_oom_killed(self):
        # dd's buffer is bs bytes, filled from /dev/zero: 64 MiB touched against a 16 MiB limit
        # and no swap. The OOM killer takes dd; the container's sh stays.
        self.run_ct("hog", {"memory": 16 << 20, "swap": 0}, command=[
            "/bin/sh", "-c", "dd if=/dev/zero of=/dev/null bs=64M count=1; sleep 1000"])
        self.assertEqual(self.cgroup_file("hog", "memory.max"), str(16 << 20))
        deadline = time.monotonic() + 15
        while True:
            info = self.call("ct.info", "hog")
            if info["usage"]["oom_kills"] > 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        self.assertGreater(info["usage"]["oom_kills"], 0, info)
        self.assertLessEqual(info["usage"]["memory_bytes"], 16 << 20, info)

    def test_3_cpu_weights_split_a_contended_cpu(self):
        # Both pinned to CPU 0, so they contend for one CPU; weights 100:300 → 1:3.
        self.run_ct("light", {"cpu_weight": 100, "cpuset": "0"})
        self.run_ct("heavy", {"cpu_weight": 300, "cpuset": "0"})
        self.assertEqual(self.cgroup_file("heavy", "cpu.weight"), "300")
        self.assertEqual(self.cgroup_file("heavy", "cpuset.cpus"), "0")
        time.sleep(0.5)
        shares = self.cpu_shares(["light", "heavy"])
        ratio = shares["heavy"] / max(shares["light"], 1e-6)
        print(f"\nweights 100:300 on CPU 0: {shares} → 1:{ratio:.2f}")
        self.assertAlmostEqual(ratio, 3.0, delta=0.75)
        # Together they hold CPU 0, and nothing more (cpuset).
        self.assertLess(shares["light"] + shares["heavy"], 1.05, shares)

    def test_4_bad_limits_and_template(self):
        with self.assertRaises(xmlrpc.client.Fault) as cm:
            self.call("ct.create", {"name": "bad", "template": TEMPLATE,
                                    "resources": {"cpu_limit": 0, "cpu_weight": 20000}})
        self.assertEqual(cm.exception.faultCode, FAULT_BAD_PARAMS)
        self.assertIn("cpu_limit 0 is out of range", cm.exception.faultString)
        self.assertIn("cpu_weight 20000 is out of range", cm.exception.faultString)
        with self.assertRaises(xmlrpc.client.Fault) as cm:
            self.call("ct.create", {"name": "orphan", "template": "no-such-template"})
        self.assertIn(cm.exception.faultCode, (FAULT_BAD_PARAMS, FAULT_NOT_FOUND),
                      cm.exception.faultString)
        names = {c["name"] for c in self.call("ct.list")}
        self.assertFalse({"bad", "orphan"} & names, names)
        _, out = self.guest("ls /sys/fs/cgroup/cairn.slice 2>/dev/null; true")
        self.assertNotIn("ct-bad", out)
        self.assertNotIn("ct-orphan", out)

    def test_9_poweroff(self):
        self.wait_poweroff()
