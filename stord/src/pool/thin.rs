//! A thin pool: dm-thin on a block device (a disk, a partition, a SAN LUN), driven through
//! the device-mapper ioctls ([`crate::dm`]).
//!
//! Layout on the device:
//! - `[0, 1 MiB)`: the pool's records — its volumes, their thin ids and sizes — as JSON in two
//!   slots written in turn, each with a sequence number and a sha256: the newest whole one
//!   wins, so a crash mid-write leaves the old records, never torn ones.
//! - then dm-thin's metadata, sized for four times the data the device holds at creation
//!   (the device may grow; see [`metadata_len`]);
//! - then the data, to the end of the device. A device that grows (a resized virtual disk or
//!   LUN) grows the pool: [`ThinPool::watch`] notices and reloads the tables.
//!
//! Devices: `cairn.POOL:meta` and `cairn.POOL:data` (linear), `cairn.POOL` (thin-pool) and one
//! `cairn.POOL.VOLUME` (thin) per volume, with `/dev/mapper/NAME` links (there is no udev).
//! Snapshots are thin ids that are not activated: a clone of one is a snapshot of it, instant.
//!
//! Every id made but not yet recorded as a volume, and every id of a volume being deleted, is
//! listed as `doomed` in the records first: a crash in between leaves ids the next start
//! deletes, so the kernel's metadata and the records agree.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Seek as _, SeekFrom};
use std::os::unix::fs::{FileExt as _, FileTypeExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use model::storage::{PoolInfo, PoolKind, SnapshotInfo, VolumeInfo};
use nix::errno::Errno;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Backend, StoreError};
use crate::dm::{Control, DevInfo, DmError, Target, sectors};

const HEADER_LEN: u64 = 1 << 20;
const SLOT_LEN: u64 = HEADER_LEN / 2;
const MAGIC: &[u8; 16] = b"CAIRN-THIN-POOL\0";
/// dm-thin's allocation unit: 64 KiB, as LVM's default.
const BLOCK_SECTORS: u64 = 128;
const BLOCK_LEN: u64 = BLOCK_SECTORS * 512;
/// The smallest device a pool is made on.
const MIN_DEVICE: u64 = 64 << 20;
/// dm-thin's metadata block.
const META_BLOCK: u64 = 4096;
const NO_SPACE_TIMEOUT: &str = "/sys/module/dm_thin_pool/parameters/no_space_timeout";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Snap {
    id: u32,
    created: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Vol {
    id: u32,
    size: u64,
    created: u64,
    #[serde(default)]
    snapshots: BTreeMap<String, Snap>,
}

/// What the device's header holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Records {
    pool: String,
    block_sectors: u64,
    meta_start: u64,
    meta_len: u64,
    data_start: u64,
    /// The data the pool has now (grows with the device).
    data_len: u64,
    next_id: u32,
    volumes: BTreeMap<String, Vol>,
    #[serde(default)]
    doomed: Vec<u32>,
}

/// How full the pool is, from its status line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub data_used: u64,
    pub data_total: u64,
    pub meta_used: u64,
    pub meta_total: u64,
    /// Writes wait for space (`out_of_data_space`), or every block is taken.
    pub full: bool,
    /// dm-thin failed the pool (`Fail`) or made it read-only.
    pub failed: bool,
}

pub struct ThinPool {
    name: String,
    device: PathBuf,
    declared: bool,
    overcommit: Option<f64>,
    rec: Records,
    seq: u64,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn dm(what: impl std::fmt::Display) -> impl FnOnce(DmError) -> StoreError {
    move |e| StoreError::Failed(format!("{what}: {e}"))
}

fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> StoreError {
    move |e| StoreError::Failed(format!("{what}: {e}"))
}

/// dm-thin's metadata for `data` bytes: 64 bytes per block mapped (LVM's rule of thumb),
/// for four times the data (room for the device to grow and for snapshots sharing blocks),
/// at least 8 MiB, at most 16 GiB (dm-thin's limit), whole MiB.
pub fn metadata_len(data: u64) -> u64 {
    let want = (data / BLOCK_LEN).saturating_mul(64).saturating_mul(4);
    want.clamp(8 << 20, 16 << 30).div_ceil(1 << 20) << 20
}

/// Parses a thin-pool status line: `TRANSACTION USED/TOTAL(meta) USED/TOTAL(data) ROOT MODE
/// …`, or `Fail`.
pub fn parse_status(line: &str) -> Option<Usage> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.first() == Some(&"Fail") {
        return Some(Usage {
            data_used: 0,
            data_total: 0,
            meta_used: 0,
            meta_total: 0,
            full: false,
            failed: true,
        });
    }
    let pair = |s: &str| -> Option<(u64, u64)> {
        let (a, b) = s.split_once('/')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    };
    let (meta_used, meta_total) = pair(f.get(1)?)?;
    let (data_used, data_total) = pair(f.get(2)?)?;
    let mode = f.get(4).copied().unwrap_or("rw");
    Some(Usage {
        data_used,
        data_total,
        meta_used,
        meta_total,
        full: mode == "out_of_data_space" || (data_total > 0 && data_used >= data_total),
        failed: mode == "ro",
    })
}

