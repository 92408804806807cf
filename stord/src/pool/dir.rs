//! A dir pool: volumes as sparse raw files in a directory, snapshots and clones by reflink
//! where the filesystem has them (xfs, btrfs), else by sparse copy.
//!
//! Layout under the pool's path: `.cairn-pool` (the pool's name: a directory is taken by one
//! pool only), `volumes/NAME.raw`, `snapshots/NAME/SNAP.raw`. Every file is made under a hidden
//! `.NAME….part` name and renamed into place once whole, so a crash leaves a volume or none,
//! never half of one; [`DirPool::open`] clears what a crash left.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use model::storage::{BackupInfo, PoolInfo, PoolKind, SnapshotInfo, VolumeInfo, VolumeRef};

use super::files::{self, Copied};
use super::{Backend, StoreError, gib};

const MARKER: &str = ".cairn-pool";
/// The hidden snapshot a backup copies from (in `snapshots/NAME/`), dropped after.
const BACKUP_SNAPSHOT: &str = ".backup-";

#[derive(Debug, Clone)]
pub struct DirPool {
    pub name: String,
    pub path: PathBuf,
    pub overcommit: Option<f64>,
    pub declared: bool,
}

fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> StoreError {
    move |e| StoreError::Failed(format!("{what}: {e}"))
}

impl DirPool {
    /// Takes the directory for the pool: made when missing, marked as this pool's; a directory
    /// that holds anything but this pool's files is refused.
    pub fn open(pool: DirPool) -> Result<DirPool, StoreError> {
        let path = &pool.path;
        std::fs::create_dir_all(path).map_err(io(path.display()))?;
        let marker = path.join(MARKER);
        match std::fs::read_to_string(&marker) {
            Ok(owner) if owner.trim() == pool.name => {}
            Ok(owner) => {
                return Err(StoreError::Conflict(format!(
                    "{} belongs to pool {:?}",
                    path.display(),
                    owner.trim()
                )));
            }
            Err(_) => {
                let holds = std::fs::read_dir(path)
                    .map_err(io(path.display()))?
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect::<Vec<_>>();
                if !holds.is_empty() {
                    return Err(StoreError::Conflict(format!(
                        "{} holds files stord did not make ({}); give an empty directory",
                        path.display(),
                        holds.join(", ")
                    )));
                }
                model::files::write_atomic(&marker, pool.name.as_bytes())
                    .map_err(io(marker.display()))?;
            }
        }
        for dir in ["volumes", "snapshots"] {
            std::fs::create_dir_all(path.join(dir)).map_err(io(path.join(dir).display()))?;
        }
        pool.clear_parts();
        Ok(pool)
    }

    fn backups_dir(&self) -> PathBuf {
        self.path.join("backups")
    }

