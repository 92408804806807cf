//! The vCPU run loop: port I/O to the serial port and the debug-exit port, MMIO (nothing mapped
//! yet: reads return all ones), HLT, shutdown, and the errors KVM reports. A watchdog kicks the
//! vCPU thread out of KVM_RUN with a signal when the deadline passes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kvm_ioctls::{VcpuExit, VcpuFd};

use super::serial::Serial;
use super::{ExitReason, VmError};

/// Port the guest writes to when it is done (QEMU's isa-debug-exit).
pub const DEBUG_EXIT_PORT: u16 = 0xf4;

/// The signal that kicks a vCPU thread out of KVM_RUN.
pub fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

/// Installs the (empty) handler of the kick signal; its only effect is KVM_RUN's EINTR.
pub fn install_kick_handler() -> Result<(), VmError> {
    extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}
    vmm_sys_util::signal::register_signal_handler(kick_signal(), on_kick).map_err(|e| {
        VmError::Setup {
            what: "installing the vCPU kick signal handler",
            reason: e.to_string(),
        }
    })
}

/// Runs the vCPU until the guest ends (debug exit, HLT, shutdown, a system event) or `stop` is
/// set (then the error is `Stopped`).
pub fn run(
    vcpu: &mut VcpuFd,
    serial: &mut Serial,
    stop: &Arc<AtomicBool>,
) -> Result<ExitReason, VmError> {
    loop {
        if stop.load(Ordering::Acquire) {
            return Err(VmError::Stopped);
        }
        let exit = match vcpu.run() {
            Ok(exit) => exit,
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => continue,
            Err(source) => {
                return Err(VmError::Kvm {
                    op: "KVM_RUN",
                    source,
                });
            }
        };
        match exit {
            VcpuExit::IoOut(port, data) => {
                if Serial::claims(port) {
                    if let Some(b) = data.first() {
                        serial.write(port, *b);
                    }
                } else if port == DEBUG_EXIT_PORT {
                    return Ok(ExitReason::DebugExit(data.first().copied().unwrap_or(0)));
                }
                // Anything else (POST codes at 0x80, absent devices) is ignored.
            }
            VcpuExit::IoIn(port, data) => {
                if Serial::claims(port) {
                    data.fill(0);
                    if let Some(b) = data.first_mut() {
                        *b = serial.read(port);
                    }
                } else {
                    data.fill(0xff); // no device: the bus floats high
                }
            }
            VcpuExit::MmioRead(_, data) => data.fill(0xff),
            VcpuExit::MmioWrite(_, _) => {}
            VcpuExit::Hlt => return Ok(ExitReason::Hlt),
            VcpuExit::Shutdown => return Ok(ExitReason::Shutdown),
            VcpuExit::SystemEvent(kind, _) => return Ok(ExitReason::SystemEvent(kind)),
            VcpuExit::Intr => continue,
            VcpuExit::FailEntry(reason, cpu) => {
                return Err(VmError::Guest(format!(
                    "KVM could not enter the guest on cpu {cpu}: hardware reason {reason:#x}"
                )));
            }
            VcpuExit::InternalError => {
                let rip = vcpu.get_regs().map(|r| r.rip).unwrap_or(0);
                return Err(VmError::Guest(format!(
                    "KVM internal error at rip {rip:#x}"
                )));
            }
            other => return Err(VmError::Guest(format!("unhandled vCPU exit {other:?}"))),
        }
    }
}