/// What a device holds before it becomes a pool, if anything.
fn signature(head: &[u8]) -> Option<String> {
    let at =
        |off: u64| head.get(off as usize..off as usize + MAGIC.len()) == Some(MAGIC.as_slice());
    if at(0) || at(SLOT_LEN) {
        return Some("a Cairn thin pool".into());
    }
    model::signature::holds(head)
}

fn device_size(file: &File) -> std::io::Result<u64> {
    let mut f = file;
    f.seek(SeekFrom::End(0))
}

fn open_device(path: &Path, exclusive: bool) -> Result<File, StoreError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| StoreError::InvalidArgs(format!("{}: {e}", path.display())))?;
    if !meta.file_type().is_block_device() {
        return Err(StoreError::InvalidArgs(format!(
            "{} is not a block device (a thin pool takes a disk, a partition or a LUN)",
            path.display()
        )));
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true).write(true);
    if exclusive {
        opts.custom_flags(libc::O_EXCL);
    }
    opts.open(path).map_err(|e| match e.raw_os_error() {
        Some(libc::EBUSY) => StoreError::Conflict(format!(
            "{} is in use (mounted, or held by another device)",
            path.display()
        )),
        _ => StoreError::Failed(format!("{}: {e}", path.display())),
    })
}

/// Reads the newest whole records of the two slots.
fn read_records(dev: &File) -> Option<(Records, u64)> {
    let mut best: Option<(Records, u64)> = None;
    for slot in 0..2u64 {
        let mut buf = vec![0u8; SLOT_LEN as usize];
        if dev.read_exact_at(&mut buf, slot * SLOT_LEN).is_err() || &buf[..16] != MAGIC {
            continue;
        }
        let seq = u64::from_le_bytes(buf[16..24].try_into().unwrap_or_default());
        let len = u32::from_le_bytes(buf[24..28].try_into().unwrap_or_default()) as usize;
        let Some(json) = buf.get(60..60 + len) else {
            continue;
        };
        if Sha256::digest(json).as_slice() != &buf[28..60] {
            continue;
        }
        let Ok(rec) = serde_json::from_slice::<Records>(json) else {
            continue;
        };
        if best.as_ref().is_none_or(|(_, s)| seq > *s) {
            best = Some((rec, seq));
        }
    }
    best
}

fn write_slot(dev: &File, rec: &Records, seq: u64) -> std::io::Result<()> {
    let json = serde_json::to_vec(rec).map_err(std::io::Error::other)?;
    if json.len() as u64 > SLOT_LEN - 60 {
        return Err(std::io::Error::other(
            "the pool's records outgrew their 512 KiB slot (too many volumes and snapshots)",
        ));
    }
    let mut buf = Vec::with_capacity(60 + json.len());
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&(json.len() as u32).to_le_bytes());
    buf.extend_from_slice(&Sha256::digest(&json));
    buf.extend_from_slice(&json);
    dev.write_all_at(&buf, (seq % 2) * SLOT_LEN)?;
    dev.sync_data()
}

impl ThinPool {
    fn pool_dev(&self) -> String {
        format!("cairn.{}", self.name)
    }

    fn part_dev(&self, part: &str) -> String {
        format!("cairn.{}:{part}", self.name)
    }

    fn volume_dev(&self, volume: &str) -> String {
        format!("cairn.{}.{volume}", self.name)
    }

    fn dev_path(name: &str) -> PathBuf {
        Path::new("/dev/mapper").join(name)
    }

    fn save(&mut self) -> Result<(), StoreError> {
        let dev = open_device(&self.device, false)?;
        let seq = self.seq + 1;
        write_slot(&dev, &self.rec, seq)
            .map_err(io(format!("writing pool {:?}'s records", self.name)))?;
        self.seq = seq;
        Ok(())
    }

