//! hostd as stord's client: the volumes VMs' disks live on. A VM holds its volumes from
//! vm.create to vm.delete (stord refuses to delete a volume in use); stord's verdicts come
//! back as [`HostError::Peer`], their kind kept.

use model::dbus::{CairnError, Storage1Proxy};
use model::storage::{PoolInfo, VolumeInfo};

use crate::error::{HostError, HostResult};

async fn proxy(bus: Option<&zbus::Connection>) -> HostResult<Storage1Proxy<'_>> {
    let Some(bus) = bus else {
        return Err(HostError::Failed("no bus connection to stord".into()));
    };
    Storage1Proxy::new(bus)
        .await
        .map_err(|e| HostError::Failed(format!("stord: {e}")))
}

fn parse(json: &str) -> HostResult<VolumeInfo> {
    serde_json::from_str(json).map_err(|e| HostError::Failed(format!("stord's VolumeInfo: {e}")))
}

/// The volume, or None when stord has none of that name.
pub async fn volume(
    bus: Option<&zbus::Connection>,
    volume: &str,
) -> HostResult<Option<VolumeInfo>> {
    match proxy(bus).await?.volume_info(volume).await {
        Ok(json) => parse(&json).map(Some),
        Err(CairnError::NotFound(_)) => Ok(None),
        Err(e) => Err(HostError::peer(format_args!("volume {volume}"))(e)),
    }
}

/// The pool of that name, as stord describes it (its kind and directory).
pub async fn pool(bus: Option<&zbus::Connection>, pool: &str) -> HostResult<PoolInfo> {
    let json = proxy(bus)
        .await?
        .pool_info(pool)
        .await
        .map_err(HostError::peer(format_args!("pool {pool}")))?;
    serde_json::from_str(&json).map_err(|e| HostError::Failed(format!("stord's PoolInfo: {e}")))
}

/// `holder` uses `volume` from now on; returns the volume (its path is what the VMM opens).
pub async fn open(
    bus: Option<&zbus::Connection>,
    volume: &str,
    holder: &str,
) -> HostResult<VolumeInfo> {
    let json = proxy(bus)
        .await?
        .open_volume(volume, holder)
        .await
        .map_err(HostError::peer(format_args!("volume {volume}")))?;
    parse(&json)
}

/// `holder` no longer uses `volume`; a failure is logged (stord's keep_holders at the next
/// hostd start catches what is left).
pub async fn release(bus: Option<&zbus::Connection>, volume: &str, holder: &str) {
    let released = match proxy(bus).await {
        Ok(p) => p
            .release_volume(volume, holder)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = released {
        tracing::warn!(volume, holder, error = %e, "cannot release the volume");
    }
}

/// Tells stord which guests of a kind (`prefix`: `vm:`, `ct:`) exist: the holds of every
/// other one are released.
pub async fn keep_holders(
    bus: Option<&zbus::Connection>,
    prefix: &str,
    holders: &[String],
) -> HostResult<Vec<String>> {
    let holders: Vec<&str> = holders.iter().map(String::as_str).collect();
    proxy(bus)
        .await?
        .keep_holders(prefix, &holders)
        .await
        .map_err(HostError::peer("the volumes of guests that are gone"))
}

/// Makes a thin volume of `size` bytes (a container's layer).
pub async fn create(
    bus: Option<&zbus::Connection>,
    volume: &str,
    size: u64,
) -> HostResult<VolumeInfo> {
    let spec = serde_json::json!({"volume": volume, "size": size.to_string()}).to_string();
    let json = proxy(bus)
        .await?
        .create_volume(&spec)
        .await
        .map_err(HostError::peer(format_args!("volume {volume}")))?;
    parse(&json)
}

pub async fn delete(bus: Option<&zbus::Connection>, volume: &str) -> HostResult<()> {
    proxy(bus)
        .await?
        .delete_volume(volume)
        .await
        .map_err(HostError::peer(format_args!("deleting volume {volume}")))
}
