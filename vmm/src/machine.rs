//! One VM, built and running: Firecracker's `builder` and `Vmm` in one place. `Vmm::boot`
//! checks the config, creates the VM (in-kernel irqchip and PIT, memory, kernel, initrd, MP
//! table, devices, vCPUs) and starts its vCPU threads; `Vmm::restore` builds the same VM from a
//! snapshot instead. The running `Vmm` pauses, resumes, snapshots, injects Ctrl-Alt-Del and
//! console input, and reports how the guest ended.

use std::fs::File;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_bindings::{
    KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, KVM_PIT_SPEAKER_DUMMY,
    kvm_clock_data, kvm_irqchip, kvm_pit_config, kvm_pit_state2,
};
use kvm_ioctls::{IoEventAddress, Kvm, VmFd};
use serde::{Deserialize, Serialize};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use crate::VmError;
use crate::boot::{self, mptable};
use crate::config::{NetConfig, VmConfig};
use crate::devices::i8042::{I8042, I8042_BASE, I8042_LEN, I8042State, KBD_GSI};
use crate::devices::serial::{
    COM1, COM1_GSI, COM1_LEN, ConsoleBuffer, SerialDevice, SerialSnapshot,
};
use crate::devices::virtio::mmio::REG_QUEUE_NOTIFY;
use crate::devices::virtio::{Block, MmioTransport, Net, TransportState, VirtioDevice};
use crate::devices::{Bus, SharedDevice};
use crate::exit::{ExitSignal, VmExit};
use crate::vstate::cpuid;
use crate::vstate::memory::{self, GuestMemoryMmap};
use crate::vstate::vcpu::{self, Io, Reply, Request, VcpuState, VcpuThread};

/// Where the KVM TSS goes (three pages just below the BIOS area, as Firecracker does).
const KVM_TSS_ADDRESS: usize = 0xfffb_d000;
/// virtio-mmio windows: one 4 KiB page each from the start of the MMIO gap.
pub const VIRTIO_MMIO_BASE: u64 = memory::MMIO_GAP_START;
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// GSIs for virtio devices: after the legacy ISA ones our devices use.
pub const VIRTIO_FIRST_GSI: u32 = 5;
/// Most virtio devices (the IOAPIC has pins 5..=23 for them).
pub const MAX_VIRTIO_DEVICES: usize = (mptable::IRQ_MAX as usize) + 1 - VIRTIO_FIRST_GSI as usize;
/// Snapshot format version.
const SNAPSHOT_VERSION: u32 = 1;
/// File names inside a snapshot directory.
pub const SNAPSHOT_STATE: &str = "state.json";
pub const SNAPSHOT_MEMORY: &str = "memory";

fn kvm_err(op: &'static str) -> impl Fn(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { op, source }
}

fn setup(what: &'static str) -> impl Fn(std::io::Error) -> VmError {
    move |e| VmError::Setup {
        what,
        reason: e.to_string(),
    }
}

/// A virtio device as wired: its window and GSI.
struct VirtioSlot {
    transport: Arc<Mutex<MmioTransport>>,
    base: u64,
}

/// A queue whose notifies KVM catches in an ioeventfd, for the device thread to serve.
struct QueueNotifier {
    /// Index into the VM's virtio slots.
    device: usize,
    queue: u32,
    evt: EventFd,
}

/// Registers an ioeventfd on QueueNotify for every queue of the devices that are served off
/// the vCPU: a 32-bit write of the queue's index then only signals the eventfd (no exit to
/// user space). Other writes there still reach the transport through the bus.
fn queue_notifiers(vm: &VmFd, virtio: &[VirtioSlot]) -> Result<Vec<QueueNotifier>, VmError> {
    let mut notifiers = Vec::new();
    for (device, slot) in virtio.iter().enumerate() {
        let (off_vcpu, queues) = {
            let t = slot.transport.lock().map_err(|_| poisoned("virtio"))?;
            (t.notify_off_vcpu(), t.queue_count())
        };
        if !off_vcpu {
            continue;
        }
        for queue in 0..queues as u32 {
            let evt = EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)
                .map_err(setup("queue notify eventfd"))?;
            vm.register_ioevent(
                &evt,
                &IoEventAddress::Mmio(slot.base + REG_QUEUE_NOTIFY),
                queue,
            )
            .map_err(kvm_err("KVM_IOEVENTFD"))?;
            notifiers.push(QueueNotifier { device, queue, evt });
        }
    }
    Ok(notifiers)
}

/// Everything a snapshot directory's `state.json` holds.
#[derive(Serialize, Deserialize)]
pub struct Snapshot {
    pub version: u32,
    pub vcpus: Vec<VcpuState>,
    pub mem_mib: u32,
    pub pic_master: kvm_irqchip,
    pub pic_slave: kvm_irqchip,
    pub ioapic: kvm_irqchip,
    pub pit: kvm_pit_state2,
    pub clock: kvm_clock_data,
    pub serial: SerialSnapshot,
    pub i8042: I8042State,
    pub virtio: Vec<TransportState>,
}