    /// Makes a new pool on `device` (refused when it holds anything, unless `force`), or
    /// opens the one it holds under this name.
    pub fn create(
        name: &str,
        device: &Path,
        overcommit: Option<f64>,
        force: bool,
    ) -> Result<ThinPool, StoreError> {
        let dev = open_device(device, true)?;
        if let Some((rec, _)) = read_records(&dev)
            && rec.pool == name
        {
            drop(dev);
            return ThinPool::open(name, device, overcommit, false);
        }
        let size = device_size(&dev).map_err(io(device.display()))?;
        if size < MIN_DEVICE {
            return Err(StoreError::InvalidArgs(format!(
                "{} has {} MiB; a thin pool needs at least {} MiB",
                device.display(),
                size >> 20,
                MIN_DEVICE >> 20
            )));
        }
        let mut head = vec![0u8; HEADER_LEN as usize];
        dev.read_exact_at(&mut head, 0)
            .map_err(io(device.display()))?;
        if let Some(what) = signature(&head)
            && !force
        {
            return Err(StoreError::Conflict(format!(
                "{} holds {what}; give force to make the pool on it all the same (destroying it)",
                device.display()
            )));
        }
        let meta_len = metadata_len(size - HEADER_LEN);
        if HEADER_LEN + meta_len + 16 * BLOCK_LEN > size {
            return Err(StoreError::InvalidArgs(format!(
                "{} is too small for a pool's metadata ({} MiB)",
                device.display(),
                meta_len >> 20
            )));
        }
        let data_start = HEADER_LEN + meta_len;
        let data_len = (size - data_start) / BLOCK_LEN * BLOCK_LEN;
        // A zeroed first metadata block makes dm-thin format fresh metadata.
        let zeros = vec![0u8; HEADER_LEN as usize];
        dev.write_all_at(&zeros, 0)
            .and_then(|()| dev.write_all_at(&zeros[..META_BLOCK as usize], HEADER_LEN))
            .map_err(io(device.display()))?;
        let rec = Records {
            pool: name.to_string(),
            block_sectors: BLOCK_SECTORS,
            meta_start: HEADER_LEN,
            meta_len,
            data_start,
            data_len,
            next_id: 1,
            volumes: BTreeMap::new(),
            doomed: Vec::new(),
        };
        write_slot(&dev, &rec, 1).map_err(io(device.display()))?;
        drop(dev);
        let mut pool = ThinPool {
            name: name.to_string(),
            device: device.to_path_buf(),
            declared: false,
            overcommit,
            rec,
            seq: 1,
        };
        if let Err(e) = pool.activate() {
            pool.deactivate();
            if let Ok(dev) = open_device(device, false) {
                let _ = dev.write_all_at(&zeros, 0).and_then(|()| dev.sync_data());
            }
            return Err(e);
        }
        tracing::info!(pool = name, device = %device.display(), data_mib = data_len >> 20, meta_mib = meta_len >> 20, "thin pool made");
        Ok(pool)
    }

    /// Opens the pool `device` holds and activates it and its volumes.
    pub fn open(
        name: &str,
        device: &Path,
        overcommit: Option<f64>,
        declared: bool,
    ) -> Result<ThinPool, StoreError> {
        let dev = open_device(device, false)?;
        let (rec, seq) = read_records(&dev).ok_or_else(|| {
            StoreError::NotFound(format!("{} holds no thin pool", device.display()))
        })?;
        drop(dev);
        if rec.pool != name {
            return Err(StoreError::Conflict(format!(
                "{} holds thin pool {:?}, not {name:?}",
                device.display(),
                rec.pool
            )));
        }
        let mut pool = ThinPool {
            name: name.to_string(),
            device: device.to_path_buf(),
            declared,
            overcommit,
            rec,
            seq,
        };
        pool.activate()?;
        pool.bury_doomed();
        Ok(pool)
    }

    pub fn set_declared(&mut self, declared: bool) {
        self.declared = declared;
    }

    fn linear(&self, start: u64, len: u64) -> Target {
        Target {
            start: 0,
            length: sectors(len),
            kind: "linear".into(),
            params: format!("{} {}", self.device.display(), sectors(start)),
        }
    }

    fn pool_table(&self, meta: &DevInfo, data: &DevInfo) -> Target {
        let blocks = self.rec.data_len / BLOCK_LEN;
        Target {
            start: 0,
            length: sectors(self.rec.data_len),
            kind: "thin-pool".into(),
            // Low water mark: a twentieth of the blocks; no feature arguments (new blocks
            // are zeroed, so no volume reads another's old data).
            params: format!(
                "{} {} {} {} 0",
                meta.dev_name(),
                data.dev_name(),
                self.rec.block_sectors,
                (blocks / 20).max(1)
            ),
        }
    }

    fn thin_table(&self, pool: &DevInfo, id: u32, size: u64) -> Target {
        Target {
            start: 0,
            length: sectors(size),
            kind: "thin".into(),
            params: format!("{} {id}", pool.dev_name()),
        }
    }

    /// Makes the pool's devices live (those already live are kept: stord restarted).
    fn activate(&mut self) -> Result<(), StoreError> {
        let ctl = Control::open().map_err(dm("device-mapper"))?;
        // Writes to a full pool wait for it to grow rather than fail after 60 s: the guests
        // writing are paused meanwhile (see Pools::watch).
        if let Err(e) = std::fs::write(NO_SPACE_TIMEOUT, "0") {
            tracing::warn!(error = %e, "cannot make a full thin pool hold writes indefinitely");
        }
        let meta = ensure(
            &ctl,
            &self.part_dev("meta"),
            &[self.linear(self.rec.meta_start, self.rec.meta_len)],
            false,
        )?;
        let data = ensure(
            &ctl,
            &self.part_dev("data"),
            &[self.linear(self.rec.data_start, self.rec.data_len)],
            false,
        )?;
        let pool = ensure(
            &ctl,
            &self.pool_dev(),
            &[self.pool_table(&meta, &data)],
            false,
        )?;
        let volumes: Vec<(String, u32, u64)> = self
            .rec
            .volumes
            .iter()
            .map(|(n, v)| (n.clone(), v.id, v.size))
            .collect();
        for (name, id, size) in volumes {
            let dev = self.volume_dev(&name);
            if let Err(e) = ensure(&ctl, &dev, &[self.thin_table(&pool, id, size)], false) {
                tracing::error!(pool = %self.name, volume = %name, error = %e, "volume not activated");
            }
        }
        Ok(())
    }

