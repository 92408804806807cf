//! hostd as netd's client: the networks guests join, and the ports of containers (veth) and
//! VMs (tap). netd's verdicts come back as [`HostError::Peer`], their kind kept.

use model::dbus::{CairnError, Network1Proxy};
use model::net::{NetworkSpec, PortInfo, PortSpec};

use crate::error::{HostError, HostResult};

async fn proxy(bus: Option<&zbus::Connection>) -> HostResult<Network1Proxy<'_>> {
    let Some(bus) = bus else {
        return Err(HostError::Failed("no bus connection to netd".into()));
    };
    Network1Proxy::new(bus)
        .await
        .map_err(|e| HostError::Failed(format!("netd: {e}")))
}

/// The network `name` as netd records it: not read back from the kernel, which grows with the
/// network's ports, so a guest's create costs the same on a busy network.
pub async fn network_spec(bus: Option<&zbus::Connection>, name: &str) -> HostResult<NetworkSpec> {
    let json = proxy(bus)
        .await?
        .network_spec(name)
        .await
        .map_err(HostError::peer(format_args!("network {name:?}")))?;
    serde_json::from_str(&json)
        .map_err(|e| HostError::Failed(format!("network {name:?}: netd's answer: {e}")))
}

/// Whether `e` is netd saying that what hostd named does not exist.
pub fn is_not_found(e: &HostError) -> bool {
    matches!(
        e,
        HostError::Peer {
            source: CairnError::NotFound(_),
            ..
        }
    )
}

/// Attaches a port; netd's refusals keep their kind (invalid, not found, conflict).
pub async fn attach_port(bus: Option<&zbus::Connection>, spec: &PortSpec) -> HostResult<PortInfo> {
    let json = serde_json::to_string(spec).map_err(|e| HostError::Failed(e.to_string()))?;
    let info = proxy(bus)
        .await?
        .attach_port(&json)
        .await
        .map_err(HostError::peer(format_args!(
            "network port on {:?}",
            spec.network
        )))?;
    serde_json::from_str(&info).map_err(|e| HostError::Failed(format!("netd's PortInfo: {e}")))
}

/// Detaches a port; one already gone is fine.
pub async fn try_detach_port(bus: Option<&zbus::Connection>, port: &str) -> HostResult<()> {
    match proxy(bus).await?.detach_port(port).await {
        Ok(()) | Err(CairnError::NotFound(_)) => Ok(()),
        Err(e) => Err(HostError::peer(format_args!("detaching port {port}"))(e)),
    }
}

/// Detaches every port of `owner` (`ct:NAME`, `vm:NAME`) — what a crash made hostd forget as
/// well as what it remembers; returns their names.
pub async fn detach_owner(bus: Option<&zbus::Connection>, owner: &str) -> HostResult<Vec<String>> {
    proxy(bus)
        .await?
        .detach_owner(owner)
        .await
        .map_err(HostError::peer(format_args!(
            "detaching the ports of {owner}"
        )))
}

/// Guest `owner` (`ct:NAME`, `vm:NAME`) is deleted: netd detaches its ports and drops the
/// limits it kept for its next ones, so a new guest of that name starts unlimited. Logged, not
/// returned: a deletion does not fail on it.
pub async fn forget_owner(bus: Option<&zbus::Connection>, owner: &str) {
    let result = match proxy(bus).await {
        Ok(p) => p
            .forget_owner(owner)
            .await
            .map_err(HostError::peer(format_args!("forgetting {owner}'s ports"))),
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        tracing::warn!(owner, error = %e, "netd keeps the deleted guest's port limits");
    }
}

/// The owners of hostd's ports: containers and VMs.
pub const OWNER_PREFIXES: [&str; 2] = ["ct:", "vm:"];

/// Tells netd which of hostd's guests run (`owners`): the ports of every other container and
/// VM are detached; returns their names.
pub async fn keep_owners(
    bus: Option<&zbus::Connection>,
    owners: &[String],
) -> HostResult<Vec<String>> {
    let owners: Vec<&str> = owners.iter().map(String::as_str).collect();
    proxy(bus)
        .await?
        .keep_owners(&OWNER_PREFIXES, &owners)
        .await
        .map_err(HostError::peer("the ports of guests that do not run"))
}
