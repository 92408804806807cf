//! virtio-blk over a raw disk image, one request queue, served on the VMM's device thread
//! (the transport's owner catches QueueNotify with an ioeventfd), one request at a time.
//!
//! Each request is `header (readable) | data (readable for OUT, writable for IN/GET_ID) | status
//! byte (the last writable byte)`. Data may span any number of descriptors. It moves straight
//! between the guest's memory and the file with one preadv/pwritev over the chain's slices: no
//! bounce buffer, so a request costs one system call, whatever its size.
//!
//! Every buffer the guest offered is served per notify, and the used ring is signalled once per
//! batch; with VIRTIO_RING_F_EVENT_IDX the guest decides how many completions it wants to be
//! interrupted for, and the device tells it how far it has read the ring so it can skip notifies.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use serde::{Deserialize, Serialize};
use tracing::debug;
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_ID_BYTES,
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_FLUSH,
    VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend};

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
/// Requests served per round before the transport may interrupt the guest: a guest waiting
/// for the first of several batches hears of it while the device serves the next.
const ROUND: usize = 8;
/// iovecs per preadv/pwritev (the kernel's UIO_MAXIOV); an indirect table may hold more.
const IOV_MAX: usize = 1024;

/// One descriptor of a request as the guest gave it.
#[derive(Debug, Clone, Copy)]
struct Segment {
    addr: GuestAddress,
    len: u32,
    writable: bool,
}

/// A virtio block device.
pub struct Block {
    file: File,
    read_only: bool,
    id: String,
    capacity: u64,
    features: u64,
    config: [u8; 16],
    queue_sizes: [u16; 1],
    /// The current request's descriptors; kept to reuse the allocation.
    segments: Vec<Segment>,
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
    #[error("short request header ({0} readable bytes)")]
    ShortHeader(usize),
    #[error("a data buffer has the wrong direction for the request")]
    Direction,
    #[error("data buffer at {addr:#x}+{len} is outside guest memory")]
    OutsideMemory { addr: u64, len: u32 },
    #[error("disk I/O: {0}")]
    Io(#[from] io::Error),
}

impl Block {
    /// A disk over `file` (its length rounded down to whole sectors); `id` is what GET_ID
    /// returns (truncated to 20 bytes).
    pub fn new(file: File, read_only: bool, id: String) -> Result<Block, VirtioError> {
        // Seeking to the end measures a block device (a thin volume) too: its metadata says 0.
        let len = io::Seek::seek(&mut &file, io::SeekFrom::End(0)).map_err(VirtioError::Disk)?;
        let capacity = len / SECTOR_SIZE;
        let mut features = VIRTIO_F_VERSION_1
            | (1 << VIRTIO_BLK_F_FLUSH)
            | (1 << VIRTIO_BLK_F_SEG_MAX)
            | (1 << VIRTIO_RING_F_EVENT_IDX);
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
            queue_sizes: [QUEUE_SIZE],
            segments: Vec::new(),
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
        // virtio-queue's iterator already ends a chain at a loop (its TTL), at an index outside
        // the table, at an unreadable descriptor and where the total passes 4 GiB.
        self.segments.clear();
        self.segments.extend(chain.map(|d| Segment {
            addr: d.addr(),
            len: d.len(),
            writable: d.is_write_only(),
        }));
        // The status is the last byte of the last descriptor. Find it on its own, so that a
        // request with bad data buffers can still be answered with IOERR.
        let Some(last) = self.segments.last_mut() else {
            debug!("virtio-blk: empty descriptor chain");
            return 0;
        };
        if !last.writable || last.len == 0 {
            // Nowhere to put the status: the request can only be returned unserved.
            debug!("virtio-blk: request without a status byte");
            return 0;
        }
        let Some(status_addr) = last.addr.checked_add(u64::from(last.len) - 1) else {
            debug!("virtio-blk: status byte past the end of the address space");
            return 0;
        };
        // Keep the status byte out of the data.
        last.len -= 1;
        if last.len == 0 {
            self.segments.pop();
        }
        // Every buffer must lie in guest memory before anything is read from or written to it.
        let (status, written) = match self
            .segments
            .iter()
            .find(|s| !GuestMemoryBackend::check_range(mem, s.addr, s.len as usize))
        {
            Some(bad) => {
                debug!(
                    addr = bad.addr.raw_value(),
                    len = bad.len,
                    "virtio-blk: request buffer outside guest memory"
                );
                (VIRTIO_BLK_S_IOERR as u8, 0)
            }
            None => self.execute(mem),
        };
        if let Err(e) = mem.write_obj(status, status_addr) {
            debug!(error = %e, "virtio-blk: cannot write the status byte");
            return 0;
        }
        // written <= the chain's length, which is below u32::MAX (virtio-queue stops there).
        u32::try_from(written + 1).unwrap_or(u32::MAX)
    }