    /// Removes the hidden parts a crash left behind (copies being made, a backup's snapshot).
    fn clear_parts(&self) {
        let mut dirs = vec![self.path.join("volumes"), DirPool::backups_dir(self)];
        if let Ok(snaps) = std::fs::read_dir(self.path.join("snapshots")) {
            dirs.extend(snaps.flatten().map(|e| e.path()));
        }
        for dir in dirs {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.ends_with(".part") || name.starts_with(BACKUP_SNAPSHOT) {
                    tracing::info!(file = %entry.path().display(), "removing what a crash left");
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }

    /// The file of volume `name`, which must exist.
    fn existing(&self, name: &str) -> Result<PathBuf, StoreError> {
        let path = self.volume_path(name);
        if !path.exists() {
            return Err(StoreError::NotFound(format!(
                "no volume {}/{name}",
                self.name
            )));
        }
        Ok(path)
    }

    pub fn volume_path(&self, name: &str) -> PathBuf {
        self.path.join("volumes").join(format!("{name}.raw"))
    }

    fn snapshot_dir(&self, name: &str) -> PathBuf {
        self.path.join("snapshots").join(name)
    }

    fn snapshot_path(&self, name: &str, snap: &str) -> PathBuf {
        self.snapshot_dir(name).join(format!("{snap}.raw"))
    }

    /// Refuses `more` provisioned bytes that would take the pool past its overcommit limit.
    fn check_overcommit(&self, more: u64, what: &str) -> Result<(), StoreError> {
        if self.overcommit.is_none() {
            return Ok(());
        }
        let info = self.info()?;
        let now = (info.provisioned_bytes, info.capacity_bytes);
        super::check_overcommit(&self.name, now, more, self.overcommit, what)
    }
}

impl Backend for DirPool {
    fn name(&self) -> &str {
        &self.name
    }

    fn declared(&self) -> bool {
        self.declared
    }

    fn location(&self) -> &Path {
        &self.path
    }

    /// Gives the directory back (the pool is deleted, or its making is rolled back): its
    /// marker and empty volume and snapshot directories go, the directory itself stays.
    fn release(&self) {
        for dir in ["volumes", "snapshots"] {
            let _ = std::fs::remove_dir(self.path.join(dir));
        }
        let _ = std::fs::remove_file(self.path.join(MARKER));
    }

    fn backups_dir(&self) -> Option<PathBuf> {
        Some(self.backups_dir())
    }

    /// The snapshot a backup of `name` copies from: hidden from volume.info, removed by the
    /// backup when done (or at the next start after a crash).
    fn backup_snapshot(&mut self, name: &str) -> Result<PathBuf, StoreError> {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let from = self.existing(name)?;
        let dir = self.snapshot_dir(name);
        std::fs::create_dir_all(&dir).map_err(io(dir.display()))?;
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let to = dir.join(format!("{BACKUP_SNAPSHOT}{}-{n}.raw", std::process::id()));
        copy_placed(&from, &to)?;
        Ok(to)
    }

    fn drop_backup_snapshot(&mut self, snapshot: &Path) {
        let _ = std::fs::remove_file(snapshot);
    }

    /// Makes volume `name` from a backup file (checked against its sha256 by the caller).
    fn restore(&mut self, backup: &Path, name: &str) -> Result<VolumeInfo, StoreError> {
        let to = self.volume_path(name);
        if to.exists() {
            return Err(StoreError::Conflict(format!(
                "volume {}/{name} exists",
                self.name
            )));
        }
        let size = std::fs::metadata(backup)
            .map_err(io(backup.display()))?
            .len();
        self.check_overcommit(size, &format!("a restore of {}", gib(size)))?;
        copy_placed(backup, &to)?;
        let _ = std::fs::set_permissions(&to, std::os::unix::fs::PermissionsExt::from_mode(0o644));
        self.volume(name)
    }

    /// The names of the pool's volumes, sorted.
    fn volume_names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path.join("volumes"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_suffix(".raw")
                    .filter(|n| !n.starts_with('.'))
                    .map(str::to_string)
            })
            .collect();
        names.sort();
        names
    }

