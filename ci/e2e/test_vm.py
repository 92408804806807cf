#!/usr/bin/env python3
"""Appliance e2e for Cairn's VMM: a real Linux guest (the guest kit: Debian's own kernel as an
uncompressed vmlinux, a busybox initramfs, an ext4 disk) booted as a nested VM through the
XML-RPC API, inside the appliance under QEMU (`-cpu max`: the appliance sees SVM and has
/dev/kvm from kvm_amd).

The guest's /init (image/src/guest/init.sh) prints on its console:
    cairn-guest: init reached (boot <boot id>)
    cairn-guest: disk says hello from the virtio disk
    cairn-guest: ping ok            (or: ping failed …)
    cairn-guest: done (boot <boot id>)
and then resets (reboot -f with reboot=k: the i8042 reset ends the VM).

The kit also carries the VMM's own test guest (vmm/guest, `test-guest`): it boots in
milliseconds, prints `tick N` lines and `cairn-test-guest: done`, and resets the same way, so
one appliance can start a VM many times in a row.

No retries: when the appliance stops answering (or its QEMU exits) during a test, the test
fails with the rig's state gathered at that moment (ApplianceTestCase.rig_evidence: QEMU's
threads and monitor, the debug shell, the appliance's console, and whether making QEMU
retranslate the code its vCPUs are in revives it — the rig's known wedge, see NestedVm).

What this expects of the API (apid, hostd and the VMM it runs):
  - net.create({name, kind: "bridged", subnet, address}) gives the appliance 10.99.0.1 on the
    bridge; a VM NIC {network: "vmnet"} is a tap on it.
  - vm.create(spec) with kernel = an ELF vmlinux path, initrd, cmdline (the VMM appends its
    console and virtio_mmio.device=<size>@<base>:<irq> entries), disks [{path}] (the first disk
    is the guest's /dev/vda), nics [{network}] (the first is eth0).
  - vm.start(name); vm.console(name, max_bytes) returns the newest bytes of the serial console;
    it may keep or drop earlier boots (the boot id tells them apart).
  - After the guest resets: vm.info(name)["state"] == "stopped", last_exit says "reset".
  - vm.start works again on a stopped VM; vm.stop(name, 0) and vm.delete(name) clean up.

Until the VMM lands the boot tests skip, and only then: when vm.create is not among
system.listMethods. The appliance side (nested KVM, the guest kit) is checked regardless.

Run: python3 -m unittest -v ci/e2e/test_vm.py   (the image built with --debug-shell first)
"""

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import unittest
import xmlrpc.client
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from appliance import APPLIANCE, ApplianceTestCase  # noqa: E402

VM = "nested"
NET = "vmnet"
HOST_ADDR = "10.99.0.1"
GUEST_ADDR = "10.99.0.2/24"
# No `nolapic`: the VMM's MP table must make the guest's local APIC usable (without one the
# guest froze in calibrate_delay in 6 of 8 boots; see /work/shared/MACHINE-NOTES.md).
CMDLINE = f"reboot=k panic=-1 cairn.ip={GUEST_ADDR} cairn.peer={HOST_ADDR}"
DISK_TEXT = "hello from the virtio disk"
# A nested guest reaches its init in 10-16 s on an idle machine; with two builds beside it
# (2026-12-03) its own kernel clock said 99 s at /init, and 120 s timed out boots that were
# still going. A hang shows as no console progress at all, so the longer deadline costs
# nothing when boots are healthy.
BOOT_TIMEOUT = 300
STOP_TIMEOUT = 30
# CAIRN_VM_BOOTS raises it for a longer reliability run by hand.
RELIABILITY_BOOTS = int(os.environ.get("CAIRN_VM_BOOTS", "10"))
CONSOLE_BYTES = 262144
# Writable storage in the appliance for the guest's disk (the kit drive is read-only).
WORK_DIR = "/var/lib/cairn/test-vm"
THIN_DISK_MIB = 128
THIN_VM = "thinvm"
# The test guest's starts: timer interrupts through the nested irqchip (ticks), then its reset.
TINY = "tiny"
TINY_CMDLINE = "cairn.test=ticks cairn.ticks=3"
TINY_STARTS = int(os.environ.get("CAIRN_VM_STARTS", "30"))
# Not a performance bound: a start that has not ended by then is hung.
TINY_START_TIMEOUT = 120

