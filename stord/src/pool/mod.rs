//! The pools stord serves: those host.toml declares and those made through the API (kept in
//! `STATE/pools.json`, written whole or not at all), and every volume operation, checked
//! whole before anything is made.

mod dir;
mod files;
mod iscsi;
pub mod kernel;
mod nfs;
mod thin;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use model::config::{HostConfig, NAME_MAX, is_name};
use model::dbus::CairnError;
use model::storage::{PoolInfo, PoolKind, PoolSpec, VolumeInfo, VolumeRef, VolumeSpec};

pub use dir::{DirPool, store_backup};
pub use files::Copied;
pub use iscsi::IscsiPool;
pub use nfs::NfsPool;
pub use thin::ThinPool;

/// What every kind of pool does. [`Pools`] checks names, holders and its records, then asks
/// the pool; each kind keeps its volumes its own way (files, dm-thin devices, LUNs).
pub trait Backend: Send {
    fn name(&self) -> &str;
    /// Declared in host.toml rather than made through the API.
    fn declared(&self) -> bool;
    /// The directory or device the pool takes: two pools never share one.
    fn location(&self) -> &Path;
    fn info(&self) -> Result<PoolInfo, StoreError>;
    /// The names of its volumes, sorted.
    fn volume_names(&self) -> Vec<String>;
    fn volume(&self, name: &str) -> Result<VolumeInfo, StoreError>;
    fn create_volume(
        &mut self,
        name: &str,
        size: u64,
        full: bool,
    ) -> Result<VolumeInfo, StoreError>;
    fn grow_volume(&mut self, name: &str, size: u64) -> Result<VolumeInfo, StoreError>;
    /// Deletes a volume and its snapshots.
    fn delete_volume(&mut self, name: &str) -> Result<(), StoreError>;
    /// A read-only snapshot; also says how it was made (for the log).
    fn snapshot(
        &mut self,
        name: &str,
        snap: &str,
    ) -> Result<(VolumeInfo, &'static str), StoreError>;
    /// Deletes snapshot `snap` of volume `name` (the volume and its other snapshots stay).
    fn delete_snapshot(&mut self, name: &str, snap: &str) -> Result<(), StoreError>;
    /// `source` is (volume, snapshot or None).
    fn clone_volume(
        &mut self,
        source: (&str, Option<&str>),
        name: &str,
    ) -> Result<(VolumeInfo, &'static str), StoreError>;
    /// A point-in-time copy of volume `name` a backup reads from (a file or a block device),
    /// hidden from volume.info; [`Backend::drop_backup_snapshot`] removes it.
    fn backup_snapshot(&mut self, name: &str) -> Result<PathBuf, StoreError>;
    fn drop_backup_snapshot(&mut self, snapshot: &Path);
    /// Where this pool keeps backups; None: it holds no files (thin, iscsi).
    fn backups_dir(&self) -> Option<PathBuf> {
        None
    }
    /// Makes volume `name` from a file of its bytes: a backup (checked against its sha256 by
    /// the caller) or an imported raw image.
    fn restore(&mut self, backup: &Path, name: &str) -> Result<VolumeInfo, StoreError>;
    /// Gives the pool's storage back (the pool is deleted or its making rolled back).
    fn release(&self);
    /// False: its volumes come and go with the pool (a SAN's LUNs), which may then be deleted
    /// while it has some, as long as none is in use.
    fn makes_volumes(&self) -> bool {
        true
    }
    /// For pools that can fill (thin): one look — grown into a grown device, and whether it
    /// is full now. None: nothing to watch.
    fn watch(&mut self) -> Result<Option<bool>, StoreError> {
        Ok(None)
    }
}

/// What needs a look in a pool: each use (data, metadata: percent of its room) past 80 %
/// (warning) or 95 % (critical), and overcommit (provisioned / capacity) past 90 % of its
/// limit.
pub(crate) fn space_warnings(uses: &[(&str, f64)], ratio: f64, limit: Option<f64>) -> Vec<String> {
    let mut warnings = Vec::new();
    for (what, p) in uses {
        if *p >= 95.0 {
            warnings.push(format!("critical: {what} {p:.0} % used"));
        } else if *p >= 80.0 {
            warnings.push(format!("warning: {what} {p:.0} % used"));
        }
    }
    if let Some(limit) = limit
        && ratio >= 0.9 * limit
    {
        warnings.push(format!(
            "warning: overcommit {ratio:.1}x is near its limit of {limit}x"
        ));
    }
    warnings
}

/// Refuses `more` provisioned bytes that would take pool `pool` (`provisioned` of `capacity`)
/// past its overcommit `limit`.
pub(crate) fn check_overcommit(
    pool: &str,
    (provisioned, capacity): (u64, u64),
    more: u64,
    limit: Option<f64>,
    what: &str,
) -> Result<(), StoreError> {
    let Some(limit) = limit else {
        return Ok(());
    };
    let after = provisioned.saturating_add(more);
    let ratio = after as f64 / capacity.max(1) as f64;
    if ratio > limit {
        return Err(StoreError::Conflict(format!(
            "{what} would take pool {pool:?} to {} provisioned, {ratio:.1}x its capacity of {}; \
             its overcommit limit is {limit}x",
            gib(after),
            gib(capacity)
        )));
    }
    Ok(())
}

/// Bytes as GiB with one decimal, for messages.
pub(crate) fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
}

/// A watched pool's state: whether it is full, and the guests that use its volumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSpace {
    pub pool: String,
    pub full: bool,
    pub guests: Vec<String>,
}