    /// Removes the pool's devices (volumes first), as far as they go.
    fn deactivate(&self) {
        let Ok(ctl) = Control::open() else { return };
        let mut names: Vec<String> = self
            .rec
            .volumes
            .keys()
            .map(|v| self.volume_dev(v))
            .collect();
        names.extend([
            self.pool_dev(),
            self.part_dev("data"),
            self.part_dev("meta"),
        ]);
        for name in names {
            remove(&ctl, &name);
        }
    }

    /// Deletes the ids a crash left between making and recording (or deleting).
    fn bury_doomed(&mut self) {
        if self.rec.doomed.is_empty() {
            return;
        }
        let Ok(ctl) = Control::open() else { return };
        for id in std::mem::take(&mut self.rec.doomed) {
            match ctl.message(&self.pool_dev(), &format!("delete {id}")) {
                Ok(()) => tracing::info!(pool = %self.name, id, "deleted a thin id a crash left"),
                // Never made (the crash came first): nothing to do.
                Err(e) => tracing::debug!(pool = %self.name, id, error = %e, "doomed id not there"),
            }
        }
        if let Err(e) = self.save() {
            tracing::error!(pool = %self.name, error = %e, "cannot record the buried ids");
        }
    }

    /// Reserves a new thin id, recorded as doomed until the caller records what it is.
    fn reserve_id(&mut self) -> Result<u32, StoreError> {
        let id = self.rec.next_id;
        self.rec.next_id += 1;
        self.rec.doomed.push(id);
        if let Err(e) = self.save() {
            self.rec.doomed.retain(|d| *d != id);
            return Err(e);
        }
        Ok(id)
    }

    /// Sends the pool a message; on failure the reserved id is left doomed (deleted at the
    /// next start, or now if it can be).
    fn pool_message(&self, ctl: &Control, message: &str) -> Result<(), StoreError> {
        ctl.message(&self.pool_dev(), message)
            .map_err(|e| match e.errno() {
                Some(Errno::ENOSPC) => StoreError::Conflict(format!(
                    "pool {:?} has no metadata space left for {message}",
                    self.name
                )),
                _ => StoreError::Failed(format!("pool {:?}: {message}: {e}", self.name)),
            })
    }

    fn pool_info(ctl: &Control, name: &str) -> Result<DevInfo, StoreError> {
        ctl.info(name)
            .map_err(dm(name))?
            .ok_or_else(|| StoreError::Failed(format!("device {name} is not active")))
    }

    pub fn usage(&self) -> Result<Usage, StoreError> {
        let ctl = Control::open().map_err(dm("device-mapper"))?;
        let status = ctl.status(&self.pool_dev()).map_err(dm(self.pool_dev()))?;
        status
            .first()
            .and_then(|t| parse_status(&t.params))
            .ok_or_else(|| {
                StoreError::Failed(format!(
                    "pool {:?}: unreadable status {status:?}",
                    self.name
                ))
            })
    }

    fn vol(&self, name: &str) -> Result<&Vol, StoreError> {
        self.rec
            .volumes
            .get(name)
            .ok_or_else(|| StoreError::NotFound(format!("no volume {}/{name}", self.name)))
    }

    fn check_overcommit(&self, more: u64, what: &str) -> Result<(), StoreError> {
        let provisioned: u64 = self.rec.volumes.values().map(|v| v.size).sum();
        let now = (provisioned, self.rec.data_len);
        super::check_overcommit(&self.name, now, more, self.overcommit, what)
    }

    /// A new thin volume `name` of `size` whose id comes from `make` (a new thin device or a
    /// snapshot of another), recorded and activated; undone whole on failure.
    fn add_volume(
        &mut self,
        name: &str,
        size: u64,
        make: impl FnOnce(&ThinPool, &Control, u32) -> Result<(), StoreError>,
    ) -> Result<VolumeInfo, StoreError> {
        if self.rec.volumes.contains_key(name) {
            return Err(StoreError::Conflict(format!(
                "volume {}/{name} exists",
                self.name
            )));
        }
        let ctl = Control::open().map_err(dm("device-mapper"))?;
        let id = self.reserve_id()?;
        make(self, &ctl, id)?;
        self.rec.volumes.insert(
            name.to_string(),
            Vol {
                id,
                size,
                created: now(),
                snapshots: BTreeMap::new(),
            },
        );
        self.rec.doomed.retain(|d| *d != id);
        if let Err(e) = self.save() {
            self.rec.volumes.remove(name);
            self.rec.doomed.push(id);
            let _ = ctl.message(&self.pool_dev(), &format!("delete {id}"));
            return Err(e);
        }
        let pool = Self::pool_info(&ctl, &self.pool_dev())?;
        ensure(
            &ctl,
            &self.volume_dev(name),
            &[self.thin_table(&pool, id, size)],
            false,
        )?;
        self.volume(name)
    }

