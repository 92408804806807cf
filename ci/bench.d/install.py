#!/usr/bin/env python3
"""host.install onto a blank 2 GiB virtual disk from the live ISO (BIOS), N times on the same
boot (forced after the first), each from the call to `done`; then N cold boots of the installed
disk (image bench --boot disk) to API ready. Figures are printed, never asserted. No busybox
floor on this path yet: the floor image has no installer to put it on a disk.

Usage: ci/bench.d/install.py IMAGE_DIR N
"""

import os
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import xmlrpc.client
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "e2e"))
from appliance import api_config, free_port, image_command, pid_alive  # noqa: E402


def boot(image_dir, scratch, how, disk, allow_reboot=False):
    """The appliance in QEMU (detached, one CPU) booted `how` with `disk` attached: its pid,
    an API proxy and the port."""
    port = free_port()
    subprocess.run(image_command() + [
        "run", "--detach", "--dir", str(image_dir), "--port", str(port), "--cpus", "1",
        "--boot", how, "--disk", str(disk), "--log", f"{scratch}/console-{how}.log",
    ] + (["--allow-reboot"] if allow_reboot else []), check=True, capture_output=True)
    pid = int((Path(image_dir) / "qemu.pid").read_text())
    token = (Path(image_dir) / "token").read_text().strip()
    url = f"https://api:{token}@127.0.0.1:{port}/RPC2"
    return pid, xmlrpc.client.ServerProxy(url, context=ssl._create_unverified_context()), port


def install(api, config, force):
    """host.install onto vda, waited for; its report."""
    api.host.install("vda", config, force)
    while api.host.installStatus()["state"] == "running":
        time.sleep(0.2)
    report = api.host.installStatus()
    if report["state"] != "done":
        raise SystemExit(f"install failed: {report}")
    return report


def stop(api, pid, poweroff=True):
    """Powers the appliance off (or kills QEMU when it does not go in 60 s)."""
    try:
        if poweroff:
            try:
                api.host.poweroff()
            except OSError as e:
                # Seen once after an install (a reset during the TLS handshake): reported,
                # and QEMU is still waited for, then killed.
                print(f"host.poweroff failed: {e!r}", file=sys.stderr)
        deadline = time.monotonic() + 60
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


def blank_disk(scratch):
    disk = Path(scratch) / "disk.img"
    with open(disk, "wb") as f:
        f.truncate(2 << 30)
    return disk


def main():
    image_dir, n = Path(sys.argv[1]), int(sys.argv[2])
    token = (image_dir / "token").read_text().strip()
    with tempfile.TemporaryDirectory() as scratch:
        disk = blank_disk(scratch)
        pid, api, _ = boot(image_dir, scratch, "iso", disk)
        config = api_config("bench", token)
        times = []
        try:
            for i in range(n):
                started = time.monotonic()
                report = install(api, config, i > 0)
                times.append(time.monotonic() - started)
                print(f"install {i + 1}: {times[-1]:.2f}s ({report['total_bytes'] / 2**20:.1f} "
                      "MiB copied)")
        finally:
            stop(api, pid)
        print(f"install to a blank disk: median {statistics.median(times):.2f}s over {n}")
        print("-- installed disk (BIOS): appliance")
        subprocess.run(image_command() + ["bench", "--dir", str(image_dir), "--boot", "disk",
                                          "--disk", str(disk), "-n", str(n)], check=True)


if __name__ == "__main__":
    main()