/// A running (or paused) VM.
pub struct Vmm {
    _kvm: Kvm,
    vm: VmFd,
    mem: GuestMemoryMmap,
    vcpus: Vec<VcpuThread>,
    serial: Arc<Mutex<SerialDevice>>,
    i8042: Arc<Mutex<I8042>>,
    virtio: Vec<VirtioSlot>,
    exit: Arc<ExitSignal>,
    console: Arc<Mutex<ConsoleBuffer>>,
    events: Option<(JoinHandle<()>, EventFd)>,
    paused: bool,
    config: VmConfig,
    /// When KVM_CREATE_VM returned.
    pub created: Instant,
}

/// Whether this host can run a VM at all: /dev/kvm opens and KVM_CREATE_VM succeeds (the VM
/// is dropped at once). Tests use it to say why they skip; errors are those a boot would give.
pub fn probe_kvm() -> Result<(), VmError> {
    let kvm = Kvm::new().map_err(VmError::KvmUnavailable)?;
    kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
    Ok(())
}

/// The checks that need no KVM: memory size, the kernel and initrd files, disks, vCPUs.
pub fn check(config: &VmConfig) -> Result<Vec<(GuestAddress, usize)>, VmError> {
    if config.vcpus == 0 || u32::from(config.vcpus) > model::vm::MAX_VCPUS {
        return Err(VmError::Vcpus(config.vcpus));
    }
    let ranges = memory::layout(config.mem_mib)?;
    if let Err(source) = std::fs::metadata(&config.kernel) {
        return Err(VmError::KernelMissing {
            path: config.kernel.clone(),
            source,
        });
    }
    if let Some(initrd) = &config.initrd
        && let Err(e) = std::fs::metadata(initrd)
    {
        return Err(VmError::Initrd {
            path: initrd.clone(),
            reason: format!("cannot open it: {e}"),
        });
    }
    if config.disks.len() + config.nets.len() > MAX_VIRTIO_DEVICES {
        return Err(VmError::Setup {
            what: "devices",
            reason: format!("at most {MAX_VIRTIO_DEVICES} disks and NICs together"),
        });
    }
    Ok(ranges)
}

/// The command line the guest gets: the user's, then the console and every virtio-mmio
/// device the way Linux's virtio_mmio driver reads them.
pub fn guest_cmdline(config: &VmConfig) -> String {
    let mut cl = config.cmdline.trim().to_string();
    if !cl.split_whitespace().any(|w| w.starts_with("console=")) {
        cl.push_str(" console=ttyS0");
    }
    for i in 0..config.disks.len() + config.nets.len() {
        let base = VIRTIO_MMIO_BASE + i as u64 * VIRTIO_MMIO_SIZE;
        let gsi = VIRTIO_FIRST_GSI + i as u32;
        cl.push_str(&format!(" virtio_mmio.device=4K@{base:#x}:{gsi}"));
    }
    cl.trim().to_string()
}

/// Opens an existing tap by name (a second TUNSETIFF attaches to a persistent tap), without
/// the vnet header: the guest negotiates no offloads.
pub fn open_tap(name: &str) -> Result<OwnedFd, VmError> {
    let bad = |reason: String| VmError::Tap {
        name: name.to_string(),
        reason,
    };
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(bad("not a valid interface name".into()));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .map_err(|e| bad(format!("opening /dev/net/tun: {e}")))?;
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    ifr.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one ifreq, which outlives the call.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF as _, &mut ifr) };
    if rc < 0 {
        return Err(bad(format!(
            "TUNSETIFF: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(OwnedFd::from(file))
}

/// Takes an open-file-description lock on a whole disk image for as long as this VMM holds it
/// open (as QEMU does): a writer excludes everyone, readers only writers. Whatever a crashed
/// supervisor forgot, a second VMM on the same disk is refused here instead of corrupting it.
fn lock_disk(file: &File, read_only: bool) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    // SAFETY: an all-zero `flock` is a valid value (l_start = l_len = 0: the whole file).
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = if read_only {
        libc::F_RDLCK
    } else {
        libc::F_WRLCK
    } as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: fcntl(2) on a file descriptor we own, with a pointer to a live `flock`.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &lock) } == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EACCES) => Err(format!(
            "in use by another VM (it holds the disk's {} lock)",
            if read_only { "write" } else { "read or write" }
        )),
        _ => Err(format!("cannot lock it: {e}")),
    }
}

