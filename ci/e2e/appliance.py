#!/usr/bin/env python3
"""The appliance e2e harness: boots the built image (target/appliance) in QEMU once per test
class, talks to it through the XML-RPC API like a user, and — in images built with
`--debug-shell` — runs commands inside the guest through a root shell on its second serial port.

It builds nothing: run `cargo run -p image -- build --debug-shell` first (ci/test does). An
appliance that is not built or does not boot fails the tests with the reason: they check what the
product is, so they never skip.
"""

import base64
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
import unittest
import xmlrpc.client
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APPLIANCE = Path(os.environ.get("CAIRN_APPLIANCE_DIR", ROOT / "target" / "appliance"))
# Where ApplianceTestCase.mount_guest_kit mounts the guest kit drive inside the appliance, and the
# drive's virtio serial (`image run --guest-kit`, image/src/guestkit.rs).
GUEST_KIT_DIR = "/run/cairn-guest-kit"
GUEST_KIT_SERIAL = "cairn-kit"
BOOT_TIMEOUT = int(os.environ.get("CAIRN_E2E_BOOT_TIMEOUT", "300"))

# Fault codes from model/src/fault.rs (the public API; never renumbered).
FAULT_PARSE = 100
FAULT_UNKNOWN_METHOD = 101
FAULT_BAD_PARAMS = 102
FAULT_UNAUTHORIZED = 103
FAULT_NOT_FOUND = 104
FAULT_CONFLICT = 105
FAULT_BUSY = 106


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pid_alive(pid):
    """True while `pid` runs. QEMU is not our child (`image run --detach` started it), so poll
    instead of waitpid; a zombie awaiting its reaper counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def stop_qemu(pid):
    """Ends a QEMU this test started, if it still runs: SIGTERM, then SIGKILL after 10 s."""
    if pid and pid_alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


def image_command():
    """The built `image` binary when present (ci/test just built it), else `cargo run`."""
    built = ROOT / "target" / "debug" / "image"
    if built.is_file():
        return [str(built)]
    return ["cargo", "run", "-q", "-p", "image", "--"]


UNCONFIGURED = ROOT / "target" / "appliance-unconfigured"
_unconfigured_built = False


def unconfigured_image():
    """The appliance image without a config, built once per test run from the binaries the
    configured image was built from (`image build --no-config --no-compile`)."""
    global _unconfigured_built
    if not _unconfigured_built:
        cmd = image_command() + ["build", "--no-config", "--no-compile", "--debug-shell",
                                 "--out", str(UNCONFIGURED)]
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
        if p.returncode != 0:
            raise AssertionError(f"`{' '.join(cmd)}` failed ({p.returncode}):\n"
                                 f"{p.stdout}\n{p.stderr}")
        _unconfigured_built = True
    return UNCONFIGURED


def api_config(hostname, token, extra=""):
    """A host.toml for the appliance under QEMU: `hostname`, DHCP on eth0, the API on port
    8443 with a generated certificate, opened by `token`; `extra` appended."""
    digest = hashlib.sha256(token.encode()).hexdigest()
    return (f'[host]\nhostname = "{hostname}"\n\n'
            '[host.management]\ninterface = "eth0"\ndhcp = true\n\n'
            '[api]\nlisten = "0.0.0.0"\nport = 8443\ntls = "generate"\n\n'
            f'[[api.token]]\nname = "admin"\nsha256 = "sha256:{digest}"\n{extra}')


def ext4_state_disk(path, size):
    """Makes `path` a sparse raw disk of `size` bytes holding an empty ext4 state partition
    (label CAIRN-STATE, as an installed host has): for a class's `state_disk`."""
    with open(path, "wb") as f:
        f.truncate(size)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "CAIRN-STATE", str(path)], check=True)
    return path


def why_unbootable():
    if shutil.which("qemu-system-x86_64") is None:
        return "qemu-system-x86_64 is not installed (run ci/deps)"
    for f in ("vmlinuz", "initrd.img", "token"):
        if not (APPLIANCE / f).is_file():
            return (f"{APPLIANCE / f} is missing: the appliance was not built "
                    "(`cargo run -p image -- build --debug-shell`)")
    return None


def console_tail(log, n=40):
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-n:])
    except OSError as e:
        return f"(no console log: {e})"


