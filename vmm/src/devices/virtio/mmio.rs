//! The virtio-mmio transport, register layout "version 2" (virtio 1.x, section 4.2.2).
//!
//! All device work happens under the device's bus lock: a QueueNotify is processed right there
//! on the vCPU thread that wrote it, or, for a device that asks for it
//! ([`MmioTransport::notify_off_vcpu`]), caught by an ioeventfd and processed on the event loop
//! thread through [`MmioTransport::queue_notified`]; input from the device's own fd (tap RX) on
//! the event loop thread through [`MmioTransport::handle_event`]. Interrupts are edges on an
//! eventfd that the VMM core registers as a KVM irqfd.

use std::os::fd::RawFd;

use serde::{Deserialize, Serialize};
use tracing::{debug, warn};
use virtio_queue::{Queue, QueueState, QueueT};
use vmm_sys_util::eventfd::EventFd;

use super::{VIRTIO_F_VERSION_1, VirtioDevice, VirtioError};
use crate::devices::BusDevice;
use crate::vstate::memory::GuestMemoryMmap;

/// Size of one transport's MMIO window.
pub const MMIO_WINDOW_SIZE: u64 = 0x1000;

/// VIRTIO_RING_F_INDIRECT_DESC.
pub const VIRTIO_RING_F_INDIRECT_DESC: u64 =
    1 << virtio_bindings::virtio_ring::VIRTIO_RING_F_INDIRECT_DESC;

/// VIRTIO_RING_F_EVENT_IDX: a device that offers it suppresses notifications and interrupts
/// through the rings' event indices (virtio-queue keeps them once the queue is told).
pub const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;

/// "virt" in little endian.
const MAGIC_VALUE: u32 = 0x7472_6976;
const MMIO_VERSION: u32 = 2;
/// "CRN\0": the vendor ID of Cairn's devices.
pub const VENDOR_ID: u32 = u32::from_le_bytes(*b"CRN\0");

const REG_MAGIC: u64 = 0x000;
const REG_VERSION: u64 = 0x004;
const REG_DEVICE_ID: u64 = 0x008;
const REG_VENDOR_ID: u64 = 0x00c;
const REG_DEVICE_FEATURES: u64 = 0x010;
const REG_DEVICE_FEATURES_SEL: u64 = 0x014;
const REG_DRIVER_FEATURES: u64 = 0x020;
const REG_DRIVER_FEATURES_SEL: u64 = 0x024;
const REG_QUEUE_SEL: u64 = 0x030;
const REG_QUEUE_NUM_MAX: u64 = 0x034;
const REG_QUEUE_NUM: u64 = 0x038;
const REG_QUEUE_READY: u64 = 0x044;
/// QueueNotify: where an ioeventfd catches a driver's notify.
pub const REG_QUEUE_NOTIFY: u64 = 0x050;
const REG_INTERRUPT_STATUS: u64 = 0x060;
const REG_INTERRUPT_ACK: u64 = 0x064;
const REG_STATUS: u64 = 0x070;
const REG_QUEUE_DESC_LOW: u64 = 0x080;
const REG_QUEUE_DESC_HIGH: u64 = 0x084;
const REG_QUEUE_DRIVER_LOW: u64 = 0x090;
const REG_QUEUE_DRIVER_HIGH: u64 = 0x094;
const REG_QUEUE_DEVICE_LOW: u64 = 0x0a0;
const REG_QUEUE_DEVICE_HIGH: u64 = 0x0a4;
const REG_SHM_LEN_LOW: u64 = 0x0b0;
const REG_SHM_LEN_HIGH: u64 = 0x0b4;
const REG_SHM_BASE_LOW: u64 = 0x0b8;
const REG_SHM_BASE_HIGH: u64 = 0x0bc;
const REG_CONFIG_GENERATION: u64 = 0x0fc;
const CONFIG_SPACE: u64 = 0x100;