INIT_RE = re.compile(r"cairn-guest: init reached \(boot ([0-9a-f-]+)\)")
DONE_RE = re.compile(r"cairn-guest: done \(boot ([0-9a-f-]+)\)")


class NestedVm(ApplianceTestCase):
    name = "e2e-vm"
    guest_kit = True
    # One appliance CPU: the wedge below needs a second vCPU running __schedule while the
    # first patches it, and the other rig failures of 2026-12-03 — L2 triple faults right
    # after the guest's i8042 probe (2 of 10 boots) and the L1 panic "stack guard page was
    # hit" with a corrupt GS base — were all seen with two. With one: 60 test-guest starts, 11 nested Debian boots and the SMP
    # guest, none failed, and each was faster (start median 1.39 s vs 1.83 s; SMP 72 s vs
    # 97 s). The nested guests still get two vCPUs (test_6): L1 runs them as threads.
    cpus = 1
    # The rig's own wedge, proven on 2026-12-03 (6 in ~580 nested starts): KVM flips
    # preempt_notifier_key at every KVM_CREATE_VM and VM teardown, so the appliance's Linux
    # live-patches a jump in __schedule (text_poke_bp: an int3 first, the jump back last)
    # while its other vCPU runs __schedule. QEMU 7.2's multi-threaded TCG let that vCPU keep
    # a translation holding the int3 after memory held the jump again; 6.1's
    # kprobe_int3_handler takes such an int3 for one "already removed" and returns to the same
    # address, so both vCPUs looped there with interrupts off: API and debug shell silent, no
    # kernel message, QEMU alive, and memory held the jump. Making QEMU retranslate alone
    # revived it, so rig_evidence ends with that and the failure names this cause when it
    # revives the appliance (STALE_TRANSLATION; it did, in the sixth). Not worked around:
    # `-accel tcg,thread=single` ended the wedge (400 starts, none) but then every nested
    # Debian boot hung after its early XSAVE warning (3 of 3).

    @classmethod
    def setUpClass(cls):
        # A blank disk for the thin pool test_7 boots a guest from (/dev/vda: disks come
        # before the kit, which is found by its serial).
        cls.scratch = tempfile.TemporaryDirectory(prefix="cairn-vm-")
        blank = Path(cls.scratch.name) / "thin.img"
        with open(blank, "wb") as f:
            f.truncate(THIN_DISK_MIB << 20)
        cls.disks = (blank,)
        super().setUpClass()
        try:
            self = cls("run")  # the helpers are instance methods; any instance will do
            cls.kit = self.mount_guest_kit()
            _, out = self.guest("grep -w _text /proc/kallsyms")
            cls.kernel_text = int(out.split()[0], 16)
        except BaseException:
            # unittest does not run tearDownClass when setUpClass fails: stop QEMU here.
            cls.tearDownClass()
            raise

    def call(self, method, *params, token=None):
        """The base class's API call; an appliance that no longer answers (or whose QEMU has
        exited) fails the test with the rig's state at that moment. A restart would hide
        exactly what these tests are here to find."""
        try:
            return super().call(method, *params, token=token)
        except (OSError, xmlrpc.client.ProtocolError) as e:
            self.rig_failure(f"the appliance stopped answering at {method}{params!r}: {e!r}")

    def guest(self, command, timeout=60, check=True):
        try:
            return super().guest(command, timeout, check)
        except OSError as e:
            self.rig_failure(f"the appliance's debug shell stopped answering at {command!r}: "
                             f"{e!r}")

    def rig_failure(self, what, shell_commands=(), details=""):
        """Fails with `what`, `details` and the rig's state now, naming the rig's known wedge
        when the evidence proved it."""
        evidence = self.rig_evidence(shell_commands)
        if self.STALE_TRANSLATION in evidence:
            what += (" — THE RIG'S KNOWN WEDGE: QEMU's multi-threaded TCG ran stale translated "
                     "code (see NestedVm), not a Cairn bug")
        self.fail(f"{what}\n{details}--- the rig:\n{evidence}")

    # --- what the appliance gives the VMM: checked now, VMM or not -------------------------

    def test_0_one_rule_source_for_vm_create_and_config_check(self):
        """vm.create is checked by hostd with the rules host.toml's [[vm]] follows: the API's
        fault and `cairnctl config check` say the same words after the value."""
        spec = {"name": "rules", "vcpus": 9, "memory_mib": 2 << 20, "kernel": "/boot/vmlinux"}
        with self.assertRaises(xmlrpc.client.Fault) as cm:
            self.call("vm.create", spec)
        self.assertEqual(cm.exception.faultCode, 102, cm.exception.faultString)
        api = cm.exception.faultString
        self.assertIn("vcpus 9 is out of range; expected 1 to 8", api)
        self.assertIn("memory_mib 2097152 is more than a VM can have", api)
        self.assertNotIn("rules", [v["name"] for v in self.call("vm.list")])

        ctl = Path(__file__).resolve().parents[2] / "target" / "debug" / "cairnctl"
        toml = APPLIANCE / "rules.toml"
        toml.write_text('[host]\nhostname = "h"\n[host.management]\ninterface = "eth0"\n'
                        'dhcp = true\n[[vm]]\nname = "rules"\nvcpus = 9\nmemory = "2T"\n'
                        'kernel = "/boot/vmlinux"\n')
        out = subprocess.run([str(ctl), "config", "check", str(toml)], capture_output=True,
                             text=True)
        self.assertNotEqual(out.returncode, 0, out.stdout)
        diag = out.stdout + out.stderr
        self.assertIn('rules.toml:8:9: vcpus 9 in vm "rules" is out of range; expected 1 to 8',
                      diag)
        for words in ("is out of range; expected 1 to 8",
                      'is more than a VM can have; expected at most 1048576 MiB ("1T")'):
            self.assertIn(words, api)
            self.assertIn(words, diag)

    def test_1_nested_kvm_in_the_appliance(self):
        _, out = self.guest("grep -c -w svm /proc/cpuinfo")
        self.assertGreater(int(out.strip()), 0, "no svm flag: is QEMU run with -cpu max?")
        _, out = self.guest("cat /proc/modules")
        loaded = {line.split()[0] for line in out.splitlines() if line.strip()}
        for m in ("irqbypass", "kvm", "kvm_amd", "tun"):
            self.assertIn(m, loaded, f"module {m} not loaded")
        self.guest("test -c /dev/kvm")
        self.guest("test -c /dev/net/tun")

    def test_2_guest_kit_is_complete(self):
        kit = self.kit
        _, out = self.guest(f"ls {kit}")
        for f in ("vmlinux", "initrd.img", "disk.img", "test-guest", "MANIFEST", "KIT"):
            self.assertIn(f, out.split(), f"{kit} lacks {f}")
        self.guest(f"cd {kit} && sha256sum -c MANIFEST")
        # x86-64 ELFs: \x7f E L F, class 2 (64-bit), data 1 (little-endian), machine 0x3e.
        for elf in ("vmlinux", "test-guest"):
            _, out = self.guest(f"od -A n -t x1 -N 20 {kit}/{elf}")
            head = out.split()
            self.assertEqual(head[:6], ["7f", "45", "4c", "46", "02", "01"], f"{elf}: {out}")
            self.assertEqual(head[18:20], ["3e", "00"], f"{elf}: {out}")
        # A newc cpio with the /init, busybox and the virtio/ext4 modules.
        _, out = self.guest(f"cpio -t < {kit}/initrd.img 2>/dev/null")
        names = out.split()
        for want in ("init", "bin/busybox", "etc/cairn-guest/modules"):
            self.assertIn(want, names, out[-2000:])
        for mod in ("virtio_mmio.ko", "virtio_blk.ko", "virtio_net.ko", "ext4.ko"):
            self.assertTrue(any(n.endswith("/" + mod) for n in names), f"no {mod} in initrd")
        _, out = self.guest(f"cat {kit}/KIT")
        print(f"\nguest kit: {' '.join(out.split())}")
        # The guest's disk, copied to writable storage for the VM, holds the text.
        self.copy_disk()
        self.guest(f"mkdir -p /tmp/kit-disk && mount -t ext4 -o loop,ro {WORK_DIR}/disk.img "
                   f"/tmp/kit-disk")
        _, out = self.guest("cat /tmp/kit-disk/hello.txt")
        self.guest("umount /tmp/kit-disk")
        self.assertEqual(out.strip(), DISK_TEXT)

    def copy_disk(self):
        self.guest(f"mkdir -p {WORK_DIR} && cp {self.kit}/disk.img {WORK_DIR}/disk.img")

    # --- the nested guest, through the API ------------------------------------------------

    def setup_vm(self):
        """vmnet and the VM `nested`, once for the class (the boot tests share them)."""
        cls = type(self)
        if cls.vm_ready:
            return
        self.copy_disk()  # a fresh copy: the guest may have written to the last one
        self.call("net.create", {"name": NET, "kind": "bridged", "subnet": "10.99.0.0/24",
                                 "address": f"{HOST_ADDR}/24"})
        cls.cleanups += [("net.delete", NET)]
        info = self.call("vm.create", {
            "name": VM, "vcpus": 1, "memory_mib": 256,
            "kernel": f"{self.kit}/vmlinux", "initrd": f"{self.kit}/initrd.img",
            "cmdline": CMDLINE,
            "disks": [{"path": f"{WORK_DIR}/disk.img"}],
            "nics": [{"network": NET}],
        })
        # Undone last in, first out: the VM goes before its network.
        cls.cleanups += [("vm.delete", VM), ("vm.stop", VM, 0)]
        self.assertEqual(info["name"], VM, info)
        self.assertEqual(info["state"], "created", info)
        cls.vm_ready = True

    vm_ready = False
    cleanups = []

    @classmethod
    def tearDownClass(cls):
        # Before the appliance goes away with the base class's tearDown.
        if cls.pid:
            self = cls("run")
            for method, *args in reversed(cls.cleanups):
                try:
                    ApplianceTestCase.call(self, method, *args)
                except (xmlrpc.client.Fault, OSError) as e:
                    print(f"cleanup {method}{tuple(args)}: {e}")
        cls.cleanups = []
        cls.vm_ready = False
        super().tearDownClass()
        cls.scratch.cleanup()

    def console(self, name=VM):
        return self.call("vm.console", name, CONSOLE_BYTES)

    def wait_done(self, name, seen=()):
        """Waits for a `cairn-guest: done` of a boot not in `seen` on VM `name`'s console: at
        most BOOT_TIMEOUT, and no longer once the VM has stopped without one (a reset or crash
        before done; waiting on would only burn the timeout). Returns (that boot's id or None,
        the console text, vm.info if the VM had stopped, else None)."""
        started = time.monotonic()
        while True:
            text = self.console(name)
            new = [b for b in DONE_RE.findall(text) if b not in seen]
            if new:
                return new[-1], text, None
            if time.monotonic() - started >= BOOT_TIMEOUT:
                return None, text, None
            info = self.call("vm.info", name)
            if info["state"] in ("stopped", "crashed"):
                # It may have printed done between the two reads.
                text = self.console(name)
                new = [b for b in DONE_RE.findall(text) if b not in seen]
                return (new[-1] if new else None), text, info
            time.sleep(1)

    def boot_once(self):
        """Starts the VM and waits for a guest boot this test has not seen end with `done`,
        then for the VM to stop. Returns (this boot's console lines, seconds to done), or
        (what went wrong with the console tail, None) when the VM stopped without done or
        BOOT_TIMEOUT passed."""
        seen = set(DONE_RE.findall(self.console()))
        started = time.monotonic()
        self.call("vm.start", VM)
        boot, text, stopped = self.wait_done(VM, seen)
        if boot is None:
            if stopped:
                why = (f"the VM stopped without 'cairn-guest: done' "
                       f"{time.monotonic() - started:.0f} s after vm.start; last_exit: "
                       f"{stopped.get('last_exit')!r}")
            else:
                why = f"no 'cairn-guest: done' within {BOOT_TIMEOUT} s"
            # What ended it (or that it still runs), and the appliance's view, for the report.
            info = stopped or self.call("vm.info", VM)
            _, dmesg = self.guest("dmesg | tail -n 15", check=False)
            _, vmm_log = self.guest(f"tail -n 15 /run/cairn/vm/{VM}/vmm.log", check=False)
            if not stopped:
                try:
                    self.call("vm.stop", VM, 0)
                except xmlrpc.client.Fault as f:
                    print(f"vm.stop after a timeout: {f.faultString}")
            return ([why] + text.splitlines()[-40:]
                    + [f"--- vm.info: {info}", f"--- dmesg:\n{dmesg}",
                       f"--- vmm.log:\n{vmm_log}"]), None
        took = time.monotonic() - started
        # This boot's lines: from its "init reached" to its "done" (none when the console no
        # longer holds its start).
        begin = text.rfind(f"cairn-guest: init reached (boot {boot})")
        end = text.find(f"cairn-guest: done (boot {boot})")
        lines = text[begin:end].splitlines() if 0 <= begin < end else []
        lines.append(f"cairn-guest: done (boot {boot})")
        # The reset ends the VM.
        deadline = time.monotonic() + STOP_TIMEOUT
        info = self.call("vm.info", VM)
        while info["state"] != "stopped" and time.monotonic() < deadline:
            time.sleep(0.5)
            info = self.call("vm.info", VM)
        self.assertEqual(info["state"], "stopped",
                         f"the VM did not stop {STOP_TIMEOUT} s after the guest reset: {info}")
        self.assertIn("reset", info.get("last_exit", ""), info)
        return lines, took

    def test_3_thirty_starts_of_the_test_guest_in_a_row(self):
        """The VMM's test guest started TINY_STARTS times in a row in one appliance, with no
        restart of anything: each start reaches its guest's ticks and `done`, ends by the
        guest's own reset (stopped, last_exit says reset), and leaves the API answering."""
        self.call("vm.create", {"name": TINY, "vcpus": 1, "memory_mib": 32,
                                "kernel": f"{self.kit}/test-guest", "cmdline": TINY_CMDLINE})
        type(self).cleanups += [("vm.delete", TINY), ("vm.stop", TINY, 0)]
        times = []
        for i in range(1, TINY_STARTS + 1):
            started = time.monotonic()
            self.call("vm.start", TINY)
            info = self.call("vm.info", TINY)
            while (info["state"] not in ("stopped", "crashed")
                   and time.monotonic() - started < TINY_START_TIMEOUT):
                time.sleep(0.1)
                info = self.call("vm.info", TINY)
            took = time.monotonic() - started
            # hostd empties the console within vm.start, so all of it is this start's: one
            # boot, not an earlier start's output read again.
            text = self.console(TINY)
            boots = text.count("cairn-test-guest: cmdline=")
            problems = []
            if info["state"] != "stopped":
                problems.append(f"state {info['state']!r} {took:.0f} s after vm.start")
            if "reset" not in (info.get("last_exit") or ""):
                problems.append(f"last_exit {info.get('last_exit')!r}")
            if boots != 1:
                problems.append(f"{boots} 'cairn-test-guest: cmdline=' lines on the console, "
                                "want this start's one")
            for want in ("tick 3\n", "cairn-test-guest: done"):
                if want not in text:
                    problems.append(f"no {want.strip()!r} on the console")
            if problems:
                pid = info.get("pid")
                self.rig_failure(
                    f"start {i} of {TINY_STARTS} failed: {'; '.join(problems)}",
                    shell_commands=[
                        f"tail -n 20 /run/cairn/vm/{TINY}/vmm.log",
                        "dmesg | grep -i -e kvm -e svm | tail -n 10",
                    ] + ([f"for t in /proc/{pid}/task/*; do echo $(cat $t/comm) "
                          f"$(cut -d' ' -f3 $t/stat) $(cat $t/wchan); done"] if pid else []),
                    details=f"--- vm.info: {info}\n--- its console (end):\n"
                    + "\n".join(text.splitlines()[-30:])
                    + f"\n--- earlier starts (vm.start -> stopped, s): "
                    f"{', '.join(f'{t:.2f}' for t in times)}\n")
            times.append(took)
            # Beyond hostd: apid itself, on its own connection.
            self.call("system.listMethods")
        _, mem = self.guest("free -m | awk '/Mem:/ {print $3, $7}'", check=False)
        print(f"\n{TINY_STARTS} starts of the test guest, no restart; vm.start -> stopped: "
              f"min {min(times):.2f} s, median {statistics.median(times):.2f} s, "
              f"max {max(times):.2f} s; appliance memory used/available MiB: {mem.strip()}\n"
              f"each (s): {' '.join(f'{t:.2f}' for t in times)}")
        self.call("vm.delete", TINY)
        type(self).cleanups = [c for c in type(self).cleanups if c[1] != TINY]

    def test_4_nested_guest_boots_with_disk_and_network(self):
        self.setup_vm()
        lines, took = self.boot_once()
        text = "\n".join(lines)
        self.assertIsNotNone(took, f"the nested boot did not finish:\n{text}")
        print(f"\nnested guest: init to done in one boot, {took:.1f} s from vm.start")
        self.assertIn("cairn-guest: init reached", text)
        self.assertIn(f"cairn-guest: disk says {DISK_TEXT}", text)
        self.assertIn("cairn-guest: ping ok", text)

    def test_5_ten_boots_in_a_row_without_nolapic(self):
        self.assertNotIn("nolapic", CMDLINE)
        self.setup_vm()
        times, failures = [], []
        for i in range(1, RELIABILITY_BOOTS + 1):
            lines, took = self.boot_once()
            text = "\n".join(lines)
            if took is None or "cairn-guest: init reached" not in text:
                failures.append(f"boot {i}:\n{text}")
                continue
            times.append(took)
            # The appliance's memory after each boot: a leak per VM would show here.
            _, mem = self.guest("free -m | awk '/Mem:/ {print $3, $7}'", check=False)
            print(f"\nboot {i}: {took:.1f} s; appliance memory used/available MiB: {mem.strip()}")
        if times:
            print(f"\n{len(times)}/{RELIABILITY_BOOTS} boots reached init and done; "
                  f"vm.start -> done: min {min(times):.1f} s, max {max(times):.1f} s")
        self.assertEqual(failures, [], f"{len(failures)} of {RELIABILITY_BOOTS} boots did not "
                         "reach init and done:\n" + "\n".join(failures))

    def test_6_smp_guest_with_its_vcpus_in_a_cpu_limited_cgroup(self):
        """Two vCPUs (the MP table's second CPU brought up by Linux through the in-kernel
        LAPIC) and the containers' CPU limit on the VMM's cgroup (cgroup v2 in the appliance)."""
        self.setup_vm()
        name = "smp"
        self.call("vm.create", {
            "name": name, "vcpus": 2, "memory_mib": 256,
            "kernel": f"{self.kit}/vmlinux", "initrd": f"{self.kit}/initrd.img",
            "cmdline": CMDLINE,
            "resources": {"cpu_limit": 50, "cpu_weight": 300},
        })
        type(self).cleanups += [("vm.delete", name), ("vm.stop", name, 0)]
        self.call("vm.start", name)
        pid = self.call("vm.info", name).get("pid")
        self.assertTrue(pid, "a running VM has a pid")
        cg = "/sys/fs/cgroup/cairn.slice/vm-smp"
        _, cpu_max = self.guest(f"cat {cg}/cpu.max")
        _, weight = self.guest(f"cat {cg}/cpu.weight")
        _, procs = self.guest(f"cat {cg}/cgroup.procs")
        self.assertEqual(cpu_max.strip(), "50000 100000")
        self.assertEqual(weight.strip(), "300")
        self.assertIn(str(pid), procs.split(), f"VMM {pid} not in {cg}: {procs}")
        started = time.monotonic()
        _, text, stopped = self.wait_done(name)
        print(f"\nsmp guest: vm.start -> done in {time.monotonic() - started:.1f} s "
              "at a 50% CPU limit")
        ended = f"(the VM stopped early: {stopped})\n" if stopped else ""
        self.assertRegex(text, r"smp: Brought up 1 node, 2 CPUs", ended + text[-3000:])
        self.assertIn("cairn-guest: init reached", text, ended + text[-3000:])
        self.call("vm.stop", name, 0)
        self.call("vm.delete", name)
        type(self).cleanups = type(self).cleanups[:-2]
        _, gone = self.guest(f"test -e {cg} && echo left || echo gone")
        self.assertEqual(gone.strip(), "gone", "the VM's cgroup outlived it")


    def test_7_nested_guest_boots_from_a_thin_volume(self):
        """The guest's disk on a thin volume of a pool on the appliance's blank virtio disk
        (dm-thin, made by stord): the kit's disk image written into the volume, the VM given
        the volume by name, and the guest reads its text from it."""
        self.setup_vm()  # the network
        self.call("pool.create", {"name": "vmthin", "kind": "thin", "path": "/dev/vda"})
        self.cleanups += [("pool.delete", "vmthin")]
        _, size = self.guest(f"stat -c %s {self.kit}/disk.img")
        mib = -(-int(size.strip()) // (1 << 20))
        vol = self.call("volume.create", {"volume": "vmthin/root", "size": f"{mib}M"})
        self.cleanups += [("volume.delete", "vmthin/root")]
        self.guest(f"dd if={self.kit}/disk.img of={vol['path']} bs=1M conv=fsync 2>/dev/null")
        self.call("vm.create", {
            "name": THIN_VM, "vcpus": 1, "memory_mib": 256,
            "kernel": f"{self.kit}/vmlinux", "initrd": f"{self.kit}/initrd.img",
            "cmdline": CMDLINE,
            "disks": [{"volume": "vmthin/root"}],
            "nics": [{"network": NET}],
        })
        self.cleanups += [("vm.delete", THIN_VM), ("vm.stop", THIN_VM, 0)]
        self.assertEqual(self.call("volume.info", "vmthin/root")["used_by"], [f"vm:{THIN_VM}"])
        self.call("vm.start", THIN_VM)
        boot, text, stopped = self.wait_done(THIN_VM)
        self.assertIsNotNone(boot, f"the guest on a thin volume did not finish: {stopped}\n"
                                   f"{text[-3000:]}")
        self.assertIn(f"cairn-guest: disk says {DISK_TEXT}", text)

if __name__ == "__main__":
    unittest.main()