    fn volume(&self, name: &str) -> Result<VolumeInfo, StoreError> {
        let path = self.volume_path(name);
        let meta = std::fs::metadata(&path)
            .map_err(|_| StoreError::NotFound(format!("no volume {}/{name}", self.name)))?;
        let mut snapshots: Vec<SnapshotInfo> = std::fs::read_dir(self.snapshot_dir(name))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let file = e.file_name().to_string_lossy().into_owned();
                let snap = file.strip_suffix(".raw").filter(|n| !n.starts_with('.'))?;
                let created = e
                    .metadata()
                    .ok()?
                    .modified()
                    .ok()?
                    .duration_since(UNIX_EPOCH)
                    .ok()?
                    .as_secs();
                Some(SnapshotInfo {
                    name: snap.to_string(),
                    allocated_bytes: files::allocated(&e.path()),
                    created,
                })
            })
            .collect();
        snapshots.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(VolumeInfo {
            volume: format!("{}/{name}", self.name),
            size_bytes: meta.len(),
            allocated_bytes: files::allocated(&path),
            path: path.display().to_string(),
            snapshots,
            used_by: Vec::new(),
            copy: None,
        })
    }

    fn info(&self) -> Result<PoolInfo, StoreError> {
        let (capacity, used, free) = files::space(&self.path).map_err(io(self.path.display()))?;
        let volumes: Vec<VolumeInfo> = self
            .volume_names()
            .iter()
            .filter_map(|n| self.volume(n).ok())
            .collect();
        let provisioned: u64 = volumes.iter().map(|v| v.size_bytes).sum();
        let allocated: u64 = volumes
            .iter()
            .map(|v| v.allocated_bytes + v.snapshots.iter().map(|s| s.allocated_bytes).sum::<u64>())
            .sum();
        let ratio = ratio(provisioned, capacity);
        let warnings = super::space_warnings(
            &[("data", ratio_percent(used, capacity))],
            ratio,
            self.overcommit,
        );
        Ok(PoolInfo {
            name: self.name.clone(),
            kind: PoolKind::Dir,
            path: self.path.display().to_string(),
            declared: self.declared,
            capacity_bytes: capacity,
            used_bytes: used,
            free_bytes: free,
            provisioned_bytes: provisioned,
            allocated_bytes: allocated,
            volumes: u32::try_from(volumes.len()).unwrap_or(u32::MAX),
            overcommit_ratio: ratio,
            overcommit_limit: self.overcommit,
            warnings,
        })
    }

    fn create_volume(
        &mut self,
        name: &str,
        size: u64,
        full: bool,
    ) -> Result<VolumeInfo, StoreError> {
        let path = self.volume_path(name);
        if path.exists() {
            return Err(StoreError::Conflict(format!(
                "volume {}/{name} exists",
                self.name
            )));
        }
        self.check_overcommit(size, &format!("a volume of {}", gib(size)))?;
        let part = part_of(&path);
        let made = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&part)
            .and_then(|f| {
                if full {
                    files::preallocate(&f, size)?;
                } else {
                    f.set_len(size)?;
                }
                f.sync_all()
            });
        if let Err(e) = made {
            let _ = std::fs::remove_file(&part);
            return Err(match e.raw_os_error() {
                Some(libc::ENOSPC) => StoreError::Conflict(format!(
                    "pool {:?} has no room for {} allocated now",
                    self.name,
                    gib(size)
                )),
                _ => StoreError::Failed(format!("{}: {e}", path.display())),
            });
        }
        place(&part, &path)?;
        self.volume(name)
    }

    fn grow_volume(&mut self, name: &str, size: u64) -> Result<VolumeInfo, StoreError> {
        let now = self.volume(name)?;
        if size < now.size_bytes {
            return Err(StoreError::InvalidArgs(format!(
                "volume {}/{name} is {} bytes; volumes grow, they do not shrink (asked {size})",
                self.name, now.size_bytes
            )));
        }
        self.check_overcommit(
            size - now.size_bytes,
            &format!("growing by {}", gib(size - now.size_bytes)),
        )?;
        let path = self.volume_path(name);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| {
                f.set_len(size)?;
                f.sync_all()
            })
            .map_err(io(path.display()))?;
        self.volume(name)
    }

    fn delete_volume(&mut self, name: &str) -> Result<(), StoreError> {
        let path = self.existing(name)?;
        // Snapshots first: a crash in between leaves the volume, which can be deleted again.
        let snaps = self.snapshot_dir(name);
        if snaps.exists() {
            std::fs::remove_dir_all(&snaps).map_err(io(snaps.display()))?;
        }
        std::fs::remove_file(&path).map_err(io(path.display()))?;
        model::files::sync_dir_of(&path).map_err(io(path.display()))
    }

    fn snapshot(
        &mut self,
        name: &str,
        snap: &str,
    ) -> Result<(VolumeInfo, &'static str), StoreError> {
        let from = self.existing(name)?;
        let to = self.snapshot_path(name, snap);
        if to.exists() {
            return Err(StoreError::Conflict(format!(
                "volume {}/{name} has a snapshot {snap:?}",
                self.name
            )));
        }
        std::fs::create_dir_all(self.snapshot_dir(name))
            .map_err(io(self.snapshot_dir(name).display()))?;
        let how = copy_placed(&from, &to)?;
        // Read-only, so that nothing opens it to write by mistake.
        let _ = std::fs::set_permissions(&to, std::os::unix::fs::PermissionsExt::from_mode(0o444));
        Ok((self.volume(name)?, how.as_str()))
    }

    fn delete_snapshot(&mut self, name: &str, snap: &str) -> Result<(), StoreError> {
        self.existing(name)?;
        let path = self.snapshot_path(name, snap);
        std::fs::remove_file(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                StoreError::NotFound(format!("no snapshot {}/{name}@{snap}", self.name))
            }
            _ => StoreError::Failed(format!("deleting {}: {e}", path.display())),
        })?;
        model::files::sync_dir_of(&path).map_err(io(path.display()))
    }

    /// `source` is (volume, snapshot or None).
    fn clone_volume(
        &mut self,
        source: (&str, Option<&str>),
        name: &str,
    ) -> Result<(VolumeInfo, &'static str), StoreError> {
        let from = match source {
            (vol, None) => self.volume_path(vol),
            (vol, Some(snap)) => self.snapshot_path(vol, snap),
        };
        let shown = match source {
            (vol, None) => format!("{}/{vol}", self.name),
            (vol, Some(snap)) => format!("{}/{vol}@{snap}", self.name),
        };
        let size = std::fs::metadata(&from)
            .map_err(|_| StoreError::NotFound(format!("no volume or snapshot {shown}")))?
            .len();
        let to = self.volume_path(name);
        if to.exists() {
            return Err(StoreError::Conflict(format!(
                "volume {}/{name} exists",
                self.name
            )));
        }
        self.check_overcommit(size, &format!("a clone of {}", gib(size)))?;
        let how = copy_placed(&from, &to)?;
        let _ = std::fs::set_permissions(&to, std::os::unix::fs::PermissionsExt::from_mode(0o644));
        Ok((self.volume(name)?, how.as_str()))
    }
}