const RECORDS: &str = "pools.json";
/// Which guests use which volumes: `{"POOL/NAME": ["vm:deb"]}`.
const HOLDERS: &str = "holders.json";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    InvalidArgs(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Failed(String),
    /// A NAS or SAN peer that does not answer: worth a retry later.
    #[error("{0}")]
    Unreachable(String),
}

impl From<StoreError> for CairnError {
    fn from(e: StoreError) -> CairnError {
        match e {
            StoreError::InvalidArgs(m) => CairnError::InvalidArgs(m),
            StoreError::NotFound(m) => CairnError::NotFound(m),
            StoreError::Conflict(m) => CairnError::Conflict(m),
            StoreError::Failed(m) => CairnError::Failed(m),
            StoreError::Unreachable(m) => CairnError::Busy(m),
        }
    }
}

pub struct Pools {
    state: PathBuf,
    pools: BTreeMap<String, Box<dyn Backend>>,
    /// The API-made pools' specs, as recorded.
    made: Vec<PoolSpec>,
    holders: BTreeMap<String, BTreeSet<String>>,
    /// The guests held (paused) because their pool is full, by pool.
    held: BTreeMap<String, Vec<String>>,
}

fn volume_ref(s: &str, snapshot_ok: bool) -> Result<VolumeRef, StoreError> {
    VolumeRef::parse(s, snapshot_ok).map_err(StoreError::InvalidArgs)
}

impl Pools {
    /// The declared pools and the recorded ones. One that cannot be opened (its directory
    /// taken, unreadable) is logged and left out; the others are served.
    pub fn load(config: &HostConfig, state: &Path) -> Pools {
        let mut pools = Pools {
            state: state.to_path_buf(),
            pools: BTreeMap::new(),
            made: Vec::new(),
            holders: std::fs::read(state.join(HOLDERS))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default(),
            held: BTreeMap::new(),
        };
        for p in &config.pools {
            let spec = PoolSpec {
                name: p.name.clone(),
                kind: p.kind,
                path: p.path.as_ref().map(|p| p.display().to_string()),
                overcommit: None,
                force: None,
                source: p.source.clone(),
                options: p.options.clone(),
            };
            pools.add(&spec, true);
        }
        let recorded: Vec<PoolSpec> = std::fs::read(state.join(RECORDS))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        for spec in recorded {
            if pools.pools.contains_key(&spec.name) {
                tracing::warn!(pool = %spec.name, "recorded pool is now declared in host.toml");
                continue;
            }
            // Recorded first: a recorded thin pool is opened, never made again.
            pools.made.push(spec.clone());
            pools.add(&spec, false);
        }
        pools
    }

    fn add(&mut self, spec: &PoolSpec, declared: bool) {
        match self.open(spec, declared) {
            Ok(p) => {
                self.pools.insert(spec.name.clone(), p);
            }
            Err(e) => tracing::error!(pool = %spec.name, error = %e, "pool left out"),
        }
    }