/// Device status bits (virtio 1.x, 2.1).
pub const STATUS_ACKNOWLEDGE: u32 = 1;
pub const STATUS_DRIVER: u32 = 2;
pub const STATUS_DRIVER_OK: u32 = 4;
pub const STATUS_FEATURES_OK: u32 = 8;
pub const STATUS_NEEDS_RESET: u32 = 64;
pub const STATUS_FAILED: u32 = 128;

/// InterruptStatus bits.
pub const INT_USED_RING: u32 = 1;
pub const INT_CONFIG: u32 = 2;

/// One queue as the snapshot records it (virtio-queue's `QueueState`, which is not serde).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSnapshot {
    pub max_size: u16,
    pub size: u16,
    pub ready: bool,
    pub desc_table: u64,
    pub avail_ring: u64,
    pub used_ring: u64,
    pub next_avail: u16,
    pub next_used: u16,
    pub event_idx_enabled: bool,
}

impl From<QueueState> for QueueSnapshot {
    fn from(s: QueueState) -> Self {
        QueueSnapshot {
            max_size: s.max_size,
            size: s.size,
            ready: s.ready,
            desc_table: s.desc_table,
            avail_ring: s.avail_ring,
            used_ring: s.used_ring,
            next_avail: s.next_avail,
            next_used: s.next_used,
            event_idx_enabled: s.event_idx_enabled,
        }
    }
}

impl From<QueueSnapshot> for QueueState {
    fn from(s: QueueSnapshot) -> Self {
        QueueState {
            max_size: s.max_size,
            size: s.size,
            ready: s.ready,
            desc_table: s.desc_table,
            avail_ring: s.avail_ring,
            used_ring: s.used_ring,
            next_avail: s.next_avail,
            next_used: s.next_used,
            event_idx_enabled: s.event_idx_enabled,
        }
    }
}

/// Everything a transport and its device need to continue after a restore.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransportState {
    pub device_type: u32,
    pub status: u32,
    pub acked_features: u64,
    pub device_features_select: u32,
    pub driver_features_select: u32,
    pub queue_select: u32,
    pub interrupt_status: u32,
    pub config_generation: u32,
    pub queues: Vec<QueueSnapshot>,
    pub device: serde_json::Value,
}

/// A virtio device on the MMIO bus.
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: GuestMemoryMmap,
    irq: EventFd,
    queues: Vec<Queue>,
    device_features_select: u32,
    driver_features_select: u32,
    acked_features: u64,
    queue_select: u32,
    status: u32,
    interrupt_status: u32,
    config_generation: u32,
    activated: bool,
}

impl MmioTransport {
    /// `mem` is vm-memory's region collection, whose regions are reference counted: the clone
    /// the transport keeps shares the mappings with the VMM's. `irq` is written (1) for every
    /// interrupt; the core registers it as an irqfd.
    pub fn new(device: Box<dyn VirtioDevice>, mem: GuestMemoryMmap, irq: EventFd) -> MmioTransport {
        let queues = new_queues(device.as_ref());
        MmioTransport {
            device,
            mem,
            irq,
            queues,
            device_features_select: 0,
            driver_features_select: 0,
            acked_features: 0,
            queue_select: 0,
            status: 0,
            interrupt_status: 0,
            config_generation: 0,
            activated: false,
        }
    }

    /// The device's fd the event loop must watch, if it has one. Register it with
    /// `EPOLLIN | EPOLLET`: input the guest has no buffers for stays queued in the fd and is
    /// picked up when the guest posts buffers (on its QueueNotify), so a level-triggered
    /// registration would spin.
    pub fn event_fd(&self) -> Option<RawFd> {
        self.device.event_fd()
    }

    /// Called by the event loop when [`event_fd`](Self::event_fd) is readable; interrupts the
    /// guest itself when it used buffers, and returns whether it did.
    pub fn handle_event(&mut self) -> bool {
        if !self.activated {
            return false;
        }
        let used = self.device.handle_event(&mut self.queues, &self.mem);
        if used {
            self.signal_used_queue();
        }
        used
    }