def qemu_threads(pid, interval=1.0):
    """QEMU's threads: name, state, CPU share over `interval` and, when not running, where it
    sleeps in the host kernel. A TCG vCPU thread near 100% is executing (or spinning), one
    near 0% is halted or blocked — which tells a busy appliance from a wedged one."""
    def sample():
        threads = {}
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                stat = (task / "stat").read_text()
                wchan = (task / "wchan").read_text().strip()
            except OSError:
                continue
            f = stat.rsplit(")", 1)[1].split()
            threads[task.name] = (stat[stat.index("(") + 1:stat.rindex(")")], f[0],
                                  int(f[11]) + int(f[12]), wchan)
        return threads

    try:
        first = sample()
        time.sleep(interval)
        second = sample()
    except OSError as e:
        return f"(cannot read /proc/{pid}/task: {e})"
    hz = os.sysconf("SC_CLK_TCK")
    lines = []
    for tid, (name, state, cpu, wchan) in sorted(second.items(), key=lambda t: int(t[0])):
        share = (cpu - first.get(tid, (name, state, cpu, wchan))[2]) / hz / interval * 100
        where = "" if state == "R" or wchan in ("", "0") else f" in {wchan}"
        lines.append(f"  {tid} {name!r}: {state}{where}, {share:.0f}% CPU")
    return "\n".join(lines)


def without_fpu_state(text):
    """A QEMU register dump without its FPU and vector registers: they never explain a hang,
    and they are most of its lines."""
    return "\n".join(line for line in text.splitlines()
                     if not line.startswith(("FCW=", "FPR", "XMM", "YMM", "ZMM", "Opmask")))


class Qmp:
    """QEMU's monitor on its unix socket (`image run --qmp-socket`). Events arrive unasked
    between replies; they are kept in `events`, as evidence."""

    def __init__(self, path, timeout=5):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.file = self.sock.makefile("rwb")
        self.events = []
        self.file.readline()  # the greeting
        self.execute("qmp_capabilities")

    def execute(self, command, **arguments):
        self.file.write(json.dumps({"execute": command, "arguments": arguments}).encode()
                        + b"\n")
        self.file.flush()
        while True:
            line = self.file.readline()
            if not line:
                raise ConnectionError("QEMU closed the monitor")
            reply = json.loads(line)
            if "event" in reply:
                self.events.append(f"event: {reply['event']} {reply.get('data', {})}")
            elif "error" in reply:
                return f"error: {reply['error']}"
            else:
                return reply.get("return")

    def hmp(self, command_line):
        return self.execute("human-monitor-command", **{"command-line": command_line})

    def close(self):
        self.sock.close()


def monitor_state(path, kernel_text=None):
    """QEMU's own view: run state, where each vCPU is over five samples (a vCPU looping shows
    a few addresses again and again), and all registers. With the appliance kernel's `_text`
    address, kernel addresses are also given as _text+offset: offsets are the same on every
    boot of that kernel, so any boot's /proc/kallsyms names them. A monitor that does not
    answer is reported as such: QEMU's main loop is then stuck, a finding in itself. Returns
    that text and the addresses sampled."""
    out = []
    samples = {}
    try:
        qmp = Qmp(path)
        try:
            out.append(f"query-status: {qmp.execute('query-status')}")
            for _ in range(5):
                regs = qmp.hmp("info registers -a")
                for cpu, rip in re.findall(r"CPU#(\d+)\s.*?RIP=([0-9a-f]+)", str(regs), re.S):
                    samples.setdefault(cpu, []).append(int(rip, 16))
                time.sleep(0.2)
            for cpu, rips in samples.items():
                out.append(f"CPU#{cpu} RIP samples: " + " ".join(
                    f"{r:x}" + (f" (_text+{r - kernel_text:#x})"
                                if kernel_text and 0 <= r - kernel_text < 1 << 30 else "")
                    for r in rips))
            for hmp in ("info cpus", "info registers -a"):
                text = qmp.hmp(hmp)
                out.append(f"{hmp}:\n"
                           f"{without_fpu_state(text) if isinstance(text, str) else text}")
            out += qmp.events
        finally:
            qmp.close()
    except (OSError, ValueError) as e:
        out.append(f"(the monitor did not answer: {e!r})")
    return "\n".join(out), [r for rips in samples.values() for r in rips]


