//! hostd's VMM, first slice: boot a 64-bit ELF kernel (Linux boot protocol, 64-bit entry) on
//! one vCPU with a 16550 serial port, and run it to its end. Shaped like Firecracker's vmm:
//! `memory` (guest RAM and KVM slots), `boot` (loader, zero page, long mode), `vcpu` (the run
//! loop), `serial` (COM1). Later slices add the jailed per-VM process, irqchip/PIT, MP table,
//! CPUID filtering and virtio devices.

pub mod boot;
pub mod devices;
pub mod memory;
pub mod serial;
pub mod vcpu;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kvm_ioctls::Kvm;
use vmm_sys_util::signal::Killable;

/// What to boot.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// An x86_64 ELF kernel (vmlinux or the test guest).
    pub kernel: PathBuf,
    /// The kernel command line.
    pub cmdline: String,
    /// Guest memory in MiB.
    pub mem_mib: u32,
}

/// How the guest ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest wrote this value to the debug-exit port 0xf4.
    DebugExit(u8),
    /// The vCPU halted (no interrupts are wired yet, so it would never wake).
    Hlt,
    /// Triple fault or reset.
    Shutdown,
    /// A KVM system event (reset, shutdown, crash) of this type.
    SystemEvent(u32),
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct VmOutcome {
    /// Everything the guest wrote to its serial port.
    pub serial: String,
    /// How it ended.
    pub exit: ExitReason,
    /// From KVM_CREATE_VM to the end of the guest's first serial line.
    pub first_line_after: Option<Duration>,
    /// From KVM_CREATE_VM to the guest's end.
    pub elapsed: Duration,
}

/// Why a VM could not be booted or run.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("kernel {path}: cannot open it: {source}")]
    KernelMissing {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("kernel {path} is not an x86_64 ELF kernel: {reason}")]
    KernelNotElf { path: PathBuf, reason: String },
    #[error("kernel {path}: cannot load it: {reason}")]
    KernelLoad { path: PathBuf, reason: String },
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
    #[error("guest failed: {0}")]
    Guest(String),
    #[error("guest did not finish within {0:?}")]
    Timeout(Duration),
    #[error("the vCPU was stopped")]
    Stopped,
}

/// How long `Vm::boot` lets a guest run before stopping it.
pub const RUN_DEADLINE: Duration = Duration::from_secs(30);

/// A one-vCPU VM.
pub struct Vm;

impl Vm {
    /// Checks the config, creates the VM, boots the kernel and runs it until it ends (or
    /// [`RUN_DEADLINE`] passes). Bad input is reported before /dev/kvm is touched.
    pub fn boot(config: VmConfig) -> Result<VmOutcome, VmError> {
        Self::boot_with_deadline(config, RUN_DEADLINE)
    }

    /// [`Vm::boot`] with an explicit deadline.
    pub fn boot_with_deadline(config: VmConfig, deadline: Duration) -> Result<VmOutcome, VmError> {
        // Input first: cheap, and no KVM needed to say what is wrong.
        let ranges = memory::layout(config.mem_mib)?;
        if let Err(source) = std::fs::metadata(&config.kernel) {
            return Err(VmError::KernelMissing {
                path: config.kernel.clone(),
                source,
            });
        }

        let kvm = Kvm::new().map_err(VmError::KvmUnavailable)?;
        let created = Instant::now();
        let vm = kvm.create_vm().map_err(|source| VmError::Kvm {
            op: "KVM_CREATE_VM",
            source,
        })?;
        let mem = memory::create(&ranges)?;
        let entry = boot::load_kernel(&mem, &config.kernel)?;
        let cmdline_len = boot::write_cmdline(&mem, &config.cmdline)?;
        boot::write_zero_page(&mem, cmdline_len)?;
        memory::register(&vm, &mem)?;

        let mut vcpu = vm.create_vcpu(0).map_err(|source| VmError::Kvm {
            op: "KVM_CREATE_VCPU",
            source,
        })?;
        let cpuid = kvm
            .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .map_err(|source| VmError::Kvm {
                op: "KVM_GET_SUPPORTED_CPUID",
                source,
            })?;
        vcpu.set_cpuid2(&cpuid).map_err(|source| VmError::Kvm {
            op: "KVM_SET_CPUID2",
            source,
        })?;
        boot::setup_long_mode(&mem, &vcpu, entry)?;

        vcpu::install_kick_handler()?;
        let stop = Arc::new(AtomicBool::new(false));
        let (done_tx, done_rx) = mpsc::channel();
        let thread_stop = stop.clone();
        let handle = std::thread::Builder::new()
            .name("vcpu0".into())
            .spawn(move || {
                let mut serial = serial::Serial::new(None);
                let result = vcpu::run(&mut vcpu, &mut serial, &thread_stop);
                let _ = done_tx.send(());
                (result, serial.finish())
            })
            .map_err(|e| VmError::Setup {
                what: "starting the vCPU thread",
                reason: e.to_string(),
            })?;

        let timed_out = match done_rx.recv_timeout(deadline) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => false,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                stop.store(true, Ordering::Release);
                // Kick until the thread leaves KVM_RUN (a kick just before it enters is lost).
                while done_rx.recv_timeout(Duration::from_millis(20)).is_err()
                    && !handle.is_finished()
                {
                    let _ = handle.kill(vcpu::kick_signal());
                }
                true
            }
        };
        let (result, (out, first_line)) = handle.join().map_err(|_| VmError::Setup {
            what: "the vCPU thread",
            reason: "panicked".into(),
        })?;
        let elapsed = created.elapsed();
        drop(vm);
        drop(mem);
        if timed_out {
            return Err(VmError::Timeout(deadline));
        }
        Ok(VmOutcome {
            serial: String::from_utf8_lossy(&out).into_owned(),
            exit: result?,
            first_line_after: first_line.map(|t| t.duration_since(created)),
            elapsed,
        })
    }
}
