//! `pool.*` and `volume.*`: storage pools and volumes, served by stord.

use model::api::storage::{
    ExportCreate, ExportDelete, ExportInfoOf, ExportList, PoolCreate, PoolDelete, PoolInfoOf,
    PoolList, VolumeBackup, VolumeClone, VolumeCreate, VolumeDelete, VolumeDeleteBackup,
    VolumeDeleteSnapshot, VolumeGrow, VolumeImport, VolumeInfoOf, VolumeList, VolumeRestore,
    VolumeSnapshot,
};
use model::dbus::Storage1Proxy;
use model::export::ExportInfo;
use model::storage::{BackupInfo, PoolInfo, VolumeInfo};
use std::time::Duration;

use super::{Api, Fault, Method, Serve, answer, json, method};

pub fn methods() -> Vec<Method> {
    vec![
        method::<PoolCreate>(),
        method::<PoolDelete>(),
        method::<PoolList>(),
        method::<PoolInfoOf>(),
        method::<VolumeCreate>(),
        method::<VolumeDelete>(),
        method::<VolumeList>(),
        method::<VolumeInfoOf>(),
        method::<VolumeGrow>(),
        method::<VolumeSnapshot>(),
        method::<VolumeClone>(),
        method::<VolumeBackup>(),
        method::<VolumeRestore>(),
        method::<VolumeDeleteSnapshot>(),
        method::<VolumeImport>(),
        method::<VolumeDeleteBackup>(),
        method::<ExportCreate>(),
        method::<ExportDelete>(),
        method::<ExportList>(),
        method::<ExportInfoOf>(),
    ]
}

/// Making or deleting an nfs or iscsi pool talks to a NAS or SAN (stord bounds each step:
/// a probe, the mount or the logins) and may load the storage modules first: more than
/// CALL_TIMEOUT, less than a request's 30 s.
const POOL_TIMEOUT: Duration = Duration::from_secs(28);

impl Serve for PoolCreate {
    async fn serve(self, api: &Api) -> Result<PoolInfo, Fault> {
        let spec = json(&self.spec)?;
        let info = api
            .bus
            .daemon_call(
                "stord",
                POOL_TIMEOUT,
                |s: Storage1Proxy<'static>| async move { s.create_pool(&spec).await },
            )
            .await?;
        answer("stord", &info)
    }
}

impl Serve for PoolDelete {
    async fn serve(self, api: &Api) -> Result<bool, Fault> {
        api.bus
            .daemon_call(
                "stord",
                POOL_TIMEOUT,
                |s: Storage1Proxy<'static>| async move { s.delete_pool(&self.name).await },
            )
            .await?;
        Ok(true)
    }
}

impl Serve for PoolList {
    async fn serve(self, api: &Api) -> Result<Vec<PoolInfo>, Fault> {
        let list = api
            .bus
            .stord_call(|s| async move { s.list_pools().await })
            .await?;
        answer("stord", &list)
    }
}

impl Serve for PoolInfoOf {
    async fn serve(self, api: &Api) -> Result<PoolInfo, Fault> {
        let info = api
            .bus
            .stord_call(|s| async move { s.pool_info(&self.name).await })
            .await?;
        answer("stord", &info)
    }
}

impl Serve for VolumeCreate {
    async fn serve(self, api: &Api) -> Result<VolumeInfo, Fault> {
        let spec = json(&self.spec)?;
        let info = api
            .bus
            .stord_call(|s| async move { s.create_volume(&spec).await })
            .await?;
        answer("stord", &info)
    }
}

impl Serve for VolumeDelete {
    async fn serve(self, api: &Api) -> Result<bool, Fault> {
        api.bus
            .stord_call(|s| async move { s.delete_volume(&self.volume).await })
            .await?;
        Ok(true)
    }
}

impl Serve for VolumeList {
    async fn serve(self, api: &Api) -> Result<Vec<VolumeInfo>, Fault> {
        let pool = self.pool.unwrap_or_default();
        let list = api
            .bus
            .stord_call(|s| async move { s.list_volumes(&pool).await })
            .await?;
        answer("stord", &list)
    }
}

impl Serve for VolumeInfoOf {
    async fn serve(self, api: &Api) -> Result<VolumeInfo, Fault> {
        let info = api
            .bus
            .stord_call(|s| async move { s.volume_info(&self.volume).await })
            .await?;
        answer("stord", &info)
    }
}

impl Serve for VolumeGrow {
    async fn serve(self, api: &Api) -> Result<VolumeInfo, Fault> {
        let info = api
            .bus
            .stord_call(|s| async move { s.grow_volume(&self.volume, &self.size).await })
            .await?;
        answer("stord", &info)
    }
}

impl Serve for VolumeSnapshot {
    async fn serve(self, api: &Api) -> Result<VolumeInfo, Fault> {
        let info = api
            .bus
            .stord_call(|s| async move { s.snapshot_volume(&self.volume, &self.snapshot).await })
            .await?;
        answer("stord", &info)
    }
}

