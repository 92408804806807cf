//! virtio-blk over a raw disk image, one request queue, served synchronously.
//!
//! Each request is `header (readable) | data (readable for OUT, writable for IN/GET_ID) | status
//! byte (the last writable byte)`. Data may span any number of descriptors; it is copied through
//! a bounded bounce buffer with pread/pwrite so a request's size never decides our allocation.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;

use serde::{Deserialize, Serialize};
use tracing::debug;
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_ID_BYTES,
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_FLUSH,
    VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT, Reader, Writer};
use vm_memory::{Address, Bytes};

use super::{VIRTIO_F_VERSION_1, VirtioDevice, VirtioError, read_config_bytes};
use crate::vstate::memory::GuestMemoryMmap;

/// Bytes per sector, the unit of `capacity` and of request offsets.
pub const SECTOR_SIZE: u64 = 512;
/// Descriptors in the request queue.
pub const QUEUE_SIZE: u16 = 256;
/// Data segments per request: all descriptors but the header and the status.
const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// Size of the request header: type u32, reserved u32, sector u64.
const HEADER_LEN: usize = 16;
/// The bounce buffer: large enough for a typical request in one go, small enough to keep.
const BOUNCE_LEN: usize = 128 * 1024;

/// A virtio block device.
pub struct Block {
    file: File,
    read_only: bool,
    id: String,
    capacity: u64,
    features: u64,
    config: [u8; 16],
    bounce: Vec<u8>,
    queue_sizes: [u16; 1],
}

#[derive(Debug, Serialize, Deserialize)]
struct BlockState {
    capacity: u64,
    read_only: bool,
}

