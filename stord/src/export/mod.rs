//! Volumes exported as iSCSI LUNs through the kernel's LIO target (`export.*`).
//!
//! An export is recorded in `STATE/exports/records.json` (a directory only root reads: the
//! records hold the CHAP secrets the kernel needs again after a reboot) and made in the kernel
//! by `configfs`. Its volume is held (`export:NAME`) so that it is not deleted under the
//! initiators. At start the kernel and the records are made to agree: what the kernel serves
//! of Cairn's that no record names goes, what a record names that the kernel lacks (a reboot,
//! a crash halfway) is made again, and what it serves whole is left alone, sessions and all.

pub mod configfs;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{DirBuilderExt as _, FileTypeExt as _};
use std::path::{Path, PathBuf};

use model::dbus::CairnError;
use model::export::{
    DEFAULT_PORT, ExportInfo, ExportSpec, IQN_MAX, InitiatorInfo, InitiatorSpec, TARGET_IQN_PREFIX,
    check_chap, check_iqn, check_name,
};
use model::storage::{VolumeInfo, VolumeRef};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::pool::{Pools, StoreError};
use configfs::{Acl, Backstore, Configfs, Plan};

const DIR: &str = "exports";
const RECORDS: &str = "records.json";
/// The holder an export is of its volume: `export:NAME`.
pub const HOLDER_PREFIX: &str = "export:";

/// What is kept of an export: enough to make it again after a reboot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    name: String,
    volume: String,
    iqn: String,
    port: u16,
    initiators: Vec<InitiatorSpec>,
}

/// A request checked whole, before anything is made.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Checked {
    volume: VolumeRef,
    record: Record,
}

pub struct Exports {
    dir: PathBuf,
    host: String,
    configfs: Configfs,
    records: BTreeMap<String, Record>,
    /// The exports the kernel serves now (a record without one: it could not be made again).
    active: BTreeSet<String>,
    /// The records file could not be read: nothing in the kernel is taken for a leftover.
    unreadable: bool,
}

/// `iqn.2026-12.org.cairn:HOST:NAME`, the host's name folded to what an IQN takes.
pub fn target_iqn(host: &str, name: &str) -> String {
    let host: String = host
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("{TARGET_IQN_PREFIX}:{host}:{name}")
}

fn invalid(m: String) -> StoreError {
    StoreError::InvalidArgs(m)
}