    /// Opens (or, the first time, makes) the pool `spec` describes.
    fn open(&self, spec: &PoolSpec, declared: bool) -> Result<Box<dyn Backend>, StoreError> {
        match spec.kind {
            PoolKind::Dir => Ok(Box::new(DirPool::open(self.dir_pool(spec, declared))?)),
            PoolKind::Thin => {
                let device = spec.path.as_deref().map(Path::new).ok_or_else(|| {
                    StoreError::InvalidArgs(format!(
                        "thin pool {:?} needs path: the block device it takes",
                        spec.name
                    ))
                })?;
                let mut pool = if declared {
                    // host.toml names a device once: the first start makes the pool on it
                    // (an empty device only), the next ones open it.
                    match ThinPool::open(&spec.name, device, spec.overcommit, true) {
                        Err(StoreError::NotFound(_)) => {
                            ThinPool::create(&spec.name, device, spec.overcommit, false)?
                        }
                        other => other?,
                    }
                } else if self.made.iter().any(|m| m.name == spec.name) {
                    ThinPool::open(&spec.name, device, spec.overcommit, false)?
                } else {
                    ThinPool::create(
                        &spec.name,
                        device,
                        spec.overcommit,
                        spec.force.unwrap_or(false),
                    )?
                };
                pool.set_declared(declared);
                Ok(Box::new(pool))
            }
            PoolKind::Nfs => Ok(Box::new(NfsPool::open(
                spec,
                declared,
                self.state.join("mnt").join(&spec.name),
            )?)),
            PoolKind::Iscsi => Ok(Box::new(IscsiPool::open(spec, declared)?)),
        }
    }

    fn default_path(&self, name: &str) -> PathBuf {
        self.state.join("pools").join(name)
    }

    fn dir_pool(&self, spec: &PoolSpec, declared: bool) -> DirPool {
        DirPool {
            name: spec.name.clone(),
            path: spec
                .path
                .as_ref()
                .map_or_else(|| self.default_path(&spec.name), PathBuf::from),
            overcommit: spec.overcommit,
            declared,
        }
    }