/// Why a request failed; all of them become VIRTIO_BLK_S_IOERR for the guest.
#[derive(Debug, thiserror::Error)]
enum RequestError {
    #[error("write to a read-only disk")]
    ReadOnly,
    #[error("sectors {sector}+{len} bytes are past the end of the disk")]
    OutOfRange { sector: u64, len: usize },
    #[error("data length {0} is not a multiple of the sector size")]
    Unaligned(usize),
    #[error("disk I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl Block {
    /// A disk over `file` (its length rounded down to whole sectors); `id` is what GET_ID
    /// returns (truncated to 20 bytes).
    pub fn new(file: File, read_only: bool, id: String) -> Result<Block, VirtioError> {
        let len = file.metadata().map_err(VirtioError::Disk)?.len();
        let capacity = len / SECTOR_SIZE;
        let mut features =
            VIRTIO_F_VERSION_1 | (1 << VIRTIO_BLK_F_FLUSH) | (1 << VIRTIO_BLK_F_SEG_MAX);
        if read_only {
            features |= 1 << VIRTIO_BLK_F_RO;
        }
        // virtio_blk_config: capacity u64 @0, size_max u32 @8 (not offered), seg_max u32 @12.
        let mut config = [0u8; 16];
        config[..8].copy_from_slice(&capacity.to_le_bytes());
        config[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
        Ok(Block {
            file,
            read_only,
            id,
            capacity,
            features,
            config,
            bounce: Vec::new(),
            queue_sizes: [QUEUE_SIZE],
        })
    }

    /// The disk's size in sectors.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Serves one request; returns the number of bytes written into the chain (used length).
    fn handle_chain(
        &mut self,
        mem: &GuestMemoryMmap,
        chain: DescriptorChain<&GuestMemoryMmap>,
    ) -> u32 {
        // The status is the last byte of the last descriptor. Find it on its own, so that a
        // request with bad data buffers can still be answered with IOERR.
        let Some(last) = chain.clone().last() else {
            debug!("virtio-blk: empty descriptor chain");
            return 0;
        };
        if !last.is_write_only() || last.len() == 0 {
            // Nowhere to put the status: the request can only be returned unserved.
            debug!("virtio-blk: request without a status byte");
            return 0;
        }
        let Some(status_addr) = last.addr().checked_add(u64::from(last.len()) - 1) else {
            debug!("virtio-blk: status byte past the end of the address space");
            return 0;
        };
        let (status, written) = match (chain.clone().reader(mem), chain.writer(mem)) {
            (Ok(reader), Ok(mut data_out)) => {
                // Keep the status byte out of the data; what split_at returns is just that byte.
                match data_out.split_at(data_out.available_bytes().saturating_sub(1)) {
                    Ok(_) => self.execute(reader, &mut data_out),
                    Err(e) => {
                        debug!(error = %e, "virtio-blk: cannot separate the status byte");
                        (VIRTIO_BLK_S_IOERR as u8, 0)
                    }
                }
            }
            (Err(e), _) | (_, Err(e)) => {
                debug!(error = %e, "virtio-blk: request buffers outside guest memory");
                (VIRTIO_BLK_S_IOERR as u8, 0)
            }
        };
        if let Err(e) = mem.write_obj(status, status_addr) {
            debug!(error = %e, "virtio-blk: cannot write the status byte");
            return 0;
        }
        // written <= the chain's length, which is at most u32::MAX (virtio-queue stops there).
        u32::try_from(written + 1).unwrap_or(u32::MAX)
    }

    /// Runs the request; returns its status and how many data bytes went to the guest.
    fn execute(&mut self, mut req: Reader<'_>, data_out: &mut Writer<'_>) -> (u8, usize) {
        let mut header = [0u8; HEADER_LEN];
        if let Err(e) = req.read_exact(&mut header) {
            debug!(error = %e, "virtio-blk: short request header");
            return (VIRTIO_BLK_S_IOERR as u8, 0);
        }
        let [t0, t1, t2, t3, _, _, _, _, s @ ..] = header;
        let req_type = u32::from_le_bytes([t0, t1, t2, t3]);
        let sector = u64::from_le_bytes(s);
        let result = match req_type {
            VIRTIO_BLK_T_IN => self.read_sectors(sector, data_out),
            VIRTIO_BLK_T_OUT => self.write_sectors(sector, &mut req).map(|()| 0),
            VIRTIO_BLK_T_FLUSH => self.flush().map(|()| 0),
            VIRTIO_BLK_T_GET_ID => self.get_id(data_out),
            other => {
                debug!(req_type = other, "virtio-blk: unsupported request type");
                return (VIRTIO_BLK_S_UNSUPP as u8, 0);
            }
        };
        match result {
            Ok(n) => (VIRTIO_BLK_S_OK as u8, n),
            Err(e) => {
                debug!(req_type, sector, error = %e, "virtio-blk: request failed");
                // What was copied before the failure is still in the guest's buffer.
                (VIRTIO_BLK_S_IOERR as u8, data_out.bytes_written())
            }
        }
    }

    /// The byte offset of a transfer of `len` bytes at `sector`, if it lies on the disk.
    fn range(&self, sector: u64, len: usize) -> Result<u64, RequestError> {
        if !(len as u64).is_multiple_of(SECTOR_SIZE) {
            return Err(RequestError::Unaligned(len));
        }
        let end = sector.checked_add(len as u64 / SECTOR_SIZE);
        match end {
            Some(end) if end <= self.capacity => Ok(sector * SECTOR_SIZE),
            _ => Err(RequestError::OutOfRange { sector, len }),
        }
    }

    fn read_sectors(&mut self, sector: u64, out: &mut Writer<'_>) -> Result<usize, RequestError> {
        let total = out.available_bytes();
        let mut offset = self.range(sector, total)?;
        let mut done = 0;
        while done < total {
            let buf = bounce(&mut self.bounce, total - done);
            self.file.read_exact_at(buf, offset)?;
            out.write_all(buf)?;
            done += buf.len();
            offset += buf.len() as u64;
        }
        Ok(done)
    }

    fn write_sectors(&mut self, sector: u64, data: &mut Reader<'_>) -> Result<(), RequestError> {
        if self.read_only {
            return Err(RequestError::ReadOnly);
        }
        let total = data.available_bytes();
        let mut offset = self.range(sector, total)?;
        let mut done = 0;
        while done < total {
            let buf = bounce(&mut self.bounce, total - done);
            data.read_exact(buf)?;
            self.file.write_all_at(buf, offset)?;
            done += buf.len();
            offset += buf.len() as u64;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), RequestError> {
        if self.read_only {
            // Nothing of ours can be dirty.
            return Ok(());
        }
        self.file.sync_data()?;
        Ok(())
    }

    fn get_id(&mut self, out: &mut Writer<'_>) -> Result<usize, RequestError> {
        // Exactly 20 bytes, NUL padded; an id of 20 bytes has no terminator (5.2.6).
        let mut id = [0u8; VIRTIO_BLK_ID_BYTES as usize];
        let bytes = self.id.as_bytes();
        let n = bytes.len().min(id.len());
        id[..n].copy_from_slice(&bytes[..n]);
        let n = id.len().min(out.available_bytes());
        out.write_all(&id[..n])?;
        Ok(n)
    }
}

/// The first `min(len, BOUNCE_LEN)` bytes of the bounce buffer, grown on first use.
fn bounce(buf: &mut Vec<u8>, len: usize) -> &mut [u8] {
    let len = len.min(BOUNCE_LEN);
    if buf.len() < len {
        buf.resize(len, 0);
    }
    &mut buf[..len]
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn avail_features(&self) -> u64 {
        self.features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        // No writable fields: writeback mode (CONFIG_WCE) is not offered.
        debug!(offset, "virtio-blk: config write ignored");
    }

    fn activate(&mut self, _mem: &GuestMemoryMmap, _features: u64) -> Result<(), VirtioError> {
        Ok(())
    }

    fn process_queue(&mut self, index: usize, queues: &mut [Queue], mem: &GuestMemoryMmap) -> bool {
        let Some(queue) = queues.get_mut(index) else {
            return false;
        };
        // Take what is available now; more added meanwhile comes with another notify.
        let chains: Vec<_> = match queue.iter(mem) {
            Ok(iter) => iter.collect(),
            Err(e) => {
                debug!(error = %e, "virtio-blk: cannot read the available ring");
                return false;
            }
        };
        let mut used = false;
        for chain in chains {
            let head = chain.head_index();
            let len = self.handle_chain(mem, chain);
            match queue.add_used(mem, head, len) {
                Ok(()) => used = true,
                Err(e) => debug!(error = %e, head, "virtio-blk: cannot return a buffer"),
            }
        }
        used
    }

    fn reset(&mut self) {
        // Requests are finished synchronously: nothing is in flight.
    }

    fn save_state(&self) -> serde_json::Value {
        serde_json::to_value(BlockState {
            capacity: self.capacity,
            read_only: self.read_only,
        })
        .unwrap_or(serde_json::Value::Null)
    }

    fn restore_state(&mut self, state: &serde_json::Value) -> Result<(), VirtioError> {
        let saved: BlockState = serde_json::from_value(state.clone())
            .map_err(|e| VirtioError::DeviceState(e.to_string()))?;
        // The guest has sized its block layer (and maybe mounted read-write) on these.
        if saved.capacity != self.capacity || saved.read_only != self.read_only {
            return Err(VirtioError::DeviceState(format!(
                "disk was {} sectors{}, is now {} sectors{}",
                saved.capacity,
                if saved.read_only { " read-only" } else { "" },
                self.capacity,
                if self.read_only { " read-only" } else { "" },
            )));
        }
        Ok(())
    }
}