    /// Snapshots thin id `origin` as `id`; an active origin device is suspended meanwhile
    /// (its filesystem flushed and frozen), as dm-thin requires.
    fn snap(
        &self,
        ctl: &Control,
        id: u32,
        origin: u32,
        origin_dev: Option<&str>,
    ) -> Result<(), StoreError> {
        let live = match origin_dev {
            Some(d) => ctl.info(d).map_err(dm(d))?.map(|_| d),
            None => None,
        };
        if let Some(d) = live {
            ctl.suspend(d).map_err(dm(d))?;
        }
        let made = self.pool_message(ctl, &format!("create_snap {id} {origin}"));
        if let Some(d) = live
            && let Err(e) = ctl.resume(d)
        {
            tracing::error!(device = d, error = %e, "cannot resume a volume after its snapshot");
        }
        made
    }

    /// Grows the pool into a device that grew; Some(new data bytes) when it did.
    fn grow_into_device(&mut self) -> Result<Option<u64>, StoreError> {
        let dev = open_device(&self.device, false)?;
        let size = device_size(&dev).map_err(io(self.device.display()))?;
        drop(dev);
        let data_len = size.saturating_sub(self.rec.data_start) / BLOCK_LEN * BLOCK_LEN;
        if data_len <= self.rec.data_len {
            return Ok(None);
        }
        let ctl = Control::open().map_err(dm("device-mapper"))?;
        let was = self.rec.data_len;
        self.rec.data_len = data_len;
        let data_name = self.part_dev("data");
        let data_table = self.linear(self.rec.data_start, data_len);
        reload(&ctl, &data_name, &[data_table]).map_err(dm(&data_name))?;
        let meta = Self::pool_info(&ctl, &self.part_dev("meta"))?;
        let data = Self::pool_info(&ctl, &data_name)?;
        let pool_name = self.pool_dev();
        let pool_table = self.pool_table(&meta, &data);
        if let Err(e) = reload(&ctl, &pool_name, &[pool_table]) {
            self.rec.data_len = was;
            return Err(dm(pool_name)(e));
        }
        self.save()?;
        tracing::info!(pool = %self.name, from_mib = was >> 20, to_mib = data_len >> 20, "thin pool grew with its device");
        Ok(Some(data_len))
    }

    /// One look at the pool: grows it when its device grew, and says how full it is.
    pub fn look(&mut self) -> Result<Usage, StoreError> {
        self.grow_into_device()?;
        self.usage()
    }
}

/// Loads `targets` into a live device and swaps them in. The device is suspended without
/// flushing: a full pool cannot flush, and growing it is what frees the writes it holds.
fn reload(ctl: &Control, name: &str, targets: &[Target]) -> Result<(), DmError> {
    ctl.load(name, targets, false)?;
    ctl.suspend_noflush(name)?;
    ctl.resume(name)
}

/// Makes device `name` with `targets` live, unless it already is; links /dev/mapper/NAME.
fn ensure(
    ctl: &Control,
    name: &str,
    targets: &[Target],
    read_only: bool,
) -> Result<DevInfo, StoreError> {
    let info = match ctl.info(name).map_err(dm(name))? {
        Some(info) if info.target_count > 0 => info,
        existing => {
            let made = existing.is_none();
            let result = (|| {
                if made {
                    ctl.create(name)?;
                }
                ctl.load(name, targets, read_only)?;
                ctl.resume(name)
            })();
            if let Err(e) = result {
                if made {
                    let _ = ctl.remove(name);
                }
                return Err(dm(name)(e));
            }
            ctl.info(name)
                .map_err(dm(name))?
                .ok_or_else(|| StoreError::Failed(format!("device {name} vanished")))?
        }
    };
    link(name, &info);
    Ok(info)
}

/// `/dev/mapper/NAME` → `/dev/dm-MINOR` (devtmpfs makes the node; udev would make the link).
fn link(name: &str, info: &DevInfo) {
    let path = ThinPool::dev_path(name);
    let target = format!("/dev/dm-{}", info.minor());
    if std::fs::read_link(&path).is_ok_and(|t| t == Path::new(&target)) {
        return;
    }
    let _ = std::fs::remove_file(&path);
    if let Err(e) = std::os::unix::fs::symlink(&target, &path) {
        tracing::warn!(device = name, error = %e, "cannot link /dev/mapper");
    }
}

fn remove(ctl: &Control, name: &str) {
    match ctl.remove(name) {
        Ok(()) => {}
        Err(e) if e.errno() == Some(Errno::ENXIO) => {}
        Err(e) => tracing::warn!(device = name, error = %e, "cannot remove device"),
    }
    let _ = std::fs::remove_file(ThinPool::dev_path(name));
}

