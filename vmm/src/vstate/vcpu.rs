//! vCPUs: their boot configuration (CPUID, MSRs, LAPIC LINT pins, long mode for the BSP),
//! their state for snapshots, and the thread that runs each one. A vCPU thread runs KVM_RUN
//! and routes port I/O and MMIO exits to the buses; requests (pause, resume, save, exit) reach
//! it over a channel, and a signal kicks it out of KVM_RUN to read them.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::thread::JoinHandle;
use std::time::Duration;

use kvm_bindings::{
    CpuId, Msrs, kvm_cpuid_entry2, kvm_debugregs, kvm_lapic_state, kvm_mp_state, kvm_msr_entry,
    kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave,
};
use kvm_ioctls::{VcpuExit, VcpuFd};
use serde::{Deserialize, Serialize};
use vmm_sys_util::signal::Killable;

use crate::VmError;
use crate::devices::Bus;
use crate::exit::{ExitSignal, VmExit};

/// Port the test guest may write to end a run (QEMU's isa-debug-exit).
pub const DEBUG_EXIT_PORT: u16 = 0xf4;

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
const MISC_ENABLE_FAST_STRING: u64 = 1;
const MTRR_ENABLE_WB: u64 = (1 << 11) | 6;

fn kvm_err(op: &'static str) -> impl Fn(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { op, source }
}

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

/// Boot configuration shared by all vCPUs: CPUID, the MSRs Linux expects from firmware, LINT0
/// as ExtINT and LINT1 as NMI (virtual-wire mode until the guest programs its IOAPIC).
pub fn configure(vcpu: &VcpuFd, cpuid: &CpuId) -> Result<(), VmError> {
    vcpu.set_cpuid2(cpuid).map_err(kvm_err("KVM_SET_CPUID2"))?;
    let entries: Vec<kvm_msr_entry> = [
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_TSC, 0),
        (MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        (MSR_MTRR_DEF_TYPE, MTRR_ENABLE_WB),
    ]
    .iter()
    .map(|(index, data)| kvm_msr_entry {
        index: *index,
        data: *data,
        ..Default::default()
    })
    .collect();
    let msrs = Msrs::from_entries(&entries).map_err(|e| VmError::Setup {
        what: "boot MSRs",
        reason: format!("{e:?}"),
    })?;
    let set = vcpu.set_msrs(&msrs).map_err(kvm_err("KVM_SET_MSRS"))?;
    if set != entries.len() {
        let index = entries.get(set).map(|e| e.index).unwrap_or(0);
        return Err(VmError::Setup {
            what: "boot MSRs",
            reason: format!("KVM refused MSR {index:#x}"),
        });
    }
    let mut lapic = vcpu.get_lapic().map_err(kvm_err("KVM_GET_LAPIC"))?;
    set_lvt_mode(&mut lapic, APIC_LVT0, APIC_MODE_EXTINT);
    set_lvt_mode(&mut lapic, APIC_LVT1, APIC_MODE_NMI);
    vcpu.set_lapic(&lapic).map_err(kvm_err("KVM_SET_LAPIC"))?;
    Ok(())
}

fn set_lvt_mode(lapic: &mut kvm_lapic_state, reg: usize, mode: u32) {
    let bytes: &mut [u8] = bytemuck_u8(&mut lapic.regs[reg..reg + 4]);
    let v = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let v = (v & !0x700) | (mode << 8);
    bytes.copy_from_slice(&v.to_le_bytes());
}

fn bytemuck_u8(s: &mut [libc::c_char]) -> &mut [u8] {
    // SAFETY: c_char and u8 have the same size and alignment; every bit pattern is valid.
    unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast::<u8>(), s.len()) }
}