/// Opens every backend (disk files, taps) before KVM is touched, so a bad one leaves nothing.
fn open_backends(config: &VmConfig) -> Result<(Vec<File>, Vec<OwnedFd>), VmError> {
    let mut disks = Vec::new();
    for d in &config.disks {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(!d.read_only)
            .open(&d.path)
            .map_err(|e| VmError::Disk {
                path: d.path.clone(),
                reason: e.to_string(),
            })?;
        lock_disk(&f, d.read_only).map_err(|reason| VmError::Disk {
            path: d.path.clone(),
            reason,
        })?;
        disks.push(f);
    }
    let mut taps = Vec::new();
    for NetConfig { tap, .. } in &config.nets {
        taps.push(open_tap(tap)?);
    }
    Ok((disks, taps))
}

/// The parts a VM is made of before its vCPUs run.
struct Parts {
    kvm: Kvm,
    vm: VmFd,
    mem: GuestMemoryMmap,
    vcpu_fds: Vec<kvm_ioctls::VcpuFd>,
    serial: Arc<Mutex<SerialDevice>>,
    i8042: Arc<Mutex<I8042>>,
    reset_evt: EventFd,
    virtio: Vec<VirtioSlot>,
    console: Arc<Mutex<ConsoleBuffer>>,
    created: Instant,
}

fn irqfd(vm: &VmFd, gsi: u32) -> Result<EventFd, VmError> {
    let evt = EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC).map_err(setup("irq eventfd"))?;
    vm.register_irqfd(&evt, gsi).map_err(kvm_err("KVM_IRQFD"))?;
    Ok(evt)
}

/// `config.console_log`, opened for appending (None when the config names none).
pub fn open_console_log(config: &VmConfig) -> Result<Option<File>, VmError> {
    config
        .console_log
        .as_ref()
        .map(|p| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| VmError::Setup {
                    what: "opening the console log",
                    reason: format!("{}: {e}", p.display()),
                })
        })
        .transpose()
}

/// Creates the VM, its irqchip, PIT, memory, devices and vCPU fds (not yet configured).
/// `serial_state`: a snapshot's UART registers to continue from (restore), else a fresh UART.
/// `log`: where the serial output also goes.
fn build_parts(
    config: &VmConfig,
    ranges: &[(GuestAddress, usize)],
    disks: Vec<File>,
    taps: Vec<OwnedFd>,
    serial_state: Option<&SerialSnapshot>,
    log: Option<File>,
) -> Result<Parts, VmError> {
    let kvm = Kvm::new().map_err(VmError::KvmUnavailable)?;
    let vm = kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
    let created = Instant::now();
    vm.set_tss_address(KVM_TSS_ADDRESS)
        .map_err(kvm_err("KVM_SET_TSS_ADDR"))?;
    vm.create_irq_chip()
        .map_err(kvm_err("KVM_CREATE_IRQCHIP"))?;
    let pit = kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm.create_pit2(pit).map_err(kvm_err("KVM_CREATE_PIT2"))?;
    let mem = memory::create(ranges)?;
    memory::register(&vm, &mem)?;

    let console = Arc::new(Mutex::new(ConsoleBuffer::default()));
    let serial_irq = irqfd(&vm, COM1_GSI)?;
    let serial =
        match serial_state {
            Some(state) => SerialDevice::from_state(state, serial_irq, console.clone(), log)
                .map_err(|reason| VmError::Snapshot {
                    what: "serial".into(),
                    reason,
                })?,
            None => SerialDevice::new(serial_irq, console.clone(), log),
        };
    let serial = Arc::new(Mutex::new(serial));
    let reset_evt =
        EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC).map_err(setup("reset eventfd"))?;
    let i8042 = Arc::new(Mutex::new(I8042::new(
        irqfd(&vm, KBD_GSI)?,
        reset_evt.try_clone().map_err(setup("reset eventfd"))?,
    )));

    let mut virtio = Vec::new();
    let mut devices: Vec<Box<dyn VirtioDevice>> = Vec::new();
    for (i, (file, d)) in disks.into_iter().zip(&config.disks).enumerate() {
        let dev =
            Block::new(file, d.read_only, format!("cairn-disk{i}")).map_err(|e| VmError::Disk {
                path: d.path.clone(),
                reason: e.to_string(),
            })?;
        devices.push(Box::new(dev));
    }
    for (fd, n) in taps.into_iter().zip(&config.nets) {
        let dev = Net::new(fd, n.mac).map_err(|e| VmError::Tap {
            name: n.tap.clone(),
            reason: e.to_string(),
        })?;
        devices.push(Box::new(dev));
    }
    for (i, dev) in devices.into_iter().enumerate() {
        let gsi = VIRTIO_FIRST_GSI + i as u32;
        let base = VIRTIO_MMIO_BASE + i as u64 * VIRTIO_MMIO_SIZE;
        let transport = MmioTransport::new(dev, mem.clone(), irqfd(&vm, gsi)?);
        virtio.push(VirtioSlot {
            transport: Arc::new(Mutex::new(transport)),
            base,
        });
    }

    let mut vcpu_fds = Vec::new();
    for i in 0..config.vcpus {
        vcpu_fds.push(
            vm.create_vcpu(u64::from(i))
                .map_err(kvm_err("KVM_CREATE_VCPU"))?,
        );
    }
    Ok(Parts {
        kvm,
        vm,
        mem,
        vcpu_fds,
        serial,
        i8042,
        reset_evt,
        virtio,
        console,
        created,
    })
}

