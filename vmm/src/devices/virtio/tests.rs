//! Drives the transport through its registers the way a guest driver does, with split
//! virtqueues laid out by hand in guest memory.

use std::fs::{File, OpenOptions};
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixDatagram;

use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use super::mmio::*;
use super::*;
use crate::devices::BusDevice;

const MEM_SIZE: usize = 1 << 20;
const QSIZE: u16 = 16;
const DATA: u64 = 0x40000;

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const F_INDIRECT: u16 = 4;

/// A split virtqueue as the driver sees it: descriptor table, avail ring, used ring.
struct TestQueue {
    base: u64,
    next_desc: u16,
    avail_idx: u16,
    used_seen: u16,
}

impl TestQueue {
    fn new(index: usize) -> TestQueue {
        TestQueue {
            base: 0x1000 + index as u64 * 0x4000,
            next_desc: 0,
            avail_idx: 0,
            used_seen: 0,
        }
    }
    fn desc(&self) -> u64 {
        self.base
    }
    fn avail(&self) -> u64 {
        self.base + 0x1000
    }
    fn used(&self) -> u64 {
        self.base + 0x2000
    }

    fn write_desc(
        &self,
        mem: &GuestMemoryMmap,
        idx: u16,
        addr: u64,
        len: u32,
        flags: u16,
        next: u16,
    ) {
        let mut d = [0u8; 16];
        d[..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..16].copy_from_slice(&next.to_le_bytes());
        mem.write_slice(&d, GuestAddress(self.desc() + u64::from(idx) * 16))
            .unwrap();
    }

    /// Puts a head index in the avail ring and publishes it. Asks (with EVENT_IDX) to be
    /// interrupted for the next completion, as Linux's virtqueue_enable_cb does.
    fn publish(&mut self, mem: &GuestMemoryMmap, head: u16) {
        self.set_used_event(mem, self.used_seen);
        let slot = self.avail() + 4 + 2 * u64::from(self.avail_idx % QSIZE);
        mem.write_obj(head, GuestAddress(slot)).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        mem.write_obj(self.avail_idx, GuestAddress(self.avail() + 2))
            .unwrap();
    }

    /// EVENT_IDX: interrupt once the used index passes `idx` (avail ring's trailing field).
    fn set_used_event(&self, mem: &GuestMemoryMmap, idx: u16) {
        let at = self.avail() + 4 + 2 * u64::from(QSIZE);
        mem.write_obj(idx, GuestAddress(at)).unwrap();
    }

    /// EVENT_IDX: the avail index after which the device wants a notify (used ring's trailer).
    fn avail_event(&self, mem: &GuestMemoryMmap) -> u16 {
        let at = self.used() + 4 + 8 * u64::from(QSIZE);
        mem.read_obj(GuestAddress(at)).unwrap()
    }

    /// Adds a chain of (addr, len, device-writable) buffers without publishing it; returns
    /// its head.
    fn add_unpublished(&mut self, mem: &GuestMemoryMmap, bufs: &[(u64, u32, bool)]) -> u16 {
        let head = self.next_desc;
        for (i, &(addr, len, write)) in bufs.iter().enumerate() {
            let idx = (head + i as u16) % QSIZE;
            let last = i + 1 == bufs.len();
            let flags = if write { F_WRITE } else { 0 } | if last { 0 } else { F_NEXT };
            self.write_desc(mem, idx, addr, len, flags, (idx + 1) % QSIZE);
        }
        self.next_desc = (head + bufs.len() as u16) % QSIZE;
        head
    }

    /// Adds a chain of (addr, len, device-writable) buffers; returns its head.
    fn add_chain(&mut self, mem: &GuestMemoryMmap, bufs: &[(u64, u32, bool)]) -> u16 {
        let head = self.add_unpublished(mem, bufs);
        self.publish(mem, head);
        head
    }

    /// Used elements (id, len) added since the last call.
    fn take_used(&mut self, mem: &GuestMemoryMmap) -> Vec<(u32, u32)> {
        let idx: u16 = mem.read_obj(GuestAddress(self.used() + 2)).unwrap();
        let mut out = Vec::new();
        while self.used_seen != idx {
            let at = self.used() + 4 + 8 * u64::from(self.used_seen % QSIZE);
            let id: u32 = mem.read_obj(GuestAddress(at)).unwrap();
            let len: u32 = mem.read_obj(GuestAddress(at + 4)).unwrap();
            out.push((id, len));
            self.used_seen = self.used_seen.wrapping_add(1);
        }
        out
    }
}

/// Writes an indirect descriptor table at `table`: entry i chains to i + 1 where it has NEXT.
fn write_table(mem: &GuestMemoryMmap, table: u64, entries: &[(u64, u32, u16)]) {
    for (i, (addr, len, flags)) in entries.iter().enumerate() {
        let mut e = [0u8; 16];
        e[..8].copy_from_slice(&addr.to_le_bytes());
        e[8..12].copy_from_slice(&len.to_le_bytes());
        e[12..14].copy_from_slice(&flags.to_le_bytes());
        e[14..16].copy_from_slice(&(i as u16 + 1).to_le_bytes());
        mem.write_slice(&e, GuestAddress(table + 16 * i as u64))
            .unwrap();
    }
}

/// A guest driver in front of one transport.
struct Driver {
    t: MmioTransport,
    mem: GuestMemoryMmap,
    irq: EventFd,
    q: Vec<TestQueue>,
}

fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap()
}

impl Driver {
    fn new(device: Box<dyn VirtioDevice>) -> Driver {
        Driver::with_memory(device, memory())
    }

    fn with_memory(device: Box<dyn VirtioDevice>, mem: GuestMemoryMmap) -> Driver {
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let t = MmioTransport::new(device, mem.clone(), irq.try_clone().unwrap());
        Driver {
            t,
            mem,
            irq,
            q: Vec::new(),
        }
    }

