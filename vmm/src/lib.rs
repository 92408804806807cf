//! Cairn's VMM: our own KVM virtual machine monitor on kvm-ioctls and the rust-vmm crates,
//! run as one jailed process per VM. Shaped like Firecracker's `vmm` and `jailer` crates:
//!
//! - `config`: what a VMM builds ([`VmConfig`]);
//! - `machine`: the builder and the running VM ([`Vmm`]), snapshots;
//! - `vstate`: vCPUs (threads and their state), guest memory, CPUID;
//! - `boot`: kernel loaders, zero page, long mode, the MP table;
//! - `devices`: the buses, serial, i8042, virtio-mmio block and net;
//! - `exit`: how a VM ends;
//! - `jail`, `seccomp`: the VMM process's jail and its syscall allow-list;
//! - `launch`, `process`, `control`: the VMM process hostd starts ([`run`]), the records it
//!   shares with hostd, and its control socket protocol.
//!
//! hostd keeps the VM *manager* (specs, ports, jail roots, re-adoption) and starts this crate's
//! process by re-executing its own binary as `hostd --vmm LAUNCH.json`, which calls [`run`].

pub mod boot;
pub mod config;
pub mod control;
pub mod devices;
pub mod exit;
pub mod jail;
pub mod launch;
pub mod machine;
pub mod process;
pub mod seccomp;
pub mod vstate;

pub use config::{DiskConfig, NetConfig, VmConfig};
pub use exit::VmExit;
pub use machine::Vmm;
pub use process::run;

use std::path::PathBuf;
use std::time::Duration;

/// Why a VM could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("kernel {path}: cannot open it: {source}")]
    KernelMissing {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("kernel {path} is not an x86_64 ELF vmlinux or bzImage: {reason}")]
    KernelNotElf { path: PathBuf, reason: String },
    #[error("kernel {path}: cannot load it: {reason}")]
    KernelLoad { path: PathBuf, reason: String },
    #[error("initrd {path}: {reason}")]
    Initrd { path: PathBuf, reason: String },
    #[error("disk {path}: {reason}")]
    Disk { path: PathBuf, reason: String },
    #[error("tap {name}: {reason}")]
    Tap { name: String, reason: String },
    #[error("vcpus {0}: must be 1 to {max}", max = model::vm::MAX_VCPUS)]
    Vcpus(u8),
    #[error("memory must be at least {} MiB, got 0", vstate::memory::MIN_MEM_MIB)]
    MemoryZero,
    #[error("memory {mib} MiB is too small: at least {min} MiB")]
    MemoryTooSmall { mib: u32, min: u32 },
    #[error("memory {mib} MiB is more than the host's {host_mib} MiB")]
    MemoryTooLarge { mib: u32, host_mib: u64 },
    #[error("command line {cmdline:?} is not valid: {reason}")]
    Cmdline { cmdline: String, reason: String },
    #[error("/dev/kvm cannot be used: {0}")]
    KvmUnavailable(kvm_ioctls::Error),
    #[error("KVM {op} failed: {source}")]
    Kvm {
        op: &'static str,
        source: kvm_ioctls::Error,
    },
    #[error("guest memory: {what}: {reason}")]
    GuestMemory { what: &'static str, reason: String },
    #[error("VMM setup: {what}: {reason}")]
    Setup { what: &'static str, reason: String },
    #[error("snapshot {what}: {reason}")]
    Snapshot { what: String, reason: String },
    #[error("guest failed: {0}")]
    Guest(String),
    #[error("guest did not finish within {0:?}")]
    Timeout(Duration),
}

impl VmError {
    /// Whether the VM's own input (kernel, initrd, disks, memory size, command line, a
    /// snapshot's files) is at fault, not the host.
    pub fn is_input(&self) -> bool {
        matches!(
            self,
            VmError::KernelMissing { .. }
                | VmError::KernelNotElf { .. }
                | VmError::KernelLoad { .. }
                | VmError::Initrd { .. }
                | VmError::Disk { .. }
                | VmError::Vcpus(_)
                | VmError::MemoryZero
                | VmError::MemoryTooSmall { .. }
                | VmError::MemoryTooLarge { .. }
                | VmError::Cmdline { .. }
                | VmError::Snapshot { .. }
        )
    }
}