    /// Runs the request in `self.segments` (status byte removed); returns its status and how
    /// many data bytes went to the guest.
    fn execute(&mut self, mem: &GuestMemoryMmap) -> (u8, usize) {
        let (header, data_start) = match read_header(mem, &self.segments) {
            Ok(h) => h,
            Err(e) => {
                debug!(error = %e, "virtio-blk: bad request header");
                return (VIRTIO_BLK_S_IOERR as u8, 0);
            }
        };
        let [t0, t1, t2, t3, _, _, _, _, s @ ..] = header;
        let req_type = u32::from_le_bytes([t0, t1, t2, t3]);
        let sector = u64::from_le_bytes(s);
        // Ok: how many bytes went to the guest.
        let result = match req_type {
            VIRTIO_BLK_T_IN => self.transfer(mem, data_start, sector, false),
            VIRTIO_BLK_T_OUT => self.transfer(mem, data_start, sector, true).map(|_| 0),
            VIRTIO_BLK_T_FLUSH => self.flush().map(|()| 0),
            VIRTIO_BLK_T_GET_ID => self.get_id(mem, data_start),
            other => {
                debug!(req_type = other, "virtio-blk: unsupported request type");
                return (VIRTIO_BLK_S_UNSUPP as u8, 0);
            }
        };
        match result {
            Ok(written) => (VIRTIO_BLK_S_OK as u8, written),
            Err((e, done)) => {
                debug!(req_type, sector, error = %e, "virtio-blk: request failed");
                // What was read before the failure is in the guest's buffers.
                let done = if req_type == VIRTIO_BLK_T_IN { done } else { 0 };
                (VIRTIO_BLK_S_IOERR as u8, done)
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

    /// Moves the data segments from `data_start` on between the guest and the disk at
    /// `sector` (`write`: guest → disk). Everything is checked before the first byte moves;
    /// the error carries how many bytes had moved.
    fn transfer(
        &mut self,
        mem: &GuestMemoryMmap,
        data_start: (usize, u32),
        sector: u64,
        write: bool,
    ) -> Result<usize, (RequestError, usize)> {
        if write && self.read_only {
            return Err((RequestError::ReadOnly, 0));
        }
        let mut iovecs = Vec::with_capacity(self.segments.len());
        let total = guest_iovecs(mem, &self.segments, data_start, write, &mut iovecs)
            .map_err(|e| (e, 0))?;
        let offset = self.range(sector, total).map_err(|e| (e, 0))?;
        transfer_iovecs(&self.file, &mut iovecs, offset, write)
    }

    fn flush(&mut self) -> Result<(), (RequestError, usize)> {
        if self.read_only {
            // Nothing of ours can be dirty.
            return Ok(());
        }
        self.file.sync_data().map_err(|e| (e.into(), 0))
    }

    fn get_id(
        &mut self,
        mem: &GuestMemoryMmap,
        data_start: (usize, u32),
    ) -> Result<usize, (RequestError, usize)> {
        // Exactly 20 bytes, NUL padded; an id of 20 bytes has no terminator (5.2.6).
        let mut id = [0u8; VIRTIO_BLK_ID_BYTES as usize];
        let bytes = self.id.as_bytes();
        let n = bytes.len().min(id.len());
        id[..n].copy_from_slice(&bytes[..n]);
        let mut done = 0;
        for seg in data_segments(&self.segments, data_start) {
            if done == id.len() {
                break;
            }
            if !seg.writable {
                return Err((RequestError::Direction, done));
            }
            let n = (seg.len as usize).min(id.len() - done);
            mem.write_slice(&id[done..done + n], seg.addr)
                .map_err(|_| {
                    (
                        RequestError::OutsideMemory {
                            addr: seg.addr.raw_value(),
                            len: seg.len,
                        },
                        done,
                    )
                })?;
            done += n;
        }
        Ok(done)
    }
}

/// The 16-byte header from the chain's leading readable bytes, and where the data starts
/// (segment index, offset into it).
fn read_header(
    mem: &GuestMemoryMmap,
    segments: &[Segment],
) -> Result<([u8; HEADER_LEN], (usize, u32)), RequestError> {
    let mut header = [0u8; HEADER_LEN];
    let mut have = 0;
    for (i, seg) in segments.iter().enumerate() {
        if !seg.writable {
            let n = (seg.len as usize).min(HEADER_LEN - have);
            mem.read_slice(&mut header[have..have + n], seg.addr)
                .map_err(|_| RequestError::OutsideMemory {
                    addr: seg.addr.raw_value(),
                    len: seg.len,
                })?;
            have += n;
            if have == HEADER_LEN {
                // n <= 16 fits in u32.
                return Ok((header, (i, n as u32)));
            }
        } else {
            break;
        }
    }
    Err(RequestError::ShortHeader(have))
}

/// The segments after the header, the first one trimmed by what the header used.
fn data_segments(segments: &[Segment], start: (usize, u32)) -> impl Iterator<Item = Segment> + '_ {
    let (index, skip) = start;
    segments
        .get(index..)
        .unwrap_or_default()
        .iter()
        .enumerate()
        .filter_map(move |(i, seg)| {
            let skip = if i == 0 { skip.min(seg.len) } else { 0 };
            let len = seg.len - skip;
            (len > 0).then(|| Segment {
                addr: seg.addr.unchecked_add(u64::from(skip)),
                len,
                writable: seg.writable,
            })
        })
}

/// Fills `iovecs` with host pointers to the data segments (each split where guest memory
/// regions end); every segment must go the request's way (`write`: device-readable) and lie
/// in guest memory. Returns the total length.
fn guest_iovecs(
    mem: &GuestMemoryMmap,
    segments: &[Segment],
    data_start: (usize, u32),
    write: bool,
    iovecs: &mut Vec<libc::iovec>,
) -> Result<usize, RequestError> {
    iovecs.clear();
    let mut total = 0usize;
    for seg in data_segments(segments, data_start) {
        // Device-readable data for a write, device-writable for a read (2.7.4).
        if seg.writable == write {
            iovecs.clear();
            return Err(RequestError::Direction);
        }
        let outside = RequestError::OutsideMemory {
            addr: seg.addr.raw_value(),
            len: seg.len,
        };
        let mut covered = 0usize;
        for slice in GuestMemoryBackend::get_slices(mem, seg.addr, seg.len as usize) {
            let Ok(slice) = slice else {
                iovecs.clear();
                return Err(outside);
            };
            covered += slice.len();
            iovecs.push(libc::iovec {
                iov_base: slice.ptr_guard_mut().as_ptr().cast(),
                iov_len: slice.len(),
            });
        }
        if covered != seg.len as usize {
            iovecs.clear();
            return Err(outside);
        }
        total += covered;
    }
    Ok(total)
}

/// preadv/pwritev over `iovecs` at `offset` until all of it moved (short transfers continue
/// where they stopped). Returns the bytes moved, or the error and how many had.
fn transfer_iovecs(
    file: &File,
    iovecs: &mut [libc::iovec],
    mut offset: u64,
    write: bool,
) -> Result<usize, (RequestError, usize)> {
    let mut done = 0usize;
    let mut first = 0;
    while first < iovecs.len() {
        let window = &iovecs[first..iovecs.len().min(first + IOV_MAX)];
        let Ok(off) = libc::off_t::try_from(offset) else {
            return Err((io::Error::from_raw_os_error(libc::EOVERFLOW).into(), done));
        };
        // SAFETY: every iovec points into guest memory that `guest_iovecs` checked to be
        // mapped for its whole length, and the map outlives this call (the caller borrows it).
        // The kernel reads or writes only within those ranges; concurrent guest access to the
        // same bytes is the guest's own race and cannot touch host memory outside them.
        let n = unsafe {
            if write {
                libc::pwritev(file.as_raw_fd(), window.as_ptr(), window.len() as i32, off)
            } else {
                libc::preadv(file.as_raw_fd(), window.as_ptr(), window.len() as i32, off)
            }
        };
        let n = match n {
            n if n > 0 => n as usize,
            0 => {
                // The file shrank under us (range() checked the capacity at open).
                let kind = if write {
                    io::ErrorKind::WriteZero
                } else {
                    io::ErrorKind::UnexpectedEof
                };
                return Err((io::Error::from(kind).into(), done));
            }
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err((e.into(), done));
            }
        };
        done += n;
        offset += n as u64;
        // Step past what moved: whole iovecs, then part of the next one.
        let mut left = n;
        while left > 0 && first < iovecs.len() {
            let iov = &mut iovecs[first];
            if left >= iov.iov_len {
                left -= iov.iov_len;
                first += 1;
            } else {
                // SAFETY: `left` < iov_len, so the new base stays inside the same slice.
                iov.iov_base = unsafe { iov.iov_base.cast::<u8>().add(left).cast() };
                iov.iov_len -= left;
                left = 0;
            }
        }
        // Zero-length iovecs in the window would otherwise keep `first` in place.
        while first < iovecs.len() && iovecs[first].iov_len == 0 {
            first += 1;
        }
    }
    Ok(done)
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

    fn notify_off_vcpu(&self) -> bool {
        // Disk I/O is the slow part of a request: the vCPU should not wait for it.
        true
    }

    fn process_queue(&mut self, index: usize, queues: &mut [Queue], mem: &GuestMemoryMmap) -> bool {
        let Some(queue) = queues.get_mut(index) else {
            return false;
        };
        let mut used = false;
        // Serve until the ring is empty with notifications back on (a buffer the driver adds
        // while they are off is caught by enable_notification's second look), or ROUND
        // requests, after which the transport calls again.
        let mut served = 0;
        loop {
            if let Err(e) = queue.disable_notification(mem) {
                debug!(error = %e, "virtio-blk: cannot suppress notifications");
            }
            loop {
                if served == ROUND {
                    return true;
                }
                let chain = match queue.iter(mem) {
                    Ok(mut iter) => iter.next(),
                    Err(e) => {
                        // Notifications back on, or a guest that repairs its ring is never
                        // heard again.
                        debug!(error = %e, "virtio-blk: cannot read the available ring");
                        let _ = queue.enable_notification(mem);
                        return used;
                    }
                };
                let Some(chain) = chain else { break };
                let head = chain.head_index();
                let len = self.handle_chain(mem, chain);
                served += 1;
                match queue.add_used(mem, head, len) {
                    Ok(()) => used = true,
                    Err(e) => debug!(error = %e, head, "virtio-blk: cannot return a buffer"),
                }
            }
            match queue.enable_notification(mem) {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    debug!(error = %e, "virtio-blk: cannot re-enable notifications");
                    break;
                }
            }
        }
        used
    }

    fn reset(&mut self) {
        // Requests are finished under the transport's lock: nothing is in flight.
        self.segments.clear();
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