    fn r32(&mut self, off: u64) -> u32 {
        let mut b = [0u8; 4];
        self.t.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    fn w32(&mut self, off: u64, v: u32) {
        self.t.write(off, &v.to_le_bytes());
    }

    fn features(&mut self) -> u64 {
        self.w32(0x14, 0);
        let lo = self.r32(0x10);
        self.w32(0x14, 1);
        let hi = self.r32(0x10);
        u64::from(lo) | (u64::from(hi) << 32)
    }

    /// Negotiates `features`; returns whether the device accepted them.
    fn negotiate(&mut self, features: u64) -> bool {
        self.w32(0x70, STATUS_ACKNOWLEDGE);
        self.w32(0x70, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        self.w32(0x24, 0);
        self.w32(0x20, features as u32);
        self.w32(0x24, 1);
        self.w32(0x20, (features >> 32) as u32);
        self.w32(
            0x70,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
        );
        self.r32(0x70) & STATUS_FEATURES_OK != 0
    }

    /// The whole init sequence with every offered feature and `queues` queues of QSIZE.
    fn init(&mut self, queues: usize) {
        let features = self.features();
        self.init_with(queues, features);
    }

    /// The whole init sequence with `features` and `queues` queues of QSIZE.
    fn init_with(&mut self, queues: usize, features: u64) {
        assert_eq!(self.r32(0x00), 0x7472_6976);
        assert_eq!(self.r32(0x04), 2);
        assert!(self.negotiate(features));
        self.q.clear();
        for i in 0..queues {
            let q = TestQueue::new(i);
            self.w32(0x30, i as u32);
            assert!(self.r32(0x34) >= u32::from(QSIZE));
            assert_eq!(self.r32(0x44), 0);
            self.w32(0x38, u32::from(QSIZE));
            self.w32(0x80, q.desc() as u32);
            self.w32(0x84, (q.desc() >> 32) as u32);
            self.w32(0x90, q.avail() as u32);
            self.w32(0x94, 0);
            self.w32(0xa0, q.used() as u32);
            self.w32(0xa4, 0);
            self.w32(0x44, 1);
            assert_eq!(self.r32(0x44), 1);
            self.q.push(q);
        }
        self.w32(
            0x70,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK,
        );
        assert_eq!(self.r32(0x70) & STATUS_DRIVER_OK, STATUS_DRIVER_OK);
        assert!(self.t.is_activated());
    }

    fn notify(&mut self, queue: u32) {
        self.w32(0x50, queue);
    }

    /// Whether the irqfd fired since the last call (and consumes it).
    fn irq_fired(&self) -> bool {
        self.irq.read().is_ok()
    }

    /// Reads InterruptStatus and acknowledges what it saw.
    fn ack(&mut self) -> u32 {
        let s = self.r32(0x60);
        self.w32(0x64, s);
        s
    }
}

// ---------------------------------------------------------------- block

const BLK_IN: u32 = 0;
const BLK_OUT: u32 = 1;
const BLK_FLUSH: u32 = 4;
const BLK_GET_ID: u32 = 8;
const S_OK: u8 = 0;
const S_IOERR: u8 = 1;
const S_UNSUPP: u8 = 2;

const HDR: u64 = DATA;
const BUF: u64 = DATA + 0x1000;
const STATUS: u64 = DATA + 0x100;

/// A 64 KiB disk (128 sectors) whose byte i is i % 251.
fn disk(dir: &testkit::TempDir, ro: bool) -> (File, std::path::PathBuf) {
    let path = dir.path().join("disk.img");
    let content: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &content).unwrap();
    let f = OpenOptions::new()
        .read(true)
        .write(!ro)
        .open(&path)
        .unwrap();
    (f, path)
}

fn block_driver(dir: &testkit::TempDir, ro: bool) -> (Driver, std::path::PathBuf) {
    let (f, path) = disk(dir, ro);
    let mut d = Driver::new(Box::new(Block::new(f, ro, "cairn-disk-0".into()).unwrap()));
    assert_eq!(d.r32(0x08), 2);
    d.init(1);
    (d, path)
}

fn header(d: &Driver, t: u32, sector: u64) {
    let mut h = [0u8; 16];
    h[..4].copy_from_slice(&t.to_le_bytes());
    h[8..].copy_from_slice(&sector.to_le_bytes());
    d.mem.write_slice(&h, GuestAddress(HDR)).unwrap();
    d.mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
}

/// Submits a request and returns (status byte, used length).
fn request(d: &mut Driver, t: u32, sector: u64, data: &[(u64, u32, bool)]) -> (u8, u32) {
    header(d, t, sector);
    let mut chain = vec![(HDR, 16, false)];
    chain.extend_from_slice(data);
    chain.push((STATUS, 1, true));
    let head = d.q[0].add_chain(&d.mem, &chain);
    d.notify(0);
    let used = d.q[0].take_used(&d.mem);
    assert_eq!(used.len(), 1);
    assert_eq!(used[0].0, u32::from(head));
    (d.mem.read_obj(GuestAddress(STATUS)).unwrap(), used[0].1)
}

#[test]
fn registers_and_feature_negotiation() {
    let dir = testkit::TempDir::new("virtio-regs");
    let (f, _) = disk(&dir, false);
    let mut d = Driver::new(Box::new(Block::new(f, false, "x".into()).unwrap()));
    assert_eq!(d.r32(0x00), 0x7472_6976);
    assert_eq!(d.r32(0x04), 2);
    assert_eq!(d.r32(0x08), 2);
    assert_eq!(d.r32(0x0c), VENDOR_ID);
    let features = d.features();
    assert_ne!(features & VIRTIO_F_VERSION_1, 0);
    assert_ne!(features & (1 << 9), 0, "FLUSH");
    assert_eq!(features & (1 << 5), 0, "not RO");
    // Capacity: 128 sectors, read as two 32-bit halves; seg_max at 12.
    assert_eq!(d.r32(0x100), 128);
    assert_eq!(d.r32(0x104), 0);
    assert_eq!(d.r32(0x10c), 254);
    // Config space is also readable bytewise.
    let mut b = [0u8; 1];
    d.t.read(0x100, &mut b);
    assert_eq!(b[0], 128);
    // Queue 1 does not exist.
    d.w32(0x30, 1);
    assert_eq!(d.r32(0x34), 0);
    d.w32(0x30, 0);
    assert_eq!(d.r32(0x34), 256);
    // A legacy driver (no VERSION_1) is refused, as are unknown bits.
    assert!(!d.negotiate(0));
    d.w32(0x70, 0);
    assert!(!d.negotiate(VIRTIO_F_VERSION_1 | (1 << 30)));
    d.w32(0x70, 0);
    // Status bits cannot be taken back without a reset; DRIVER_OK needs FEATURES_OK.
    d.w32(0x70, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    d.w32(0x70, STATUS_ACKNOWLEDGE);
    assert_eq!(d.r32(0x70), STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    d.w32(0x70, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_DRIVER_OK);
    assert_eq!(d.r32(0x70) & STATUS_DRIVER_OK, 0);
    assert!(!d.t.is_activated());
    // Narrow register accesses are ignored, not misinterpreted.
    let mut w = [0u8; 2];
    d.t.read(0x00, &mut w);
    assert_eq!(w, [0, 0]);
    d.w32(0x70, 0);
    assert_eq!(d.r32(0x70), 0);
    assert_eq!(d.r32(0xfc), 0);
    d.init(1);
    // A config change raises bit 1 and bumps the generation.
    let _ = d.irq_fired();
    d.t.signal_config_change();
    assert!(d.irq_fired());
    assert_eq!(d.r32(0xfc), 1);
    assert_eq!(d.ack(), INT_CONFIG);
    assert_eq!(d.r32(0x60), 0);
}

#[test]
fn block_read_write_flush_get_id() {
    let dir = testkit::TempDir::new("virtio-blk-rw");
    let (mut d, path) = block_driver(&dir, false);

    // OUT: 1 KiB at sector 2, split over two data descriptors.
    let data: Vec<u8> = (0..1024).map(|i| (i * 7 % 256) as u8).collect();
    d.mem.write_slice(&data, GuestAddress(BUF)).unwrap();
    let (status, len) = request(
        &mut d,
        BLK_OUT,
        2,
        &[(BUF, 512, false), (BUF + 512, 512, false)],
    );
    assert_eq!((status, len), (S_OK, 1));
    assert!(d.irq_fired());
    assert_eq!(d.ack(), INT_USED_RING);
    assert_eq!(d.r32(0x60), 0);
    let file = File::open(&path).unwrap();
    let mut on_disk = vec![0u8; 1024];
    file.read_exact_at(&mut on_disk, 1024).unwrap();
    assert_eq!(on_disk, data);

    // IN: the same sectors back, into three descriptors of uneven sizes.
    d.mem
        .write_slice(&[0u8; 1024], GuestAddress(BUF + 0x1000))
        .unwrap();
    let (status, len) = request(
        &mut d,
        BLK_IN,
        2,
        &[
            (BUF + 0x1000, 100, true),
            (BUF + 0x1100, 412, true),
            (BUF + 0x1400, 512, true),
        ],
    );
    assert_eq!((status, len), (S_OK, 1025));
    let mut back = vec![0u8; 1024];
    d.mem
        .read_slice(&mut back[..100], GuestAddress(BUF + 0x1000))
        .unwrap();
    d.mem
        .read_slice(&mut back[100..512], GuestAddress(BUF + 0x1100))
        .unwrap();
    d.mem
        .read_slice(&mut back[512..], GuestAddress(BUF + 0x1400))
        .unwrap();
    assert_eq!(back, data);

    // IN of untouched sectors reads the image.
    let (status, _) = request(&mut d, BLK_IN, 0, &[(BUF, 512, true)]);
    assert_eq!(status, S_OK);
    let mut first = [0u8; 512];
    d.mem.read_slice(&mut first, GuestAddress(BUF)).unwrap();
    assert!(first.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));

    // A transfer larger than the bounce buffer, up to the last sector.
    let big = 128 * 1024 / 2;
    let (status, len) = request(&mut d, BLK_IN, 0, &[(BUF, 64 * 1024, true)]);
    assert_eq!((status, len), (S_OK, big + 1));

    assert_eq!(request(&mut d, BLK_FLUSH, 0, &[]), (S_OK, 1));

    let (status, len) = request(&mut d, BLK_GET_ID, 0, &[(BUF, 20, true)]);
    assert_eq!((status, len), (S_OK, 21));
    let mut id = [0u8; 20];
    d.mem.read_slice(&mut id, GuestAddress(BUF)).unwrap();
    assert_eq!(&id[..12], b"cairn-disk-0");
    assert!(id[12..].iter().all(|b| *b == 0));

    assert_eq!(request(&mut d, 99, 0, &[]).0, S_UNSUPP);
}

#[test]
fn block_request_through_an_indirect_table() {
    let dir = testkit::TempDir::new("virtio-blk-indirect");
    let (mut d, _) = block_driver(&dir, false);
    assert_ne!(d.features() & (1 << 28), 0, "INDIRECT_DESC offered");
    header(&d, BLK_IN, 1);
    let table = DATA + 0x8000;
    let entries: [(u64, u32, u16); 3] = [
        (HDR, 16, F_NEXT),
        (BUF, 512, F_NEXT | F_WRITE),
        (STATUS, 1, F_WRITE),
    ];
    write_table(&d.mem, table, &entries);
    let idx = d.q[0].next_desc;
    d.q[0].write_desc(&d.mem, idx, table, 48, F_INDIRECT, 0);
    d.q[0].next_desc = idx + 1;
    d.q[0].publish(&d.mem, idx);
    d.notify(0);
    assert_eq!(d.q[0].take_used(&d.mem), vec![(u32::from(idx), 513)]);
    assert_eq!(d.mem.read_obj::<u8>(GuestAddress(STATUS)).unwrap(), S_OK);
    let mut sector = [0u8; 512];
    d.mem.read_slice(&mut sector, GuestAddress(BUF)).unwrap();
    assert!(
        sector
            .iter()
            .enumerate()
            .all(|(i, b)| *b == ((512 + i) % 251) as u8)
    );
    // An indirect table outside guest memory is an empty chain: returned unserved.
    let idx = d.q[0].next_desc;
    d.q[0].write_desc(&d.mem, idx, 0xffff_0000, 48, F_INDIRECT, 0);
    d.q[0].next_desc = idx + 1;
    d.q[0].publish(&d.mem, idx);
    d.notify(0);
    assert_eq!(d.q[0].take_used(&d.mem), vec![(u32::from(idx), 0)]);
}

#[test]
fn block_read_only_and_out_of_range() {
    let dir = testkit::TempDir::new("virtio-blk-ro");
    let (mut d, path) = block_driver(&dir, true);
    assert_ne!(d.features() & (1 << 5), 0, "RO offered");
    d.mem.write_slice(&[0xaa; 512], GuestAddress(BUF)).unwrap();
    assert_eq!(request(&mut d, BLK_OUT, 0, &[(BUF, 512, false)]).0, S_IOERR);
    let mut first = [0u8; 4];
    File::open(&path)
        .unwrap()
        .read_exact_at(&mut first, 0)
        .unwrap();
    assert_eq!(first, [0, 1, 2, 3]);
    // Reads still work; flush is a no-op.
    assert_eq!(request(&mut d, BLK_IN, 127, &[(BUF, 512, true)]).0, S_OK);
    assert_eq!(request(&mut d, BLK_FLUSH, 0, &[]).0, S_OK);
    // Past the end, straddling the end, and a sector number that overflows.
    assert_eq!(request(&mut d, BLK_IN, 128, &[(BUF, 512, true)]).0, S_IOERR);
    assert_eq!(
        request(&mut d, BLK_IN, 127, &[(BUF, 1024, true)]).0,
        S_IOERR
    );
    assert_eq!(
        request(&mut d, BLK_IN, u64::MAX, &[(BUF, 512, true)]).0,
        S_IOERR
    );
    // Not a whole sector.
    assert_eq!(request(&mut d, BLK_IN, 0, &[(BUF, 100, true)]).0, S_IOERR);
}

#[test]
fn block_malformed_chains_do_not_panic() {
    let dir = testkit::TempDir::new("virtio-blk-bad");
    let (mut d, _) = block_driver(&dir, false);

    // Data outside guest memory.
    assert_eq!(
        request(&mut d, BLK_IN, 0, &[(0xffff_0000, 512, true)]).0,
        S_IOERR
    );
    assert_eq!(
        request(&mut d, BLK_OUT, 0, &[(MEM_SIZE as u64 - 256, 512, false)]).0,
        S_IOERR
    );
    // A header shorter than 16 bytes.
    d.mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
    d.q[0].add_chain(&d.mem, &[(HDR, 8, false), (STATUS, 1, true)]);
    d.notify(0);
    assert_eq!(d.q[0].take_used(&d.mem).len(), 1);
    assert_eq!(d.mem.read_obj::<u8>(GuestAddress(STATUS)).unwrap(), S_IOERR);
    // No status descriptor at all: returned unserved.
    header(&d, BLK_IN, 0);
    d.q[0].add_chain(&d.mem, &[(HDR, 16, false), (BUF, 512, false)]);
    d.notify(0);
    assert_eq!(d.q[0].take_used(&d.mem)[0].1, 0);
    // A header descriptor running past the end of memory.
    d.mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
    d.q[0].add_chain(&d.mem, &[(HDR, MEM_SIZE as u32, false), (STATUS, 1, true)]);
    d.notify(0);
    assert_eq!(d.q[0].take_used(&d.mem).len(), 1);
    assert_eq!(d.mem.read_obj::<u8>(GuestAddress(STATUS)).unwrap(), S_IOERR);
    // A chain longer than 4 GiB in total ends where it overflows: no status, returned unserved.
    d.mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
    d.q[0].add_chain(&d.mem, &[(HDR, u32::MAX, false), (STATUS, 1, true)]);
    d.notify(0);
    assert_eq!(d.q[0].take_used(&d.mem)[0].1, 0);
    assert_eq!(d.mem.read_obj::<u8>(GuestAddress(STATUS)).unwrap(), 0xff);
    // A status descriptor at the very top of the address space.
    header(&d, BLK_FLUSH, 0);
    d.q[0].add_chain(&d.mem, &[(HDR, 16, false), (u64::MAX, 2, true)]);
    d.notify(0);
    assert_eq!(d.q[0].take_used(&d.mem)[0].1, 0);
    // A `next` pointing outside the table ends the chain early: no status byte.
    let idx = d.q[0].next_desc;
    d.q[0].write_desc(&d.mem, idx, HDR, 16, F_NEXT, 200);
    d.q[0].next_desc = (idx + 1) % QSIZE;
    d.q[0].publish(&d.mem, idx);
    d.notify(0);
    assert_eq!(d.q[0].take_used(&d.mem), vec![(u32::from(idx), 0)]);
    // A head index beyond the queue: nothing can be returned, nothing breaks.
    d.q[0].publish(&d.mem, 1000);
    d.notify(0);
    assert!(d.q[0].take_used(&d.mem).is_empty());
    // A descriptor loop is cut by the chain's TTL.
    let idx = d.q[0].next_desc;
    d.q[0].write_desc(&d.mem, idx, HDR, 16, F_NEXT, idx);
    d.q[0].next_desc = (idx + 1) % QSIZE;
    d.q[0].publish(&d.mem, idx);
    d.notify(0);
    assert_eq!(d.q[0].take_used(&d.mem).len(), 1);
    // Notify for a queue that does not exist.
    d.notify(7);
    // The device still serves well-formed requests afterwards.
    assert_eq!(request(&mut d, BLK_IN, 0, &[(BUF, 512, true)]).0, S_OK);
}

#[test]
fn block_data_goes_straight_between_guest_memory_and_the_disk() {
    let dir = testkit::TempDir::new("virtio-blk-sg");
    let (f, path) = disk(&dir, false);
    // Two memory regions back to back: a buffer across the boundary is two host mappings.
    let half = MEM_SIZE / 2;
    let mem =
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), half), (GuestAddress(half as u64), half)])
            .unwrap();
    let mut d = Driver::with_memory(
        Box::new(Block::new(f, false, "cairn-disk-0".into()).unwrap()),
        mem,
    );
    d.init(1);
    let across = half as u64 - 512;
    let data: Vec<u8> = (0..1024).map(|i| (i * 13 % 256) as u8).collect();
    d.mem.write_slice(&data, GuestAddress(across)).unwrap();
    assert_eq!(
        request(&mut d, BLK_OUT, 10, &[(across, 1024, false)]),
        (S_OK, 1)
    );
    let mut on_disk = vec![0u8; 1024];
    File::open(&path)
        .unwrap()
        .read_exact_at(&mut on_disk, 10 * 512)
        .unwrap();
    assert_eq!(on_disk, data);

    // Header and data in one readable descriptor; data and status in one writable one.
    header(&d, BLK_OUT, 20);
    d.mem
        .write_slice(&data[..512], GuestAddress(HDR + 16))
        .unwrap();
    d.q[0].add_chain(&d.mem, &[(HDR, 16 + 512, false), (STATUS, 1, true)]);
    d.notify(0);
    assert_eq!(d.q[0].take_used(&d.mem).len(), 1);
    assert_eq!(d.mem.read_obj::<u8>(GuestAddress(STATUS)).unwrap(), S_OK);
    header(&d, BLK_IN, 20);
    let status_after = BUF + 0x2000 + 512;
    d.q[0].add_chain(&d.mem, &[(HDR, 16, false), (BUF + 0x2000, 512 + 1, true)]);
    d.notify(0);
    assert_eq!(d.q[0].take_used(&d.mem)[0].1, 513);
    assert_eq!(
        d.mem.read_obj::<u8>(GuestAddress(status_after)).unwrap(),
        S_OK
    );
    let mut back = vec![0u8; 512];
    d.mem
        .read_slice(&mut back, GuestAddress(BUF + 0x2000))
        .unwrap();
    assert_eq!(back, data[..512]);

    // More segments than one preadv takes (1024): 1152 descriptors of 16 bytes through an
    // indirect table, the read lands in order.
    let segs = 1152u64;
    let table = 0x80000u64;
    let buf = 0x60000u64;
    header(&d, BLK_IN, 0);
    let mut entries = vec![(HDR, 16u32, F_NEXT)];
    entries.extend((0..segs).map(|i| (buf + 16 * i, 16, F_NEXT | F_WRITE)));
    entries.push((STATUS, 1, F_WRITE));
    write_table(&d.mem, table, &entries);
    let idx = d.q[0].next_desc;
    d.q[0].write_desc(&d.mem, idx, table, 16 * entries.len() as u32, F_INDIRECT, 0);
    d.q[0].next_desc = idx + 1;
    d.q[0].publish(&d.mem, idx);
    d.notify(0);
    let total = segs as u32 * 16;
    assert_eq!(d.q[0].take_used(&d.mem), vec![(u32::from(idx), total + 1)]);
    assert_eq!(d.mem.read_obj::<u8>(GuestAddress(STATUS)).unwrap(), S_OK);
    let mut got = vec![0u8; total as usize];
    d.mem.read_slice(&mut got, GuestAddress(buf)).unwrap();
    let mut want = vec![0u8; total as usize];
    File::open(&path)
        .unwrap()
        .read_exact_at(&mut want, 0)
        .unwrap();
    assert_eq!(got, want);
}

