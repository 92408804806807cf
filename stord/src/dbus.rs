//! `org.cairn.Storage1`: stord's pools and volumes, for apid, hostd and tests. Structured
//! arguments and answers are JSON of `model::storage`'s types (the contract in `model::dbus`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use model::dbus::{CairnError, Host1Proxy, StatusTuple};
use model::storage::{CopyProgress, PoolSpec};
use serde::Serialize;
use serde::de::DeserializeOwned;
use zbus::object_server::SignalEmitter;

use crate::export::Exports;
use crate::pool::{Pools, StoreError};

pub struct Storage1 {
    /// One request at a time: a volume made beside a pool's deletion, or two volumes each
    /// checked against the overcommit limit without the other, would get past the checks.
    pools: Arc<Mutex<Pools>>,
    /// Taken before `pools` (an export holds its volume), never after.
    exports: Arc<Mutex<Exports>>,
    /// The backups being copied, by volume: volume.info shows how far each has come. The
    /// copy runs without `pools`' lock, so the rest of the API answers meanwhile.
    copies: Arc<Mutex<BTreeMap<String, CopyProgress>>>,
}

fn parse<T: DeserializeOwned>(arg: &str, json: &str) -> Result<T, CairnError> {
    serde_json::from_str(json).map_err(|e| CairnError::InvalidArgs(format!("{arg}: {e}")))
}

fn to_json<T: Serialize>(t: &T) -> Result<String, CairnError> {
    serde_json::to_string(t).map_err(|e| CairnError::Failed(e.to_string()))
}

impl Storage1 {
    /// Copies a backup's snapshot into `dir` off the bus's thread and without the pools'
    /// lock, with its progress in `copies` for volume.info.
    async fn copy_backup(
        &self,
        dir: std::path::PathBuf,
        snapshot: std::path::PathBuf,
        volume: String,
    ) -> Result<model::storage::BackupInfo, CairnError> {
        let of =
            model::storage::VolumeRef::parse(&volume, false).map_err(CairnError::InvalidArgs)?;
        let total = {
            let mut f = std::fs::File::open(&snapshot)
                .map_err(|e| CairnError::Failed(format!("{}: {e}", snapshot.display())))?;
            std::io::Seek::seek(&mut f, std::io::SeekFrom::End(0))
                .map_err(|e| CairnError::Failed(format!("{}: {e}", snapshot.display())))?
        };
        let copies = self.copies.clone();
        let set = move |done: u64| {
            copies.lock().unwrap_or_else(|e| e.into_inner()).insert(
                volume.clone(),
                CopyProgress {
                    what: "backup".into(),
                    done_bytes: done,
                    total_bytes: total,
                },
            );
        };
        set(0);
        let key = of.to_string();
        let result = tokio::task::spawn_blocking(move || {
            crate::pool::store_backup(&dir, &snapshot, &of, &set)
        })
        .await;
        self.copies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        result
            .map_err(|e| CairnError::Failed(format!("stord: {e}")))?
            .map_err(CairnError::from)
    }

    pub fn new(pools: Arc<Mutex<Pools>>, exports: Arc<Mutex<Exports>>) -> Storage1 {
        Storage1 {
            pools,
            exports,
            copies: Arc::default(),
        }
    }

    /// Runs `op` on the exports and the pools off the bus's thread (configfs writes block).
    async fn with_exports<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut Exports, &mut Pools) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, CairnError> {
        let (exports, pools) = (self.exports.clone(), self.pools.clone());
        tokio::task::spawn_blocking(move || {
            let mut exports = exports.lock().unwrap_or_else(|e| e.into_inner());
            let mut pools = pools.lock().unwrap_or_else(|e| e.into_inner());
            op(&mut exports, &mut pools).map_err(CairnError::from)
        })
        .await
        .map_err(|e| CairnError::Failed(format!("stord: {e}")))?
    }

    /// Runs `op` on the pools off the bus's thread (file copies and syncs block).
    async fn with<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut Pools) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, CairnError> {
        let pools = self.pools.clone();
        tokio::task::spawn_blocking(move || {
            let mut pools = pools.lock().unwrap_or_else(|e| e.into_inner());
            op(&mut pools).map_err(CairnError::from)
        })
        .await
        .map_err(|e| CairnError::Failed(format!("stord: {e}")))?
    }

    async fn changed(&self, emitter: &SignalEmitter<'_>) {
        if let Err(e) = self.counts_changed(emitter).await {
            tracing::debug!(error = %e, "cannot signal the new counts");
        }
    }
}

