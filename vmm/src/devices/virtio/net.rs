//! virtio-net over a tap device opened with `IFF_TAP | IFF_NO_VNET_HDR` (frames are plain
//! Ethernet on the tap side; the 12-byte `virtio_net_hdr_v1` exists only on the guest side).
//!
//! Queue 0 is RX, queue 1 is TX. No offloads are offered, so the header the guest sends is
//! all zeros (dropped) and the one it receives is zeros with `num_buffers = 1`.
//!
//! RX is driven from two places: the event loop calls [`MmioTransport::handle_event`] when the
//! tap becomes readable, and a notify on queue 0 (the guest posted buffers) drains what waited.
//! Frames for which the guest has no buffer stay in the tap's own queue (bounded by its
//! txqueuelen, the kernel drops beyond that): nothing is buffered here.
//!
//! [`MmioTransport::handle_event`]: super::MmioTransport::handle_event

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use serde::{Deserialize, Serialize};
use tracing::debug;
use virtio_bindings::virtio_ids::VIRTIO_ID_NET;
use virtio_bindings::virtio_net::VIRTIO_NET_F_MAC;
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};

use super::{VIRTIO_F_VERSION_1, VirtioDevice, VirtioError, read_config_bytes};
use crate::vstate::memory::GuestMemoryMmap;

/// Queue indices.
pub const RX_QUEUE: usize = 0;
pub const TX_QUEUE: usize = 1;
/// Descriptors per queue.
pub const QUEUE_SIZE: u16 = 256;
/// `virtio_net_hdr_v1`: the header before every frame once VERSION_1 is negotiated.
pub const VNET_HDR_LEN: usize = 12;
/// The largest frame carried either way: an Ethernet header plus the largest IP packet.
/// Without offloads the guest's MTU keeps real frames far below this.
const MAX_FRAME_LEN: usize = 14 + 65535;

/// A virtio network device.
pub struct Net {
    tap: File,
    mac: [u8; 6],
    queue_sizes: [u16; 2],
    frame: Vec<u8>,
}

#[derive(Debug, Serialize, Deserialize)]
struct NetState {
    mac: [u8; 6],
}

impl Net {
    /// A NIC with `mac` over `tap`, which is made non-blocking: the device runs on the vCPU and
    /// event loop threads and must never wait for a frame.
    pub fn new(tap: OwnedFd, mac: [u8; 6]) -> Result<Net, VirtioError> {
        let flags = fcntl(&tap, FcntlArg::F_GETFL).map_err(|e| VirtioError::Tap(e.into()))?;
        let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
        fcntl(&tap, FcntlArg::F_SETFL(flags)).map_err(|e| VirtioError::Tap(e.into()))?;
        Ok(Net {
            tap: File::from(tap),
            mac,
            queue_sizes: [QUEUE_SIZE, QUEUE_SIZE],
            frame: vec![0; VNET_HDR_LEN + MAX_FRAME_LEN],
        })
    }