#[test]
fn block_refuses_buffers_of_the_wrong_direction_and_leaves_the_disk_alone() {
    let dir = testkit::TempDir::new("virtio-blk-dir");
    let (mut d, path) = block_driver(&dir, false);
    let before = std::fs::read(&path).unwrap();
    // A write whose data the device could only write to, a read into a read-only buffer.
    d.mem.write_slice(&[0xee; 512], GuestAddress(BUF)).unwrap();
    assert_eq!(
        request(&mut d, BLK_OUT, 0, &[(BUF, 512, true)]),
        (S_IOERR, 1)
    );
    assert_eq!(
        request(&mut d, BLK_IN, 0, &[(BUF, 512, false)]),
        (S_IOERR, 1)
    );
    assert_eq!(d.mem.read_obj::<u8>(GuestAddress(BUF)).unwrap(), 0xee);
    // A write with one good and one unmapped buffer moves nothing at all.
    assert_eq!(
        request(
            &mut d,
            BLK_OUT,
            0,
            &[(BUF, 512, false), (MEM_SIZE as u64, 512, false)]
        )
        .0,
        S_IOERR
    );
    // A header split over two descriptors is still a header.
    header(&d, BLK_IN, 1);
    d.q[0].add_chain(
        &d.mem,
        &[
            (HDR, 4, false),
            (HDR + 4, 12, false),
            (BUF, 512, true),
            (STATUS, 1, true),
        ],
    );
    d.notify(0);
    assert_eq!(d.q[0].take_used(&d.mem)[0].1, 513);
    assert_eq!(d.mem.read_obj::<u8>(GuestAddress(STATUS)).unwrap(), S_OK);
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn block_event_idx_batches_interrupts_and_asks_for_notifies() {
    let dir = testkit::TempDir::new("virtio-blk-evidx");
    let (mut d, _) = block_driver(&dir, false);
    assert_ne!(
        d.features() & VIRTIO_RING_F_EVENT_IDX,
        0,
        "EVENT_IDX offered"
    );
    let _ = d.irq_fired();
    // Three reads in one notify; the driver wants an interrupt only after the third.
    for i in 0..3u64 {
        header(&d, BLK_IN, i);
        let head = d.q[0].add_unpublished(
            &d.mem,
            &[
                (HDR, 16, false),
                (BUF + 0x200 * i, 512, true),
                (STATUS, 1, true),
            ],
        );
        d.q[0].publish(&d.mem, head);
    }
    let seen = d.q[0].used_seen;
    d.q[0].set_used_event(&d.mem, seen.wrapping_add(2));
    d.notify(0);
    assert_eq!(d.q[0].take_used(&d.mem).len(), 3);
    assert!(d.irq_fired(), "the third completion passes used_event");
    assert_eq!(d.ack(), INT_USED_RING);
    // The device read the ring up to the driver's index and asks for a notify after it.
    assert_eq!(d.q[0].avail_event(&d.mem), d.q[0].avail_idx);

    // One read while the driver waits for two more: no interrupt.
    header(&d, BLK_IN, 0);
    let head = d.q[0].add_unpublished(
        &d.mem,
        &[(HDR, 16, false), (BUF, 512, true), (STATUS, 1, true)],
    );
    d.q[0].publish(&d.mem, head);
    let seen = d.q[0].used_seen;
    d.q[0].set_used_event(&d.mem, seen.wrapping_add(2));
    d.notify(0);
    assert_eq!(d.q[0].take_used(&d.mem).len(), 1);
    assert!(!d.irq_fired(), "used_event not reached");
    assert_eq!(d.r32(0x60), 0);
    // Ten flushes in one notify (each an indirect table: the ring has 16 descriptors). The
    // device serves them in rounds and interrupts as soon as the round that passes used_event
    // is done, not after the whole ring; later rounds stay quiet.
    let _ = d.irq_fired();
    d.ack();
    for used_event_ahead in [2u16, 8] {
        header(&d, BLK_FLUSH, 0);
        let seen = d.q[0].used_seen;
        for i in 0..10u64 {
            let table = DATA + 0x8000 + 0x40 * i;
            let status = DATA + 0x200 + i;
            write_table(&d.mem, table, &[(HDR, 16, F_NEXT), (status, 1, F_WRITE)]);
            let idx = d.q[0].next_desc;
            d.q[0].write_desc(&d.mem, idx, table, 32, F_INDIRECT, 0);
            d.q[0].next_desc = (idx + 1) % QSIZE;
            d.q[0].publish(&d.mem, idx);
        }
        d.q[0].set_used_event(&d.mem, seen.wrapping_add(used_event_ahead));
        d.notify(0);
        assert_eq!(d.q[0].take_used(&d.mem).len(), 10);
        // Exactly one interrupt (the eventfd counts its writes): with used_event 2 it can only
        // have come from the first round, since the second does not pass it.
        assert_eq!(d.irq.read().unwrap(), 1, "used_event {used_event_ahead}");
        d.ack();
        for i in 0..10u64 {
            let status: u8 = d.mem.read_obj(GuestAddress(DATA + 0x200 + i)).unwrap();
            assert_eq!(status, S_OK);
        }
    }

    // Without EVENT_IDX, used_event means nothing and every batch interrupts.
    let (f, _) = disk(&dir, false);
    let mut plain = Driver::new(Box::new(Block::new(f, false, "x".into()).unwrap()));
    let features = plain.features() & !VIRTIO_RING_F_EVENT_IDX;
    plain.init_with(1, features);
    for _ in 0..2 {
        let seen = plain.q[0].used_seen;
        plain.q[0].set_used_event(&plain.mem, seen.wrapping_add(5));
        header(&plain, BLK_IN, 0);
        let head = plain.q[0].add_unpublished(
            &plain.mem,
            &[(HDR, 16, false), (BUF, 512, true), (STATUS, 1, true)],
        );
        // publish() would move used_event back; write the avail ring by hand.
        let slot = plain.q[0].avail() + 4 + 2 * u64::from(plain.q[0].avail_idx % QSIZE);
        plain.mem.write_obj(head, GuestAddress(slot)).unwrap();
        plain.q[0].avail_idx = plain.q[0].avail_idx.wrapping_add(1);
        let avail = plain.q[0].avail_idx;
        plain
            .mem
            .write_obj(avail, GuestAddress(plain.q[0].avail() + 2))
            .unwrap();
        plain.notify(0);
        assert_eq!(plain.q[0].take_used(&plain.mem).len(), 1);
        assert!(plain.irq_fired());
        plain.ack();
    }
}

#[test]
fn reset_clears_queues_and_allows_reinit() {
    let dir = testkit::TempDir::new("virtio-blk-reset");
    let (mut d, _) = block_driver(&dir, false);
    assert_eq!(request(&mut d, BLK_FLUSH, 0, &[]).0, S_OK);
    assert_ne!(d.r32(0x60), 0);
    d.w32(0x70, 0);
    assert_eq!(d.r32(0x70), 0);
    assert_eq!(d.r32(0x60), 0);
    assert!(!d.t.is_activated());
    d.w32(0x30, 0);
    assert_eq!(d.r32(0x44), 0);
    // A notify after reset is ignored.
    header(&d, BLK_FLUSH, 0);
    d.q[0].add_chain(&d.mem, &[(HDR, 16, false), (STATUS, 1, true)]);
    d.notify(0);
    assert!(d.q[0].take_used(&d.mem).is_empty());
    // A new driver starts from index 0 again.
    d.mem
        .write_slice(&[0u8; 0x4000], GuestAddress(0x1000))
        .unwrap();
    d.init(1);
    assert_eq!(request(&mut d, BLK_FLUSH, 0, &[]).0, S_OK);
}

#[test]
fn rings_outside_memory_need_reset() {
    let dir = testkit::TempDir::new("virtio-blk-badring");
    let (f, _) = disk(&dir, false);
    let mut d = Driver::new(Box::new(Block::new(f, false, "x".into()).unwrap()));
    let features = d.features();
    assert!(d.negotiate(features));
    d.w32(0x30, 0);
    d.w32(0x38, u32::from(QSIZE));
    d.w32(0x80, 0);
    d.w32(0x84, 1); // 4 GiB: no memory there
    d.w32(0x44, 1);
    d.w32(
        0x70,
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK,
    );
    assert!(!d.t.is_activated());
    assert_ne!(d.r32(0x70) & STATUS_NEEDS_RESET, 0);
    assert_eq!(d.ack(), INT_CONFIG);
}

#[test]
fn block_save_restore_continues_on_the_same_queues() {
    let dir = testkit::TempDir::new("virtio-blk-snap");
    let (mut d, path) = block_driver(&dir, false);
    d.mem.write_slice(&[0x11; 512], GuestAddress(BUF)).unwrap();
    assert_eq!(request(&mut d, BLK_OUT, 5, &[(BUF, 512, false)]).0, S_OK);
    d.ack();
    let _ = d.irq_fired();

    let state = d.t.save();
    assert!(state.queues[0].ready);
    assert_eq!(state.queues[0].next_avail, 1);
    assert_eq!(state.queues[0].next_used, 1);
    assert_eq!(state.queues[0].size, QSIZE);
    let json = serde_json::to_string(&state).unwrap();
    let state: TransportState = serde_json::from_str(&json).unwrap();

    // A new VMM process: same memory contents, same disk, fresh transport.
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut fresh = Driver::with_memory(
        Box::new(Block::new(f, false, "cairn-disk-0".into()).unwrap()),
        d.mem.clone(),
    );
    fresh.t.restore(&state).unwrap();
    assert!(fresh.t.is_activated());
    assert_eq!(fresh.t.save(), state);
    assert_eq!(fresh.r32(0x70) & STATUS_DRIVER_OK, STATUS_DRIVER_OK);
    fresh.q = std::mem::take(&mut d.q);

    let (status, len) = request(&mut fresh, BLK_IN, 5, &[(BUF + 0x1000, 512, true)]);
    assert_eq!((status, len), (S_OK, 513));
    let mut back = [0u8; 512];
    fresh
        .mem
        .read_slice(&mut back, GuestAddress(BUF + 0x1000))
        .unwrap();
    assert_eq!(back, [0x11; 512]);
    assert!(fresh.irq_fired());
    assert_eq!(fresh.t.save().queues[0].next_used, 2);

    // The wrong device, or a different disk, is refused.
    let (tap, _peer) = UnixDatagram::pair().unwrap();
    let mut net = Driver::new(Box::new(Net::new(OwnedFd::from(tap), [0; 6]).unwrap()));
    assert!(matches!(
        net.t.restore(&state),
        Err(VirtioError::DeviceTypeMismatch { .. })
    ));
    let small = dir.path().join("small.img");
    std::fs::write(&small, [0u8; 1024]).unwrap();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&small)
        .unwrap();
    let mut other = Driver::new(Box::new(Block::new(f, false, "y".into()).unwrap()));
    assert!(matches!(
        other.t.restore(&state),
        Err(VirtioError::DeviceState(_))
    ));
    assert!(!other.t.is_activated());
}

