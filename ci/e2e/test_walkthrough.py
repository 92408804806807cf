#!/usr/bin/env python3
"""The README's walkthrough, run as written: every ```sh block under its "## Walkthrough"
heading, in order, in one shell (so `eval "$(ci/appliance --env)"` and variables carry over),
from the repository's root, against a fresh appliance that `ci/appliance --detach` built and
booted from its own image directory (target/appliance-walkthrough) — what a newcomer does after
the README's first command.

Checked besides each block exiting 0:
  - ci/appliance with --token-file reuses the token in the file (the image's token, DIR/env);
    it prints the server certificate's fingerprint, which is the sha256 of the DER certificate
    the API serves, and the appliance's console prints the same; it prints the bundled
    template's digest;
  - afterwards the container web1 and the VM deb are running, and the VM's guest reached its
    init and stays up (its console).

Nothing from earlier tests is relied on: the image directory is made anew, the token file is
this test's, the guest kit is built when the cache lacks it. CAIRN_WALKTHROUGH_FRESH_CACHE=1
also starts from an empty cache (XDG_CACHE_HOME in a temporary directory: the kernel package is
fetched with apt and the guest kit built again, minutes more).

Run: python3 -m unittest -v ci/e2e/test_walkthrough.py
"""

import hashlib
import os
import re
import secrets
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import unittest
import xmlrpc.client
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from appliance import ROOT, api_config, free_port, stop_qemu  # noqa: E402

HEADING = "## Walkthrough"
IMAGE_DIR = Path(os.environ.get("CAIRN_WALKTHROUGH_DIR",
                                ROOT / "target" / "appliance-walkthrough"))
CONFIG_IMAGE_DIR = IMAGE_DIR.parent / (IMAGE_DIR.name + "-config")
BUILD_TIMEOUT = 3600
STEPS_TIMEOUT = 1800
GUEST_TIMEOUT = 300
CONSOLE_BYTES = 262144


def walkthrough_blocks(readme):
    """The ```sh blocks between the walkthrough's heading and the next `## ` heading."""
    lines = readme.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(HEADING)]
    if len(starts) != 1:
        raise AssertionError(f"README.md has {len(starts)} '{HEADING}' headings, expected 1")
    blocks, block = [], None
    for line in lines[starts[0] + 1:]:
        if block is None and line.startswith("## "):
            break
        if block is None and line.strip() == "```sh":
            block = []
        elif block is not None and line.strip() == "```":
            blocks.append("\n".join(block))
            block = None
        elif block is not None:
            block.append(line)
    if block is not None:
        raise AssertionError("README.md: a ```sh block of the walkthrough is not closed")
    return blocks


def script_of(blocks):
    """One bash script running the blocks in order, each announced on stderr first, so a
    failure names its block."""
    parts = ["set -euo pipefail"]
    for i, b in enumerate(blocks, 1):
        parts.append(f"echo '=== block {i}' >&2")
        parts.append(b)
    parts.append("echo '=== all blocks ran' >&2")
    return "\n".join(parts) + "\n"


def start_appliance(cls, env, *args):
    """`ci/appliance --detach --port cls.port ARGS` into env's CAIRN_APPLIANCE_DIR; sets
    cls.pid (QEMU) and answers its output. A failure stops what started and says why."""
    cmd = ["ci/appliance", "--detach", "--port", str(cls.port), *args]
    started = time.monotonic()
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=BUILD_TIMEOUT)
    pid_file = Path(env["CAIRN_APPLIANCE_DIR"]) / "qemu.pid"
    if pid_file.is_file():
        cls.pid = int(pid_file.read_text().strip())
    if p.returncode != 0:
        cls.tearDownClass()
        raise AssertionError(f"`{' '.join(cmd)}` failed ({p.returncode}):\n"
                             f"{p.stdout[-6000:]}\n{p.stderr[-6000:]}")
    print(f"\nci/appliance took {time.monotonic() - started:.0f}s:\n{p.stdout[-2500:]}",
          flush=True)
    return p.stdout


class WalkthroughExtractionTest(unittest.TestCase):
    """The extraction itself (no appliance)."""

    def test_blocks_are_found_in_order_and_others_left_out(self):
        text = ("# T\n```sh\nnot this\n```\n## Walkthrough: x\nprose `cmd`\n```sh\na\nb\n```\n"
                "```text\nnot run\n```\n```sh\nc\n```\n## Next\n```sh\nnot this either\n```\n")
        self.assertEqual(walkthrough_blocks(text), ["a\nb", "c"])
        with self.assertRaises(AssertionError):
            walkthrough_blocks("## Walkthrough\n```sh\nopen\n")

    def test_the_readme_has_a_walkthrough(self):
        blocks = walkthrough_blocks((ROOT / "README.md").read_text())
        self.assertGreaterEqual(len(blocks), 4, blocks)
        joined = "\n".join(blocks)
        for needed in ("ct start", "vm start"):
            self.assertIn(needed, joined)