impl Backend for ThinPool {
    fn name(&self) -> &str {
        &self.name
    }

    fn declared(&self) -> bool {
        self.declared
    }

    fn location(&self) -> &Path {
        &self.device
    }

    fn watch(&mut self) -> Result<Option<bool>, StoreError> {
        self.look().map(|u| Some(u.full))
    }

    fn info(&self) -> Result<PoolInfo, StoreError> {
        let u = self.usage()?;
        let capacity = u.data_total * BLOCK_LEN;
        let used = u.data_used * BLOCK_LEN;
        let provisioned: u64 = self.rec.volumes.values().map(|v| v.size).sum();
        let ratio = provisioned as f64 / capacity.max(1) as f64;
        let pct = |a: u64, b: u64| a as f64 * 100.0 / b.max(1) as f64;
        let mut warnings = Vec::new();
        if u.failed {
            warnings.push("critical: dm-thin failed the pool or made it read-only".into());
        } else if u.full {
            warnings.push(
                "critical: out of data space; writes wait (their guests are paused) until \
                 the device grows"
                    .into(),
            );
        }
        warnings.extend(super::space_warnings(
            &[
                ("data", pct(u.data_used, u.data_total)),
                ("metadata", pct(u.meta_used, u.meta_total)),
            ],
            ratio,
            self.overcommit,
        ));
        Ok(PoolInfo {
            name: self.name.clone(),
            kind: PoolKind::Thin,
            path: self.device.display().to_string(),
            declared: self.declared,
            capacity_bytes: capacity,
            used_bytes: used,
            free_bytes: capacity.saturating_sub(used),
            provisioned_bytes: provisioned,
            allocated_bytes: used,
            volumes: u32::try_from(self.rec.volumes.len()).unwrap_or(u32::MAX),
            overcommit_ratio: ratio,
            overcommit_limit: self.overcommit,
            warnings,
        })
    }

    fn volume_names(&self) -> Vec<String> {
        self.rec.volumes.keys().cloned().collect()
    }

    fn volume(&self, name: &str) -> Result<VolumeInfo, StoreError> {
        let v = self.vol(name)?;
        let dev = self.volume_dev(name);
        // A thin device's status: mapped sectors, highest mapped sector.
        let mapped = Control::open()
            .ok()
            .and_then(|ctl| ctl.status(&dev).ok())
            .and_then(|s| {
                s.first()
                    .and_then(|t| t.params.split_whitespace().next()?.parse::<u64>().ok())
            })
            .unwrap_or(0);
        Ok(VolumeInfo {
            volume: format!("{}/{name}", self.name),
            size_bytes: v.size,
            allocated_bytes: mapped * 512,
            path: Self::dev_path(&dev).display().to_string(),
            // What a snapshot alone holds is not known without activating it: blocks it
            // shares with its volume are counted there.
            snapshots: v
                .snapshots
                .iter()
                .map(|(n, s)| SnapshotInfo {
                    name: n.clone(),
                    allocated_bytes: 0,
                    created: s.created,
                })
                .collect(),
            used_by: Vec::new(),
            copy: None,
        })
    }

    fn create_volume(
        &mut self,
        name: &str,
        size: u64,
        full: bool,
    ) -> Result<VolumeInfo, StoreError> {
        if full {
            return Err(StoreError::InvalidArgs(format!(
                "pool {:?} is thin: its volumes take blocks as they are written (a fully \
                 allocated volume goes in a dir pool)",
                self.name
            )));
        }
        let size = size.div_ceil(512) * 512;
        self.check_overcommit(size, &format!("a volume of {}", super::gib(size)))?;
        self.add_volume(name, size, |pool, ctl, id| {
            pool.pool_message(ctl, &format!("create_thin {id}"))
        })
    }

    fn grow_volume(&mut self, name: &str, size: u64) -> Result<VolumeInfo, StoreError> {
        let now = self.vol(name)?.size;
        if size < now {
            return Err(StoreError::InvalidArgs(format!(
                "volume {}/{name} is {now} bytes; volumes grow, they do not shrink (asked {size})",
                self.name
            )));
        }
        let size = size.div_ceil(512) * 512;
        self.check_overcommit(
            size - now,
            &format!("growing by {} MiB", (size - now) >> 20),
        )?;
        let ctl = Control::open().map_err(dm("device-mapper"))?;
        let pool = Self::pool_info(&ctl, &self.pool_dev())?;
        let id = self.vol(name)?.id;
        let dev = self.volume_dev(name);
        reload(&ctl, &dev, &[self.thin_table(&pool, id, size)]).map_err(dm(&dev))?;
        if let Some(v) = self.rec.volumes.get_mut(name) {
            v.size = size;
        }
        if let Err(e) = self.save() {
            if let Some(v) = self.rec.volumes.get_mut(name) {
                v.size = now;
            }
            let _ = reload(&ctl, &dev, &[self.thin_table(&pool, id, now)]);
            return Err(e);
        }
        self.volume(name)
    }