/// Everything KVM holds about a vCPU that a snapshot must carry.
#[derive(Serialize, Deserialize)]
pub struct VcpuState {
    pub cpuid: Vec<kvm_cpuid_entry2>,
    pub regs: kvm_regs,
    pub sregs: kvm_sregs,
    pub xsave: kvm_xsave,
    pub xcrs: kvm_xcrs,
    pub debugregs: kvm_debugregs,
    pub lapic: kvm_lapic_state,
    pub msrs: Vec<kvm_msr_entry>,
    pub mp_state: kvm_mp_state,
    pub events: kvm_vcpu_events,
}

/// The MSRs KVM says a VMM must save, read one batch at a time; those KVM cannot read back
/// (some are only there on other hosts) are left out.
fn save_msrs(vcpu: &VcpuFd, indices: &[u32]) -> Result<Vec<kvm_msr_entry>, VmError> {
    let mut out = Vec::with_capacity(indices.len());
    let mut i = 0;
    while i < indices.len() {
        let end = (i + 64).min(indices.len());
        let batch: Vec<kvm_msr_entry> = indices[i..end]
            .iter()
            .map(|index| kvm_msr_entry {
                index: *index,
                ..Default::default()
            })
            .collect();
        let mut msrs = Msrs::from_entries(&batch).map_err(|e| VmError::Setup {
            what: "reading MSRs",
            reason: format!("{e:?}"),
        })?;
        let n = vcpu.get_msrs(&mut msrs).map_err(kvm_err("KVM_GET_MSRS"))?;
        out.extend_from_slice(&msrs.as_slice()[..n.min(batch.len())]);
        i += n;
        if i < end {
            i += 1; // KVM could not read this one
        }
    }
    Ok(out)
}