def retranslate(qmp_path, gdb_path, addresses):
    """Makes QEMU drop what it translated from the pages holding `addresses` and touches no
    guest state: through QEMU's gdbstub (which stops the guest while attached) each page is
    read and written back unchanged, and a debug write invalidates the translations of what
    it writes. Kernel addresses only: they are mapped whichever vCPU the stub reads through.
    Returns None, or why it could not."""
    buf = b""

    def command(sock, data):
        """Sends one packet; returns the first reply that is not a stop report (attaching
        stops the guest, and the stub reports that once the vCPUs have stopped, between
        whichever replies)."""
        nonlocal buf
        sock.sendall(f"${data}#{sum(data.encode()) % 256:02x}".encode())
        while True:
            m = re.search(rb"\$([^#]*)#[0-9a-f]{2}", buf)
            if m:
                buf = buf[m.end():]
                sock.sendall(b"+")
                reply = m.group(1).decode()
                if not reply.startswith(("T", "S")):
                    return reply
                continue
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("the gdbstub closed")
            buf += chunk

    pages = sorted({a & ~0xfff for a in addresses if a >= 0xffff800000000000})
    if not pages:
        return "no kernel address among the vCPUs' samples"
    try:
        qmp = Qmp(qmp_path)
        try:
            qmp.hmp(f"gdbserver unix:{gdb_path},server=on,wait=off")
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(10)
                sock.connect(str(gdb_path))
                # Chunks of 1 KiB: the stub's packets hold at most 4 KiB of hex.
                for chunk in (p + o for p in pages for o in range(0, 4096, 1024)):
                    data = command(sock, f"m{chunk:x},400")
                    if len(data) != 2048:
                        return f"reading {chunk:#x}: the gdbstub answered {data[:40]!r}"
                    reply = command(sock, f"M{chunk:x},400:{data}")
                    if reply != "OK":
                        return f"writing {chunk:#x} back: the gdbstub answered {reply!r}"
                command(sock, "D")
            qmp.hmp("gdbserver none")
            status = qmp.execute("query-status")
            if not (isinstance(status, dict) and status.get("running")):
                qmp.execute("cont")
        finally:
            qmp.close()
    except (OSError, ValueError) as e:
        return repr(e)
    return None