class CiApplianceOptionsTest(unittest.TestCase):
    """ci/appliance's own options, without building or booting (--dry-run, --help, --env)."""

    def run_it(self, *args, env_dir=None):
        env = {k: v for k, v in os.environ.items() if not k.startswith("CAIRN_")}
        if env_dir is not None:
            env["CAIRN_APPLIANCE_DIR"] = str(env_dir)
        return subprocess.run(["ci/appliance", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=60)

    def test_dry_run_shows_where_each_option_goes(self):
        with tempfile.TemporaryDirectory() as d:
            p = self.run_it("--dry-run", "--config", "examples/full.toml",
                            f"--token-file={d}/t", "--port", "8443", "--detach",
                            env_dir=f"{d}/img")
            self.assertEqual(p.returncode, 0, p.stderr)
            lines = p.stdout.splitlines()
            self.assertEqual(lines[0], "ci/deps")
            self.assertIn(f"build --debug-shell --out {d}/img --config {ROOT}/examples/full.toml "
                          f"--token-file {d}/t", lines[1])
            self.assertIn(f"run --dir {d}/img --port 8443 --detach", lines[2])
            self.assertFalse(Path(f"{d}/t").exists(), "a dry run makes nothing")

    def test_bad_options_are_refused_before_any_work(self):
        p = self.run_it("--config", "/nonexistent/host.toml", "--dry-run")
        self.assertEqual(p.returncode, 2)
        self.assertIn("--config /nonexistent/host.toml: no such file", p.stderr)
        p = self.run_it("--token-file")
        self.assertEqual(p.returncode, 2)
        self.assertIn("--token-file needs a FILE", p.stderr)

    def test_help_and_env(self):
        p = self.run_it("--help")
        self.assertEqual(p.returncode, 0)
        for option in ("--config FILE", "--token-file FILE", "--env", "--dry-run"):
            self.assertIn(option, p.stdout)
        with tempfile.TemporaryDirectory() as d:
            p = self.run_it("--env", env_dir=d)
            self.assertEqual(p.returncode, 1)
            self.assertIn("no appliance booted", p.stderr)
            Path(d, "env").write_text("export CAIRN_URL=https://127.0.0.1:1\n")
            p = self.run_it("--env", env_dir=d)
            self.assertEqual((p.returncode, p.stdout),
                             (0, "export CAIRN_URL=https://127.0.0.1:1\n"))


class WalkthroughTest(unittest.TestCase):
    pid = None

    @classmethod
    def setUpClass(cls):
        if shutil.which("qemu-system-x86_64") is None and not (ROOT / "ci" / "deps").exists():
            raise AssertionError("qemu-system-x86_64 is not installed (run ci/deps)")
        cls.tmp = tempfile.TemporaryDirectory(prefix="cairn-walkthrough-")
        tmp = Path(cls.tmp.name)
        shutil.rmtree(IMAGE_DIR, ignore_errors=True)
        cls.env = {k: v for k, v in os.environ.items() if not k.startswith("CAIRN_")}
        cls.env["CAIRN_APPLIANCE_DIR"] = str(IMAGE_DIR)
        if os.environ.get("CAIRN_WALKTHROUGH_FRESH_CACHE") == "1":
            cls.env["XDG_CACHE_HOME"] = str(tmp / "cache")
        # A token the user keeps: ci/appliance must use it, not make another.
        cls.token = "walkthrough-" + secrets.token_hex(16)
        cls.token_file = tmp / "token"
        cls.token_file.write_text(cls.token + "\n")
        cls.token_file.chmod(0o600)
        cls.port = free_port()
        cls.appliance_out = start_appliance(cls, cls.env, "--token-file", str(cls.token_file))
        cls.url = f"https://api:{cls.token}@127.0.0.1:{cls.port}/RPC2"

    @classmethod
    def tearDownClass(cls):
        stop_qemu(cls.pid)
        cls.tmp.cleanup()

    def call(self, method, *params):
        with xmlrpc.client.ServerProxy(self.url, context=ssl._create_unverified_context()) as p:
            return getattr(p, method)(*params)

    def console_log(self):
        return (IMAGE_DIR / "console.log").read_text(errors="replace")

    def test_1_ci_appliance_prints_what_a_client_needs(self):
        out = self.appliance_out
        self.assertEqual((IMAGE_DIR / "token").read_text().strip(), self.token,
                         "--token-file: the token in the file is the image's")
        env = (IMAGE_DIR / "env").read_text()
        self.assertIn(f"export CAIRN_TOKEN={self.token}\n", env)
        self.assertIn(f"export CAIRN_URL=https://127.0.0.1:{self.port}\n", env)
        self.assertIn(f"API: https://127.0.0.1:{self.port}/RPC2", out)
        self.assertIn(f"token: {self.token}", out)

        pem = ssl.get_server_certificate(("127.0.0.1", self.port))
        der = ssl.PEM_cert_to_DER_cert(pem)
        fingerprint = "SHA256:" + hashlib.sha256(der).hexdigest()
        self.assertIn(f"certificate: {fingerprint}\n", out)
        self.assertIn(f"export CAIRN_FINGERPRINT={fingerprint}\n", env)
        banner = re.search(r"cairn: API (\S+) certificate (\S+)", self.console_log())
        self.assertIsNotNone(banner, "no API banner on the console")
        # QEMU's user network leases 10.0.2.15; apid starts after netd has the lease.
        self.assertEqual(banner.group(1), "https://10.0.2.15:8443/RPC2")
        self.assertEqual(banner.group(2), fingerprint, "the console shows the same certificate")

        bundled = re.search(r"bundled template: busybox (sha256:[0-9a-f]{64})", out)
        self.assertIsNotNone(bundled, out)
        self.assertIn(f"busybox {bundled.group(1)}",
                      (IMAGE_DIR / "bundled-templates").read_text())
        # The build's progress: its phases, not minutes of silence.
        self.assertRegex(out, r"image: \[\s*[0-9.]+s\] compressing the initramfs")
        # The config's own token is kept beside the build's ("image").
        self.assertRegex(out, r"API tokens in the image: admin, image")

    def test_2_the_readme_walkthrough_runs(self):
        blocks = walkthrough_blocks((ROOT / "README.md").read_text())
        p = subprocess.run(["bash", "-c", script_of(blocks)], cwd=ROOT, env=self.env,
                           capture_output=True, text=True, timeout=STEPS_TIMEOUT)
        if p.returncode != 0:
            ran = re.findall(r"=== block (\d+)", p.stderr)
            which = int(ran[-1]) if ran else 0
            self.fail(f"the walkthrough failed in block {which} (exit {p.returncode}):\n"
                      f"{blocks[which - 1] if which else ''}\n--- stdout\n{p.stdout[-4000:]}\n"
                      f"--- stderr\n{p.stderr[-4000:]}")
        self.assertIn("=== all blocks ran", p.stderr)

        self.assertEqual(self.call("ct.info", "web1")["state"], "running")
        self.assertEqual(self.call("vm.info", "deb")["state"], "running")
        deadline = time.monotonic() + GUEST_TIMEOUT
        console = ""
        while time.monotonic() < deadline:
            console = self.call("vm.console", "deb", CONSOLE_BYTES)
            if "cairn-guest: staying up" in console:
                break
            time.sleep(3)
        self.assertIn("cairn-guest: init reached", console)
        self.assertIn("cairn-guest: disk says hello", console)
        self.assertIn("cairn-guest: ping ok", console)
        self.assertIn("cairn-guest: staying up", console)
        self.assertEqual(self.call("vm.info", "deb")["state"], "running",
                         "the guest stays up (cairn.stay)")


class OwnConfigTest(unittest.TestCase):
    """`ci/appliance --config FILE`: the appliance boots with the user's host.toml, whose own
    token keeps working beside the build's, and whose [[template]] names the bundled template
    without a digest (imported at boot)."""

    pid = None

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="cairn-own-config-")
        tmp = Path(cls.tmp.name)
        shutil.rmtree(CONFIG_IMAGE_DIR, ignore_errors=True)
        cls.own_token = "own-" + secrets.token_hex(16)
        config = tmp / "host.toml"
        config.write_text(api_config("cairn-own", cls.own_token,
                                     '\n[[template]]\nname = "boot-busybox"\n'
                                     'source = "bundled:busybox"\n'))
        env = {k: v for k, v in os.environ.items() if not k.startswith("CAIRN_")}
        env["CAIRN_APPLIANCE_DIR"] = str(CONFIG_IMAGE_DIR)
        cls.port = free_port()
        cls.out = start_appliance(cls, env, "--config", str(config))
        cls.build_token = (CONFIG_IMAGE_DIR / "token").read_text().strip()

    @classmethod
    def tearDownClass(cls):
        stop_qemu(cls.pid)
        cls.tmp.cleanup()

    def call(self, token, method, *params):
        url = f"https://api:{token}@127.0.0.1:{self.port}/RPC2"
        with xmlrpc.client.ServerProxy(url, context=ssl._create_unverified_context()) as p:
            return getattr(p, method)(*params)

    def test_own_token_and_bundled_template(self):
        self.assertIn("API tokens in the image: admin, image", self.out)
        self.assertNotEqual(self.own_token, self.build_token)
        for token in (self.own_token, self.build_token):
            self.assertEqual(self.call(token, "host.info")["hostname"], "cairn-own")
        with self.assertRaises((xmlrpc.client.ProtocolError, xmlrpc.client.Fault)):
            self.call("not-" + self.own_token, "host.info")
        digest = re.search(r"bundled template: busybox (sha256:[0-9a-f]{64})", self.out).group(1)
        deadline, templates = time.monotonic() + 60, []
        while time.monotonic() < deadline:
            templates = {t["name"]: t for t in self.call(self.own_token, "template.list")}
            if "boot-busybox" in templates:
                break
            time.sleep(1)
        self.assertIn("boot-busybox", templates, self.call(self.own_token, "host.info"))
        self.assertEqual(templates["boot-busybox"]["sha256"], digest)
        failures = self.call(self.own_token, "host.info").get("config_failures", [])
        self.assertEqual(failures, [])


if __name__ == "__main__":
    unittest.main()