impl Vmm {
    /// Checks the config, builds the VM and boots its kernel. Bad input is reported before
    /// /dev/kvm is touched; nothing is left behind on error (the fds close).
    pub fn boot(config: &VmConfig) -> Result<Vmm, VmError> {
        Self::prepare_boot(config, open_console_log(config)?)?.start()
    }

    /// [`Vmm::boot`] without starting any thread: everything is opened and loaded, so a
    /// jailed VMM can drop its privileges and install its seccomp filter before `start`.
    /// The serial output also goes to `console` (its monitor's pty, for a jailed VMM).
    pub fn prepare_boot(config: &VmConfig, console: Option<File>) -> Result<Prepared, VmError> {
        let ranges = check(config)?;
        let (disks, taps) = open_backends(config)?;
        let parts = build_parts(config, &ranges, disks, taps, None, console)?;

        let kernel = boot::load_kernel(&parts.mem, &config.kernel)?;
        let initrd = match &config.initrd {
            Some(p) => Some(boot::load_initrd(&parts.mem, p, kernel.end)?),
            None => None,
        };
        let cmdline = guest_cmdline(config);
        let cmdline_len = boot::write_cmdline(&parts.mem, &cmdline)?;
        boot::write_zero_page(&parts.mem, cmdline_len, kernel.setup_header, initrd)?;
        mptable::write(&parts.mem, config.vcpus)?;

        let supported = parts
            .kvm
            .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
        for (i, fd) in parts.vcpu_fds.iter().enumerate() {
            vcpu::configure(
                fd,
                &cpuid::for_vcpu(&supported, i as u32, u32::from(config.vcpus)),
            )?;
        }
        if let Some(bsp) = parts.vcpu_fds.first() {
            boot::setup_long_mode(&parts.mem, bsp, kernel.entry)?;
        }
        vcpu::install_kick_handler()?;
        Ok(Prepared {
            config: config.clone(),
            parts,
            paused: false,
        })
    }

    /// Builds the VM `config` describes (same memory size, vCPUs, devices) and loads the
    /// snapshot into it; it starts paused when `paused`.
    pub fn restore(
        config: &VmConfig,
        state_json: &[u8],
        memory_file: File,
        paused: bool,
    ) -> Result<Vmm, VmError> {
        Self::prepare_restore(
            config,
            state_json,
            memory_file,
            paused,
            open_console_log(config)?,
        )?
        .start()
    }

    /// [`Vmm::restore`] without starting any thread (see [`Vmm::prepare_boot`]).
    pub fn prepare_restore(
        config: &VmConfig,
        state_json: &[u8],
        mut memory_file: File,
        paused: bool,
        console: Option<File>,
    ) -> Result<Prepared, VmError> {
        let snap: Snapshot = serde_json::from_slice(state_json).map_err(|e| VmError::Snapshot {
            what: SNAPSHOT_STATE.into(),
            reason: e.to_string(),
        })?;
        if snap.version != SNAPSHOT_VERSION {
            return Err(VmError::Snapshot {
                what: SNAPSHOT_STATE.into(),
                reason: format!(
                    "version {} (this VMM reads {SNAPSHOT_VERSION})",
                    snap.version
                ),
            });
        }
        let mut config = config.clone();
        config.mem_mib = snap.mem_mib;
        config.vcpus = u8::try_from(snap.vcpus.len()).map_err(|_| VmError::Vcpus(0))?;
        let ranges = check(&config)?;
        if snap.virtio.len() != config.disks.len() + config.nets.len() {
            return Err(VmError::Snapshot {
                what: "devices".into(),
                reason: format!(
                    "the snapshot has {} virtio devices, the VM {}",
                    snap.virtio.len(),
                    config.disks.len() + config.nets.len()
                ),
            });
        }
        let (disks, taps) = open_backends(&config)?;
        let parts = build_parts(&config, &ranges, disks, taps, Some(&snap.serial), console)?;

        let expected: u64 = parts.mem.iter().map(|r| r.len()).sum();
        let actual = memory_file
            .metadata()
            .map(|m| m.len())
            .map_err(setup("reading the snapshot memory"))?;
        if actual != expected {
            return Err(VmError::Snapshot {
                what: SNAPSHOT_MEMORY.into(),
                reason: format!("{actual} bytes, the VM has {expected}"),
            });
        }
        for r in parts.mem.iter() {
            parts
                .mem
                .read_exact_volatile_from(r.start_addr(), &mut memory_file, r.len() as usize)
                .map_err(|e| VmError::Snapshot {
                    what: SNAPSHOT_MEMORY.into(),
                    reason: e.to_string(),
                })?;
        }

        for chip in [&snap.pic_master, &snap.pic_slave, &snap.ioapic] {
            parts
                .vm
                .set_irqchip(chip)
                .map_err(kvm_err("KVM_SET_IRQCHIP"))?;
        }
        parts
            .vm
            .set_pit2(&snap.pit)
            .map_err(kvm_err("KVM_SET_PIT2"))?;
        let clock = kvm_clock_data {
            clock: snap.clock.clock,
            ..Default::default()
        };
        parts
            .vm
            .set_clock(&clock)
            .map_err(kvm_err("KVM_SET_CLOCK"))?;
        for (fd, state) in parts.vcpu_fds.iter().zip(&snap.vcpus) {
            state.restore(fd)?;
        }
        parts
            .i8042
            .lock()
            .map_err(|_| poisoned("i8042"))?
            .restore(&snap.i8042);
        for (slot, state) in parts.virtio.iter().zip(&snap.virtio) {
            slot.transport
                .lock()
                .map_err(|_| poisoned("virtio"))?
                .restore(state)
                .map_err(|e| VmError::Snapshot {
                    what: format!("virtio device at {:#x}", slot.base),
                    reason: e.to_string(),
                })?;
        }
        vcpu::install_kick_handler()?;
        Ok(Prepared {
            config,
            parts,
            paused,
        })
    }
}

