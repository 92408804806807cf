//! virtio devices over the virtio-mmio transport (virtio 1.x, "version 2" registers).
//!
//! [`MmioTransport`] is the [`BusDevice`](super::BusDevice) the guest's driver talks to; it owns
//! the virtqueues (so that reset and snapshots see one consistent copy of their indices) and lends
//! them to a [`VirtioDevice`] ([`Block`], [`Net`]) whenever there is work: on the VMM's event
//! loop for a QueueNotify the VMM caught with an ioeventfd (block) or for a device's own fd
//! (tap RX), otherwise synchronously on the vCPU thread that wrote QueueNotify (net TX).

pub mod block;
pub mod mmio;
pub mod net;

#[cfg(test)]
mod tests;

use std::os::fd::RawFd;

use virtio_queue::Queue;

pub use block::Block;
pub use mmio::{MmioTransport, QueueSnapshot, TransportState};
pub use net::Net;

use crate::vstate::memory::GuestMemoryMmap;

/// VIRTIO_F_VERSION_1: the only (non-legacy) interface this transport speaks.
pub const VIRTIO_F_VERSION_1: u64 = 1 << virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;

/// Errors of the virtio devices and their transport.
#[derive(Debug, thiserror::Error)]
pub enum VirtioError {
    #[error("disk image: {0}")]
    Disk(#[source] std::io::Error),
    #[error("tap device: {0}")]
    Tap(#[source] std::io::Error),
    #[error("activating the device: {0}")]
    Activate(String),
    #[error("snapshot is of device type {saved}, this transport has device type {actual}")]
    DeviceTypeMismatch { saved: u32, actual: u32 },
    #[error("snapshot has {saved} queues, the device has {actual}")]
    QueueCount { saved: usize, actual: usize },
    #[error("snapshot of queue {index}: {reason}")]
    QueueState { index: usize, reason: String },
    #[error("snapshot of the device state: {0}")]
    DeviceState(String),
}

/// A virtio device model behind an [`MmioTransport`].
///
/// The transport owns the queues and passes them in on every call: the device keeps no copy, so
/// a snapshot or a reset can never disagree with what the device last used.
pub trait VirtioDevice: Send {
    /// The virtio device ID (1 = net, 2 = block).
    fn device_type(&self) -> u32;
    /// The maximum size of each queue; the number of entries is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// The feature bits offered to the driver (must include [`VIRTIO_F_VERSION_1`]).
    fn avail_features(&self) -> u64;
    /// Reads device config space; `offset` is relative to 0x100. Bytes past the end read as 0.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes device config space; `offset` is relative to 0x100.
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// The driver set DRIVER_OK with `features` negotiated; the queues are valid from now on.
    fn activate(&mut self, mem: &GuestMemoryMmap, features: u64) -> Result<(), VirtioError>;
    /// Processes available buffers of queue `index`; true when any buffer was used (the
    /// transport then interrupts the guest if it asked for it, and calls again: a device may
    /// stop after some buffers so the guest hears of them early, and must have re-enabled
    /// notifications by the time it returns false).
    fn process_queue(&mut self, index: usize, queues: &mut [Queue], mem: &GuestMemoryMmap) -> bool;
    /// The device went back to its initial state (the driver wrote 0 to Status).
    fn reset(&mut self);
    /// Whether the VMM should serve this device's queue notifies on its device thread (an
    /// ioeventfd, so a notify costs the vCPU no exit to user space and the vCPU runs on while
    /// the device works) rather than synchronously on the vCPU that wrote QueueNotify.
    fn notify_off_vcpu(&self) -> bool {
        false
    }
    /// An fd the VMM's event loop must watch for input from outside (edge-triggered), if any.
    fn event_fd(&self) -> Option<RawFd> {
        None
    }
    /// The fd of [`event_fd`](Self::event_fd) became readable; true when buffers were used.
    fn handle_event(&mut self, _queues: &mut [Queue], _mem: &GuestMemoryMmap) -> bool {
        false
    }
    /// Device-specific state for a snapshot.
    fn save_state(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    /// Restores what [`save_state`](Self::save_state) returned, on a fresh device with the same
    /// backend.
    fn restore_state(&mut self, _state: &serde_json::Value) -> Result<(), VirtioError> {
        Ok(())
    }
}

/// Copies the bytes of `config` at `offset` into `data`; what lies outside reads as 0.
pub(crate) fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if let Some(src) = config.get(start..) {
        let n = src.len().min(data.len());
        data[..n].copy_from_slice(&src[..n]);
    }
}