/// Checks a request whole: volume, name, port, initiators (IQNs, CHAP both or neither and
/// on all of them or none, no IQN twice).
fn check(spec: &ExportSpec, host: &str) -> Result<Checked, StoreError> {
    let volume =
        VolumeRef::parse(&spec.volume, false).map_err(|e| invalid(format!("volume {e}")))?;
    let name = spec.name.clone().unwrap_or_else(|| volume.name.clone());
    check_name(&name).map_err(invalid)?;
    let port = spec.port.unwrap_or(DEFAULT_PORT);
    if port == 0 {
        return Err(invalid("port 0: give a TCP port (default 3260)".into()));
    }
    if spec.initiators.is_empty() {
        return Err(invalid(
            "initiators: none given; an export lets in only the initiators it lists".into(),
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, init) in spec.initiators.iter().enumerate() {
        let at = format!("initiators[{i}]");
        check_iqn(&init.iqn).map_err(|e| invalid(format!("{at}.iqn: {e}")))?;
        if !seen.insert(init.iqn.as_str()) {
            return Err(invalid(format!("{at}.iqn: {} is listed twice", init.iqn)));
        }
        match (&init.chap_user, &init.chap_secret) {
            (Some(u), Some(s)) => check_chap(u, s).map_err(|e| invalid(format!("{at}: {e}")))?,
            (None, None) => {}
            _ => {
                return Err(invalid(format!(
                    "{at}: chap_user and chap_secret go together (both or neither)"
                )));
            }
        }
    }
    let with_chap = spec
        .initiators
        .iter()
        .filter(|i| i.chap_user.is_some())
        .count();
    if with_chap != 0 && with_chap != spec.initiators.len() {
        // LIO enforces CHAP per target (its TPG's authentication), not per initiator.
        return Err(invalid(format!(
            "initiators: {with_chap} of {} have CHAP; give it to all of them or to none",
            spec.initiators.len()
        )));
    }
    let iqn = target_iqn(host, &name);
    if iqn.len() > IQN_MAX {
        return Err(invalid(format!(
            "the target's name {iqn} would be longer than {IQN_MAX} bytes: a shorter name"
        )));
    }
    Ok(Checked {
        record: Record {
            name,
            volume: volume.to_string(),
            iqn,
            port,
            initiators: spec.initiators.clone(),
        },
        volume,
    })
}

/// How LIO reaches a volume: a file through fileio, a block device through iblock.
fn backstore(info: &VolumeInfo) -> Result<Backstore, StoreError> {
    let path = PathBuf::from(&info.path);
    let meta = std::fs::metadata(&path)
        .map_err(|e| StoreError::Failed(format!("volume {}: {}: {e}", info.volume, info.path)))?;
    if info.path.contains([',', '\n']) {
        // LIO's control attribute separates its options with commas.
        return Err(StoreError::Failed(format!(
            "volume {}: LIO cannot take the path {:?} (a comma)",
            info.volume, info.path
        )));
    }
    if meta.file_type().is_block_device() {
        Ok(Backstore::Iblock { path })
    } else if meta.is_file() {
        Ok(Backstore::Fileio {
            path,
            size: info.size_bytes,
        })
    } else {
        Err(StoreError::Failed(format!(
            "volume {}: {} is neither a file nor a block device",
            info.volume, info.path
        )))
    }
}

fn plan(record: &Record, backstore: Backstore) -> Plan {
    let digest = sha2::Sha256::digest(record.iqn.as_bytes());
    Plan {
        name: record.name.clone(),
        backstore,
        serial: model::hex(&digest[..16]),
        iqn: record.iqn.clone(),
        port: record.port,
        acls: record
            .initiators
            .iter()
            .map(|i| Acl {
                iqn: i.iqn.clone(),
                chap: i.chap_user.clone().zip(i.chap_secret.clone()),
            })
            .collect(),
    }
}

impl Exports {
    /// The recorded exports of `state`; `host` names the targets made from now on.
    pub fn load(state: &Path, host: &str, configfs: Configfs) -> Exports {
        let dir = state.join(DIR);
        let (records, unreadable) = match std::fs::read(dir.join(RECORDS)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Vec::new(), false),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the export records: none served");
                (Vec::new(), true)
            }
            Ok(bytes) => match serde_json::from_slice::<Vec<Record>>(&bytes) {
                Ok(r) => (r, false),
                Err(e) => {
                    tracing::error!(error = %e, "export records damaged: none served");
                    (Vec::new(), true)
                }
            },
        };
        Exports {
            dir,
            host: host.to_string(),
            configfs,
            records: records.into_iter().map(|r| (r.name.clone(), r)).collect(),
            active: BTreeSet::new(),
            unreadable,
        }
    }

    pub fn configfs_root(&self) -> PathBuf {
        self.configfs.root().to_path_buf()
    }

    /// Whether anything needs the kernel's target at start.
    pub fn needs_kernel(&self) -> bool {
        !self.records.is_empty()
    }

    fn save(&self) -> Result<(), StoreError> {
        let records: Vec<&Record> = self.records.values().collect();
        let json =
            serde_json::to_vec_pretty(&records).map_err(|e| StoreError::Failed(e.to_string()))?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .and_then(|()| model::files::write_atomic(&self.dir.join(RECORDS), &json))
            .map_err(|e| StoreError::Failed(format!("recording the exports: {e}")))
    }

    fn info(&self, r: &Record, backstore: &str, thin: bool) -> ExportInfo {
        ExportInfo {
            name: r.name.clone(),
            volume: r.volume.clone(),
            iqn: r.iqn.clone(),
            portal: format!("0.0.0.0:{}", r.port),
            lun: 0,
            initiators: r
                .initiators
                .iter()
                .map(|i| InitiatorInfo {
                    iqn: i.iqn.clone(),
                    chap_user: i.chap_user.clone(),
                })
                .collect(),
            thin,
            backstore: backstore.to_string(),
            active: self.active.contains(&r.name),
        }
    }

    /// An export as the kernel has it (thin and backstore read back from it).
    fn described(&self, r: &Record) -> ExportInfo {
        let (kind, thin) = ["fileio", "iblock"]
            .into_iter()
            .find_map(|kind| {
                let object = self.configfs.object_of(&r.name, kind);
                self.configfs
                    .read_attr(&format!("{object}/enable"))
                    .map(|_| {
                        let tpu = self
                            .configfs
                            .read_attr(&format!("{object}/attrib/emulate_tpu"));
                        (kind, tpu.as_deref() == Some("1"))
                    })
            })
            .unwrap_or(("-", false));
        self.info(r, kind, thin)
    }

    pub fn list(&self) -> Vec<ExportInfo> {
        self.records.values().map(|r| self.described(r)).collect()
    }

    pub fn get(&self, name: &str) -> Result<ExportInfo, StoreError> {
        self.records
            .get(name)
            .map(|r| self.described(r))
            .ok_or_else(|| StoreError::NotFound(format!("no export {name:?}")))
    }

    /// Exports a volume: checked whole, its volume held, made in the kernel (taken down
    /// again on any failure), recorded; a failure at any step undoes the steps before it.
    /// Checks a request against the rules and what exists, changing nothing.
    pub fn precheck(&self, spec: &ExportSpec, pools: &Pools) -> Result<(), StoreError> {
        self.vet(spec, pools).map(|_| ())
    }

    fn vet(&self, spec: &ExportSpec, pools: &Pools) -> Result<(Checked, VolumeInfo), StoreError> {
        let checked = check(spec, &self.host)?;
        let (volume, record) = (&checked.volume, &checked.record);
        if self.records.contains_key(&record.name) {
            return Err(StoreError::Conflict(format!(
                "export {:?} exists",
                record.name
            )));
        }
        if let Some(other) = self.records.values().find(|r| r.volume == record.volume) {
            return Err(StoreError::Conflict(format!(
                "volume {} is exported already (as {:?})",
                record.volume, other.name
            )));
        }
        let info = pools.volume_info(&volume.to_string())?;
        if let Some(user) = info.used_by.first() {
            // Two writers that do not know of each other (a guest and an initiator)
            // would corrupt whatever filesystem the volume holds.
            return Err(StoreError::Conflict(format!(
                "volume {volume} is in use by {user}: a volume is exported only while no \
                 guest uses it"
            )));
        }
        Ok((checked, info))
    }

    pub fn create(
        &mut self,
        spec: &ExportSpec,
        pools: &mut Pools,
    ) -> Result<ExportInfo, StoreError> {
        let (Checked { volume, record }, info) = self.vet(spec, pools)?;
        if !self.configfs.present() {
            return Err(StoreError::Failed(format!(
                "the kernel's iSCSI target is not available ({} is missing)",
                self.configfs.root().display()
            )));
        }
        let backstore = backstore(&info)?;
        let kind = backstore.kind();
        let plan = plan(&record, backstore);
        let holder = format!("{HOLDER_PREFIX}{}", record.name);
        pools.open_volume(&record.volume, &holder)?;
        let thin = match self.configfs.make(&plan) {
            Ok(thin) => thin,
            Err(e) => {
                self.release(pools, &record.volume, &holder);
                return Err(StoreError::Failed(format!("exporting {volume}: {e}")));
            }
        };
        let name = record.name.clone();
        self.records.insert(name.clone(), record);
        if let Err(e) = self.save() {
            if let Some(r) = self.records.remove(&name) {
                if let Err(undo) = self
                    .configfs
                    .remove(Some(&r.iqn), Some(&self.configfs.object_of(&name, kind)))
                {
                    tracing::error!(export = %name, error = %undo, "cannot take an unrecorded export down");
                }
                self.release(pools, &r.volume, &holder);
            }
            return Err(e);
        }
        self.active.insert(name.clone());
        tracing::info!(export = %name, %volume, thin, "volume exported");
        let record = &self.records[&name];
        Ok(self.info(record, kind, thin))
    }

    fn release(&self, pools: &mut Pools, volume: &str, holder: &str) {
        if let Err(e) = pools.release_volume(volume, holder) {
            tracing::error!(volume, holder, error = %e, "cannot release a volume");
        }
    }

    /// Stops exporting `name`: the kernel's part first (a part it will not let go keeps the
    /// record, so that a retry finds it), then the record, then the volume's hold.
    pub fn delete(&mut self, name: &str, pools: &mut Pools) -> Result<(), StoreError> {
        let record = self
            .records
            .get(name)
            .cloned()
            .ok_or_else(|| StoreError::NotFound(format!("no export {name:?}")))?;
        if self.configfs.present() {
            for kind in ["fileio", "iblock"] {
                let object = self.configfs.object_of(name, kind);
                self.configfs
                    .remove(Some(&record.iqn), Some(&object))
                    .map_err(|e| StoreError::Failed(format!("taking export {name} down: {e}")))?;
            }
        }
        self.records.remove(name);
        if let Err(e) = self.save() {
            self.records.insert(name.to_string(), record);
            return Err(e);
        }
        self.active.remove(name);
        self.release(pools, &record.volume, &format!("{HOLDER_PREFIX}{name}"));
        tracing::info!(export = %name, "export deleted");
        Ok(())
    }

    /// Makes the kernel agree with the records (see the module's comment), and the volumes'
    /// holds with both.
    pub fn reconcile(&mut self, pools: &mut Pools) {
        if self.unreadable {
            return;
        }
        if !self.configfs.present() {
            if !self.records.is_empty() {
                tracing::error!(
                    root = %self.configfs.root().display(),
                    "the kernel's iSCSI target is not available: recorded exports not served"
                );
            }
            return;
        }
        let (targets, objects) = self.configfs.ours(&format!("{TARGET_IQN_PREFIX}:"));
        let mut kept_targets = BTreeSet::new();
        let mut kept_objects = BTreeSet::new();
        let records: Vec<Record> = self.records.values().cloned().collect();
        for r in &records {
            let holder = format!("{HOLDER_PREFIX}{}", r.name);
            let made = pools
                .open_volume(&r.volume, &holder)
                .and_then(|info| backstore(&info))
                .map(|b| plan(r, b));
            let plan = match made {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(export = %r.name, error = %e, "recorded export not served");
                    continue;
                }
            };
            let object = self.configfs.object_of(&r.name, plan.backstore.kind());
            kept_targets.insert(r.iqn.clone());
            kept_objects.insert(object.clone());
            if self.configfs.is_whole(&plan) {
                self.active.insert(r.name.clone());
                continue;
            }
            if let Err(e) = self.configfs.remove(Some(&r.iqn), Some(&object)) {
                tracing::error!(export = %r.name, error = %e, "cannot clear a half-made export");
            }
            match self.configfs.make(&plan) {
                Ok(thin) => {
                    tracing::info!(export = %r.name, thin, "export made again");
                    self.active.insert(r.name.clone());
                }
                Err(e) => {
                    tracing::error!(export = %r.name, error = %e, "recorded export not served")
                }
            }
        }
        for t in targets.iter().filter(|t| !kept_targets.contains(*t)) {
            tracing::info!(target = %t, "removing an iSCSI target no export names");
            if let Err(e) = self.configfs.remove(Some(t), None) {
                tracing::error!(target = %t, error = %e, "cannot remove a leftover target");
            }
        }
        for o in objects.iter().filter(|o| !kept_objects.contains(*o)) {
            tracing::info!(object = %o, "removing a backstore no export names");
            if let Err(e) = self.configfs.remove(None, Some(o)) {
                tracing::error!(object = %o, error = %e, "cannot remove a leftover backstore");
            }
        }
        let holders: Vec<String> = self
            .records
            .keys()
            .map(|n| format!("{HOLDER_PREFIX}{n}"))
            .collect();
        match pools.keep_holders(HOLDER_PREFIX, &holders) {
            Ok(gone) if !gone.is_empty() => tracing::info!(?gone, "stale export holds released"),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "cannot release stale export holds"),
        }
    }
}

