#!/usr/bin/env python3
"""Appliance e2e of tasks (issue 13): work beyond a request's 30 s runs as a task with an id.

One boot. A template is served over HTTP from this machine's loopback, which the appliance
reaches through QEMU's user network as 10.0.2.2: imported from its URL as a task with progress
(and through cairnctl), and a slow one cancelled mid-download, leaving no partial file and no
template. A container runs a 40 s exec as a task that answers its output; a cancelled exec's
processes (and what they started) are gone. A 320 MiB volume in a dir pool is backed up as a
task with its copy's progress and a result; a cancelled backup is deleted when its copy ends.

Run: python3 -m unittest -v ci/e2e/test_tasks.py   (the image built with --debug-shell first)
"""

import hashlib
import http.server
import io
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from appliance import ROOT, ApplianceTestCase, free_port  # noqa: E402

TARBALL = "/usr/lib/cairn/debug/busybox-rootfs.tar"
UPLOADS = "/var/lib/cairn/apid/uploads"
CT = "t1"
# The served template: a small rootfs with 8 MiB of random data, sent in 64 KiB pieces 30 ms
# apart (~4 s), so that its progress can be seen.
PIECE = 64 << 10


def make_template():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("bin", "etc", "tmp", "data"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for name, data in (("etc/os-release", b"ID=served\nVERSION_ID=1\n"),
                           ("data/blob", os.urandom(8 << 20))):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class Served(http.server.BaseHTTPRequestHandler):
    template = b""
    slow_bytes = 64 << 20

    def log_message(self, *args):
        pass

    def do_GET(self):
        try:
            if self.path == "/template.tar":
                self.send(self.template, pause=0.03)
            elif self.path == "/moved.tar":
                self.send_response(302)
                self.send_header("Location", "/template.tar")
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif self.path == "/slow.tar":
                # Announces 64 MiB and sends 64 KiB every half second: the download is still
                # running when the test cancels it.
                self.send_response(200)
                self.send_header("Content-Length", str(self.slow_bytes))
                self.end_headers()
                for _ in range(self.slow_bytes // PIECE):
                    self.wfile.write(b"\0" * PIECE)
                    self.wfile.flush()
                    time.sleep(0.5)
            else:
                self.send_error(404)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def send(self, data, pause):
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        for i in range(0, len(data), PIECE):
            self.wfile.write(data[i:i + PIECE])
            self.wfile.flush()
            time.sleep(pause)


class Tasks(ApplianceTestCase):
    name = "e2e-tasks"

    @classmethod
    def setUpClass(cls):
        Served.template = make_template()
        cls.template_sha = "sha256:" + hashlib.sha256(Served.template).hexdigest()
        cls.http_port = free_port()
        cls.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", cls.http_port), Served)
        cls.httpd.daemon_threads = True
        threading.Thread(target=cls.httpd.serve_forever, daemon=True).start()
        cls.base = f"http://10.0.2.2:{cls.http_port}"
        try:
            super().setUpClass()
        except BaseException:
            cls.httpd.shutdown()
            raise

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        cls.httpd.shutdown()
        cls.httpd.server_close()

    def wait_task(self, task, limit):
        """task.wait until the task ends; its last info."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            info = self.call("task.wait", task, 20)
            if info["state"] != "running":
                return info
        self.fail(f"task {task} still running after {limit} s: {self.call('task.info', task)}")

    def watch_progress(self, task, limit):
        """Polls task.info until the task ends; (its last info, every progress seen)."""
        seen = []
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            info = self.call("task.info", task)
            if "progress" in info and info["state"] == "running":
                seen.append(info["progress"])
            if info["state"] != "running":
                return info, seen
            time.sleep(0.2)
        self.fail(f"task {task} still running after {limit} s")

    def uploads_left(self):
        _, out = self.guest(f"ls -A {UPLOADS}")
        return out.split()

    def ensure_container(self):
        if any(c["name"] == CT for c in self.call("ct.list")):
            return
        if not any(t["name"] == "busybox" for t in self.call("template.list")):
            _, digest = self.guest(f"cat {TARBALL}.sha256")
            digest = digest.strip()
            if not digest.startswith("sha256:"):
                digest = f"sha256:{digest}"
            self.call("template.import", "busybox", TARBALL, digest)
        self.call("ct.create", {"name": CT, "template": "busybox",
                                "command": ["/bin/sh", "-c", "exec sleep 100000"]})
        self.call("ct.start", CT)

    def test_1_a_url_template_is_imported_as_a_task_with_progress(self):
        task = self.call("task.start", "template.import",
                         ["served", f"{self.base}/moved.tar", self.template_sha])
        info, seen = self.watch_progress(task, 120)
        self.assertEqual(info["state"], "ok", info)
        self.assertEqual(info["method"], "template.import")
        self.assertEqual(info["target"], "served")
        self.assertEqual(info["result"]["sha256"], self.template_sha)
        size = len(Served.template)
        self.assertTrue(seen, "progress was reported while it downloaded")
        self.assertTrue(all(p["unit"] == "bytes" and p["total"] == size for p in seen), seen)
        self.assertTrue(any(0 < p["done"] < size for p in seen), f"no partial progress: {seen}")
        self.assertEqual(info["progress"]["done"], size)
        self.assertIn("served", [t["name"] for t in self.call("template.list")])
        self.assertEqual(self.uploads_left(), [], "the downloaded file goes once imported")
        self.assertIn(task, [t["id"] for t in self.call("task.list")])

        # A digest that does not match: the task fails with 102 and nothing is kept.
        bad = "sha256:" + "0" * 64
        task = self.call("task.start", "template.import",
                         ["mismatch", f"{self.base}/template.tar", bad])
        info = self.wait_task(task, 120)
        self.assertEqual(info["state"], "failed", info)
        self.assertEqual(info["fault"]["code"], 102, info)
        self.assertNotIn("mismatch", [t["name"] for t in self.call("template.list")])
        self.assertEqual(self.uploads_left(), [])

        # cairnctl runs a URL import as a task and follows it.
        p = self.cairnctl("template", "import", "served2", f"{self.base}/template.tar",
                          self.template_sha, timeout=180)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("served2", [t["name"] for t in self.call("template.list")])
        p = self.cairnctl("task", "list")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("template.import", p.stdout)

    def test_2_a_cancelled_download_leaves_nothing(self):
        task = self.call("task.start", "template.import",
                         ["slow", f"{self.base}/slow.tar", "sha256:" + "1" * 64])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            info = self.call("task.info", task)
            if info.get("progress", {}).get("done", 0) > 0:
                break
            time.sleep(0.3)
        self.assertEqual(info["state"], "running", info)
        self.assertEqual(info["progress"]["total"], Served.slow_bytes)
        partial = self.uploads_left()
        self.assertTrue(partial, "a partial file is there while it downloads")
        self.assertTrue(self.call("task.cancel", task))
        info = self.wait_task(task, 30)
        self.assertEqual(info["state"], "cancelled", info)
        self.assertEqual(self.uploads_left(), [], "the partial file went")
        self.assertNotIn("slow", [t["name"] for t in self.call("template.list")])
        self.assertFalse(self.call("task.cancel", task), "an ended task is not cancelled again")

        # cairnctl follows a URL import as a task; Ctrl-C cancels it, and it leaves nothing.
        ctl = ROOT / "target" / "debug" / "cairnctl"
        proc = subprocess.Popen(
            [str(ctl), "--url", f"https://127.0.0.1:{self.port}/RPC2", "--insecure",
             "template", "import", "slow2", f"{self.base}/slow.tar", "sha256:" + "2" * 64],
            env=dict(os.environ, CAIRN_TOKEN=self.token), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            running = []
            while time.monotonic() < deadline and not running:
                running = [t for t in self.call("task.list")
                           if t["target"] == "slow2" and t.get("progress", {}).get("done", 0)]
                time.sleep(0.3)
            self.assertTrue(running, "cairnctl started the import as a task")
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("cancelling task", err)
        self.assertEqual(self.call("task.info", running[0]["id"])["state"], "cancelled")
        self.assertEqual(self.uploads_left(), [])
        self.assertNotIn("slow2", [t["name"] for t in self.call("template.list")])

    def test_3_a_long_exec_completes_as_a_task(self):
        self.ensure_container()
        started = time.monotonic()
        task = self.call("task.start", "ct.exec", [CT, ["/bin/sh", "-c", "sleep 40; echo done"]])
        info = self.wait_task(task, 120)
        self.assertGreaterEqual(time.monotonic() - started, 40)
        self.assertEqual(info["state"], "ok", info)
        self.assertEqual(info["result"], {"exit_code": 0, "stdout": "done\n", "stderr": ""})

    def test_4_a_cancelled_exec_leaves_no_process(self):
        self.ensure_container()
        script = "sleep 1001 & echo $! > /bg; echo $$ > /fg; sleep 1002"
        task = self.call("task.start", "ct.exec", [CT, ["/bin/sh", "-c", script]])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            out = self.call("ct.exec", CT, ["/bin/sh", "-c", "cat /fg /bg 2>/dev/null"])
            if len(out["stdout"].split()) == 2:
                break
            time.sleep(0.5)
        pids = out["stdout"].split()
        self.assertEqual(len(pids), 2, out)
        alive = ("for p in " + " ".join(pids) + "; do "
                 "if read a b s rest < /proc/$p/stat 2>/dev/null && [ \"$s\" != Z ]; "
                 "then echo alive $p; fi; done")
        self.assertEqual(len(self.call("ct.exec", CT, ["/bin/sh", "-c", alive])["stdout"]
                             .split("\n")) - 1, 2, "both run before the cancel")
        self.assertTrue(self.call("task.cancel", task))
        info = self.wait_task(task, 30)
        self.assertEqual(info["state"], "cancelled", info)
        self.assertEqual(self.call("ct.exec", CT, ["/bin/sh", "-c", alive])["stdout"], "",
                         "the exec and what it started are gone")

    def test_5_a_large_backup_runs_as_a_task_with_progress(self):
        self.call("pool.create", {"name": "bk", "kind": "dir"})
        vol = self.call("volume.create", {"volume": "bk/big", "size": "320M"})
        self.guest(f"dd if=/dev/zero of={vol['path']} bs=1M count=320 conv=notrunc 2>&1 && sync",
                   timeout=180)
        task = self.call("task.start", "volume.backup", ["bk/big", "bk"])
        info, seen = self.watch_progress(task, 600)
        self.assertEqual(info["state"], "ok", info)
        backup = info["result"]
        self.assertEqual(backup["size_bytes"], 320 << 20)
        self.assertTrue(backup["sha256"])
        self.guest(f"test -f {backup['backup']}")
        self.assertEqual(info["progress"]["total"], 320 << 20, info)
        self.assertTrue(all(p["total"] == 320 << 20 for p in seen), seen)
        # A cancelled backup runs to its end (a copy is not interrupted), then is deleted.
        _, before = self.guest(f"ls -A {Path(backup['backup']).parent}")
        task = self.call("task.start", "volume.backup", ["bk/big", "bk"])
        self.assertTrue(self.call("task.cancel", task))
        info = self.wait_task(task, 600)
        self.assertEqual(info["state"], "cancelled", info)
        _, after = self.guest(f"ls -A {Path(backup['backup']).parent}")
        self.assertEqual(sorted(after.split()), sorted(before.split()),
                         "the cancelled backup left nothing")
        # A snapshot as a task completes with the volume as its result; a cancelled one runs to
        # its end (it cannot be interrupted) and is then deleted.
        task = self.call("task.start", "volume.snapshot", ["bk/big", "s1"])
        info = self.wait_task(task, 300)
        self.assertEqual(info["state"], "ok", info)
        self.assertEqual([s["name"] for s in info["result"]["snapshots"]], ["s1"])
        task = self.call("task.start", "volume.snapshot", ["bk/big", "s2"])
        cancelled = self.call("task.cancel", task)
        info = self.wait_task(task, 300)
        self.assertEqual(info["state"], "cancelled" if cancelled else "ok", info)
        names = [s["name"] for s in self.call("volume.info", "bk/big")["snapshots"]]
        self.assertEqual(names, ["s1"] if cancelled else ["s1", "s2"],
                         "the cancelled snapshot left nothing")


if __name__ == "__main__":
    import unittest
    unittest.main()