/// A VM built and loaded whose threads have not started.
pub struct Prepared {
    config: VmConfig,
    parts: Parts,
    paused: bool,
}

impl Prepared {
    /// Starts the device thread and the vCPU threads.
    pub fn start(self) -> Result<Vmm, VmError> {
        let Prepared {
            config,
            parts,
            paused,
        } = self;
        let Parts {
            kvm,
            vm,
            mem,
            vcpu_fds,
            serial,
            i8042,
            reset_evt,
            virtio,
            console,
            created,
        } = parts;
        let exit = Arc::new(ExitSignal::new().map_err(setup("exit eventfd"))?);
        let mut pio = Bus::default();
        let mut mmio = Bus::default();
        let overlap = |e: crate::devices::Overlap| VmError::Setup {
            what: "device bus",
            reason: e.to_string(),
        };
        pio.insert(COM1, COM1_LEN, serial.clone() as SharedDevice)
            .map_err(overlap)?;
        pio.insert(I8042_BASE, I8042_LEN, i8042.clone() as SharedDevice)
            .map_err(overlap)?;
        for slot in &virtio {
            mmio.insert(
                slot.base,
                VIRTIO_MMIO_SIZE,
                slot.transport.clone() as SharedDevice,
            )
            .map_err(overlap)?;
        }
        let io = Io {
            pio,
            mmio,
            exit: exit.clone(),
        };
        let notifiers = queue_notifiers(&vm, &virtio)?;
        // A restored guest may have made buffers available whose notify the old VMM had not
        // served yet: one look at every queue catches them (an idle queue costs nothing).
        for n in &notifiers {
            n.evt.write(1).map_err(setup("queue notify eventfd"))?;
        }
        let events = spawn_event_loop(reset_evt, &virtio, notifiers, exit.clone())?;

        let msr_indices = Arc::new(
            kvm.get_msr_index_list()
                .map(|l| l.as_slice().to_vec())
                .map_err(kvm_err("KVM_GET_MSR_INDEX_LIST"))?,
        );
        let mut vcpus = Vec::new();
        for (i, fd) in vcpu_fds.into_iter().enumerate() {
            vcpus.push(VcpuThread::spawn(
                i as u8,
                fd,
                io.clone(),
                msr_indices.clone(),
                paused,
            )?);
        }
        Ok(Vmm {
            _kvm: kvm,
            vm,
            mem,
            vcpus,
            serial,
            i8042,
            virtio,
            exit,
            console,
            events: Some(events),
            paused,
            config,
            created,
        })
    }
}

impl Vmm {
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// The exit signal (to wait on, or to poll its eventfd).
    pub fn exit_signal(&self) -> &Arc<ExitSignal> {
        &self.exit
    }

    /// The console buffer (tail and first-line time).
    pub fn console(&self) -> &Arc<Mutex<ConsoleBuffer>> {
        &self.console
    }

    /// The last `max` bytes of console output, as text.
    pub fn console_tail(&self, max: usize) -> String {
        self.console
            .lock()
            .map(|c| String::from_utf8_lossy(c.tail(max)).into_owned())
            .unwrap_or_default()
    }

