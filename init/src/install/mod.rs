//! `host.install`: Cairn from the live system (ISO or PXE) onto a disk — GPT with GRUB for BIOS
//! and UEFI, OS slot A holding this system's kernel and initramfs, an empty slot B for updates,
//! and the state partition with the given host.toml saved where the next boot finds it first.
//! The layout is `model::install`'s.
//!
//! Order against a power cut: the disk's old partition tables go first and the new ones are
//! written last, so an interrupted install leaves a disk that boots nothing and holds no table
//! (and a second install needs no force), never one that boots half an OS.

pub mod disks;
mod gpt;
mod payload;
pub mod probe;

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use model::install::{BIOS_BOOT, DiskInfo, ESP, JobReport, PARTITIONS, SECTOR, SLOT_A, STATE};

pub use payload::Payload;

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("no disk {0:?} (host.disks lists them)")]
    NoSuchDisk(String),
    /// The disk holds something and force was not given, it cannot be used, or an install is
    /// already under way.
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    InvalidConfig(String),
    #[error("nothing to install from: {0}")]
    NoPayload(String),
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    Internal(String),
}

/// mke2fs (e2fsprogs) in the image.
pub const MKE2FS: &str = "/usr/sbin/mke2fs";
/// GRUB's boot sector code: the MBR's first 440 bytes (the disk signature and the partition
/// table follow).
const BOOT_CODE: usize = 440;
const CHUNK: usize = 1 << 20;

/// Where the block devices and their sysfs directories are (the tests use their own).
#[derive(Debug, Clone)]
pub struct Devices {
    pub sys_block: PathBuf,
    pub dev: PathBuf,
    /// Scratch space for the filesystems' contents (a tmpfs: /run).
    pub scratch: PathBuf,
    pub mke2fs: PathBuf,
    /// Which block devices are mounted (/proc/self/mountinfo).
    pub mountinfo: PathBuf,
}

impl Default for Devices {
    fn default() -> Self {
        Devices {
            sys_block: "/sys/block".into(),
            dev: "/dev".into(),
            scratch: "/run/cairn/install".into(),
            mke2fs: MKE2FS.into(),
            mountinfo: "/proc/self/mountinfo".into(),
        }
    }
}

/// The installs of this boot: one at a time, its progress readable while it runs.
#[derive(Clone)]
pub struct Installer {
    devices: Devices,
    report: Arc<Mutex<JobReport>>,
}

impl Installer {
    pub fn new(devices: Devices) -> Installer {
        Installer {
            devices,
            report: Arc::new(Mutex::new(JobReport {
                state: "idle".into(),
                ..Default::default()
            })),
        }
    }

    pub fn disks(&self) -> Vec<DiskInfo> {
        disks::list(
            &self.devices.sys_block,
            &self.devices.dev,
            &self.devices.mountinfo,
        )
    }