// ---------------------------------------------------------------- net

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

fn net_driver() -> (Driver, UnixDatagram) {
    let (tap, peer) = UnixDatagram::pair().unwrap();
    let mut d = Driver::new(Box::new(Net::new(OwnedFd::from(tap), MAC).unwrap()));
    assert_eq!(d.r32(0x08), 1);
    d.init(2);
    peer.set_nonblocking(true).unwrap();
    (d, peer)
}

fn frame(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(3).wrapping_add(seed))
        .collect()
}

#[test]
fn net_config_and_features() {
    let (mut d, _peer) = net_driver();
    let features = d.features();
    assert_eq!(features, VIRTIO_F_VERSION_1 | (1 << 5) | (1 << 28));
    let mut mac = [0u8; 6];
    for (i, b) in mac.iter_mut().enumerate() {
        let mut one = [0u8; 1];
        d.t.read(0x100 + i as u64, &mut one);
        *b = one[0];
    }
    assert_eq!(mac, MAC);
    assert!(d.t.event_fd().is_some());
}

#[test]
fn net_tx_strips_the_header() {
    let (mut d, peer) = net_driver();
    let f = frame(60, 1);
    // Header in its own descriptor, frame split in two.
    d.mem.write_slice(&[0u8; 12], GuestAddress(BUF)).unwrap();
    d.mem.write_slice(&f, GuestAddress(BUF + 0x100)).unwrap();
    d.q[1].add_chain(
        &d.mem,
        &[
            (BUF, 12, false),
            (BUF + 0x100, 20, false),
            (BUF + 0x114, 40, false),
        ],
    );
    // Header and frame in one descriptor.
    let g = frame(1514, 9);
    d.mem
        .write_slice(&[0u8; 12], GuestAddress(BUF + 0x1000))
        .unwrap();
    d.mem.write_slice(&g, GuestAddress(BUF + 0x100c)).unwrap();
    d.q[1].add_chain(&d.mem, &[(BUF + 0x1000, 12 + 1514, false)]);
    d.notify(1);
    assert_eq!(d.q[1].take_used(&d.mem), vec![(0, 0), (3, 0)]);
    assert!(d.irq_fired());
    assert_eq!(d.ack(), INT_USED_RING);
    let mut got = vec![0u8; 4096];
    let n = peer.recv(&mut got).unwrap();
    assert_eq!(&got[..n], &f[..]);
    let n = peer.recv(&mut got).unwrap();
    assert_eq!(&got[..n], &g[..]);
    // A chain shorter than the header is returned, not sent.
    d.q[1].add_chain(&d.mem, &[(BUF, 4, false)]);
    d.notify(1);
    assert_eq!(d.q[1].take_used(&d.mem).len(), 1);
    assert!(peer.recv(&mut got).is_err());
}