    /// Stops every vCPU (they park in their threads); memory and devices keep their state.
    pub fn pause(&mut self) -> Result<(), VmError> {
        if self.paused {
            return Ok(());
        }
        for v in &self.vcpus {
            match v.ask(Request::Pause)? {
                Reply::Paused => {}
                _ => return Err(VmError::Guest("vCPU answered pause wrongly".into())),
            }
        }
        self.paused = true;
        Ok(())
    }

    pub fn resume(&mut self) -> Result<(), VmError> {
        if !self.paused {
            return Ok(());
        }
        for v in &self.vcpus {
            match v.ask(Request::Resume)? {
                Reply::Resumed => {}
                _ => return Err(VmError::Guest("vCPU answered resume wrongly".into())),
            }
        }
        self.paused = false;
        Ok(())
    }

    /// Writes `state.json` and `memory` into the directory `dir` (an O_DIRECTORY fd: the
    /// jailed VMM reaches the host's directory only through it). Pauses for the copy and
    /// leaves the VM as it was.
    pub fn snapshot(&mut self, dir: BorrowedFd<'_>) -> Result<(), VmError> {
        let was_paused = self.paused;
        self.pause()?;
        let result = self.write_snapshot(dir);
        if !was_paused {
            self.resume()?;
        }
        result
    }

    fn write_snapshot(&self, dir: BorrowedFd<'_>) -> Result<(), VmError> {
        let mut vcpus = Vec::new();
        for v in &self.vcpus {
            match v.ask(Request::Save)? {
                Reply::Saved(state) => vcpus.push((*state)?),
                _ => return Err(VmError::Guest("vCPU answered save wrongly".into())),
            }
        }
        let chip = |id: u32| -> Result<kvm_irqchip, VmError> {
            let mut c = kvm_irqchip {
                chip_id: id,
                ..Default::default()
            };
            self.vm
                .get_irqchip(&mut c)
                .map_err(kvm_err("KVM_GET_IRQCHIP"))?;
            Ok(c)
        };
        // The device thread serves queues while the vCPUs are paused: hold every transport
        // until memory is written, so rings, buffers and queue indices agree in the snapshot.
        let mut transports = Vec::new();
        for slot in &self.virtio {
            transports.push(slot.transport.lock().map_err(|_| poisoned("virtio"))?);
        }
        let virtio_states = transports.iter().map(|t| t.save()).collect();
        let snap = Snapshot {
            version: SNAPSHOT_VERSION,
            vcpus,
            mem_mib: self.config.mem_mib,
            pic_master: chip(KVM_IRQCHIP_PIC_MASTER)?,
            pic_slave: chip(KVM_IRQCHIP_PIC_SLAVE)?,
            ioapic: chip(KVM_IRQCHIP_IOAPIC)?,
            pit: self.vm.get_pit2().map_err(kvm_err("KVM_GET_PIT2"))?,
            clock: self.vm.get_clock().map_err(kvm_err("KVM_GET_CLOCK"))?,
            serial: self.serial.lock().map_err(|_| poisoned("serial"))?.state(),
            i8042: self.i8042.lock().map_err(|_| poisoned("i8042"))?.state(),
            virtio: virtio_states,
        };
        let json = serde_json::to_vec(&snap).map_err(|e| VmError::Snapshot {
            what: SNAPSHOT_STATE.into(),
            reason: e.to_string(),
        })?;
        let mut mem_file = create_at(dir, SNAPSHOT_MEMORY)?;
        for r in self.mem.iter() {
            self.mem
                .write_all_volatile_to(r.start_addr(), &mut mem_file, r.len() as usize)
                .map_err(|e| VmError::Snapshot {
                    what: SNAPSHOT_MEMORY.into(),
                    reason: e.to_string(),
                })?;
        }
        drop(transports);
        mem_file
            .sync_all()
            .map_err(setup("syncing the snapshot memory"))?;
        // state.json last: its presence marks a complete snapshot.
        let mut state_file = create_at(dir, SNAPSHOT_STATE)?;
        std::io::Write::write_all(&mut state_file, &json)
            .and_then(|_| state_file.sync_all())
            .map_err(|e| VmError::Snapshot {
                what: SNAPSHOT_STATE.into(),
                reason: e.to_string(),
            })?;
        Ok(())
    }

    /// Presses Ctrl-Alt-Del: how a stop asks the guest to shut down.
    pub fn ctrl_alt_del(&self) -> Result<(), VmError> {
        self.i8042
            .lock()
            .map_err(|_| poisoned("i8042"))?
            .ctrl_alt_del();
        Ok(())
    }

    /// Feeds console input, all of it, or none when the queue has no room for all of it.
    pub fn console_input(&self, bytes: &[u8]) -> Result<(), VmError> {
        self.serial
            .lock()
            .map_err(|_| poisoned("serial"))?
            .input(bytes)
            .map_err(|room| {
                VmError::Guest(format!(
                    "console input of {} bytes does not fit: the guest has not read what came                      before, room for {room} bytes",
                    bytes.len()
                ))
            })
    }

