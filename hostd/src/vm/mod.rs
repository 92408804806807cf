//! hostd's VMM, shaped like Firecracker's `vmm` crate: `config` (what to build), `vmm` (the
//! builder and the running VM), `vcpu` (vCPU threads and their state), `boot` (kernel loaders,
//! zero page, long mode), `memory`, `cpuid`, `mptable`, `devices/` (serial, i8042,
//! virtio-mmio block and net), `exit` (how a VM ends).

pub mod boot;
pub mod config;
pub mod control;
pub mod cpuid;
pub mod devices;
pub mod exit;
pub mod jail;
pub mod manager;
pub mod memory;
pub mod mptable;
pub mod process;
pub mod seccomp;
pub mod vcpu;
pub mod vmm;

use std::path::PathBuf;
use std::time::Duration;

pub use config::{DiskConfig, NetConfig, VmConfig};
pub use exit::VmExit;
pub use vmm::Vmm;

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
    #[error("memory must be at least {} MiB, got 0", memory::MIN_MEM_MIB)]
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