    /// The MAC address the guest sees.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Moves frames from the tap into the guest's RX buffers, one frame per chain, until either
    /// runs out; true when a buffer was used.
    fn fill_rx(&mut self, queues: &mut [Queue], mem: &GuestMemoryMmap) -> bool {
        let Some(queue) = queues.get_mut(RX_QUEUE).filter(|q| q.ready()) else {
            return false;
        };
        let mut used = false;
        while let Some(chain) = queue.pop_descriptor_chain(mem) {
            let frame = &mut self.frame[VNET_HDR_LEN..];
            let len = match (&self.tap).read(frame) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {
                    queue.go_to_previous_position();
                    continue;
                }
                Err(e) => {
                    // Keep the buffer for the next frame.
                    queue.go_to_previous_position();
                    if e.kind() != ErrorKind::WouldBlock {
                        debug!(error = %e, "virtio-net: tap read failed");
                    }
                    break;
                }
            };
            let head = chain.head_index();
            let written = self.deliver(mem, chain, VNET_HDR_LEN + len);
            match queue.add_used(mem, head, written) {
                Ok(()) => used = true,
                Err(e) => debug!(error = %e, head, "virtio-net: cannot return an RX buffer"),
            }
        }
        used
    }

    /// Copies header and frame (`self.frame[..len]`) into an RX chain; returns the used length.
    /// A frame the chain cannot hold is dropped and the chain returned empty, which the driver
    /// counts as a length error.
    fn deliver(
        &mut self,
        mem: &GuestMemoryMmap,
        chain: DescriptorChain<&GuestMemoryMmap>,
        len: usize,
    ) -> u32 {
        let mut writer = match chain.writer(mem) {
            Ok(w) => w,
            Err(e) => {
                debug!(error = %e, "virtio-net: RX buffer outside guest memory");
                return 0;
            }
        };
        if writer.available_bytes() < len {
            debug!(
                frame = len,
                buffer = writer.available_bytes(),
                "virtio-net: RX frame larger than the buffer, dropped"
            );
            return 0;
        }
        // flags, gso_type, hdr_len, gso_size, csum_start, csum_offset: 0; num_buffers: 1.
        self.frame[..VNET_HDR_LEN].fill(0);
        self.frame[10..VNET_HDR_LEN].copy_from_slice(&1u16.to_le_bytes());
        match writer.write_all(&self.frame[..len]) {
            // len fits the chain, whose total length virtio-queue caps at u32::MAX.
            Ok(()) => u32::try_from(len).unwrap_or(0),
            Err(e) => {
                debug!(error = %e, "virtio-net: cannot write an RX buffer");
                0
            }
        }
    }

    /// Sends every available TX chain to the tap; true when a buffer was used.
    fn flush_tx(&mut self, queues: &mut [Queue], mem: &GuestMemoryMmap) -> bool {
        let Some(queue) = queues.get_mut(TX_QUEUE) else {
            return false;
        };
        let chains: Vec<_> = match queue.iter(mem) {
            Ok(iter) => iter.collect(),
            Err(e) => {
                debug!(error = %e, "virtio-net: cannot read the TX available ring");
                return false;
            }
        };
        let mut used = false;
        for chain in chains {
            let head = chain.head_index();
            self.transmit(mem, chain);
            // TX buffers are only read: their used length is 0.
            match queue.add_used(mem, head, 0) {
                Ok(()) => used = true,
                Err(e) => debug!(error = %e, head, "virtio-net: cannot return a TX buffer"),
            }
        }
        used
    }

    fn transmit(&mut self, mem: &GuestMemoryMmap, chain: DescriptorChain<&GuestMemoryMmap>) {
        let mut reader = match chain.reader(mem) {
            Ok(r) => r,
            Err(e) => return debug!(error = %e, "virtio-net: TX buffer outside guest memory"),
        };
        let len = reader.available_bytes();
        if len < VNET_HDR_LEN || len > self.frame.len() {
            return debug!(len, "virtio-net: TX chain of impossible length, dropped");
        }
        let frame = &mut self.frame[..len];
        if let Err(e) = reader.read_exact(frame) {
            return debug!(error = %e, "virtio-net: cannot read a TX buffer");
        }
        let frame = &frame[VNET_HDR_LEN..];
        // A tap takes one frame per write(2); a short or failed write loses the frame, as a
        // full queue on real wire would.
        match (&self.tap).write(frame) {
            Ok(n) if n == frame.len() => {}
            Ok(n) => debug!(len = frame.len(), n, "virtio-net: short tap write"),
            Err(e) => debug!(error = %e, "virtio-net: tap write failed, frame dropped"),
        }
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn avail_features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | (1 << VIRTIO_NET_F_MAC)
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // virtio_net_config: mac[6] only (no STATUS, no MQ, no MTU offered).
        read_config_bytes(&self.mac, offset, data);
    }

    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        // The MAC is writable only for legacy drivers.
        debug!(offset, "virtio-net: config write ignored");
    }

    fn activate(&mut self, _mem: &GuestMemoryMmap, _features: u64) -> Result<(), VirtioError> {
        Ok(())
    }

    fn process_queue(&mut self, index: usize, queues: &mut [Queue], mem: &GuestMemoryMmap) -> bool {
        match index {
            // New RX buffers: frames may be waiting in the tap for them (the edge-triggered
            // wakeup for those was already spent).
            RX_QUEUE => self.fill_rx(queues, mem),
            TX_QUEUE => self.flush_tx(queues, mem),
            _ => false,
        }
    }

    fn reset(&mut self) {
        // Nothing held: undelivered frames wait in the tap for the next driver.
    }

    fn event_fd(&self) -> Option<RawFd> {
        Some(self.tap.as_raw_fd())
    }

    fn handle_event(&mut self, queues: &mut [Queue], mem: &GuestMemoryMmap) -> bool {
        self.fill_rx(queues, mem)
    }

    fn save_state(&self) -> serde_json::Value {
        serde_json::to_value(NetState { mac: self.mac }).unwrap_or(serde_json::Value::Null)
    }

    fn restore_state(&mut self, state: &serde_json::Value) -> Result<(), VirtioError> {
        let saved: NetState = serde_json::from_value(state.clone())
            .map_err(|e| VirtioError::DeviceState(e.to_string()))?;
        // The guest's stack (and its peers' ARP caches) know the NIC by this address.
        self.mac = saved.mac;
        Ok(())
    }
}
