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
import subprocess
import sys
import time
import unittest
import xmlrpc.client
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from appliance import APPLIANCE, ApplianceTestCase, pid_alive  # noqa: E402

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

INIT_RE = re.compile(r"cairn-guest: init reached \(boot ([0-9a-f-]+)\)")
DONE_RE = re.compile(r"cairn-guest: done \(boot ([0-9a-f-]+)\)")


class NestedVm(ApplianceTestCase):
    name = "e2e-vm"
    guest_kit = True

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        try:
            self = cls("run")  # the helpers are instance methods; any instance will do
            cls.kit = self.mount_guest_kit()
        except BaseException:
            # unittest does not run tearDownClass when setUpClass fails: stop QEMU here.
            cls.tearDownClass()
            raise

    # The rig itself: in ~2 of ~150 nested starts on 2026-11-22 the appliance (QEMU TCG
    # emulating SVM for its KVM) died or stopped answering right at a nested VM's start, with
    # no message from its kernel. That is the L1 rig, not the nested guest; it is restarted
    # once per test, said loudly, and a second death fails the test.
    appliance_restarts = 0

    def appliance_dead(self):
        """True when the appliance's QEMU has exited or its API no longer answers."""
        if not pid_alive(self.pid):
            return True
        try:
            self.call("system.listMethods")
            return False
        except (OSError, xmlrpc.client.ProtocolError):
            return True

    def restart_appliance(self, during, error):
        cls = type(self)
        if cls.appliance_restarts >= 1:
            raise error
        cls.appliance_restarts += 1
        print(f"\nNOTE: the appliance (L1) died during {during} ({error!r}; QEMU "
              f"{'alive' if pid_alive(cls.pid) else 'exited'}); restarting it once")
        cls.cleanups = []
        cls.vm_ready = False
        ApplianceTestCase.tearDownClass.__func__(cls)
        type(self).setUpClass.__func__(cls)

    def with_restart(self, during, fn):
        """Runs fn(); if the appliance itself died meanwhile, restarts it once and runs fn again."""
        try:
            return fn()
        except (OSError, xmlrpc.client.ProtocolError) as e:
            if not self.appliance_dead():
                raise
            self.restart_appliance(during, e)
            return fn()

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
        for f in ("vmlinux", "initrd.img", "disk.img", "MANIFEST", "KIT"):
            self.assertIn(f, out.split(), f"{kit} lacks {f}")
        self.guest(f"cd {kit} && sha256sum -c MANIFEST")
        # An x86-64 ELF: \x7f E L F, class 2 (64-bit), data 1 (little-endian), machine 0x3e.
        _, out = self.guest(f"od -A n -t x1 -N 20 {kit}/vmlinux")
        head = out.split()
        self.assertEqual(head[:6], ["7f", "45", "4c", "46", "02", "01"], out)
        self.assertEqual(head[18:20], ["3e", "00"], out)
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
        cls.cleanups = [("net.delete", NET)]
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
                    self.call(method, *args)
                except (xmlrpc.client.Fault, OSError) as e:
                    print(f"cleanup {method}{tuple(args)}: {e}")
        cls.cleanups = []
        cls.vm_ready = False
        super().tearDownClass()

    def console(self):
        return self.call("vm.console", VM, CONSOLE_BYTES)

    def boot_once(self):
        """Starts the VM and waits for a guest boot this test has not seen end with `done`,
        then for the VM to stop. Returns (this boot's console lines, seconds to done), or
        (console tail, None) when it did not finish in BOOT_TIMEOUT."""
        seen = set(DONE_RE.findall(self.console()))
        started = time.monotonic()
        self.call("vm.start", VM)
        boot, text = None, ""
        while time.monotonic() - started < BOOT_TIMEOUT:
            text = self.console()
            new = [b for b in DONE_RE.findall(text) if b not in seen]
            if new:
                boot = new[-1]
                break
            time.sleep(1)
        if boot is None:
            # What ended it (or that it still runs), and the appliance's view, for the report.
            info = self.call("vm.info", VM)
            _, dmesg = self.guest("dmesg | tail -n 15", check=False)
            _, vmm_log = self.guest(f"tail -n 15 /run/cairn/vm/{VM}/vmm.log", check=False)
            try:
                self.call("vm.stop", VM, 0)
            except xmlrpc.client.Fault as f:
                print(f"vm.stop after a timeout: {f.faultString}")
            return ("\n".join(text.splitlines()[-40:])
                    + f"\n--- vm.info: {info}\n--- dmesg:\n{dmesg}\n--- vmm.log:\n{vmm_log}"), None
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

    def test_3_nested_guest_boots_with_disk_and_network(self):

        def boot():
            self.setup_vm()
            return self.boot_once()

        lines, took = self.with_restart("the first nested boot", boot)
        text = "\n".join(lines)
        self.assertIsNotNone(took, f"no 'cairn-guest: done' within {BOOT_TIMEOUT} s:\n{text}")
        print(f"\nnested guest: init to done in one boot, {took:.1f} s from vm.start")
        self.assertIn("cairn-guest: init reached", text)
        self.assertIn(f"cairn-guest: disk says {DISK_TEXT}", text)
        self.assertIn("cairn-guest: ping ok", text)

    def test_4_ten_boots_in_a_row_without_nolapic(self):
        self.assertNotIn("nolapic", CMDLINE)
        self.setup_vm()
        times, failures = [], []
        for i in range(1, RELIABILITY_BOOTS + 1):

            def boot():
                self.setup_vm()
                return self.boot_once()

            lines, took = self.with_restart(f"nested boot {i}", boot)
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

    def test_5_smp_guest_with_its_vcpus_in_a_cpu_limited_cgroup(self):
        """Two vCPUs (the MP table's second CPU brought up by Linux through the in-kernel
        LAPIC) and the containers' CPU limit on the VMM's cgroup (cgroup v2 in the appliance)."""

        def run():
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
            text = ""
            started = time.monotonic()
            while time.monotonic() - started < BOOT_TIMEOUT:
                text = self.call("vm.console", name, CONSOLE_BYTES)
                if DONE_RE.search(text):
                    break
                time.sleep(1)
            print(f"\nsmp guest: vm.start -> done in {time.monotonic() - started:.1f} s "
                  "at a 50% CPU limit")
            self.assertRegex(text, r"smp: Brought up 1 node, 2 CPUs", text[-3000:])
            self.assertIn("cairn-guest: init reached", text)
            self.call("vm.stop", name, 0)
            self.call("vm.delete", name)
            type(self).cleanups = type(self).cleanups[:-2]
            _, gone = self.guest(f"test -e {cg} && echo left || echo gone")
            self.assertEqual(gone.strip(), "gone", "the VM's cgroup outlived it")

        self.with_restart("the SMP boot", run)


if __name__ == "__main__":
    unittest.main()
