//! `vm.*`: virtual machines, served by hostd.

use super::{actions, rpc_type};
use crate::vm::{VmChanges, VmInfo, VmSpec};

rpc_type!("struct": VmSpec, VmInfo, VmChanges);

actions! { ACTIONS;
    VmCreate = "vm.create", Hostd, (spec: VmSpec) -> VmInfo,
        "Creates (does not start) a VM from {name, vcpus? (1-8, default 1), memory_mib, kernel \
         (host path of an ELF vmlinux or a bzImage), initrd?, cmdline?, disks?: [{volume (a \
         stord volume, POOL/NAME, held by the VM until vm.delete) | path, read_only?}], nics?: [{network, mac?, addresses? (the guest's addr/prefix on \
         the network: port security lets the NIC send from these only, and they are held as \
         a container's are)}], resources?: {cpu_limit?, cpu_weight?, \
         cpuset?}, autostart?}. kernel, initrd and a disk's path may be upload:NAME, a file \
         sent with PUT /uploads/NAME, used where it is (no such upload: 104). Returns the VM \
         as vm.info shows it.";
    VmStart = "vm.start", Hostd, (name: String) -> bool,
        "Starts a created or stopped VM: its jailed VMM process boots the kernel.";
    VmStop = "vm.stop", Hostd, (name: String, timeout_s: Option<u32>) -> bool,
        "vm.stop(name[, timeout_s]): asks the guest to power off (Ctrl-Alt-Del), waits up to \
         timeout_s seconds (0 to 20, default 20; 0 kills at once), then kills the VMM.";
    VmPause = "vm.pause", Hostd, (name: String) -> bool,
        "Stops a running VM's vCPUs; memory and devices are kept.";
    VmResume = "vm.resume", Hostd, (name: String) -> bool,
        "Lets a paused VM's vCPUs run again.";
    VmSnapshot = "vm.snapshot", Hostd, (name: String, dir: String) -> bool,
        "vm.snapshot(name, dir): writes the VM's memory, vCPU and device state into dir, a new \
         directory on the host (absolute path; missing parents are made). The VM is paused for the \
         copy and left as it was. Must finish within 25 s. A VM that does not run -> 105; a \
         failed snapshot removes what it wrote and the directories it made.";
    VmRestore = "vm.restore", Hostd, (name: String, dir: String) -> bool,
        "vm.restore(name, dir): runs a stopped (or created) VM from the snapshot in dir \
         (absolute path on the host) instead of booting it.";
    VmSet = "vm.set", Hostd, (name: String, changes: VmChanges) -> VmInfo,
        "vm.set(name, changes): changes a stopped (or created) VM's {vcpus?, memory_mib?}; \
         only the members given change, checked by vm.create's rules (vcpus 1-8, memory_mib \
         at most the host's RAM) -> 102, nothing changed. A running or paused VM -> 105 (stop \
         it first); one host.toml declares -> 105 (change it there). Returns the VM as vm.info \
         shows it; the next vm.start boots with it.";
    VmDelete = "vm.delete", Hostd, (name: String) -> bool,
        "Deletes a VM that is not running and host.toml does not declare, and everything \
         it had on the host (not its disk images or volumes).";
    VmList = "vm.list", Hostd, () -> Vec<VmInfo>,
        "Every VM, as vm.info describes it.";
    VmInfoOf = "vm.info", Hostd, (name: String) -> VmInfo,
        "One VM: {name, state (created|running|paused|stopped|crashed), pid?, last_exit?, \
         taps?, macs?, spec}.";
    VmConsole = "vm.console", Hostd, (name: String, max_bytes: Option<u32>) -> String,
        "vm.console(name[, max_bytes]): the last max_bytes (1 to 1048576, default 65536) of the \
         VM's serial console log.";
    VmConsoleInput = "vm.console_input", Hostd, (name: String, data: String) -> bool,
        "vm.console_input(name, data): sends data (1 to 65536 bytes) to the VM's serial \
         console, as if typed: queued whole and fed to the UART as the guest reads, or \
         refused whole while the guest has not read what came before.";
}