/// Set once init loaded the `storage` group: a second load is a no-op, but a call to init.
static MODULES_LOADED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Readies the kernel's target: the `storage` module group loaded by init (daemons do not
/// load modules; the iSCSI fabric's module too, which target_core_mod alone does not bring)
/// and configfs mounted.
pub async fn prepare_kernel(conn: &zbus::Connection, root: &Path) -> Result<(), StoreError> {
    use std::sync::atomic::Ordering;
    if root != Path::new(configfs::KERNEL_ROOT) {
        // A simulated tree (tests): nothing to load.
        return if root.is_dir() {
            Ok(())
        } else {
            Err(StoreError::Failed(format!("{} is missing", root.display())))
        };
    }
    if MODULES_LOADED.load(Ordering::Relaxed) && root.is_dir() {
        return Ok(());
    }
    let init = model::dbus::Init1Proxy::new(conn)
        .await
        .map_err(|e| StoreError::Failed(format!("init: {e}")))?;
    let failed = match init.load_modules("storage").await {
        Ok(failed) => {
            MODULES_LOADED.store(true, Ordering::Relaxed);
            failed
        }
        // A kernel with LIO built in, or a dev box: what is there is used.
        Err(CairnError::NotFound(_)) if root.is_dir() => return Ok(()),
        Err(e) => {
            return Err(StoreError::Failed(format!(
                "the kernel's iSCSI target is not available: loading the storage modules: {e}"
            )));
        }
    };
    // configfs is a module in Debian's kernel: it can be mounted only now that it is loaded.
    let config = Path::new("/sys/kernel/config");
    if config.is_dir() && !root.is_dir() {
        match nix::mount::mount(
            Some("configfs"),
            config,
            Some("configfs"),
            nix::mount::MsFlags::MS_NOSUID
                | nix::mount::MsFlags::MS_NODEV
                | nix::mount::MsFlags::MS_NOEXEC,
            None::<&str>,
        ) {
            Ok(()) => tracing::info!("configfs mounted on /sys/kernel/config"),
            Err(nix::errno::Errno::EBUSY) => {}
            Err(e) => tracing::warn!(error = %e, "cannot mount configfs"),
        }
    }
    if root.is_dir() {
        Ok(())
    } else {
        Err(StoreError::Failed(format!(
            "the kernel's iSCSI target is not available ({} is missing){}",
            root.display(),
            if failed.is_empty() {
                String::new()
            } else {
                format!("; modules that failed: {}", failed.join("; "))
            }
        )))
    }
}

#[cfg(test)]
mod tests;
