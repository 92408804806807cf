//! The kernel modules thin, nfs and iscsi pools need (dm-thin, NFS client, iSCSI initiator),
//! which init loads on request: daemons do not load modules themselves.

use std::path::Path;

use model::config::HostConfig;
use model::storage::{PoolKind, PoolSpec};

/// Whether pools of `kind` need init's `storage` module group.
pub fn needs_modules(kind: PoolKind) -> bool {
    matches!(kind, PoolKind::Thin | PoolKind::Nfs | PoolKind::Iscsi)
}

/// The module group init loads for pools of `kind`: each kind's own (fast: the whole
/// storage group takes ~6 s under TCG).
fn group(kind: PoolKind) -> &'static str {
    match kind {
        PoolKind::Thin => "thin",
        PoolKind::Nfs => "nfs",
        PoolKind::Iscsi => "iscsi",
        PoolKind::Dir => "storage",
    }
}

/// Asks init for the group pools of `kind` need. A failure is logged, not returned: the kernel may have
/// what the pool needs built in (or loaded before), and when it has not, the mount or the
/// login says so with the pool's own error.
pub async fn load_modules(conn: &zbus::Connection, kind: PoolKind) {
    let init = match model::dbus::Init1Proxy::new(conn).await {
        Ok(init) => init,
        Err(e) => {
            tracing::warn!(error = %e, "cannot reach init for the storage modules");
            return;
        }
    };
    match init.load_modules(group(kind)).await {
        Ok(failed) if failed.is_empty() => tracing::debug!("storage modules loaded"),
        Ok(failed) => tracing::warn!(?failed, "some storage modules did not load"),
        Err(e) => tracing::warn!(error = %e, "storage modules not loaded"),
    }
}

/// At stord's start, before the pools are opened: the modules, when host.toml or the
/// records hold a thin, nfs or iscsi pool (their devices, mounts and logins are made again at
/// each boot).
pub async fn load_modules_for(config: &HostConfig, state: &Path) {
    let recorded: Vec<PoolSpec> = std::fs::read(state.join(super::RECORDS))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let mut groups: Vec<PoolKind> = Vec::new();
    for kind in config
        .pools
        .iter()
        .map(|p| p.kind)
        .chain(recorded.iter().map(|p| p.kind))
        .filter(|k| needs_modules(*k))
    {
        if !groups.iter().any(|g| group(*g) == group(kind)) {
            groups.push(kind);
        }
    }
    if groups.is_empty() {
        return;
    }
    match model::dbus::connect_bus().await {
        Ok(conn) => {
            for kind in groups {
                load_modules(&conn, kind).await;
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot reach init for the storage modules"),
    }
}