    pub fn report(&self) -> JobReport {
        self.report.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Checks everything that can be checked before a byte is written — the disk, the config,
    /// the payload — then installs on a thread of its own; [`Installer::report`] follows it.
    pub fn start(
        &self,
        disk: &str,
        config: Option<String>,
        force: bool,
        payload: impl FnOnce() -> Result<Payload, InstallError>,
    ) -> Result<(), InstallError> {
        let target = self.check_disk(disk, force)?;
        if let Some(text) = &config {
            model::config::parse("host.toml", text)
                .map_err(|errors| InstallError::InvalidConfig(errors.to_string()))?;
        }
        {
            let mut r = self
                .report
                .lock()
                .map_err(|_| InstallError::Internal("install report poisoned".into()))?;
            if r.state == "running" {
                return Err(InstallError::Refused(format!(
                    "an install onto {} is running",
                    r.disk
                )));
            }
            *r = JobReport {
                state: "running".into(),
                disk: disk.to_string(),
                step: "reading the live system".into(),
                ..Default::default()
            };
        }
        let payload = match payload() {
            Ok(p) => p,
            Err(e) => {
                self.finish(Err(&e));
                return Err(e);
            }
        };
        let me = self.clone();
        std::thread::Builder::new()
            .name("install".into())
            .spawn(move || {
                let result = me.run(&target, &payload, config.as_deref());
                me.finish(result.as_ref().map(|_| ()));
            })
            .map_err(|e| InstallError::Internal(format!("cannot start the install: {e}")))?;
        Ok(())
    }

    /// Runs an install to its end on this thread (the sandbox tests' way in).
    #[cfg(test)]
    pub fn run_now(
        &self,
        disk: &str,
        config: Option<&str>,
        force: bool,
        payload: &Payload,
    ) -> Result<(), InstallError> {
        let target = self.check_disk(disk, force)?;
        let result = self.run(&target, payload, config);
        self.finish(result.as_ref().map(|_| ()));
        result
    }

    fn check_disk(&self, disk: &str, force: bool) -> Result<PathBuf, InstallError> {
        if disk.is_empty() || disk.contains('/') || disk.starts_with('.') {
            return Err(InstallError::NoSuchDisk(disk.to_string()));
        }
        if !self.devices.sys_block.join(disk).exists() {
            return Err(InstallError::NoSuchDisk(disk.to_string()));
        }
        let info = disks::describe(
            &self.devices.sys_block,
            &self.devices.dev,
            disk,
            &disks::mounted_devices(&self.devices.mountinfo),
        );
        if !info.unusable.is_empty() {
            return Err(InstallError::Refused(format!(
                "{disk} cannot take Cairn: {}",
                info.unusable
            )));
        }
        if !info.holds.is_empty() && !force {
            return Err(InstallError::Refused(format!(
                "{disk} holds {}; install with force to overwrite it",
                info.holds
            )));
        }
        Ok(self.devices.dev.join(disk))
    }

    fn finish(&self, result: Result<(), &InstallError>) {
        if let Ok(mut r) = self.report.lock() {
            match result {
                Ok(()) => {
                    r.state = "done".into();
                    r.step = "installed".into();
                    tracing::warn!(disk = %r.disk, "Cairn installed");
                }
                Err(e) => {
                    r.state = "failed".into();
                    r.error = e.to_string();
                    tracing::error!(disk = %r.disk, error = %e, "install failed");
                }
            }
        }
    }

    fn step(&self, step: &str, total: Option<u64>) {
        tracing::info!(step, "install");
        if let Ok(mut r) = self.report.lock() {
            r.step = step.to_string();
            if let Some(t) = total {
                r.total_bytes = t;
            }
        }
    }

    fn progress(&self, bytes: u64) {
        if let Ok(mut r) = self.report.lock() {
            r.done_bytes += bytes;
        }
    }

    fn run(&self, dev: &Path, payload: &Payload, config: Option<&str>) -> Result<(), InstallError> {
        let io = |what: &str| {
            let what = what.to_string();
            move |e: std::io::Error| InstallError::Io(format!("{what}: {e}"))
        };
        self.step("wiping the old partition tables", Some(payload.bytes()));
        // O_EXCL: the kernel refuses a disk something has mounted, even if our check missed it.
        let mut disk = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_EXCL)
            .open(dev)
            .map_err(io(&format!("opening {}", dev.display())))?;
        let bytes = disk
            .seek(SeekFrom::End(0))
            .map_err(io("reading the disk's size"))?;
        let sectors = bytes / SECTOR;
        let mut guids = vec![gpt::random_guid()?];
        for _ in PARTITIONS {
            guids.push(gpt::random_guid()?);
        }
        let table = gpt::table(sectors, &PARTITIONS, &guids)?;
        // Old signatures go: both ends of the disk (partition tables) and the start of every
        // partition (an old filesystem there must not pass for one of ours, e.g. a stale
        // CAIRN-STATE where slot B now lies).
        let zero = vec![0u8; CHUNK];
        let mut wipe = vec![0, bytes.saturating_sub(CHUNK as u64)];
        wipe.extend(PARTITIONS.iter().map(|p| p.first_lba * SECTOR));
        for at in wipe {
            disk.write_all_at(&zero, at).map_err(io("wiping"))?;
        }
        disk.sync_all().map_err(io("syncing the disk"))?;

        self.step("writing GRUB for BIOS", None);
        if payload.core_img.len() as u64 > BIOS_BOOT.sectors * SECTOR {
            return Err(InstallError::Internal(
                "core.img outgrows the BIOS boot partition".into(),
            ));
        }
        disk.write_all_at(&payload.core_img, BIOS_BOOT.first_lba * SECTOR)
            .map_err(io("writing core.img"))?;
        self.progress(payload.core_img.len() as u64);

        self.step("writing the EFI system partition", None);
        self.copy_file(
            &payload.esp_img,
            &disk,
            ESP.first_lba * SECTOR,
            ESP.sectors * SECTOR,
        )?;
        disk.sync_all().map_err(io("syncing the disk"))?;
        drop(disk);

        self.step("writing OS slot A", None);
        let scratch = &self.devices.scratch;
        let _ = std::fs::remove_dir_all(scratch);
        let slot = scratch.join("slot");
        std::fs::create_dir_all(&slot).map_err(io("creating the slot's staging directory"))?;
        std::fs::copy(&payload.vmlinuz, slot.join("vmlinuz")).map_err(io("staging vmlinuz"))?;
        std::fs::write(slot.join("initrd.img"), &payload.initrd)
            .map_err(io("staging initrd.img"))?;
        self.mke2fs(dev, &SLOT_A, SLOT_A.sectors, &slot)?;
        let _ = std::fs::remove_dir_all(&slot);
        self.progress(payload.initrd.len() as u64 + file_len(&payload.vmlinuz));

        self.step("making the state partition", None);
        let state = scratch.join("state");
        std::fs::create_dir_all(&state).map_err(io("creating the state's staging directory"))?;
        if let Some(text) = config {
            let saved = crate::config_source::saved(&state);
            if let Some(parent) = saved.parent() {
                std::fs::create_dir_all(parent).map_err(io("staging the config"))?;
            }
            std::fs::write(&saved, text).map_err(io("staging the config"))?;
            std::fs::set_permissions(&saved, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .map_err(io("staging the config"))?;
        }
        // The state partition runs to the end: the table says how far.
        let (first, last) = table.ranges[PARTITIONS.len() - 1];
        self.mke2fs(dev, &STATE, last + 1 - first, &state)?;
        let _ = std::fs::remove_dir_all(scratch);

        self.step("writing the partition table", None);
        let disk = OpenOptions::new()
            .read(true)
            .write(true)
            .open(dev)
            .map_err(io(&format!("opening {}", dev.display())))?;
        disk.write_all_at(&table.tail, table.tail_lba * SECTOR)
            .map_err(io("writing the backup GPT"))?;
        disk.sync_all().map_err(io("syncing the disk"))?;
        let mut head = table.head.clone();
        head[..BOOT_CODE].copy_from_slice(&payload.boot_img[..BOOT_CODE]);
        disk.write_all_at(&head, 0).map_err(io("writing the GPT"))?;
        disk.sync_all().map_err(io("syncing the disk"))?;
        let mut back = vec![0u8; head.len()];
        disk.read_exact_at(&mut back, 0)
            .map_err(io("reading the GPT back"))?;
        if back != head {
            return Err(InstallError::Io(
                "the GPT read back differs from what was written".into(),
            ));
        }
        reread_partitions(&disk);
        Ok(())
    }

    /// `src` at byte `at` of `disk`, in chunks that move the progress.
    fn copy_file(&self, src: &Path, disk: &File, at: u64, room: u64) -> Result<(), InstallError> {
        let data = std::fs::read(src)
            .map_err(|e| InstallError::Io(format!("reading {}: {e}", src.display())))?;
        if data.len() as u64 > room {
            return Err(InstallError::Internal(format!(
                "{} outgrows its partition",
                src.display()
            )));
        }
        for (i, chunk) in data.chunks(CHUNK).enumerate() {
            disk.write_all_at(chunk, at + (i * CHUNK) as u64)
                .map_err(|e| InstallError::Io(format!("writing {}: {e}", src.display())))?;
            self.progress(chunk.len() as u64);
        }
        Ok(())
    }

    /// An ext4 filesystem labelled as `part` says, holding `content`, written at the
    /// partition's place on the whole disk (no partition device needed: the table comes last).
    fn mke2fs(
        &self,
        dev: &Path,
        part: &model::install::Partition,
        sectors: u64,
        content: &Path,
    ) -> Result<(), InstallError> {
        make_ext4(
            &self.devices.mke2fs,
            dev,
            part.first_lba * SECTOR,
            sectors * SECTOR,
            part.label,
            content,
        )
        .map_err(|e| InstallError::Io(format!("{} ({}): {e}", part.name, part.label)))
    }
}

/// mke2fs: an ext4 filesystem of `bytes` labelled `label` holding a copy of `content`, at byte
/// `offset` of `dev` (a whole disk, a partition or a file).
pub fn make_ext4(
    mke2fs: &Path,
    dev: &Path,
    offset: u64,
    bytes: u64,
    label: &str,
    content: &Path,
) -> Result<(), String> {
    let out = crate::children::run(
        Command::new(mke2fs)
            .args(["-q", "-F", "-F", "-t", "ext4", "-b", "4096", "-L", label])
            .arg("-d")
            .arg(content)
            .arg("-E")
            .arg(format!("offset={offset},nodiscard"))
            .arg(dev)
            .arg((bytes / 4096).to_string())
            // No mke2fs.conf in the image: a path that does not exist makes mke2fs use its
            // built-in profile, whose ext4 has the journal. (An empty file, e.g. /dev/null,
            // is a profile without ext4: mke2fs then quietly makes ext2, which a power cut
            // corrupts.)
            .env("MKE2FS_CONFIG", "/nonexistent/mke2fs.conf"),
    )
    .map_err(|e| format!("running {}: {e}", mke2fs.display()))?;
    if !out.status.success() {
        return Err(format!(
            "mke2fs failed ({}): {}",
            out.status,
            out.stderr.trim()
        ));
    }
    Ok(())
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// BLKRRPART, so the kernel shows the new partitions; a file (the tests) has none to re-read.
fn reread_partitions(disk: &File) {
    use std::os::fd::AsRawFd;
    nix::ioctl_none!(blkrrpart, 0x12, 95);
    // SAFETY: BLKRRPART takes no argument; the fd is open for the call's duration.
    if let Err(e) = unsafe { blkrrpart(disk.as_raw_fd()) } {
        tracing::info!(error = %e, "the kernel did not re-read the partition table; it will at the next boot");
    }
}

#[cfg(test)]
mod tests;