class ApplianceTestCase(unittest.TestCase):
    """Boots one appliance for the class. Test names carry a number: unittest runs them in name
    order, and a poweroff test must come last. Subclasses set `name` (used for log files)."""

    name = "e2e"
    # True: boot with the guest kit attached (`image run --guest-kit`, built and cached on first
    # use); mount_guest_kit() then mounts it in the appliance.
    guest_kit = False
    guest_kit_dir = None
    # The appliance's CPUs (`image run --cpus`).
    cpus = 2
    # How QEMU boots it (`image run --boot`: direct, iso, uefi, stick, pxe, disk, disk-uefi).
    boot = "direct"
    # False: an image built without a config (`image build --no-config`), which boots into
    # maintenance mode; the token is the one-time one its console prints.
    configured = True
    # True: an image without a config that still boots running, with a config from elsewhere
    # (a CAIRN-CONFIG disk) opening the API with the configured image's token.
    boots_running = False
    # More kernel parameters (`image run --append`, direct and PXE boots) and the NIC's MAC.
    append = None
    mac = None
    # A raw disk image with the state partition (`image run --disk`, before `disks`).
    state_disk = None
    # Raw disk images attached as virtio disks in this order (`image run --disk`); with
    # boot "disk" or "disk-uefi" the first is booted.
    disks = ()
    # A directory QEMU's TFTP server (10.0.2.2) serves (`image run --tftp`).
    tftp = None
    # True: a reboot of the appliance reboots it in place instead of ending QEMU.
    allow_reboot = False
    # Guest TCP ports forwarded to free loopback ports here (`image run --forward`), beside
    # the API's; setUpClass maps each to its port here in `forwarded` ({guest: host}).
    forward_ports = ()
    forwarded = {}
    # The appliance kernel's _text (KASLR moves it each boot), if a class recorded it while
    # the debug shell still answered: rig_evidence then gives kernel addresses as offsets.
    kernel_text = None
    pid = None
    _shell = None

    @classmethod
    def setUpClass(cls):
        reason = why_unbootable()
        if reason:
            raise AssertionError(reason)
        socket.setdefaulttimeout(60)
        image_dir = APPLIANCE if cls.configured else unconfigured_image()
        cls.port = free_port()
        cls.forwarded = {guest: free_port() for guest in cls.forward_ports}
        cls.console_log = image_dir / f"{cls.name}-console.log"
        cls.shell_socket = image_dir / f"{cls.name}-shell.sock"
        cls.qmp_socket = image_dir / f"{cls.name}-qmp.sock"
        cmd = image_command() + [
            "run", "--detach", "--dir", str(image_dir), "--port", str(cls.port),
            "--log", str(cls.console_log), "--timeout", str(BOOT_TIMEOUT),
            "--shell-socket", str(cls.shell_socket), "--qmp-socket", str(cls.qmp_socket),
            "--cpus", str(cls.cpus), "--boot", cls.boot,
        ] + (["--guest-kit"] if cls.guest_kit else []) \
            + (["--append", cls.append] if cls.append else []) \
            + (["--mac", cls.mac] if cls.mac else []) \
            + (["--tftp", str(cls.tftp)] if cls.tftp else []) \
            + (["--allow-reboot"] if cls.allow_reboot else []) \
            + [a for guest, host in cls.forwarded.items()
               for a in ("--forward", f"{host}:{guest}")] \
            + [a for d in ([cls.state_disk] if cls.state_disk else []) + list(cls.disks)
               for a in ("--disk", str(d))]
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                           timeout=BOOT_TIMEOUT + 120)
        if p.returncode != 0:
            raise AssertionError(f"`{' '.join(cmd)}` failed ({p.returncode}):\n"
                                 f"{p.stdout}\n{p.stderr}")
        print(f"\n{p.stdout.strip()}")
        cls.pid = int((image_dir / "qemu.pid").read_text().strip())
        if cls.configured or cls.boots_running:
            cls.token = (APPLIANCE / "token").read_text().strip()
        else:
            # Maintenance mode prints its one-time token on the console (init's config_source).
            found = re.search(r"cairn: one-time API token: ([0-9a-f]{64})",
                              cls.console_log.read_text(errors="replace"))
            if not found:
                raise AssertionError("no one-time token on the console of an image without "
                                     f"a config:\n{console_tail(cls.console_log)}")
            cls.token = found.group(1)
        cls.url = f"https://api:{cls.token}@127.0.0.1:{cls.port}/RPC2"

    @classmethod
    def tearDownClass(cls):
        if cls._shell is not None:
            cls._shell.close()
            cls._shell = None
        cls.guest_kit_dir = None
        # If poweroff did not stop it (or a test failed first), do not leave a VM behind.
        stop_qemu(cls.pid)

    def call(self, method, *params, token=None):
        """One XML-RPC call on its own connection, closed afterwards."""
        url = self.url if token is None else f"https://api:{token}@127.0.0.1:{self.port}/RPC2"
        with xmlrpc.client.ServerProxy(url, context=ssl._create_unverified_context()) as p:
            return getattr(p, method)(*params)

    def fault(self, code, method, *params):
        """Calls method(params) expecting fault `code`; its message."""
        with self.assertRaises(xmlrpc.client.Fault) as caught:
            self.call(method, *params)
        self.assertEqual(caught.exception.faultCode, code, caught.exception.faultString)
        return caught.exception.faultString

    def cairnctl(self, *args, token=None, timeout=60):
        """`cairnctl --url … --insecure ARGS` against this appliance (the token from
        CAIRN_TOKEN); the finished process, output as text."""
        ctl = ROOT / "target" / "debug" / "cairnctl"
        if not ctl.is_file():
            self.fail(f"{ctl} is missing: `cargo build --workspace --bins` builds it")
        env = dict(os.environ, CAIRN_TOKEN=token or self.token)
        return subprocess.run([str(ctl), "--url", f"https://127.0.0.1:{self.port}/RPC2",
                               "--insecure", *args], capture_output=True, text=True, env=env,
                              timeout=timeout)

    def post_raw(self, body: bytes):
        """POSTs `body` as-is (authenticated) and returns (HTTP status, response body)."""
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=60,
                                           context=ssl._create_unverified_context())
        auth = base64.b64encode(f"api:{self.token}".encode()).decode()
        try:
            conn.request("POST", "/RPC2", body=body, headers={
                "Content-Type": "text/xml", "Authorization": f"Basic {auth}"})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def assertFault(self, body: bytes, code: int):
        status, data = self.post_raw(body)
        with self.assertRaises(xmlrpc.client.Fault, msg=f"HTTP {status}: {data[:300]!r}") as cm:
            xmlrpc.client.loads(data)
        self.assertEqual(cm.exception.faultCode, code, cm.exception.faultString)

    def console_tail(self, n=40):
        return console_tail(self.console_log, n)

    def assert_services_running(self, within=20):
        """apid answering means init started the others first, but a daemon may still be
        finishing its start: each of the four must be running within `within` seconds."""
        want = ("netd", "stord", "hostd", "apid")
        deadline = time.monotonic() + within
        while True:
            states = {s["name"]: s["state"] for s in self.call("host.info")["services"]}
            if all(states.get(n) == "running" for n in want) or time.monotonic() > deadline:
                break
            time.sleep(1)
        self.assertEqual({n: states.get(n) for n in want}, {n: "running" for n in want})

    def api_answers(self, timeout=10):
        """'yes', or why not: system.listMethods on a fresh connection with a short timeout."""
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout,
                                           context=ssl._create_unverified_context())
        auth = base64.b64encode(f"api:{self.token}".encode()).decode()
        try:
            conn.request("POST", "/RPC2", body=xmlrpc.client.dumps((), "system.listMethods"),
                         headers={"Content-Type": "text/xml", "Authorization": f"Basic {auth}"})
            resp = conn.getresponse()
            resp.read()
            return "yes" if resp.status == 200 else f"no: HTTP {resp.status}"
        except OSError as e:
            return f"no: {e!r}"
        finally:
            conn.close()

    def rig_evidence(self, shell_commands=()):
        """The appliance's state right now, for the message of a test that saw it stop
        answering: is QEMU alive (and what its threads do), QEMU's stderr and reset log, its
        monitor's view (run state, registers), does the API answer now, does the debug shell
        answer (with its uptime, load and kernel log, then `shell_commands`), and the end of
        the appliance's serial console. Every probe is short and none raises: what does not
        answer is reported as not answering."""
        cls = type(self)
        alive = pid_alive(cls.pid)
        parts = [f"QEMU (pid {cls.pid}): {'alive' if alive else 'EXITED'}"]
        if alive:
            parts.append(qemu_threads(cls.pid))
        for ext in ("qemu-stderr", "qemu-log"):
            path = cls.console_log.with_suffix("." + ext)
            parts.append(f"--- {path.name} (end):\n"
                         f"{without_fpu_state(console_tail(path, 200))[-3000:]}")
        if alive:
            monitor, rips = monitor_state(cls.qmp_socket, cls.kernel_text)
            parts.append(f"--- QEMU monitor:\n{monitor}")
            api = self.api_answers()
            parts.append(f"--- API answers now: {api}")
            shell = []
            try:
                if cls._shell is None:
                    cls._shell = GuestShell(cls.shell_socket, timeout=10)
                for command in ("cat /proc/uptime /proc/loadavg; dmesg | tail -n 25",
                                *shell_commands):
                    rc, out = cls._shell.run(command, 10)
                    shell.append(f"$ {command}  (exit {rc})\n{out.rstrip()}")
            except (OSError, RuntimeError) as e:
                shell.append(f"(the debug shell did not answer: {e!r})")
            parts.append("--- debug shell:\n" + "\n".join(shell))
        parts.append(f"--- appliance console (end):\n{self.console_tail()}")
        if alive and api != "yes":
            parts.append(f"--- {self.stale_translation_check(rips)}")
        return "\n".join(parts)

    STALE_TRANSLATION = "REVIVED BY RETRANSLATION ALONE"

    def stale_translation_check(self, rips, wait=30):
        """Last, after everything else was gathered: does the silent appliance answer again
        once QEMU has dropped what it translated from the code its vCPUs were found in
        (`rips`)? The guest's memory and registers stay as they were, so a hang in the
        guest's own state stays hung; one that ends was QEMU running stale translated code
        (the rig), whatever it looked like from inside."""
        cls = type(self)
        why = retranslate(cls.qmp_socket, APPLIANCE / f"{cls.name}-gdb.sock", rips)
        if why:
            return f"stale-translation check: could not make QEMU retranslate: {why}"
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            api = self.api_answers(timeout=5)
            if api == "yes":
                return (f"stale-translation check: {self.STALE_TRANSLATION}: the API answers "
                        f"again after QEMU dropped its translations of the code the vCPUs were "
                        f"in, guest state untouched — the appliance was wedged by QEMU (the "
                        f"rig), not by its own state")
            time.sleep(2)
        return (f"stale-translation check: still silent {wait} s after QEMU retranslated "
                f"the code the vCPUs were in (API: {api}): not a stale-translation wedge")

    def guest(self, command, timeout=60, check=True):
        """Runs `command` in the guest's debug shell; returns (exit code, output)."""
        cls = type(self)
        if cls._shell is None:
            cls._shell = GuestShell(cls.shell_socket)
        rc, out = cls._shell.run(command, timeout)
        if check and rc != 0:
            self.fail(f"guest command failed ({rc}): {command}\n{out}")
        return rc, out

    def mount_guest_kit(self):
        """Mounts the guest kit drive (found by its virtio serial) read-only at GUEST_KIT_DIR in
        the appliance, once per class; returns that directory. It holds vmlinux, initrd.img,
        disk.img (copy it before a VM writes to it), MANIFEST (sha256sum -c) and KIT."""
        cls = type(self)
        if cls.guest_kit_dir is None:
            _, out = self.guest(
                f"for d in /sys/block/vd*; do [ \"$(cat $d/serial 2>/dev/null)\" = "
                f"{GUEST_KIT_SERIAL} ] && echo ${{d##*/}}; done; true")
            devs = out.split()
            if len(devs) != 1:
                self.fail(f"want one virtio disk with serial {GUEST_KIT_SERIAL}, found {devs} "
                          f"(was the class booted with guest_kit = True?)")
            self.guest(f"mkdir -p {GUEST_KIT_DIR} && "
                       f"mount -t ext4 -o ro /dev/{devs[0]} {GUEST_KIT_DIR}")
            cls.guest_kit_dir = GUEST_KIT_DIR
        return cls.guest_kit_dir

    def wait_poweroff(self, limit=60):
        """Asks for host.poweroff and waits for QEMU to exit; the console must say so."""
        self.call("host.poweroff")
        deadline = time.monotonic() + limit
        while pid_alive(self.pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        self.assertFalse(pid_alive(self.pid),
                         f"QEMU still running {limit} s after host.poweroff; console:\n"
                         f"{self.console_tail()}")
        self.assertIn("cairn: power off", self.console_log.read_text(errors="replace"),
                      self.console_tail())


class GuestShell:
    """The debug image's root shell on ttyS1, through QEMU's unix socket. Each command ends with
    a line carrying its exit status, so output and status come back without a prompt."""

    def __init__(self, path, timeout=30):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self.buf = b""
        self.seq = 0
        # Each status line names its command (this connection's tag + a sequence number): after
        # a command timed out, its late output and status must not be taken for the next one's.
        self.tag = os.urandom(4).hex()
        # Debian's static busybox runs its own applets before anything on PATH; the aliases make
        # ip, tc and bridge mean iproute2's, which the image carries beside it.
        tools = "/usr/lib/cairn/debug/bin"
        rc, out = self.run(" ".join(["alias"] + [f"{t}={tools}/{t}" for t in
                                                 ("ip", "tc", "bridge")]), timeout)
        if rc != 0:
            raise RuntimeError(f"cannot set up the guest shell: {out}")

    def run(self, command, timeout):
        self.seq += 1
        marker = f"__CAIRN_RC_{self.tag}_{self.seq}="
        # The command text has `$?` where the status line has digits: only the status matches.
        end = re.compile(re.escape(marker.encode()) + rb"(\d+)__\n")
        line = f"{{ {command}\n}} 2>&1; echo \"{marker}$?__\"\n"
        self.sock.sendall(line.encode())
        deadline = time.monotonic() + timeout
        while True:
            m = end.search(self.buf)
            if m:
                out, self.buf = self.buf[:m.start()], self.buf[m.end():]
                # A timed-out command's late output ends with its own status line: drop it.
                stale = out.rfind(f"__CAIRN_RC_{self.tag}_".encode())
                if stale >= 0:
                    out = out[out.find(b"__\n", stale) + 3:]
                return int(m.group(1)), out.decode(errors="replace")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"guest command did not finish in {timeout} s: {command}\n"
                                   f"{self.buf.decode(errors='replace')}")
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the guest shell closed")
            self.buf += chunk

    def close(self):
        self.sock.close()