    fn delete_volume(&mut self, name: &str) -> Result<(), StoreError> {
        let v = self.vol(name)?.clone();
        let ctl = Control::open().map_err(dm("device-mapper"))?;
        let dev = self.volume_dev(name);
        if let Some(info) = ctl.info(&dev).map_err(dm(&dev))?
            && info.open_count > 0
        {
            return Err(StoreError::Conflict(format!(
                "volume {}/{name} is open (mounted or in use by a guest)",
                self.name
            )));
        }
        remove(&ctl, &dev);
        let ids: Vec<u32> = std::iter::once(v.id)
            .chain(v.snapshots.values().map(|s| s.id))
            .collect();
        self.rec.volumes.remove(name);
        self.rec.doomed.extend(&ids);
        if let Err(e) = self.save() {
            self.rec.volumes.insert(name.to_string(), v.clone());
            self.rec.doomed.retain(|d| !ids.contains(d));
            let pool = Self::pool_info(&ctl, &self.pool_dev())?;
            let _ = ensure(&ctl, &dev, &[self.thin_table(&pool, v.id, v.size)], false);
            return Err(e);
        }
        for id in &ids {
            if let Err(e) = self.pool_message(&ctl, &format!("delete {id}")) {
                tracing::warn!(pool = %self.name, id, error = %e, "thin id left for the next start");
                return Ok(());
            }
        }
        self.rec.doomed.retain(|d| !ids.contains(d));
        self.save()
    }

    fn snapshot(
        &mut self,
        name: &str,
        snap: &str,
    ) -> Result<(VolumeInfo, &'static str), StoreError> {
        let origin = self.vol(name)?.id;
        if self.vol(name)?.snapshots.contains_key(snap) {
            return Err(StoreError::Conflict(format!(
                "volume {}/{name} has a snapshot {snap:?}",
                self.name
            )));
        }
        let ctl = Control::open().map_err(dm("device-mapper"))?;
        let id = self.reserve_id()?;
        self.snap(&ctl, id, origin, Some(&self.volume_dev(name)))?;
        if let Some(v) = self.rec.volumes.get_mut(name) {
            v.snapshots
                .insert(snap.to_string(), Snap { id, created: now() });
        }
        self.rec.doomed.retain(|d| *d != id);
        if let Err(e) = self.save() {
            if let Some(v) = self.rec.volumes.get_mut(name) {
                v.snapshots.remove(snap);
            }
            self.rec.doomed.push(id);
            return Err(e);
        }
        Ok((self.volume(name)?, "thin snapshot"))
    }

    fn delete_snapshot(&mut self, name: &str, snap: &str) -> Result<(), StoreError> {
        let id = self
            .vol(name)?
            .snapshots
            .get(snap)
            .ok_or_else(|| {
                StoreError::NotFound(format!("no snapshot {}/{name}@{snap}", self.name))
            })?
            .id;
        // Doomed in the records first: a crash before the pool's delete leaves an id the next
        // start deletes, never a snapshot the records name and the pool lacks.
        let kept = self
            .rec
            .volumes
            .get_mut(name)
            .and_then(|v| v.snapshots.remove(snap));
        self.rec.doomed.push(id);
        if let Err(e) = self.save() {
            if let (Some(v), Some(s)) = (self.rec.volumes.get_mut(name), kept) {
                v.snapshots.insert(snap.to_string(), s);
            }
            self.rec.doomed.retain(|d| *d != id);
            return Err(e);
        }
        let ctl = Control::open().map_err(dm("device-mapper"))?;
        if let Err(e) = self.pool_message(&ctl, &format!("delete {id}")) {
            tracing::warn!(pool = %self.name, id, error = %e, "thin id left for the next start");
            return Ok(());
        }
        self.rec.doomed.retain(|d| *d != id);
        self.save()
    }

    fn clone_volume(
        &mut self,
        source: (&str, Option<&str>),
        name: &str,
    ) -> Result<(VolumeInfo, &'static str), StoreError> {
        let v = self.vol(source.0)?;
        let (origin, size, live) = match source.1 {
            None => (v.id, v.size, Some(self.volume_dev(source.0))),
            Some(s) => {
                let snap = v.snapshots.get(s).ok_or_else(|| {
                    StoreError::NotFound(format!("no snapshot {}/{}@{s}", self.name, source.0))
                })?;
                (snap.id, v.size, None)
            }
        };
        self.check_overcommit(size, &format!("a clone of {}", super::gib(size)))?;
        let info = self.add_volume(name, size, |pool, ctl, id| {
            pool.snap(ctl, id, origin, live.as_deref())
        })?;
        Ok((info, "thin snapshot"))
    }

    fn backup_snapshot(&mut self, name: &str) -> Result<PathBuf, StoreError> {
        let v = self.vol(name)?.clone();
        let ctl = Control::open().map_err(dm("device-mapper"))?;
        // Stays doomed: a crash while the backup copies deletes it at the next start.
        let id = self.reserve_id()?;
        self.snap(&ctl, id, v.id, Some(&self.volume_dev(name)))?;
        let pool = Self::pool_info(&ctl, &self.pool_dev())?;
        let dev = format!("{}@backup-{id}", self.volume_dev(name));
        ensure(&ctl, &dev, &[self.thin_table(&pool, id, v.size)], true)?;
        Ok(Self::dev_path(&dev))
    }

