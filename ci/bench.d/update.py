#!/usr/bin/env python3
"""A/B updates of an installed disk, in one QEMU that reboots in place (as hardware does):

  - the bundle's size (and its parts');
  - `cairnctl update FILE --reboot` N times (slot b, then a, …): from the first byte uploaded
    to the new system answering on the API, and the part of it up to "written";
  - a broken update (apid exits at once on the new system): from the written bundle to the old
    system answering again, after GRUB's two tries of the broken one.

Figures are printed, never asserted.

Usage: ci/bench.d/update.py IMAGE_DIR N   (IMAGE_DIR built with `image build --release`)
"""

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "e2e"))
from appliance import ROOT, api_config, console_tail, image_command  # noqa: E402
from install import blank_disk, boot, install, stop  # noqa: E402
from test_update import bundle, newc  # noqa: E402

NEXT_VERSION = "0.1.1-bench"
BROKEN_VERSION = "0.1.2-broken"


def os_info(api):
    """host.info's os, or None while the host does not answer."""
    try:
        return api.host.info()["os"]
    except Exception:  # noqa: BLE001 - rebooting: refused, reset, timed out
        return None


def wait_for(api, ok, within=600):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        info = os_info(api)
        if info is not None and ok(info):
            return info
        time.sleep(0.5)
    raise SystemExit(f"the host did not get there in {within} s: {os_info(api)}")


def update(ctl, port, token, path):
    """cairnctl update PATH --reboot; seconds until it returned."""
    started = time.monotonic()
    p = subprocess.run([str(ctl), "--url", f"https://127.0.0.1:{port}/RPC2", "--insecure",
                        "--token", token, "update", str(path), "--reboot"],
                       capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise SystemExit(f"cairnctl update failed: {p.stderr}")
    return time.monotonic() - started


def main():
    image_dir, n = Path(sys.argv[1]), int(sys.argv[2])
    ctl = ROOT / "target" / "release" / "cairnctl"
    token = (image_dir / "token").read_text().strip()
    with tempfile.TemporaryDirectory() as scratch:
        next_dir = Path(scratch) / "next"
        subprocess.run(image_command() + ["build", "--release", "--no-compile", "--os-version",
                                          NEXT_VERSION, "--out", str(next_dir)],
                       check=True, capture_output=True)
        good = Path(scratch) / "next.update"
        shutil.copy(next_dir / f"cairn-{NEXT_VERSION}.update", good)
        sizes = {p: (next_dir / p).stat().st_size for p in ("vmlinuz", "initrd.img")}
        print(f"bundle: {good.stat().st_size / 2**20:.1f} MiB (vmlinuz "
              f"{sizes['vmlinuz'] / 2**20:.1f}, initrd.img {sizes['initrd.img'] / 2**20:.1f})")
        initrd = (next_dir / "initrd.img").read_bytes()
        broken = Path(scratch) / "broken.update"
        # apid becomes cairnctl, which refuses apid's arguments and exits.
        bundle(broken, BROKEN_VERSION, [
            ("vmlinuz", (next_dir / "vmlinuz").read_bytes()),
            ("initrd.img", initrd + b"\0" * (-len(initrd) % 4)
             + newc([("usr/bin/apid", 0o120777, b"/usr/bin/cairnctl")]))])

        disk = blank_disk(scratch)
        pid, api, _ = boot(image_dir, scratch, "iso", disk)
        try:
            install(api, api_config("bench", token), False)
        finally:
            stop(api, pid)
            shutil.copy(Path(scratch) / "console-iso.log",
                        Path(tempfile.gettempdir()) / "cairn-bench-update-console-iso.log")
        pid, api, port = boot(image_dir, scratch, "disk", disk, allow_reboot=True)
        totals, written = [], []
        try:
            slot = wait_for(api, lambda i: True)["slot"]
            for i in range(n):
                to = "b" if slot == "a" else "a"
                started = time.monotonic()
                written.append(update(ctl, port, token, good))
                wait_for(api, lambda info: info["slot"] == to
                         and info["last_update"].startswith("ok:"))
                totals.append(time.monotonic() - started)
                slot = to
                print(f"update {i + 1} (to slot {to}): first byte uploaded -> written "
                      f"{written[-1]:.1f}s, -> N+1 answering {totals[-1]:.1f}s")
            print(f"update: first byte uploaded -> N+1 answering: median "
                  f"{statistics.median(totals):.1f}s over {n} (uploaded, checked and written: "
                  f"median {statistics.median(written):.1f}s)")
            started = time.monotonic()
            update(ctl, port, token, broken)
            written_at = time.monotonic()
            info = wait_for(api, lambda info: info["last_update"].startswith("failed:"))
            print(f"rollback: broken update written -> old system answering again in "
                  f"{time.monotonic() - written_at:.1f}s (two tries of the broken one; "
                  f"{info['os_version']} on slot {info['slot']})")
        finally:
            stop(api, pid)
            for log in Path(scratch).glob("console-*.log"):
                shutil.copy(log, Path(tempfile.gettempdir()) / f"cairn-bench-update-{log.name}")


if __name__ == "__main__":
    try:
        main()
    except BaseException:
        # The scratch directory is gone by now; the consoles were copied out first.
        for log in sorted(Path(tempfile.gettempdir()).glob("cairn-bench-update-console-*.log")):
            print(f"--- {log.name}\n{console_tail(log, 30)}", file=sys.stderr)
        raise