    /// Whether QueueNotify should be caught with an ioeventfd and passed to
    /// [`queue_notified`](Self::queue_notified) from the device thread.
    pub fn notify_off_vcpu(&self) -> bool {
        self.device.notify_off_vcpu()
    }

    /// How many queues the device has (the values QueueNotify takes).
    pub fn queue_count(&self) -> usize {
        self.queues.len()
    }

    /// The driver notified queue `index` (caught by an ioeventfd instead of a register write).
    pub fn queue_notified(&mut self, index: u32) {
        self.notify(index);
    }

    /// Whether the driver has set DRIVER_OK and the device is running.
    pub fn is_activated(&self) -> bool {
        self.activated
    }

    /// The device's config space changed: interrupts the guest with InterruptStatus bit 1.
    pub fn signal_config_change(&mut self) {
        self.config_generation = self.config_generation.wrapping_add(1);
        self.interrupt_status |= INT_CONFIG;
        self.kick_irq();
    }

    /// Interrupts the guest for used buffers (InterruptStatus bit 0).
    pub fn signal_used_queue(&mut self) {
        self.interrupt_status |= INT_USED_RING;
        self.kick_irq();
    }

    fn kick_irq(&self) {
        if let Err(e) = self.irq.write(1) {
            warn!(error = %e, "virtio-mmio: cannot signal the interrupt eventfd");
        }
    }

    /// The transport's registers, queues and device state, for a snapshot taken while the vCPUs
    /// are paused (every notified buffer has been processed by then).
    pub fn save(&self) -> TransportState {
        TransportState {
            device_type: self.device.device_type(),
            status: self.status,
            acked_features: self.acked_features,
            device_features_select: self.device_features_select,
            driver_features_select: self.driver_features_select,
            queue_select: self.queue_select,
            interrupt_status: self.interrupt_status,
            config_generation: self.config_generation,
            queues: self.queues.iter().map(|q| q.state().into()).collect(),
            device: self.device.save_state(),
        }
    }

    /// Loads `state` into a freshly constructed transport whose device has the same backend
    /// (disk file, tap) and re-activates the device if the driver had, so the guest continues
    /// with the same queues. On error the transport is left reset.
    pub fn restore(&mut self, state: &TransportState) -> Result<(), VirtioError> {
        let result = self.try_restore(state);
        if result.is_err() {
            self.reset();
        }
        result
    }

    fn try_restore(&mut self, state: &TransportState) -> Result<(), VirtioError> {
        let actual = self.device.device_type();
        if state.device_type != actual {
            return Err(VirtioError::DeviceTypeMismatch {
                saved: state.device_type,
                actual,
            });
        }
        let max_sizes = self.device.queue_max_sizes();
        if state.queues.len() != max_sizes.len() {
            return Err(VirtioError::QueueCount {
                saved: state.queues.len(),
                actual: max_sizes.len(),
            });
        }
        let mut queues = Vec::with_capacity(max_sizes.len());
        for (index, (saved, max)) in state.queues.iter().zip(max_sizes).enumerate() {
            if saved.max_size != *max {
                return Err(VirtioError::QueueState {
                    index,
                    reason: format!("max size {} but the device has {max}", saved.max_size),
                });
            }
            let q =
                Queue::try_from(QueueState::from(*saved)).map_err(|e| VirtioError::QueueState {
                    index,
                    reason: e.to_string(),
                })?;
            queues.push(q);
        }
        self.reset();
        self.device.restore_state(&state.device)?;
        self.queues = queues;
        self.status = state.status;
        self.acked_features = state.acked_features;
        self.device_features_select = state.device_features_select;
        self.driver_features_select = state.driver_features_select;
        self.queue_select = state.queue_select;
        self.interrupt_status = state.interrupt_status;
        self.config_generation = state.config_generation;
        if self.status & STATUS_DRIVER_OK != 0 {
            self.check_queues()?;
            self.device.activate(&self.mem, self.acked_features)?;
            self.activated = true;
        }
        // An interrupt raised just before the snapshot may not have reached the guest; a
        // repeated one only makes the driver look at rings it would look at anyway.
        if self.interrupt_status != 0 {
            self.kick_irq();
        }
        Ok(())
    }

