//! The pools stord serves: those host.toml declares and those made through the API (kept in
//! `STATE/pools.json`, written whole or not at all), and every volume operation, checked
//! whole before anything is made.

mod dir;
mod files;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use model::config::{HostConfig, NAME_MAX, is_name};
use model::dbus::CairnError;
use model::storage::{BackupInfo, PoolInfo, PoolKind, PoolSpec, VolumeInfo, VolumeRef, VolumeSpec};

pub use dir::DirPool;
pub use files::Copied;

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
}

impl From<StoreError> for CairnError {
    fn from(e: StoreError) -> CairnError {
        match e {
            StoreError::InvalidArgs(m) => CairnError::InvalidArgs(m),
            StoreError::NotFound(m) => CairnError::NotFound(m),
            StoreError::Conflict(m) => CairnError::Conflict(m),
            StoreError::Failed(m) => CairnError::Failed(m),
        }
    }
}

pub struct Pools {
    state: PathBuf,
    pools: BTreeMap<String, DirPool>,
    /// The API-made pools' specs, as recorded.
    made: Vec<PoolSpec>,
    holders: BTreeMap<String, BTreeSet<String>>,
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
        };
        for p in &config.pools {
            if p.kind != PoolKind::Dir {
                tracing::warn!(pool = %p.name, kind = p.kind.as_str(), "pool kind not served yet");
                continue;
            }
            let pool = DirPool {
                name: p.name.clone(),
                path: p
                    .path
                    .clone()
                    .unwrap_or_else(|| pools.default_path(&p.name)),
                overcommit: None,
                declared: true,
            };
            pools.add(pool);
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
            let pool = pools.dir_pool(&spec);
            pools.made.push(spec);
            pools.add(pool);
        }
        pools
    }

    fn add(&mut self, pool: DirPool) {
        let name = pool.name.clone();
        match DirPool::open(pool) {
            Ok(p) => {
                self.pools.insert(name, p);
            }
            Err(e) => tracing::error!(pool = %name, error = %e, "pool left out"),
        }
    }

    fn default_path(&self, name: &str) -> PathBuf {
        self.state.join("pools").join(name)
    }

    fn dir_pool(&self, spec: &PoolSpec) -> DirPool {
        DirPool {
            name: spec.name.clone(),
            path: spec
                .path
                .as_ref()
                .map_or_else(|| self.default_path(&spec.name), PathBuf::from),
            overcommit: spec.overcommit,
            declared: false,
        }
    }

    fn save(&self) -> Result<(), StoreError> {
        self.record(RECORDS, &self.made)
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

    fn pool(&self, name: &str) -> Result<&DirPool, StoreError> {
        self.pools
            .get(name)
            .ok_or_else(|| StoreError::NotFound(format!("no pool {name:?}")))
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
        if spec.kind != PoolKind::Dir {
            return Err(StoreError::Conflict(format!(
                "pool kind {} is not served yet (dir is)",
                spec.kind.as_str()
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
        let pool = self.dir_pool(&spec);
        if let Some(other) = self.pools.values().find(|p| p.path == pool.path) {
            return Err(StoreError::Conflict(format!(
                "{} is pool {:?}'s",
                pool.path.display(),
                other.name
            )));
        }
        let pool = DirPool::open(pool)?;
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
        if pool.declared {
            return Err(StoreError::Conflict(format!(
                "pool {name:?} is declared in host.toml; remove it there"
            )));
        }
        let volumes = pool.volume_names();
        if !volumes.is_empty() {
            return Err(StoreError::Conflict(format!(
                "pool {name:?} holds {} volume(s): {}",
                volumes.len(),
                volumes.join(", ")
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
        self.pools.values().filter_map(|p| p.info().ok()).collect()
    }

    pub fn pool_info(&self, name: &str) -> Result<PoolInfo, StoreError> {
        self.pool(name)?.info()
    }

    pub fn create_volume(&self, spec: &VolumeSpec) -> Result<VolumeInfo, StoreError> {
        let v = volume_ref(&spec.volume, false)?;
        let size = model::units::parse_size(&spec.size)
            .map_err(|e| StoreError::InvalidArgs(format!("size {:?}: {e}", spec.size)))?;
        if size == 0 {
            return Err(StoreError::InvalidArgs(
                "size 0: a volume holds at least a byte".into(),
            ));
        }
        let pool = self.pool(&v.pool)?;
        let info = pool.create_volume(&v.name, size, spec.full.unwrap_or(false))?;
        tracing::info!(volume = %v, size, "volume created");
        Ok(info)
    }

    pub fn delete_volume(&self, volume: &str) -> Result<(), StoreError> {
        let v = volume_ref(volume, false)?;
        if let Some(h) = self.holders.get(&v.to_string()) {
            return Err(StoreError::Conflict(format!(
                "volume {v} is in use by {}",
                h.iter().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        self.pool(&v.pool)?.delete_volume(&v.name)?;
        tracing::info!(volume = %v, "volume deleted");
        Ok(())
    }

    pub fn list_volumes(&self, pool: &str) -> Result<Vec<VolumeInfo>, StoreError> {
        let pools: Vec<&DirPool> = if pool.is_empty() {
            self.pools.values().collect()
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

    pub fn grow_volume(&self, volume: &str, size: &str) -> Result<VolumeInfo, StoreError> {
        let v = volume_ref(volume, false)?;
        let bytes = model::units::parse_size(size)
            .map_err(|e| StoreError::InvalidArgs(format!("size {size:?}: {e}")))?;
        self.pool(&v.pool)?.grow_volume(&v.name, bytes)
    }

    pub fn snapshot_volume(&self, volume: &str, snapshot: &str) -> Result<VolumeInfo, StoreError> {
        let v = volume_ref(volume, false)?;
        if !is_name(snapshot, NAME_MAX) {
            return Err(StoreError::InvalidArgs(format!(
                "snapshot name {snapshot:?} is not [a-z0-9][a-z0-9-]* of at most {NAME_MAX}"
            )));
        }
        let (info, how) = self.pool(&v.pool)?.snapshot(&v.name, snapshot)?;
        tracing::info!(volume = %v, snapshot, ?how, "snapshot taken");
        Ok(info)
    }

    pub fn clone_volume(&self, source: &str, volume: &str) -> Result<VolumeInfo, StoreError> {
        let from = volume_ref(source, true)?;
        let to = volume_ref(volume, false)?;
        if from.pool != to.pool {
            return Err(StoreError::InvalidArgs(format!(
                "a clone stays in its source's pool: {source} is in {:?}, {volume} in {:?}",
                from.pool, to.pool
            )));
        }
        let (info, how) = self
            .pool(&to.pool)?
            .clone_volume((&from.name, from.snapshot.as_deref()), &to.name)?;
        tracing::info!(%from, %to, ?how, "volume cloned");
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

    pub fn backup_snapshot(&self, volume: &str) -> Result<PathBuf, StoreError> {
        let v = volume_ref(volume, false)?;
        self.pool(&v.pool)?.backup_snapshot(&v.name)
    }

    /// Copies the snapshot into `pool`'s backups, then drops it (also when the copy fails).
    pub fn store_backup(
        &self,
        snapshot: &Path,
        volume: &str,
        pool: &str,
    ) -> Result<BackupInfo, StoreError> {
        let v = volume_ref(volume, false)?;
        let stored = self.pool(pool).and_then(|p| p.store_backup(snapshot, &v));
        let _ = std::fs::remove_file(snapshot);
        let info = stored?;
        tracing::info!(volume = %v, backup = %info.backup, sha256 = %info.sha256, "backup stored");
        Ok(info)
    }

    /// Makes `volume` from `backup`, a file in a pool's backups whose sha256 still matches.
    pub fn restore(&self, backup: &str, volume: &str) -> Result<VolumeInfo, StoreError> {
        let v = volume_ref(volume, false)?;
        let target = self.pool(&v.pool)?;
        let file = Path::new(backup)
            .canonicalize()
            .map_err(|e| StoreError::NotFound(format!("backup {backup}: {e}")))?;
        let in_a_pool = self.pools.values().any(|p| {
            p.backups_dir()
                .canonicalize()
                .is_ok_and(|dir| file.parent() == Some(dir.as_path()))
        });
        if !in_a_pool || !file.is_file() {
            return Err(StoreError::InvalidArgs(format!(
                "{backup} is not a backup (a file in a pool's backups/ directory)"
            )));
        }
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
        let info = target.restore(&file, &v.name)?;
        tracing::info!(volume = %v, backup, "volume restored");
        Ok(self.held(info))
    }
}

#[cfg(test)]
mod tests;