#[test]
fn net_rx_via_event_and_via_new_buffers() {
    let (mut d, peer) = net_driver();
    // Nothing waiting: posting a buffer uses nothing and raises nothing.
    d.q[0].add_chain(&d.mem, &[(BUF, 2048, true)]);
    d.notify(0);
    assert!(d.q[0].take_used(&d.mem).is_empty());
    assert!(!d.irq_fired());
    assert!(!d.t.handle_event());

    // A frame arrives: the event loop's call fills the posted buffer.
    let f = frame(98, 5);
    peer.send(&f).unwrap();
    assert!(d.t.handle_event());
    assert_eq!(d.q[0].take_used(&d.mem), vec![(0, 12 + 98)]);
    let mut got = vec![0u8; 12 + 98];
    d.mem.read_slice(&mut got, GuestAddress(BUF)).unwrap();
    assert_eq!(&got[..10], &[0u8; 10]);
    assert_eq!(u16::from_le_bytes([got[10], got[11]]), 1, "num_buffers");
    assert_eq!(&got[12..], &f[..]);
    assert!(d.irq_fired());
    assert_eq!(d.ack(), INT_USED_RING);
    assert_eq!(d.r32(0x60), 0);

    // Two frames arrive with no buffers: they wait in the tap.
    let g = frame(200, 7);
    let h = frame(64, 8);
    peer.send(&g).unwrap();
    peer.send(&h).unwrap();
    assert!(!d.t.handle_event());
    assert!(!d.irq_fired());
    // The guest posts two buffers (header and frame split) and kicks: both are delivered.
    d.q[0].add_chain(
        &d.mem,
        &[(BUF + 0x1000, 12, true), (BUF + 0x1100, 1500, true)],
    );
    d.q[0].add_chain(&d.mem, &[(BUF + 0x2000, 2048, true)]);
    d.notify(0);
    assert_eq!(d.q[0].take_used(&d.mem), vec![(1, 212), (3, 76)]);
    let mut got = vec![0u8; 200];
    d.mem
        .read_slice(&mut got, GuestAddress(BUF + 0x1100))
        .unwrap();
    assert_eq!(got, g);
    let mut got = vec![0u8; 64];
    d.mem
        .read_slice(&mut got, GuestAddress(BUF + 0x200c))
        .unwrap();
    assert_eq!(got, h);
    assert!(d.irq_fired());

    // A frame larger than the buffer is dropped and the buffer returned empty.
    d.q[0].add_chain(&d.mem, &[(BUF, 64, true)]);
    peer.send(&frame(100, 1)).unwrap();
    assert!(d.t.handle_event());
    assert_eq!(d.q[0].take_used(&d.mem), vec![(4, 0)]);
    // An RX buffer outside guest memory likewise.
    d.q[0].add_chain(&d.mem, &[(0xffff_0000, 2048, true)]);
    peer.send(&frame(60, 1)).unwrap();
    assert!(d.t.handle_event());
    assert_eq!(d.q[0].take_used(&d.mem), vec![(5, 0)]);
}