    fn reset(&mut self) {
        if self.activated {
            debug!(
                device = self.device.device_type(),
                "virtio-mmio: device reset"
            );
        }
        self.device.reset();
        for q in &mut self.queues {
            q.reset();
        }
        self.device_features_select = 0;
        self.driver_features_select = 0;
        self.acked_features = 0;
        self.queue_select = 0;
        self.status = 0;
        self.interrupt_status = 0;
        self.activated = false;
    }

    fn device_features(&self) -> u64 {
        // Every device walks its chains with virtio-queue's DescriptorChain, which follows
        // indirect tables itself; they let the driver pass many segments in one ring slot.
        self.device.avail_features() | VIRTIO_RING_F_INDIRECT_DESC
    }

    fn selected_queue(&self) -> Option<&Queue> {
        self.queues.get(self.queue_select as usize)
    }

    /// Queue registers may only change while the driver is setting up (before DRIVER_OK) and the
    /// selected queue is not yet enabled.
    fn with_setup_queue(&mut self, f: impl FnOnce(&mut Queue)) {
        if self.status & STATUS_FEATURES_OK == 0 || self.status & STATUS_DRIVER_OK != 0 {
            debug!(
                status = self.status,
                "virtio-mmio: queue register written outside queue setup"
            );
            return;
        }
        match self.queues.get_mut(self.queue_select as usize) {
            Some(q) if !q.ready() => f(q),
            Some(_) => debug!(
                queue = self.queue_select,
                "virtio-mmio: queue register written while the queue is ready"
            ),
            None => debug!(queue = self.queue_select, "virtio-mmio: no such queue"),
        }
    }

    /// Every enabled queue must lie in guest memory before the device may touch it.
    fn check_queues(&self) -> Result<(), VirtioError> {
        for (index, q) in self.queues.iter().enumerate() {
            if q.ready() && !q.is_valid(&self.mem) {
                return Err(VirtioError::QueueState {
                    index,
                    reason: "rings outside guest memory".into(),
                });
            }
        }
        Ok(())
    }