    fn save(&self) -> Result<(), StoreError> {
        self.record(RECORDS, &self.made)?;
        // An iscsi pool's source holds its CHAP secret: the records are root's alone.
        use std::os::unix::fs::PermissionsExt;
        let file = self.state.join(RECORDS);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| StoreError::Failed(format!("{}: {e}", file.display())))
    }

    fn save_holders(&self) -> Result<(), StoreError> {
        self.record(HOLDERS, &self.holders)
    }

    fn record(&self, file: &str, what: &impl serde::Serialize) -> Result<(), StoreError> {
        let json =
            serde_json::to_vec_pretty(what).map_err(|e| StoreError::Failed(e.to_string()))?;
        std::fs::create_dir_all(&self.state)
            .and_then(|()| model::files::write_atomic(&self.state.join(file), &json))
            .map_err(|e| StoreError::Failed(format!("recording {file}: {e}")))
    }

    /// A volume with the guests that hold it.
    fn held(&self, mut info: VolumeInfo) -> VolumeInfo {
        info.used_by = self
            .holders
            .get(&info.volume)
            .map(|h| h.iter().cloned().collect())
            .unwrap_or_default();
        info
    }

    pub fn open_volume(&mut self, volume: &str, holder: &str) -> Result<VolumeInfo, StoreError> {
        let v = volume_ref(volume, false)?;
        if holder.is_empty() || holder.len() > 128 || holder.chars().any(char::is_whitespace) {
            return Err(StoreError::InvalidArgs(format!(
                "holder {holder:?} is not KIND:NAME"
            )));
        }
        let info = self.pool(&v.pool)?.volume(&v.name)?;
        let key = v.to_string();
        if self.holders.get(&key).is_some_and(|h| h.contains(holder)) {
            return Ok(self.held(info));
        }
        // A LUN initiators write to is no guest's disk too (nor the other way round: an export
        // refuses a volume a guest holds): two writers who do not know of each other.
        if let Some(export) = self
            .holders
            .get(&key)
            .and_then(|h| h.iter().find(|h| h.starts_with("export:")))
            && !holder.starts_with("export:")
        {
            return Err(StoreError::Conflict(format!(
                "volume {key} is exported as an iSCSI LUN ({export}); export.delete it first"
            )));
        }
        self.holders
            .entry(key.clone())
            .or_default()
            .insert(holder.to_string());
        if let Err(e) = self.save_holders() {
            self.forget(&key, holder);
            return Err(e);
        }
        tracing::info!(volume = %key, holder, "volume in use");
        Ok(self.held(info))
    }

    fn forget(&mut self, volume: &str, holder: &str) -> bool {
        let Some(h) = self.holders.get_mut(volume) else {
            return false;
        };
        let was = h.remove(holder);
        if h.is_empty() {
            self.holders.remove(volume);
        }
        was
    }

    pub fn release_volume(&mut self, volume: &str, holder: &str) -> Result<(), StoreError> {
        let v = volume_ref(volume, false)?;
        if self.forget(&v.to_string(), holder) {
            self.save_holders()?;
            tracing::info!(volume = %v, holder, "volume released");
        }
        Ok(())
    }

    pub fn keep_holders(
        &mut self,
        prefix: &str,
        holders: &[String],
    ) -> Result<Vec<String>, StoreError> {
        let gone: Vec<(String, String)> = self
            .holders
            .iter()
            .flat_map(|(v, hs)| hs.iter().map(move |h| (v.clone(), h.clone())))
            .filter(|(_, h)| h.starts_with(prefix) && !holders.contains(h))
            .collect();
        for (v, h) in &gone {
            self.forget(v, h);
        }
        if !gone.is_empty() {
            self.save_holders()?;
        }
        Ok(gone
            .into_iter()
            .map(|(v, h)| format!("{v} by {h}"))
            .collect())
    }

    fn pool(&self, name: &str) -> Result<&dyn Backend, StoreError> {
        self.pools
            .get(name)
            .map(|p| p.as_ref())
            .ok_or_else(|| StoreError::NotFound(format!("no pool {name:?}")))
    }

    fn pool_mut(&mut self, name: &str) -> Result<&mut dyn Backend, StoreError> {
        match self.pools.get_mut(name) {
            Some(p) => Ok(p.as_mut()),
            None => Err(StoreError::NotFound(format!("no pool {name:?}"))),
        }
    }

    pub fn counts(&self) -> (u32, u32) {
        let volumes: usize = self.pools.values().map(|p| p.volume_names().len()).sum();
        (
            u32::try_from(self.pools.len()).unwrap_or(u32::MAX),
            u32::try_from(volumes).unwrap_or(u32::MAX),
        )
    }

    pub fn create_pool(&mut self, spec: PoolSpec) -> Result<PoolInfo, StoreError> {
        if !is_name(&spec.name, NAME_MAX) {
            return Err(StoreError::InvalidArgs(format!(
                "pool name {:?} is not [a-z0-9][a-z0-9-]* of at most {NAME_MAX}",
                spec.name
            )));
        }
        if let Some(path) = &spec.path
            && !Path::new(path).is_absolute()
        {
            return Err(StoreError::InvalidArgs(format!(
                "path {path:?} is not absolute"
            )));
        }
        if let Some(o) = spec.overcommit
            && !(o.is_finite() && o > 0.0)
        {
            return Err(StoreError::InvalidArgs(format!(
                "overcommit {o} is not a ratio above 0 (e.g. 10 for ten times the capacity)"
            )));
        }
        if self.pools.contains_key(&spec.name) {
            return Err(StoreError::Conflict(format!("pool {:?} exists", spec.name)));
        }
        if let Some(path) = spec.path.as_deref()
            && let Some(other) = self
                .pools
                .values()
                .find(|p| p.location() == Path::new(path))
        {
            return Err(StoreError::Conflict(format!(
                "{path} is pool {:?}'s",
                other.name()
            )));
        }
        let pool = self.open(&spec, false)?;
        self.made.push(spec.clone());
        if let Err(e) = self.save() {
            self.made.pop();
            pool.release();
            return Err(e);
        }
        let info = pool.info();
        self.pools.insert(spec.name, pool);
        info
    }

    pub fn delete_pool(&mut self, name: &str) -> Result<(), StoreError> {
        let pool = self.pool(name)?;
        if pool.declared() {
            return Err(StoreError::Conflict(format!(
                "pool {name:?} is declared in host.toml; remove it there"
            )));
        }
        let mut volumes = pool.volume_names();
        if !pool.makes_volumes() {
            volumes.retain(|v| self.holders.contains_key(&format!("{name}/{v}")));
        }
        if !volumes.is_empty() {
            return Err(StoreError::Conflict(format!(
                "pool {name:?} holds {} volume(s): {}",
                volumes.len(),
                volumes.join(", ")
            )));
        }
        // hostd keeps templates in a dir or nfs pool's directory (template.import): an nfs
        // pool's unmount would pull containers' lower layers away, and a dir pool's forgotten
        // templates would stay behind as files no one deletes.
        let templates = templates_in(pool.location());
        if !templates.is_empty() {
            return Err(StoreError::Conflict(format!(
                "pool {name:?} keeps template(s) {}; delete them with template.delete first",
                templates.join(", ")
            )));
        }
        let kept = self.made.clone();
        self.made.retain(|s| s.name != name);
        if let Err(e) = self.save() {
            self.made = kept;
            return Err(e);
        }
        if let Some(pool) = self.pools.remove(name) {
            pool.release();
        }
        Ok(())
    }

    pub fn list_pools(&self) -> Vec<PoolInfo> {
        self.pools
            .values()
            .filter_map(|p| p.info().ok())
            .map(|i| self.with_held(i))
            .collect()
    }

    pub fn pool_info(&self, name: &str) -> Result<PoolInfo, StoreError> {
        Ok(self.with_held(self.pool(name)?.info()?))
    }

    fn with_held(&self, mut info: PoolInfo) -> PoolInfo {
        if let Some(guests) = self.held.get(&info.name)
            && !guests.is_empty()
        {
            info.warnings.push(format!(
                "critical: paused until the pool has room: {}",
                guests.join(", ")
            ));
        }
        info
    }

    /// Looks at every pool that can fill: grows those whose device grew, and says which are
    /// full and who uses them.
    pub fn watch(&mut self) -> Vec<PoolSpace> {
        let mut out = Vec::new();
        for (name, pool) in &mut self.pools {
            match pool.watch() {
                Ok(Some(full)) => {
                    let prefix = format!("{name}/");
                    let guests = self
                        .holders
                        .iter()
                        .filter(|(v, _)| v.starts_with(&prefix))
                        .flat_map(|(_, h)| h.iter().cloned())
                        // Guests only: an export's initiators wait for the space as they are.
                        .filter(|h| h.starts_with("ct:") || h.starts_with("vm:"))
                        .collect();
                    out.push(PoolSpace {
                        pool: name.clone(),
                        full,
                        guests,
                    });
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(pool = %name, error = %e, "cannot look at the pool"),
            }
        }
        out
    }

    /// Records the guests held for `pool`'s space (pool.info shows them).
    pub fn set_held(&mut self, pool: &str, guests: Vec<String>) {
        if guests.is_empty() {
            self.held.remove(pool);
        } else {
            self.held.insert(pool.to_string(), guests);
        }
    }

    pub fn create_volume(&mut self, spec: &VolumeSpec) -> Result<VolumeInfo, StoreError> {
        let v = volume_ref(&spec.volume, false)?;
        let size = model::units::parse_size(&spec.size)
            .map_err(|e| StoreError::InvalidArgs(format!("size {:?}: {e}", spec.size)))?;
        if size == 0 {
            return Err(StoreError::InvalidArgs(
                "size 0: a volume holds at least a byte".into(),
            ));
        }
        let pool = self.pool_mut(&v.pool)?;
        let info = pool.create_volume(&v.name, size, spec.full.unwrap_or(false))?;
        tracing::info!(volume = %v, size, "volume created");
        Ok(info)
    }

    pub fn delete_volume(&mut self, volume: &str) -> Result<(), StoreError> {
        let v = volume_ref(volume, false)?;
        if let Some(h) = self.holders.get(&v.to_string()) {
            return Err(StoreError::Conflict(format!(
                "volume {v} is in use by {}",
                h.iter().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        self.pool_mut(&v.pool)?.delete_volume(&v.name)?;
        tracing::info!(volume = %v, "volume deleted");
        Ok(())
    }

    pub fn list_volumes(&self, pool: &str) -> Result<Vec<VolumeInfo>, StoreError> {
        let pools: Vec<&dyn Backend> = if pool.is_empty() {
            self.pools.values().map(|p| p.as_ref()).collect()
        } else {
            vec![self.pool(pool)?]
        };
        Ok(pools
            .into_iter()
            .flat_map(|p| {
                p.volume_names()
                    .into_iter()
                    .filter_map(|n| p.volume(&n).ok())
                    .collect::<Vec<_>>()
            })
            .map(|v| self.held(v))
            .collect())
    }

    pub fn volume_info(&self, volume: &str) -> Result<VolumeInfo, StoreError> {
        let v = volume_ref(volume, false)?;
        Ok(self.held(self.pool(&v.pool)?.volume(&v.name)?))
    }

    pub fn grow_volume(&mut self, volume: &str, size: &str) -> Result<VolumeInfo, StoreError> {
        let v = volume_ref(volume, false)?;
        let bytes = model::units::parse_size(size)
            .map_err(|e| StoreError::InvalidArgs(format!("size {size:?}: {e}")))?;
        self.pool_mut(&v.pool)?.grow_volume(&v.name, bytes)
    }

    pub fn snapshot_volume(
        &mut self,
        volume: &str,
        snapshot: &str,
    ) -> Result<VolumeInfo, StoreError> {
        let v = volume_ref(volume, false)?;
        if !is_name(snapshot, NAME_MAX) {
            return Err(StoreError::InvalidArgs(format!(
                "snapshot name {snapshot:?} is not [a-z0-9][a-z0-9-]* of at most {NAME_MAX}"
            )));
        }
        let (info, how) = self.pool_mut(&v.pool)?.snapshot(&v.name, snapshot)?;
        tracing::info!(volume = %v, snapshot, how, "snapshot taken");
        Ok(info)
    }

    /// Deletes `snapshot`, POOL/NAME@SNAP. Clones made from it stay: they are volumes of their
    /// own (a copy, or in a thin pool blocks shared with no snapshot needed).
    pub fn delete_snapshot(&mut self, snapshot: &str) -> Result<VolumeInfo, StoreError> {
        let v = volume_ref(snapshot, true)?;
        let snap = v.snapshot.clone().ok_or_else(|| {
            StoreError::InvalidArgs(format!("{snapshot:?} names no snapshot (POOL/NAME@SNAP)"))
        })?;
        let pool = self.pool_mut(&v.pool)?;
        pool.delete_snapshot(&v.name, &snap)?;
        let info = pool.volume(&v.name)?;
        tracing::info!(snapshot, "snapshot deleted");
        Ok(self.held(info))
    }

    pub fn clone_volume(&mut self, source: &str, volume: &str) -> Result<VolumeInfo, StoreError> {
        let from = volume_ref(source, true)?;
        let to = volume_ref(volume, false)?;
        if from.pool != to.pool {
            return Err(StoreError::InvalidArgs(format!(
                "a clone stays in its source's pool: {source} is in {:?}, {volume} in {:?}",
                from.pool, to.pool
            )));
        }
        let (info, how) = self
            .pool_mut(&to.pool)?
            .clone_volume((&from.name, from.snapshot.as_deref()), &to.name)?;
        tracing::info!(%from, %to, how, "volume cloned");
        Ok(info)
    }
}

impl Pools {
    /// The guests using `volume`, which a backup holds still for its snapshot; checks that
    /// the volume and the target pool are there first.
    pub fn backup_holders(&self, volume: &str, pool: &str) -> Result<Vec<String>, StoreError> {
        let v = volume_ref(volume, false)?;
        self.pool(&v.pool)?.volume(&v.name)?;
        self.pool(pool)?;
        Ok(self
            .holders
            .get(&v.to_string())
            .map(|h| h.iter().cloned().collect())
            .unwrap_or_default())
    }

    pub fn backup_snapshot(&mut self, volume: &str) -> Result<PathBuf, StoreError> {
        let v = volume_ref(volume, false)?;
        self.pool_mut(&v.pool)?.backup_snapshot(&v.name)
    }

    /// Where a backup of `volume` into `pool` goes: the pool's backups directory.
    pub fn backup_target(&self, volume: &str, pool: &str) -> Result<PathBuf, StoreError> {
        let v = volume_ref(volume, false)?;
        self.pool(pool)?.backups_dir().ok_or_else(|| {
            StoreError::Conflict(format!(
                "pool {pool:?} holds no files: back {v} up into a dir or nfs pool"
            ))
        })
    }

    /// Drops the snapshot a backup of `volume` copied from (also when the copy failed).
    pub fn drop_backup_snapshot(&mut self, volume: &str, snapshot: &Path) {
        if let Ok(v) = volume_ref(volume, false)
            && let Ok(from) = self.pool_mut(&v.pool)
        {
            from.drop_backup_snapshot(snapshot);
        }
    }

    /// `backup` as the file it names, when that is a file in a pool's backups directory.
    fn backup_file(&self, backup: &str) -> Result<PathBuf, StoreError> {
        let file = Path::new(backup)
            .canonicalize()
            .map_err(|e| StoreError::NotFound(format!("backup {backup}: {e}")))?;
        let in_a_pool = self.pools.values().any(|p| {
            p.backups_dir()
                .and_then(|d| d.canonicalize().ok())
                .is_some_and(|dir| file.parent() == Some(dir.as_path()))
        });
        if !in_a_pool || !file.is_file() || file.extension().is_some_and(|e| e == "sha256") {
            return Err(StoreError::InvalidArgs(format!(
                "{backup} is not a backup (a file in a pool's backups/ directory)"
            )));
        }
        Ok(file)
    }

    /// Deletes `backup` (a file volume.backup made) and the sha256 beside it.
    pub fn delete_backup(&mut self, backup: &str) -> Result<(), StoreError> {
        let file = self.backup_file(backup)?;
        let sidecar = PathBuf::from(format!("{}.sha256", file.display()));
        std::fs::remove_file(&file)
            .map_err(|e| StoreError::Failed(format!("deleting {}: {e}", file.display())))?;
        let _ = std::fs::remove_file(&sidecar);
        tracing::info!(backup = %file.display(), "backup deleted");
        Ok(())
    }

    /// Makes `volume` from `backup`, a file in a pool's backups whose sha256 still matches.
    pub fn restore(&mut self, backup: &str, volume: &str) -> Result<VolumeInfo, StoreError> {
        let v = volume_ref(volume, false)?;
        self.pool(&v.pool)?;
        let file = self.backup_file(backup)?;
        let sidecar = PathBuf::from(format!("{}.sha256", file.display()));
        let want = std::fs::read_to_string(&sidecar)
            .ok()
            .and_then(|t| t.split_whitespace().next().map(str::to_string))
            .ok_or_else(|| {
                StoreError::InvalidArgs(format!(
                    "{backup} has no sha256 beside it ({})",
                    sidecar.display()
                ))
            })?;
        let got = files::sha256(&file).map_err(|e| StoreError::Failed(format!("{backup}: {e}")))?;
        if got != want {
            return Err(StoreError::InvalidArgs(format!(
                "{backup} is damaged: its sha256 is {got}, not the {want} recorded when it was made"
            )));
        }
        let info = self.pool_mut(&v.pool)?.restore(&file, &v.name)?;
        tracing::info!(volume = %v, backup, "volume restored");
        Ok(self.held(info))
    }

    /// Makes `volume` from `image`, the absolute path of a raw disk image on the host (an
    /// upload), which stays where it is.
    pub fn import(&mut self, image: &str, volume: &str) -> Result<VolumeInfo, StoreError> {
        let v = volume_ref(volume, false)?;
        self.pool(&v.pool)?;
        let path = Path::new(image);
        if !path.is_absolute() {
            return Err(StoreError::InvalidArgs(format!(
                "{image:?} is not an absolute path"
            )));
        }
        let meta = std::fs::metadata(path)
            .map_err(|e| StoreError::NotFound(format!("no image {image}: {e}")))?;
        if !meta.is_file() {
            return Err(StoreError::InvalidArgs(format!(
                "{image} is not a regular file"
            )));
        }
        files::check_raw_image(path, meta.len()).map_err(|why| {
            StoreError::InvalidArgs(format!("cannot import {image} as {v}: {why}"))
        })?;
        let info = self.pool_mut(&v.pool)?.restore(path, &v.name)?;
        tracing::info!(volume = %v, image, size = meta.len(), "volume imported");
        Ok(self.held(info))
    }
}

#[cfg(test)]
mod tests;

/// The templates hostd keeps in the pool at `location` (none for a pool of block devices).
fn templates_in(location: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(location.join(model::ct::POOL_TEMPLATES_DIR))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    names
}