impl Serve for VolumeClone {
    async fn serve(self, api: &Api) -> Result<VolumeInfo, Fault> {
        let info = api
            .bus
            .stord_call(|s| async move { s.clone_volume(&self.source, &self.volume).await })
            .await?;
        answer("stord", &info)
    }
}

/// A backup or a restore copies a whole volume (volume.info shows a backup's progress
/// meanwhile): as long as a request may take. Longer copies wait for tasks (issue 13).
const COPY_TIMEOUT: Duration = POOL_TIMEOUT;

impl Serve for VolumeBackup {
    async fn serve(self, api: &Api) -> Result<BackupInfo, Fault> {
        let volume = self.volume.clone();
        let backup =
            api.bus.daemon_call(
                "stord",
                COPY_TIMEOUT,
                |s: Storage1Proxy<'static>| async move {
                    s.backup_volume(&self.volume, &self.pool).await
                },
            );
        let info = match crate::task::current() {
            None => backup.await?,
            // In a task, the copy's progress (volume.info's copy) becomes the task's.
            Some(task) => tokio::select! {
                info = backup => info?,
                () = copy_progress(api, &volume, &task) => unreachable!("reports until the copy ends"),
            },
        };
        answer("stord", &info)
    }
}

/// Follows a backup's copy of `volume` into the task's progress, until dropped.
async fn copy_progress(api: &Api, volume: &str, task: &crate::task::Ctx) {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let info = api
            .bus
            .stord_call(|s| async move { s.volume_info(volume).await })
            .await;
        if let Some(copy) = info
            .ok()
            .and_then(|i| serde_json::from_str::<VolumeInfo>(&i).ok())
            .and_then(|i| i.copy)
        {
            task.progress(copy.done_bytes, copy.total_bytes, "bytes");
        }
    }
}

impl Serve for VolumeDeleteBackup {
    async fn serve(self, api: &Api) -> Result<bool, Fault> {
        api.bus
            .stord_call(|s| async move { s.delete_backup(&self.backup).await })
            .await?;
        Ok(true)
    }
}

impl Serve for VolumeRestore {
    async fn serve(self, api: &Api) -> Result<VolumeInfo, Fault> {
        let info = api
            .bus
            .daemon_call(
                "stord",
                COPY_TIMEOUT,
                |s: Storage1Proxy<'static>| async move {
                    s.restore_volume(&self.backup, &self.volume).await
                },
            )
            .await?;
        answer("stord", &info)
    }
}

impl Serve for VolumeDeleteSnapshot {
    async fn serve(self, api: &Api) -> Result<VolumeInfo, Fault> {
        let info = api
            .bus
            .stord_call(|s| async move { s.delete_snapshot(&self.snapshot).await })
            .await?;
        answer("stord", &info)
    }
}

impl Serve for VolumeImport {
    async fn serve(self, api: &Api) -> Result<VolumeInfo, Fault> {
        if !self.source.starts_with(crate::upload::SCHEME) {
            return Err(Fault::bad_params(format!(
                "volume.import: source {:?} must be upload:NAME (a raw image sent with PUT /uploads/NAME)",
                self.source
            )));
        }
        let image = crate::upload::host_path(api.uploads.as_deref(), &self.source)?;
        let path = image.clone();
        let info =
            api.bus
                .daemon_call(
                    "stord",
                    COPY_TIMEOUT,
                    |s: Storage1Proxy<'static>| async move {
                        s.import_volume(&path, &self.volume).await
                    },
                )
                .await?;
        crate::upload::consume(&image);
        answer("stord", &info)
    }
}

/// The first export loads the storage modules (LIO among them: ~6 s under TCG) and mounts
/// configfs before its configfs writes.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(28);

impl Serve for ExportCreate {
    async fn serve(self, api: &Api) -> Result<ExportInfo, Fault> {
        let spec = json(&self.spec)?;
        let info = api
            .bus
            .daemon_call(
                "stord",
                EXPORT_TIMEOUT,
                |s: Storage1Proxy<'static>| async move { s.create_export(&spec).await },
            )
            .await?;
        answer("stord", &info)
    }
}

impl Serve for ExportDelete {
    async fn serve(self, api: &Api) -> Result<bool, Fault> {
        api.bus
            .stord_call(|s| async move { s.delete_export(&self.name).await })
            .await?;
        Ok(true)
    }
}

impl Serve for ExportList {
    async fn serve(self, api: &Api) -> Result<Vec<ExportInfo>, Fault> {
        let list = api
            .bus
            .stord_call(|s| async move { s.list_exports().await })
            .await?;
        answer("stord", &list)
    }
}

impl Serve for ExportInfoOf {
    async fn serve(self, api: &Api) -> Result<ExportInfo, Fault> {
        let info = api
            .bus
            .stord_call(|s| async move { s.export_info(&self.name).await })
            .await?;
        answer("stord", &info)
    }
}