    fn write_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        if value & self.status != self.status {
            debug!(
                old = self.status,
                new = value,
                "virtio-mmio: driver cleared status bits without a reset"
            );
            return;
        }
        let added = value & !self.status;
        if added & STATUS_FAILED != 0 {
            self.status |= STATUS_FAILED;
        }
        if added & STATUS_ACKNOWLEDGE != 0 {
            self.status |= STATUS_ACKNOWLEDGE;
        }
        if added & STATUS_DRIVER != 0 {
            if self.status & STATUS_ACKNOWLEDGE == 0 {
                return debug!("virtio-mmio: DRIVER before ACKNOWLEDGE");
            }
            self.status |= STATUS_DRIVER;
        }
        if added & STATUS_FEATURES_OK != 0 {
            if self.status & STATUS_DRIVER == 0 {
                return debug!("virtio-mmio: FEATURES_OK before DRIVER");
            }
            let unknown = self.acked_features & !self.device_features();
            if unknown != 0 || self.acked_features & VIRTIO_F_VERSION_1 == 0 {
                // Leaving FEATURES_OK clear is how the device refuses (3.1.1 step 6).
                return debug!(
                    acked = self.acked_features,
                    "virtio-mmio: refusing features (unknown bits or no VERSION_1)"
                );
            }
            self.status |= STATUS_FEATURES_OK;
        }
        if added & STATUS_DRIVER_OK != 0 {
            if self.status & STATUS_FEATURES_OK == 0 {
                return debug!("virtio-mmio: DRIVER_OK before FEATURES_OK");
            }
            self.status |= STATUS_DRIVER_OK;
            self.activate();
        }
        if added & STATUS_NEEDS_RESET != 0 {
            debug!("virtio-mmio: driver tried to set DEVICE_NEEDS_RESET");
        }
    }

    fn activate(&mut self) {
        let event_idx = self.acked_features & VIRTIO_RING_F_EVENT_IDX != 0;
        for q in &mut self.queues {
            q.set_event_idx(event_idx);
        }
        let result = self
            .check_queues()
            .and_then(|()| self.device.activate(&self.mem, self.acked_features));
        if let Err(e) = result {
            debug!(error = %e, "virtio-mmio: cannot activate the device");
            // The driver learns of DEVICE_NEEDS_RESET through a configuration interrupt (2.1.2);
            // the config itself did not change, so the generation stays.
            self.status |= STATUS_NEEDS_RESET;
            self.interrupt_status |= INT_CONFIG;
            self.kick_irq();
            return;
        }
        self.activated = true;
        // Buffers the driver made available before DRIVER_OK (against the rules, but cheap to
        // honour) or RX input already waiting would otherwise sit until the next notify.
        for index in 0..self.queues.len() {
            if self.queues[index].ready() {
                self.serve_queue(index);
            }
        }
    }

    /// Lets the device serve queue `index` until it has nothing left, interrupting the driver
    /// between rounds whenever it asked to be: a device that stops after a few buffers lets
    /// the driver refill what was used while it serves the rest.
    fn serve_queue(&mut self, index: usize) {
        while self
            .device
            .process_queue(index, &mut self.queues, &self.mem)
        {
            if self.wants_interrupt(index) {
                self.signal_used_queue();
            }
        }
    }

    /// After buffers of queue `index` were used: whether the driver asked to be interrupted
    /// for them (always, without EVENT_IDX; when in doubt, yes).
    fn wants_interrupt(&mut self, index: usize) -> bool {
        match self.queues.get_mut(index) {
            Some(q) => q.needs_notification(&self.mem).unwrap_or(true),
            None => true,
        }
    }

    fn notify(&mut self, index: u32) {
        if !self.activated {
            return debug!(queue = index, "virtio-mmio: notify before DRIVER_OK");
        }
        let index = index as usize;
        match self.queues.get(index) {
            Some(q) if q.ready() => self.serve_queue(index),
            _ => debug!(queue = index, "virtio-mmio: notify for a queue not enabled"),
        }
    }

    fn read_reg(&self, offset: u64) -> u32 {
        match offset {
            REG_MAGIC => MAGIC_VALUE,
            REG_VERSION => MMIO_VERSION,
            REG_DEVICE_ID => self.device.device_type(),
            REG_VENDOR_ID => VENDOR_ID,
            REG_DEVICE_FEATURES => match self.device_features_select {
                0 => self.device_features() as u32,
                1 => (self.device_features() >> 32) as u32,
                _ => 0,
            },
            REG_QUEUE_NUM_MAX => self.selected_queue().map_or(0, |q| q.max_size().into()),
            REG_QUEUE_READY => self.selected_queue().map_or(0, |q| q.ready().into()),
            REG_INTERRUPT_STATUS => self.interrupt_status,
            REG_STATUS => self.status,
            // No shared memory regions: their length reads as all ones (4.2.2).
            REG_SHM_LEN_LOW | REG_SHM_LEN_HIGH | REG_SHM_BASE_LOW | REG_SHM_BASE_HIGH => u32::MAX,
            REG_CONFIG_GENERATION => self.config_generation,
            _ => {
                debug!(
                    offset,
                    "virtio-mmio: read of a write-only or unknown register"
                );
                0
            }
        }
    }

    fn write_reg(&mut self, offset: u64, v: u32) {
        match offset {
            REG_DEVICE_FEATURES_SEL => self.device_features_select = v,
            REG_DRIVER_FEATURES_SEL => self.driver_features_select = v,
            REG_DRIVER_FEATURES => {
                if self.status & STATUS_DRIVER == 0 || self.status & STATUS_FEATURES_OK != 0 {
                    return debug!("virtio-mmio: driver features written outside negotiation");
                }
                match self.driver_features_select {
                    0 => self.acked_features = (self.acked_features & !0xffff_ffff) | u64::from(v),
                    1 => {
                        self.acked_features =
                            (self.acked_features & 0xffff_ffff) | (u64::from(v) << 32)
                    }
                    // Bits past 63 do not exist; the driver must write 0 there.
                    _ if v != 0 => {
                        debug!(
                            select = self.driver_features_select,
                            "virtio-mmio: unknown feature bits acked"
                        );
                        // Poison the negotiation so FEATURES_OK is refused.
                        self.acked_features |= 1 << 63;
                    }
                    _ => {}
                }
            }
            REG_QUEUE_SEL => self.queue_select = v,
            REG_QUEUE_NUM => self.with_setup_queue(|q| match u16::try_from(v) {
                Ok(size) => {
                    if q.try_set_size(size).is_err() {
                        debug!(size, "virtio-mmio: invalid queue size");
                    }
                }
                Err(_) => debug!(size = v, "virtio-mmio: invalid queue size"),
            }),
            REG_QUEUE_READY => match v {
                0 => self.with_setup_queue(|q| q.set_ready(false)),
                // Readiness is only flipped during setup; whether the rings fit in memory is
                // checked at DRIVER_OK.
                1 => self.with_setup_queue(|q| q.set_ready(true)),
                _ => debug!(v, "virtio-mmio: invalid QueueReady value"),
            },
            REG_QUEUE_DESC_LOW => {
                self.with_setup_queue(|q| q.set_desc_table_address(Some(v), None))
            }
            REG_QUEUE_DESC_HIGH => {
                self.with_setup_queue(|q| q.set_desc_table_address(None, Some(v)))
            }
            REG_QUEUE_DRIVER_LOW => {
                self.with_setup_queue(|q| q.set_avail_ring_address(Some(v), None))
            }
            REG_QUEUE_DRIVER_HIGH => {
                self.with_setup_queue(|q| q.set_avail_ring_address(None, Some(v)))
            }
            REG_QUEUE_DEVICE_LOW => {
                self.with_setup_queue(|q| q.set_used_ring_address(Some(v), None))
            }
            REG_QUEUE_DEVICE_HIGH => {
                self.with_setup_queue(|q| q.set_used_ring_address(None, Some(v)))
            }
            REG_QUEUE_NOTIFY => self.notify(v),
            REG_INTERRUPT_ACK => self.interrupt_status &= !v,
            REG_STATUS => self.write_status(v),
            _ => debug!(
                offset,
                v, "virtio-mmio: write to a read-only or unknown register"
            ),
        }
    }
}