    /// Waits up to `timeout` for the guest to end.
    pub fn wait(&self, timeout: Duration) -> Option<VmExit> {
        self.exit.wait(timeout)
    }

    /// Reads guest memory (tests and diagnostics).
    pub fn read_guest(&self, addr: u64, buf: &mut [u8]) -> Result<(), VmError> {
        self.mem
            .read_slice(buf, GuestAddress(addr))
            .map_err(|e| VmError::GuestMemory {
                what: "reading guest memory",
                reason: e.to_string(),
            })
    }

    /// Stops the vCPUs and the event loop; the VM's fds close when it drops.
    pub fn shutdown(mut self) -> Option<VmExit> {
        self.exit.signal(VmExit::Stopped);
        self.stop_threads();
        self.flush_console_log();
        self.exit.get()
    }

    /// Writes console output still held back (a line not ended yet) to the log.
    pub fn flush_console_log(&self) {
        if let Ok(mut s) = self.serial.lock() {
            s.flush_log();
        }
    }

    fn stop_threads(&mut self) {
        for v in self.vcpus.drain(..) {
            v.stop();
        }
        if let Some((handle, stop)) = self.events.take() {
            let _ = stop.write(1);
            let _ = handle.join();
        }
    }
}

impl Drop for Vmm {
    fn drop(&mut self) {
        self.stop_threads();
    }
}

fn poisoned(what: &str) -> VmError {
    VmError::Guest(format!("the {what} device panicked"))
}

fn create_at(dir: BorrowedFd<'_>, name: &str) -> Result<File, VmError> {
    let fd = nix::fcntl::openat(
        dir,
        name,
        nix::fcntl::OFlag::O_CREAT
            | nix::fcntl::OFlag::O_TRUNC
            | nix::fcntl::OFlag::O_WRONLY
            | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .map_err(|e| VmError::Snapshot {
        what: name.into(),
        reason: format!("cannot create it: {e}"),
    })?;
    Ok(File::from(fd))
}

/// Opens a snapshot directory's two files for `Vmm::restore`.
pub fn open_snapshot(dir: &Path) -> Result<(Vec<u8>, File), VmError> {
    let state = std::fs::read(dir.join(SNAPSHOT_STATE)).map_err(|e| VmError::Snapshot {
        what: dir.join(SNAPSHOT_STATE).display().to_string(),
        reason: e.to_string(),
    })?;
    let memory = File::open(dir.join(SNAPSHOT_MEMORY)).map_err(|e| VmError::Snapshot {
        what: dir.join(SNAPSHOT_MEMORY).display().to_string(),
        reason: e.to_string(),
    })?;
    Ok((state, memory))
}

const TOKEN_STOP: u64 = u64::MAX;
const TOKEN_RESET: u64 = u64::MAX - 1;
/// Tokens from here on are queue notifiers (their index added); below are virtio slots.
const TOKEN_NOTIFY: u64 = 1 << 32;

/// The device thread: the i8042's reset line, the net devices' taps and the queue notifies of
/// the devices served off the vCPU (block).
fn spawn_event_loop(
    reset_evt: EventFd,
    virtio: &[VirtioSlot],
    notifiers: Vec<QueueNotifier>,
    exit: Arc<ExitSignal>,
) -> Result<(JoinHandle<()>, EventFd), VmError> {
    let epoll = Epoll::new().map_err(setup("epoll"))?;
    let stop =
        EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC).map_err(setup("stop eventfd"))?;
    let add = |fd: i32, token: u64| {
        epoll
            .ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(
                    if token >= TOKEN_NOTIFY {
                        // Eventfds, read (cleared) whenever they fire.
                        EventSet::IN
                    } else {
                        // Edge-triggered: frames the guest has no buffers for wait in the tap
                        // until its next RX notify drains them; level-triggered would spin.
                        EventSet::IN | EventSet::EDGE_TRIGGERED
                    },
                    token,
                ),
            )
            .map_err(setup("epoll_ctl"))
    };
    add(stop.as_raw_fd(), TOKEN_STOP)?;
    add(reset_evt.as_raw_fd(), TOKEN_RESET)?;
    let mut sources = Vec::new();
    for (i, slot) in virtio.iter().enumerate() {
        let fd = slot
            .transport
            .lock()
            .map_err(|_| poisoned("virtio"))?
            .event_fd();
        if let Some(fd) = fd {
            add(fd, i as u64)?;
        }
        sources.push(slot.transport.clone());
    }
    for (k, n) in notifiers.iter().enumerate() {
        add(n.evt.as_raw_fd(), TOKEN_NOTIFY + k as u64)?;
    }
    let stop_clone = stop.try_clone().map_err(setup("stop eventfd"))?;
    let handle = std::thread::Builder::new()
        .name("vmm-events".into())
        .spawn(move || {
            // Owned here so the fd stays registered while the loop runs.
            let _stop = stop;
            let mut ready = vec![EpollEvent::default(); 16];
            loop {
                let n = match epoll.wait(-1, &mut ready) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        exit.signal(VmExit::Crash(format!("device event loop: {e}")));
                        return;
                    }
                };
                for ev in &ready[..n] {
                    match ev.data() {
                        TOKEN_STOP => return,
                        TOKEN_RESET => {
                            let _ = reset_evt.read();
                            exit.signal(VmExit::Reset("i8042 reset line".into()));
                        }
                        t if t >= TOKEN_NOTIFY => {
                            let Some(n) = notifiers.get((t - TOKEN_NOTIFY) as usize) else {
                                continue;
                            };
                            // Clear first: a notify after this read fires the fd again.
                            let _ = n.evt.read();
                            if let Some(dev) = sources.get(n.device)
                                && let Ok(mut dev) = dev.lock()
                            {
                                dev.queue_notified(n.queue);
                            }
                        }
                        i => {
                            if let Some(t) = sources.get(i as usize)
                                && let Ok(mut t) = t.lock()
                            {
                                t.handle_event();
                            }
                        }
                    }
                }
            }
        })
        .map_err(setup("starting the device thread"))?;
    Ok((handle, stop_clone))
}