#[zbus::interface(name = "org.cairn.Storage1")]
impl Storage1 {
    /// Version and counts of the pools and volumes this daemon manages.
    async fn status(&self) -> StatusTuple {
        (model::VERSION.to_string(), self.counts().await)
    }

    /// A thin pool filled (`full`: its writes wait, `guests` were held) or has room again
    /// (`guests` went on).
    #[zbus(signal)]
    pub async fn pool_space(
        emitter: &SignalEmitter<'_>,
        pool: &str,
        full: bool,
        guests: &[String],
    ) -> zbus::Result<()>;

    #[zbus(property)]
    async fn counts(&self) -> HashMap<String, u32> {
        let (pools, volumes) = self.with(|p| Ok(p.counts())).await.unwrap_or((0, 0));
        HashMap::from([
            ("pools".to_string(), pools),
            ("volumes".to_string(), volumes),
        ])
    }

    async fn create_pool(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        spec_json: &str,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<String, CairnError> {
        let spec: PoolSpec = parse("spec", spec_json)?;
        if crate::pool::kernel::needs_modules(spec.kind) {
            crate::pool::kernel::load_modules(conn, spec.kind).await;
        }
        let info = self.with(move |p| p.create_pool(spec)).await?;
        self.changed(&emitter).await;
        to_json(&info)
    }

    async fn delete_pool(
        &self,
        name: String,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<(), CairnError> {
        self.with(move |p| p.delete_pool(&name)).await?;
        self.changed(&emitter).await;
        Ok(())
    }

    async fn list_pools(&self) -> Result<String, CairnError> {
        to_json(&self.with(|p| Ok(p.list_pools())).await?)
    }

    async fn pool_info(&self, name: String) -> Result<String, CairnError> {
        to_json(&self.with(move |p| p.pool_info(&name)).await?)
    }

    async fn create_volume(
        &self,
        spec_json: &str,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<String, CairnError> {
        let spec = parse("spec", spec_json)?;
        let info = self.with(move |p| p.create_volume(&spec)).await?;
        self.changed(&emitter).await;
        to_json(&info)
    }

    async fn delete_volume(
        &self,
        volume: String,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<(), CairnError> {
        self.with(move |p| p.delete_volume(&volume)).await?;
        self.changed(&emitter).await;
        Ok(())
    }

    async fn list_volumes(&self, pool: String) -> Result<String, CairnError> {
        to_json(&self.with(move |p| p.list_volumes(&pool)).await?)
    }

    async fn volume_info(&self, volume: String) -> Result<String, CairnError> {
        let mut info = self.with(move |p| p.volume_info(&volume)).await?;
        info.copy = self
            .copies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&info.volume)
            .cloned();
        to_json(&info)
    }

    async fn grow_volume(&self, volume: String, size: String) -> Result<String, CairnError> {
        to_json(&self.with(move |p| p.grow_volume(&volume, &size)).await?)
    }

    async fn snapshot_volume(
        &self,
        volume: String,
        snapshot: String,
    ) -> Result<String, CairnError> {
        to_json(
            &self
                .with(move |p| p.snapshot_volume(&volume, &snapshot))
                .await?,
        )
    }

    /// A live backup: the volume's guests held still (hostd's Quiesce) only while the
    /// snapshot is taken, then the copy, hashed, into the target pool.
    async fn backup_volume(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        volume: String,
        pool: String,
    ) -> Result<String, CairnError> {
        let holders = {
            let (v, p) = (volume.clone(), pool.clone());
            self.with(move |pools| pools.backup_holders(&v, &p)).await?
        };
        let host = if holders.is_empty() {
            None
        } else {
            Some(
                Host1Proxy::new(conn)
                    .await
                    .map_err(|e| CairnError::Failed(format!("hostd: {e}")))?,
            )
        };
        let started = std::time::Instant::now();
        let mut held = Vec::new();
        let mut quiesced = Vec::new();
        let mut failed = None;
        if let Some(host) = &host {
            for h in &holders {
                match host.quiesce(h, true).await {
                    Ok(stilled) => {
                        held.push(h.clone());
                        if stilled {
                            quiesced.push(h.clone());
                        }
                    }
                    Err(e) => {
                        failed = Some(CairnError::Failed(format!("holding {h} still: {e}")));
                        break;
                    }
                }
            }
        }
        let snapshot = match failed {
            Some(e) => Err(e),
            None => {
                let v = volume.clone();
                self.with(move |pools| pools.backup_snapshot(&v)).await
            }
        };
        // Always let them go on, whatever happened.
        if let Some(host) = &host {
            for h in &held {
                if let Err(e) = host.quiesce(h, false).await {
                    tracing::error!(holder = %h, error = %e, "cannot let a guest go on after a snapshot");
                }
            }
        }
        let quiesced_ms = started.elapsed().as_millis() as u64;
        let snapshot = snapshot?;
        let target = {
            let (v, p) = (volume.clone(), pool.clone());
            self.with(move |pools| pools.backup_target(&v, &p)).await
        };
        let stored = match target {
            Ok(dir) => {
                self.copy_backup(dir, snapshot.clone(), volume.clone())
                    .await
            }
            Err(e) => Err(e),
        };
        {
            let v = volume.clone();
            self.with(move |pools| {
                pools.drop_backup_snapshot(&v, &snapshot);
                Ok(())
            })
            .await?;
        }
        let mut info = stored?;
        tracing::info!(volume = %volume, backup = %info.backup, sha256 = %info.sha256, "backup stored");
        info.quiesced = quiesced;
        info.quiesced_ms = quiesced_ms;
        to_json(&info)
    }

    async fn restore_volume(
        &self,
        backup: String,
        volume: String,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<String, CairnError> {
        let info = self.with(move |p| p.restore(&backup, &volume)).await?;
        self.changed(&emitter).await;
        to_json(&info)
    }

    async fn import_volume(
        &self,
        image: String,
        volume: String,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<String, CairnError> {
        let info = self.with(move |p| p.import(&image, &volume)).await?;
        self.changed(&emitter).await;
        to_json(&info)
    }

    async fn delete_snapshot(
        &self,
        snapshot: String,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<String, CairnError> {
        let info = self.with(move |p| p.delete_snapshot(&snapshot)).await?;
        self.changed(&emitter).await;
        to_json(&info)
    }

    async fn delete_backup(&self, backup: String) -> Result<(), CairnError> {
        self.with(move |p| p.delete_backup(&backup)).await
    }

    async fn open_volume(&self, volume: String, holder: String) -> Result<String, CairnError> {
        to_json(&self.with(move |p| p.open_volume(&volume, &holder)).await?)
    }

    async fn release_volume(&self, volume: String, holder: String) -> Result<(), CairnError> {
        self.with(move |p| p.release_volume(&volume, &holder)).await
    }

    async fn keep_holders(
        &self,
        prefix: String,
        holders: Vec<String>,
    ) -> Result<Vec<String>, CairnError> {
        self.with(move |p| p.keep_holders(&prefix, &holders)).await
    }

    async fn clone_volume(
        &self,
        source: String,
        volume: String,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<String, CairnError> {
        let info = self.with(move |p| p.clone_volume(&source, &volume)).await?;
        self.changed(&emitter).await;
        to_json(&info)
    }

    /// Exports a volume as an iSCSI LUN (JSON `model::export::ExportSpec`); JSON `ExportInfo`.
    async fn create_export(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        spec_json: &str,
    ) -> Result<String, CairnError> {
        let spec: model::export::ExportSpec = parse("spec", spec_json)?;
        // A bad request is told so, not that the kernel lacks the target.
        let vetted = spec.clone();
        self.with_exports(move |e, p| e.precheck(&vetted, p))
            .await?;
        let root = self
            .exports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .configfs_root();
        crate::export::prepare_kernel(conn, &root).await?;
        to_json(&self.with_exports(move |e, p| e.create(&spec, p)).await?)
    }

    async fn delete_export(&self, name: String) -> Result<(), CairnError> {
        self.with_exports(move |e, p| e.delete(&name, p)).await
    }

    async fn list_exports(&self) -> Result<String, CairnError> {
        to_json(&self.with_exports(|e, _| Ok(e.list())).await?)
    }

    async fn export_info(&self, name: String) -> Result<String, CairnError> {
        to_json(&self.with_exports(move |e, _| e.get(&name)).await?)
    }
}