fn new_queues(device: &dyn VirtioDevice) -> Vec<Queue> {
    device
        .queue_max_sizes()
        .iter()
        .filter_map(|&max| match Queue::new(max) {
            Ok(q) => Some(q),
            Err(e) => {
                // A device bug, not a guest one: the queue simply does not exist.
                warn!(max, error = %e, "virtio-mmio: device asked for an invalid queue size");
                None
            }
        })
        .collect()
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG_SPACE {
            if self.status & STATUS_DRIVER == 0 {
                debug!(offset, "virtio-mmio: config read before DRIVER");
            }
            return self.device.read_config(offset - CONFIG_SPACE, data);
        }
        // Registers are 32 bits wide and only accessed as such (4.2.2.2).
        let Ok(bytes) = <&mut [u8; 4]>::try_from(&mut *data) else {
            debug!(
                offset,
                len = data.len(),
                "virtio-mmio: register read not 32 bits"
            );
            return data.fill(0);
        };
        if !offset.is_multiple_of(4) {
            debug!(offset, "virtio-mmio: unaligned register read");
            return bytes.fill(0);
        }
        *bytes = self.read_reg(offset).to_le_bytes();
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG_SPACE {
            return self.device.write_config(offset - CONFIG_SPACE, data);
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            return debug!(
                offset,
                len = data.len(),
                "virtio-mmio: register write not 32 bits"
            );
        };
        if !offset.is_multiple_of(4) {
            return debug!(offset, "virtio-mmio: unaligned register write");
        }
        self.write_reg(offset, u32::from_le_bytes(bytes));
    }
}
