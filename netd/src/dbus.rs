//! `org.cairn.Network1`: what netd manages, for init, apid and tests.

use std::collections::HashMap;

use model::dbus::StatusTuple;
use tokio::sync::watch;

use crate::mgmt::MgmtStatus;

pub struct Network1 {
    networks: u32,
    mgmt: watch::Receiver<MgmtStatus>,
}

impl Network1 {
    pub fn new(networks: usize, mgmt: watch::Receiver<MgmtStatus>) -> Self {
        Network1 {
            networks: u32::try_from(networks).unwrap_or(u32::MAX),
            mgmt,
        }
    }
}

#[zbus::interface(name = "org.cairn.Network1")]
impl Network1 {
    /// Version and counts: configured networks, ports handed out, and whether the management
    /// interface has its address (0 or 1).
    async fn status(&self) -> StatusTuple {
        let mgmt_configured = u32::from(self.mgmt.borrow().address.is_some());
        let counts = HashMap::from([
            ("networks".to_string(), self.networks),
            ("ports".to_string(), 0),
            ("mgmt_configured".to_string(), mgmt_configured),
        ]);
        (model::VERSION.to_string(), counts)
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
}
