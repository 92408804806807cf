//! The management interface: the NIC that carries the API, configured from `[host.management]`
//! with a static address or by DHCP.

pub mod dhcp;
pub mod static_addr;

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use model::config::{Host, Ipv4Cidr, MgmtAddress};
use rtnetlink::Handle;
use tokio::sync::watch;

use crate::link::LinkError;
use crate::resolv::{self, ResolvError};

#[derive(Debug, thiserror::Error)]
pub enum MgmtError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    Resolv(#[from] ResolvError),
    #[error(
        "cannot open the DHCP client socket on {interface}: {source} (is another DHCP client running?)"
    )]
    Socket {
        interface: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot send a DHCP packet: {0}")]
    Send(#[source] std::io::Error),
    #[error("cannot receive DHCP packets: {0}")]
    Recv(#[source] std::io::Error),
    #[error("cannot encode a DHCP packet: {0}")]
    Encode(String),
}

/// Where the management address came from, as `ManagementAddress()` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    None,
    Static,
    Dhcp,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::None => "none",
            Source::Static => "static",
            Source::Dhcp => "dhcp",
        }
    }
}

/// The management interface as it is now, published to the D-Bus interface (and to tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MgmtStatus {
    pub interface: String,
    pub address: Option<Ipv4Cidr>,
    pub gateway: Option<Ipv4Addr>,
    pub source: Source,
    /// How many times a DHCP ACK was applied (first lease and every renewal).
    pub leases_bound: u32,
}

impl MgmtStatus {
    pub fn new(interface: &str) -> Self {
        MgmtStatus {
            interface: interface.to_string(),
            address: None,
            gateway: None,
            source: Source::None,
            leases_bound: 0,
        }
    }

    /// `addr/prefix`, or "" when there is no address.
    pub fn address_cidr(&self) -> String {
        self.address
            .map(|c| format!("{}/{}", c.addr, c.prefix))
            .unwrap_or_default()
    }
}

/// Configures the management interface. A static address is in place when this returns; DHCP
/// runs in a spawned task (readiness must not wait for a lease), whose handle is returned.
/// Failures are logged rather than returned: netd still serves the bus, and `Status()` shows
/// `mgmt_configured = 0`.
pub async fn start(
    handle: &Handle,
    host: &Host,
    run_dir: PathBuf,
) -> (
    watch::Receiver<MgmtStatus>,
    Option<tokio::task::JoinHandle<()>>,
) {
    let mgmt = &host.management;
    let iface = mgmt.interface.as_str();
    let (tx, rx) = watch::channel(MgmtStatus::new(iface));
    let configured_dns = host.dns.clone();
    // With a static address the configured servers are the only ones there will be, so write
    // them (possibly none) now; with DHCP and none configured the lease supplies them.
    if !configured_dns.is_empty() || matches!(mgmt.address, MgmtAddress::Static { .. }) {
        write_resolv(&run_dir, &configured_dns);
    }
    match &mgmt.address {
        MgmtAddress::Static { address, gateway } => {
            match static_addr::apply(handle, iface, *address, *gateway).await {
                Ok(_) => tx.send_modify(|s| {
                    s.address = Some(*address);
                    s.gateway = *gateway;
                    s.source = Source::Static;
                }),
                Err(e) => {
                    tracing::error!(iface, error = %e, "cannot configure the management address")
                }
            }
            (rx, None)
        }
        MgmtAddress::Dhcp => {
            let cfg = dhcp::DhcpConfig {
                interface: iface.to_string(),
                hostname: Some(host.hostname.clone()),
                dns_override: configured_dns,
                run_dir,
            };
            let handle = handle.clone();
            let task = tokio::spawn(async move {
                // The client only returns on errors such as a failed socket or netlink call;
                // start it over after a pause rather than leave the appliance unreachable.
                loop {
                    if let Err(e) = dhcp::run(&handle, &cfg, &tx).await {
                        tracing::error!(iface = cfg.interface, error = %e, "DHCP client failed; restarting it");
                    }
                    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                }
            });
            (rx, Some(task))
        }
    }
}

fn write_resolv(dir: &std::path::Path, servers: &[IpAddr]) {
    match resolv::write(dir, servers) {
        Ok(changed) => tracing::info!(servers = ?servers, changed, "resolv.conf written"),
        Err(e) => tracing::error!(error = %e, "cannot write resolv.conf"),
    }
}
