//! `org.cairn.Network1`: what netd manages, for init, apid, hostd and tests. Structured
//! arguments and answers are JSON of `model::net`'s types (the contract in `model::dbus`).

use std::collections::HashMap;
use std::sync::Arc;

use model::dbus::{CairnError, StatusTuple};
use model::net::{LimitsChange, NetworkSpec, PortSpec};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Mutex, watch};
use zbus::object_server::SignalEmitter;

use crate::mgmt::MgmtStatus;
use crate::net::Reconciler;

pub struct Network1 {
    mgmt: watch::Receiver<MgmtStatus>,
    /// One request at a time: applies read the kernel, change it and persist, and two
    /// interleaved applies could each miss what the other created.
    nets: Arc<Mutex<Reconciler>>,
}

impl Network1 {
    /// Signals the new counts; a lost signal only delays a client's view until the next one.
    async fn changed(&self, emitter: &SignalEmitter<'_>) {
        if let Err(e) = self.counts_changed(emitter).await {
            tracing::debug!(error = %e, "cannot signal the new counts");
        }
    }

    /// The ports a call detached, after the counts were signalled if there were any.
    async fn detached(&self, emitter: &SignalEmitter<'_>, gone: Vec<String>) -> Vec<String> {
        if !gone.is_empty() {
            self.changed(emitter).await;
        }
        gone
    }

    pub fn new(mgmt: watch::Receiver<MgmtStatus>, nets: Arc<Mutex<Reconciler>>) -> Self {
        Network1 { mgmt, nets }
    }
}

fn parse<T: DeserializeOwned>(arg: &str, json: &str) -> Result<T, CairnError> {
    serde_json::from_str(json).map_err(|e| CairnError::InvalidArgs(format!("{arg}: {e}")))
}

fn to_json<T: Serialize>(v: &T) -> Result<String, CairnError> {
    serde_json::to_string(v).map_err(|e| CairnError::Failed(format!("encode the answer: {e}")))
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[zbus::interface(name = "org.cairn.Network1")]
impl Network1 {
    /// Version and counts: networks (host.toml + runtime), ports, whether the management
    /// interface has its address (0 or 1), and — only when some failed — networks_failed.
    async fn status(&self) -> StatusTuple {
        (model::VERSION.to_string(), self.counts().await)
    }

    /// The counts of `Status`, as a property whose changes are signalled, so that a client
    /// (apid's host.info) keeps them without asking.
    #[zbus(property)]
    async fn counts(&self) -> HashMap<String, u32> {
        let mgmt_configured = u32::from(self.mgmt.borrow().address.is_some());
        let nets = self.nets.lock().await;
        let mut counts = HashMap::from([
            ("networks".to_string(), count(nets.network_count())),
            ("ports".to_string(), count(nets.port_count())),
            ("mgmt_configured".to_string(), mgmt_configured),
        ]);
        if nets.failed_count() > 0 {
            counts.insert("networks_failed".to_string(), count(nets.failed_count()));
        }
        counts
    }

    /// host.toml's networks netd could not apply: (item, why).
    async fn config_failures(&self) -> Vec<(String, String)> {
        self.nets.lock().await.failures()
    }

    /// `ManagementAddress` as a property whose changes (a DHCP lease) are signalled.
    #[zbus(property)]
    async fn management(&self) -> (String, String, String) {
        self.management_address().await
    }

    /// The management interface, its address as `a.b.c.d/len` ("" when it has none), and where
    /// the address came from: "static", "dhcp" or "none".
    async fn management_address(&self) -> (String, String, String) {
        let s = self.mgmt.borrow();
        (
            s.interface.clone(),
            s.address_cidr(),
            s.source.as_str().to_string(),
        )
    }

    async fn create_network(
        &self,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        spec_json: &str,
    ) -> Result<(), CairnError> {
        let spec: NetworkSpec = parse("spec_json", spec_json)?;
        self.nets.lock().await.create_network(spec).await?;
        self.changed(&emitter).await;
        Ok(())
    }

    async fn delete_network(
        &self,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        name: &str,
    ) -> Result<(), CairnError> {
        self.nets.lock().await.delete_network(name).await?;
        self.changed(&emitter).await;
        Ok(())
    }

    async fn list_networks(&self) -> Result<String, CairnError> {
        to_json(&self.nets.lock().await.list_networks().await?)
    }

    async fn network_info(&self, name: &str) -> Result<String, CairnError> {
        to_json(&self.nets.lock().await.network_info(name).await?)
    }

    async fn network_spec(&self, name: &str) -> Result<String, CairnError> {
        let nets = self.nets.lock().await;
        let net = nets
            .network(name)
            .ok_or_else(|| CairnError::NotFound(format!("network {name} does not exist")))?;
        to_json(&net.spec)
    }

    async fn attach_port(
        &self,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        spec_json: &str,
    ) -> Result<String, CairnError> {
        let spec: PortSpec = parse("spec_json", spec_json)?;
        let port = self.nets.lock().await.attach_port(spec).await?;
        self.changed(&emitter).await;
        to_json(&port)
    }

    async fn detach_port(
        &self,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        port: &str,
    ) -> Result<(), CairnError> {
        self.nets.lock().await.detach_port(port).await?;
        self.changed(&emitter).await;
        Ok(())
    }

    async fn detach_owner(
        &self,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        owner: &str,
    ) -> Result<Vec<String>, CairnError> {
        let gone = self.nets.lock().await.detach_owner(owner).await?;
        Ok(self.detached(&emitter, gone).await)
    }

    async fn forget_owner(
        &self,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        owner: &str,
    ) -> Result<Vec<String>, CairnError> {
        let gone = self.nets.lock().await.forget_owner(owner).await?;
        Ok(self.detached(&emitter, gone).await)
    }

    async fn keep_owners(
        &self,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        prefixes: Vec<String>,
        owners: Vec<String>,
    ) -> Result<Vec<String>, CairnError> {
        let keep = owners.into_iter().collect();
        let gone = self.nets.lock().await.keep_owners(&prefixes, &keep).await?;
        Ok(self.detached(&emitter, gone).await)
    }

    async fn list_ports(&self) -> Result<String, CairnError> {
        to_json(&self.nets.lock().await.list_ports().await?)
    }

    async fn set_limits(&self, target: &str, limits_json: &str) -> Result<(), CairnError> {
        let limits: LimitsChange = parse("limits_json", limits_json)?;
        Ok(self.nets.lock().await.set_limits(target, limits).await?)
    }
}

/// Signals Network1's `Management` and `Counts` properties after the management address
/// changed outside a request (DHCP).
pub async fn management_changed(server: &zbus::ObjectServer) {
    let Ok(iface) = server
        .interface::<_, Network1>(model::dbus::NETWORK_PATH)
        .await
    else {
        return;
    };
    let net = iface.get().await;
    let emitter = iface.signal_emitter();
    if let Err(e) = net.management_changed(emitter).await {
        tracing::debug!(error = %e, "cannot signal the management address");
    }
    net.changed(emitter).await;
}