    fn drop_backup_snapshot(&mut self, snapshot: &Path) {
        let Some(dev) = snapshot
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
        else {
            return;
        };
        let Some(id) = dev
            .rsplit_once("@backup-")
            .and_then(|(_, id)| id.parse::<u32>().ok())
        else {
            return;
        };
        let Ok(ctl) = Control::open() else { return };
        remove(&ctl, &dev);
        if self.pool_message(&ctl, &format!("delete {id}")).is_ok() {
            self.rec.doomed.retain(|d| *d != id);
            if let Err(e) = self.save() {
                tracing::warn!(pool = %self.name, error = %e, "backup snapshot left for the next start");
            }
        }
    }

    fn restore(&mut self, backup: &Path, name: &str) -> Result<VolumeInfo, StoreError> {
        let size = std::fs::metadata(backup)
            .map_err(io(backup.display()))?
            .len();
        let info = self.create_volume(name, size, false)?;
        let copied = std::fs::OpenOptions::new()
            .write(true)
            .open(&info.path)
            .and_then(|dev| super::files::copy_data(backup, &dev));
        if let Err(e) = copied {
            let _ = self.delete_volume(name);
            return Err(StoreError::Failed(format!(
                "restoring {} into {}/{name}: {e}",
                backup.display(),
                self.name
            )));
        }
        self.volume(name)
    }

    fn release(&self) {
        self.deactivate();
        if let Ok(dev) = open_device(&self.device, false) {
            let zeros = vec![0u8; HEADER_LEN as usize];
            let _ = dev.write_all_at(&zeros, 0).and_then(|()| dev.sync_data());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_say_how_full_the_pool_is() {
        let u = parse_status("1 183/2048 64/16384 - rw discard_passdown queue_if_no_space - 1024")
            .unwrap();
        assert_eq!(
            (u.meta_used, u.meta_total, u.data_used, u.data_total),
            (183, 2048, 64, 16384)
        );
        assert!(!u.full && !u.failed);
        let full = parse_status(
            "3 200/2048 16384/16384 - out_of_data_space discard_passdown queue_if_no_space - 1024",
        )
        .unwrap();
        assert!(full.full);
        assert!(parse_status("Fail").unwrap().failed);
        assert!(parse_status("garbage").is_none());
    }

    #[test]
    fn metadata_is_sized_for_growth_within_dm_thins_limits() {
        assert_eq!(metadata_len(256 << 20), 8 << 20);
        // 1 TiB: 16 Mi blocks × 64 B × 4 = 4 GiB.
        assert_eq!(metadata_len(1 << 40), 4 << 30);
        assert_eq!(metadata_len(u64::MAX / 2), 16 << 30);
    }

    #[test]
    fn a_device_that_holds_anything_is_named_for_what_it_holds() {
        let mut head = vec![0u8; HEADER_LEN as usize];
        assert_eq!(signature(&head), None);
        head[1080] = 0x53;
        head[1081] = 0xef;
        assert_eq!(signature(&head).as_deref(), Some("an ext2/3/4 filesystem"));
        let mut head = vec![0u8; HEADER_LEN as usize];
        head[300_000] = 1;
        assert!(signature(&head).unwrap().starts_with("data"));
        head[..16].copy_from_slice(MAGIC);
        assert_eq!(signature(&head).as_deref(), Some("a Cairn thin pool"));
    }

    #[test]
    fn records_survive_a_torn_write_of_the_newer_slot() {
        let path = std::env::temp_dir().join(format!("stord-thin-rec-{}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        file.set_len(HEADER_LEN).unwrap();
        let mut rec = Records {
            pool: "p".into(),
            block_sectors: BLOCK_SECTORS,
            meta_start: HEADER_LEN,
            meta_len: 8 << 20,
            data_start: HEADER_LEN + (8 << 20),
            data_len: 1 << 30,
            next_id: 2,
            volumes: BTreeMap::new(),
            doomed: vec![],
        };
        write_slot(&file, &rec, 1).unwrap();
        rec.next_id = 3;
        write_slot(&file, &rec, 2).unwrap();
        assert_eq!(read_records(&file).unwrap().0.next_id, 3);
        rec.next_id = 4;
        write_slot(&file, &rec, 3).unwrap();
        // Tear slot 1 (seq 3): one byte of its JSON changed.
        let mut b = [0u8; 1];
        file.read_exact_at(&mut b, SLOT_LEN + 70).unwrap();
        file.write_all_at(&[b[0] ^ 0xff], SLOT_LEN + 70).unwrap();
        let (back, seq) = read_records(&file).unwrap();
        assert_eq!((back.next_id, seq), (3, 2), "the older whole slot wins");
        let _ = std::fs::remove_file(&path);
    }
}