impl std::fmt::Debug for Vmm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vmm")
            .field("vcpus", &self.vcpus.len())
            .field("mem_mib", &self.config.mem_mib)
            .field("paused", &self.paused)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_queues_are_caught_by_an_ioeventfd_and_net_queues_are_not() {
        const TEST: &str = "machine::tests::block_queues_are_caught_by_an_ioeventfd";
        let vm = match Kvm::new()
            .map_err(|e| e.to_string())
            .and_then(|k| k.create_vm().map_err(|e| e.to_string()))
        {
            Ok(vm) => vm,
            Err(why) => return testkit::skip(TEST, &why),
        };
        let mem = memory::create(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let dir = testkit::TempDir::new("vmm-ioeventfd");
        let path = dir.path().join("disk.img");
        std::fs::write(&path, [0u8; 4096]).unwrap();
        let disk = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let (tap, _peer) = std::os::unix::net::UnixDatagram::pair().unwrap();
        let devices: Vec<Box<dyn VirtioDevice>> = vec![
            Box::new(Net::new(std::os::fd::OwnedFd::from(tap), [2, 0, 0, 0, 0, 1]).unwrap()),
            Box::new(Block::new(disk, false, "d".into()).unwrap()),
        ];
        let virtio: Vec<VirtioSlot> = devices
            .into_iter()
            .enumerate()
            .map(|(i, dev)| VirtioSlot {
                transport: Arc::new(Mutex::new(MmioTransport::new(
                    dev,
                    mem.clone(),
                    EventFd::new(libc::EFD_NONBLOCK).unwrap(),
                ))),
                base: VIRTIO_MMIO_BASE + i as u64 * VIRTIO_MMIO_SIZE,
            })
            .collect();
        let notifiers = queue_notifiers(&vm, &virtio).unwrap();
        // The block device's one queue, nothing of the net device's two.
        assert_eq!(notifiers.len(), 1);
        assert_eq!((notifiers[0].device, notifiers[0].queue), (1, 0));
        // KVM holds it: the same address and value cannot be claimed twice.
        let notify = IoEventAddress::Mmio(virtio[1].base + REG_QUEUE_NOTIFY);
        let again = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        assert!(vm.register_ioevent(&again, &notify, 0u32).is_err());
        let net_notify = IoEventAddress::Mmio(virtio[0].base + REG_QUEUE_NOTIFY);
        vm.register_ioevent(&again, &net_notify, 0u32).unwrap();
    }

    #[test]
    fn a_disk_is_written_by_one_vmm_at_a_time() {
        let path = std::env::temp_dir().join(format!("vmm-disk-lock-{}", std::process::id()));
        std::fs::write(&path, [0u8; 512]).unwrap();
        let open = |write: bool| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(write)
                .open(&path)
                .unwrap()
        };
        let first = open(true);
        lock_disk(&first, false).unwrap();
        // Another open of the same image (what a second VMM does) is refused, read-only too.
        let e = lock_disk(&open(true), false).unwrap_err();
        assert!(e.contains("in use by another VM"), "{e}");
        let e = lock_disk(&open(false), true).unwrap_err();
        assert!(e.contains("in use by another VM"), "{e}");
        // The lock ends with the VMM that held it; readers then share.
        drop(first);
        let (r1, r2) = (open(false), open(false));
        lock_disk(&r1, true).unwrap();
        lock_disk(&r2, true).unwrap();
        assert!(lock_disk(&open(true), false).is_err());
        let _ = std::fs::remove_file(&path);
    }
}