fn part_of(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.part"))
}

/// Renames a whole part into place and syncs the directory.
fn place(part: &Path, path: &Path) -> Result<(), StoreError> {
    std::fs::rename(part, path)
        .and_then(|()| model::files::sync_dir_of(path))
        .map_err(|e| {
            let _ = std::fs::remove_file(part);
            StoreError::Failed(format!("{}: {e}", path.display()))
        })
}

fn copy_placed(from: &Path, to: &Path) -> Result<Copied, StoreError> {
    let part = part_of(to);
    let _ = std::fs::remove_file(&part);
    let how = files::copy(from, &part).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOSPC) => {
            StoreError::Conflict(format!("no room for a copy of {}", from.display()))
        }
        _ => StoreError::Failed(format!(
            "copying {} to {}: {e}",
            from.display(),
            to.display()
        )),
    })?;
    place(&part, to)?;
    Ok(how)
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

fn ratio_percent(part: u64, whole: u64) -> f64 {
    ratio(part, whole) * 100.0
}

/// Copies `snapshot` (of volume `of`, `POOL/NAME`) into `dir`, a pool's backups, hashed on
/// the way (`progress` told the bytes done); the sha256 goes beside it (`FILE.sha256`). Runs
/// without the pools' lock: `dir` is only ever added to.
pub fn store_backup(
    dir: &Path,
    snapshot: &Path,
    of: &VolumeRef,
    progress: &dyn Fn(u64),
) -> Result<BackupInfo, StoreError> {
    std::fs::create_dir_all(dir).map_err(io(dir.display()))?;
    let secs = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut file = format!("{}-{}-{secs}.raw", of.pool, of.name);
    let mut n = 1;
    while dir.join(&file).exists() {
        n += 1;
        file = format!("{}-{}-{secs}-{n}.raw", of.pool, of.name);
    }
    let to = dir.join(&file);
    let part = part_of(&to);
    let _ = std::fs::remove_file(&part);
    let sha256 =
        files::copy_hashed(snapshot, &part, progress).map_err(|e| match e.raw_os_error() {
            Some(libc::ENOSPC) => StoreError::Conflict(format!(
                "{} has no room for the backup of {of}",
                dir.display()
            )),
            _ => StoreError::Failed(format!("backing {of} up to {}: {e}", to.display())),
        })?;
    let sidecar = dir.join(format!("{file}.sha256"));
    if let Err(e) = model::files::write_atomic(&sidecar, format!("{sha256}  {file}\n").as_bytes()) {
        let _ = std::fs::remove_file(&part);
        return Err(StoreError::Failed(format!("{}: {e}", sidecar.display())));
    }
    place(&part, &to)?;
    Ok(BackupInfo {
        backup: to.display().to_string(),
        volume: of.to_string(),
        size_bytes: std::fs::metadata(&to).map_or(0, |m| m.len()),
        allocated_bytes: files::allocated(&to),
        sha256,
        quiesced: Vec::new(),
        quiesced_ms: 0,
    })
}
