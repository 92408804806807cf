//! The guest end of a veth, configured inside the guest's network namespace. Entering a
//! namespace (setns) changes the calling thread, so it happens on a dedicated std thread with
//! its own small runtime and rtnetlink socket — never on a tokio worker that other tasks share.

use std::fs::File;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use model::config::Cidr;
use nix::sched::{CloneFlags, setns};

use crate::net::NetError;
use crate::net::kernel::Kernel;

/// The guest end as read back inside the namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestState {
    pub mac: String,
    pub addresses: Vec<String>,
}

/// Brings `ifname` (and lo) up in the namespace behind `netns` and adds `addrs`.
pub async fn configure(
    netns: File,
    netns_path: String,
    ifname: String,
    addrs: Vec<Cidr>,
    v6_default: bool,
    counter: Arc<AtomicU64>,
) -> Result<GuestState, NetError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("netd-guest".into())
        .spawn(move || {
            let r = in_namespace(&netns, &netns_path, &ifname, &addrs, v6_default, counter);
            let _ = tx.send(r);
        });
    if let Err(e) = spawned {
        return Err(NetError::io("start the guest namespace thread", e));
    }
    rx.await.unwrap_or_else(|_| {
        Err(NetError::Io {
            what: "configure the guest end".into(),
            source: std::io::Error::other("the namespace thread panicked"),
        })
    })
}

fn in_namespace(
    netns: &File,
    netns_path: &str,
    ifname: &str,
    addrs: &[Cidr],
    v6_default: bool,
    counter: Arc<AtomicU64>,
) -> Result<GuestState, NetError> {
    setns(netns, CloneFlags::CLONE_NEWNET)
        .map_err(|e| NetError::io(format!("enter netns {netns_path}"), std::io::Error::from(e)))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| NetError::io("build the namespace thread's runtime", e))?;
    rt.block_on(async {
        let (conn, handle, _) = rtnetlink::new_connection()
            .map_err(|e| NetError::io(format!("rtnetlink in netns {netns_path}"), e))?;
        tokio::spawn(conn);
        let k = Kernel::new(handle, counter);
        let Some(link) = k.link(ifname).await? else {
            return Err(NetError::NotFound(format!(
                "{ifname} is not in netns {netns_path} after it was created there"
            )));
        };
        let have = k.addresses().await?;
        let have = have.get(&link.index).cloned().unwrap_or_default();
        for c in addrs {
            if !have.contains(c) {
                k.add_address(&link, *c).await?;
            }
        }
        if !link.up {
            k.configure(&link, None, None, true).await?;
        }
        if let Some(lo) = k.link("lo").await?
            && !lo.up
        {
            k.configure(&lo, None, None, true).await?;
        }
        if v6_default {
            k.add_default_route_v6(&link, std::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1))
                .await?;
        }
        let now = k.addresses().await?;
        let addresses = now
            .get(&link.index)
            .into_iter()
            .flatten()
            // The kernel's own IPv6 link-local address is not something netd set.
            .filter(|c| !matches!(c.addr, IpAddr::V6(a) if a.segments()[0] & 0xffc0 == 0xfe80))
            .map(|c| c.to_string())
            .collect();
        Ok(GuestState {
            mac: model::net::format_mac(&link.mac),
            addresses,
        })
    })
}