impl VcpuState {
    pub fn save(vcpu: &VcpuFd, msr_indices: &[u32]) -> Result<VcpuState, VmError> {
        // Events first: KVM_GET_VCPU_EVENTS reflects a pending exception that GET_REGS could
        // otherwise race with; mp_state before the rest as Firecracker does.
        let mp_state = vcpu.get_mp_state().map_err(kvm_err("KVM_GET_MP_STATE"))?;
        let events = vcpu
            .get_vcpu_events()
            .map_err(kvm_err("KVM_GET_VCPU_EVENTS"))?;
        Ok(VcpuState {
            cpuid: vcpu
                .get_cpuid2(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
                .map_err(kvm_err("KVM_GET_CPUID2"))?
                .as_slice()
                .to_vec(),
            regs: vcpu.get_regs().map_err(kvm_err("KVM_GET_REGS"))?,
            sregs: vcpu.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?,
            xsave: vcpu.get_xsave().map_err(kvm_err("KVM_GET_XSAVE"))?,
            xcrs: vcpu.get_xcrs().map_err(kvm_err("KVM_GET_XCRS"))?,
            debugregs: vcpu
                .get_debug_regs()
                .map_err(kvm_err("KVM_GET_DEBUGREGS"))?,
            lapic: vcpu.get_lapic().map_err(kvm_err("KVM_GET_LAPIC"))?,
            msrs: save_msrs(vcpu, msr_indices)?,
            mp_state,
            events,
        })
    }

    /// Loads the state into a new vCPU, in the order Firecracker restores it.
    pub fn restore(&self, vcpu: &VcpuFd) -> Result<(), VmError> {
        let cpuid = CpuId::from_entries(&self.cpuid).map_err(|e| VmError::Snapshot {
            what: "vCPU CPUID".into(),
            reason: format!("{e:?}"),
        })?;
        vcpu.set_cpuid2(&cpuid).map_err(kvm_err("KVM_SET_CPUID2"))?;
        vcpu.set_mp_state(self.mp_state)
            .map_err(kvm_err("KVM_SET_MP_STATE"))?;
        vcpu.set_regs(&self.regs).map_err(kvm_err("KVM_SET_REGS"))?;
        vcpu.set_sregs(&self.sregs)
            .map_err(kvm_err("KVM_SET_SREGS"))?;
        // SAFETY: the CPUID filter offers no XSAVE component beyond the legacy 4 KiB area
        // (no AMX), so KVM reads no more than the kvm_xsave struct holds.
        unsafe { vcpu.set_xsave(&self.xsave) }.map_err(kvm_err("KVM_SET_XSAVE"))?;
        vcpu.set_xcrs(&self.xcrs).map_err(kvm_err("KVM_SET_XCRS"))?;
        vcpu.set_debug_regs(&self.debugregs)
            .map_err(kvm_err("KVM_SET_DEBUGREGS"))?;
        vcpu.set_lapic(&self.lapic)
            .map_err(kvm_err("KVM_SET_LAPIC"))?;
        let msrs = Msrs::from_entries(&self.msrs).map_err(|e| VmError::Snapshot {
            what: "vCPU MSRs".into(),
            reason: format!("{e:?}"),
        })?;
        let set = vcpu.set_msrs(&msrs).map_err(kvm_err("KVM_SET_MSRS"))?;
        if set != self.msrs.len() {
            return Err(VmError::Snapshot {
                what: "vCPU MSRs".into(),
                reason: format!(
                    "KVM refused MSR {:#x}",
                    self.msrs.get(set).map(|m| m.index).unwrap_or(0)
                ),
            });
        }
        vcpu.set_vcpu_events(&self.events)
            .map_err(kvm_err("KVM_SET_VCPU_EVENTS"))?;
        Ok(())
    }
}

/// What the VMM asks a vCPU thread.
pub enum Request {
    Pause,
    Resume,
    /// Save the state (only while paused).
    Save,
    Exit,
}

/// A vCPU thread's answers.
pub enum Reply {
    Paused,
    Resumed,
    Saved(Box<Result<VcpuState, VmError>>),
}

/// The buses and the exit signal a vCPU thread needs.
#[derive(Clone)]
pub struct Io {
    pub pio: Bus,
    pub mmio: Bus,
    pub exit: Arc<ExitSignal>,
}

/// A running vCPU thread and its request channel.
pub struct VcpuThread {
    pub index: u8,
    handle: Option<JoinHandle<()>>,
    requests: Sender<Request>,
    replies: Receiver<Reply>,
}

/// How long to wait for a kicked vCPU before kicking again (a kick just before KVM_RUN is
/// lost; the next one is not).
const KICK_EVERY: Duration = Duration::from_millis(2);
/// How long a vCPU may take to answer at all.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

impl VcpuThread {
    /// Starts the thread; it runs the vCPU at once unless `paused`.
    pub fn spawn(
        index: u8,
        vcpu: VcpuFd,
        io: Io,
        msr_indices: Arc<Vec<u32>>,
        paused: bool,
    ) -> Result<VcpuThread, VmError> {
        let (req_tx, req_rx) = channel();
        let (rep_tx, rep_rx) = channel();
        let handle = std::thread::Builder::new()
            .name(format!("vcpu{index}"))
            .spawn(move || run_thread(vcpu, io, req_rx, rep_tx, &msr_indices, paused))
            .map_err(|e| VmError::Setup {
                what: "starting a vCPU thread",
                reason: e.to_string(),
            })?;
        Ok(VcpuThread {
            index,
            handle: Some(handle),
            requests: req_tx,
            replies: rep_rx,
        })
    }

    /// Sends a request and kicks the thread until it answers.
    pub fn ask(&self, req: Request) -> Result<Reply, VmError> {
        self.requests
            .send(req)
            .map_err(|_| VmError::Guest(format!("vCPU {} has stopped", self.index)))?;
        let deadline = std::time::Instant::now() + ANSWER_WITHIN;
        loop {
            if let Some(h) = &self.handle {
                let _ = h.kill(kick_signal());
            }
            match self.replies.recv_timeout(KICK_EVERY) {
                Ok(r) => return Ok(r),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(VmError::Guest(format!("vCPU {} has stopped", self.index)));
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if std::time::Instant::now() > deadline {
                        return Err(VmError::Guest(format!(
                            "vCPU {} did not answer within {ANSWER_WITHIN:?}",
                            self.index
                        )));
                    }
                }
            }
        }
    }

