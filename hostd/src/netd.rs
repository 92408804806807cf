//! hostd as netd's client: attaching and detaching the ports of containers (veth) and VMs
//! (tap), with netd's errors mapped to the request's error kinds.

use model::dbus::{CairnError, Network1Proxy};
use model::net::{PortInfo, PortSpec};

use crate::ct::error::{CtError, CtResult};

/// Attaches a port; netd's refusals keep their kind (invalid, not found, conflict).
pub async fn attach_port(bus: Option<&zbus::Connection>, spec: &PortSpec) -> CtResult<PortInfo> {
    let Some(bus) = bus else {
        return Err(CtError::Failed("no bus connection to netd".into()));
    };
    let json = serde_json::to_string(spec).map_err(|e| CtError::Failed(e.to_string()))?;
    let proxy = Network1Proxy::new(bus)
        .await
        .map_err(|e| CtError::Failed(format!("netd: {e}")))?;
    let info = proxy.attach_port(&json).await.map_err(|e| match e {
        CairnError::InvalidArgs(m) => CtError::InvalidArgs(format!("network port: {m}")),
        CairnError::NotFound(m) => CtError::NotFound(format!("network port: {m}")),
        CairnError::Conflict(m) => CtError::Conflict(format!("network port: {m}")),
        other => CtError::Failed(format!("network port on {:?}: {other}", spec.network)),
    })?;
    serde_json::from_str(&info).map_err(|e| CtError::Failed(format!("netd's PortInfo: {e}")))
}

/// Detaches a port; one already gone is fine, any other failure is logged for `owner`.
pub async fn detach_port(bus: Option<&zbus::Connection>, owner: &str, port: &str) {
    if let Err(e) = try_detach_port(bus, port).await {
        tracing::warn!(owner, port, error = %e, "cannot detach the port")
    }
}

/// Detaches a port; one already gone is fine.
pub async fn try_detach_port(bus: Option<&zbus::Connection>, port: &str) -> Result<(), CairnError> {
    let Some(bus) = bus else {
        return Err(CairnError::Failed("no bus connection to netd".into()));
    };
    let result = async {
        Network1Proxy::new(bus)
            .await
            .map_err(CairnError::from)?
            .detach_port(port)
            .await
    }
    .await;
    match result {
        Ok(()) | Err(CairnError::NotFound(_)) => Ok(()),
        Err(e) => Err(e),
    }
}
