#!/usr/bin/env python3
"""`init --sandbox` start → all services ready, N times (median), then host.info load against
the last sandbox's apid from inside its network namespace (api_load.py, with the Python peer).

Usage: sandbox.py BINDIR RUNS LOAD_SECONDS"""
import os
import pathlib
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

TOKEN = "bench-token"
CONFIG = """
[host]
hostname = "bench"

[host.management]
interface = "lo"
address = "192.0.2.10/24"

[api]
listen = "127.0.0.1"
port = 8443
[[api.token]]
name = "bench"
sha256 = "sha256:{digest}"
"""


def start(bindir, workdir):
    import hashlib
    cfg = workdir / "host.toml"
    cfg.write_text(CONFIG.format(digest=hashlib.sha256(TOKEN.encode()).hexdigest()))
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(bindir / "init"), "--sandbox", "--config", str(cfg),
                             "--state", str(workdir / "state"), "--bindir", str(bindir)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        if "boot sequence done" in line:
            if "4 of 4" not in line:
                raise SystemExit(f"sandbox came up incomplete: {line.strip()}")
            return proc, time.perf_counter() - t0
    raise SystemExit("init --sandbox exited before its services were ready")


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


def main():
    bindir, runs, load = pathlib.Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    times = []
    for i in range(runs):
        work = pathlib.Path(tempfile.mkdtemp(prefix="cairn-bench-"))
        proc, took = start(bindir, work)
        times.append(took * 1e3)
        if i == runs - 1 and load > 0:
            here = pathlib.Path(__file__).parent
            # apid listens inside the sandbox's network namespace.
            subprocess.run(["nsenter", f"--net=/proc/{proc.pid}/ns/net", sys.executable,
                            str(here / "api_load.py"), "https://127.0.0.1:8443/RPC2", TOKEN,
                            str(load), "--peer"], check=True)
        stop(proc)
        shutil.rmtree(work, ignore_errors=True)
    print(f"init --sandbox start → 4 services ready: median {statistics.median(times):.0f} ms "
          f"over {runs} runs ({', '.join(f'{t:.0f}' for t in times)} ms)")


if __name__ == "__main__":
    main()