#[test]
fn net_save_restore_keeps_mac_and_queues() {
    let (mut d, peer) = net_driver();
    d.q[0].add_chain(&d.mem, &[(BUF, 2048, true)]);
    d.notify(0);
    let state = d.t.save();
    assert_eq!(state.device["mac"], serde_json::json!(MAC));
    let json = serde_json::to_value(&state).unwrap();
    let state: TransportState = serde_json::from_value(json).unwrap();

    // The same tap handed to the new device (here: the same socket end, duplicated).
    let (tap2, peer2) = UnixDatagram::pair().unwrap();
    drop(peer);
    peer2.set_nonblocking(true).unwrap();
    let mut fresh = Driver::with_memory(
        Box::new(Net::new(OwnedFd::from(tap2), [0; 6]).unwrap()),
        d.mem.clone(),
    );
    fresh.t.restore(&state).unwrap();
    fresh.q = std::mem::take(&mut d.q);
    let mut b = [0u8; 1];
    fresh.t.read(0x100, &mut b);
    assert_eq!(b[0], MAC[0]);
    // The buffer posted before the snapshot receives the next frame.
    let f = frame(77, 3);
    peer2.send(&f).unwrap();
    assert!(fresh.t.handle_event());
    assert_eq!(fresh.q[0].take_used(&fresh.mem), vec![(0, 12 + 77)]);
    let mut got = vec![0u8; 77];
    fresh
        .mem
        .read_slice(&mut got, GuestAddress(BUF + 12))
        .unwrap();
    assert_eq!(got, f);
}