    /// Stops the thread and waits for it.
    pub fn stop(mut self) {
        let _ = self.requests.send(Request::Exit);
        if let Some(h) = self.handle.take() {
            while !h.is_finished() {
                let _ = h.kill(kick_signal());
                std::thread::sleep(Duration::from_millis(1));
            }
            let _ = h.join();
        }
    }
}

fn run_thread(
    mut vcpu: VcpuFd,
    io: Io,
    requests: Receiver<Request>,
    replies: Sender<Reply>,
    msr_indices: &[u32],
    mut paused: bool,
) {
    loop {
        let next = if paused {
            match requests.recv() {
                Ok(r) => Some(r),
                Err(_) => return,
            }
        } else {
            match requests.try_recv() {
                Ok(r) => Some(r),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => return,
            }
        };
        if let Some(req) = next {
            let reply = match req {
                Request::Pause => {
                    paused = true;
                    Reply::Paused
                }
                Request::Resume => {
                    paused = false;
                    Reply::Resumed
                }
                Request::Save => Reply::Saved(Box::new(if paused {
                    VcpuState::save(&vcpu, msr_indices)
                } else {
                    Err(VmError::Guest("a running vCPU cannot be saved".into()))
                })),
                Request::Exit => return,
            };
            if replies.send(reply).is_err() {
                return;
            }
            continue;
        }
        if io.exit.is_set() {
            // The VM is ending: wait for the VMM's Exit instead of running on.
            paused = true;
            continue;
        }
        if let Some(exit) = run_once(&mut vcpu, &io) {
            io.exit.signal(exit);
            paused = true;
        }
    }
}

/// One KVM_RUN and its exit; `Some` when the VM ends.
fn run_once(vcpu: &mut VcpuFd, io: &Io) -> Option<VmExit> {
    let exit = match vcpu.run() {
        Ok(exit) => exit,
        Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => return None,
        Err(e) => return Some(VmExit::Crash(format!("KVM_RUN failed: {e}"))),
    };
    match exit {
        VcpuExit::IoOut(port, data) => {
            if port == DEBUG_EXIT_PORT {
                return Some(VmExit::DebugExit(data.first().copied().unwrap_or(0)));
            }
            io.pio.write(u64::from(port), data);
        }
        VcpuExit::IoIn(port, data) => {
            if !io.pio.read(u64::from(port), data) {
                data.fill(0xff); // no device: the bus floats high
            }
        }
        VcpuExit::MmioRead(addr, data) => {
            if !io.mmio.read(addr, data) {
                data.fill(0xff);
            }
        }
        VcpuExit::MmioWrite(addr, data) => {
            io.mmio.write(addr, data);
        }
        // With the in-kernel irqchip KVM handles HLT itself; an exit here is spurious.
        VcpuExit::Hlt | VcpuExit::Intr => {}
        VcpuExit::Shutdown => return Some(VmExit::Reset("triple fault".into())),
        VcpuExit::SystemEvent(kind, _) => {
            return Some(match kind {
                kvm_bindings::KVM_SYSTEM_EVENT_RESET => VmExit::Reset("system reset".into()),
                kvm_bindings::KVM_SYSTEM_EVENT_SHUTDOWN => VmExit::PowerOff,
                other => VmExit::Crash(format!("KVM system event {other}")),
            });
        }
        VcpuExit::FailEntry(reason, cpu) => {
            return Some(VmExit::Crash(format!(
                "KVM could not enter the guest on cpu {cpu}: hardware reason {reason:#x}"
            )));
        }
        VcpuExit::InternalError => {
            let rip = vcpu.get_regs().map(|r| r.rip).unwrap_or(0);
            return Some(VmExit::Crash(format!("KVM internal error at rip {rip:#x}")));
        }
        other => return Some(VmExit::Crash(format!("unhandled vCPU exit {other:?}"))),
    }
    None
}
