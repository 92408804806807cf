//! rtnetlink helpers for the management interface: find a link, bring it up, and make sure an
//! IPv4 address and a default route exist. Every "ensure" is idempotent and reports whether it
//! changed the kernel, so a second reconcile is visibly a no-op.

use std::net::{IpAddr, Ipv4Addr};

use futures_util::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressMessage, CacheInfo};
use netlink_packet_route::link::LinkAttribute;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol,
};
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(
        "interface {name} does not exist: check [host.management] interface and that its driver is loaded"
    )]
    NoSuchLink { name: String },
    #[error("cannot open a netlink socket: {0}")]
    Connect(#[source] std::io::Error),
    #[error("netlink request to {what} failed: {source}")]
    Netlink {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
}

/// What netd needs to know about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub index: u32,
    /// The hardware address; empty for links without one.
    pub mac: Vec<u8>,
}

/// Opens an rtnetlink connection in the calling thread's network namespace and spawns its driver
/// on the current tokio runtime.
pub fn connect() -> Result<Handle, LinkError> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(LinkError::Connect)?;
    tokio::spawn(conn);
    Ok(handle)
}

fn nl(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> LinkError {
    let what = what.into();
    move |source| LinkError::Netlink { what, source }
}

/// The kernel's errno for a failed request, positive (e.g. `libc::EEXIST`).
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

pub async fn link_by_name(handle: &Handle, name: &str) -> Result<LinkInfo, LinkError> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(msg)) => {
            let mac = msg
                .attributes
                .iter()
                .find_map(|a| match a {
                    LinkAttribute::Address(mac) => Some(mac.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            Ok(LinkInfo {
                index: msg.header.index,
                mac,
            })
        }
        Ok(None) => Err(LinkError::NoSuchLink {
            name: name.to_string(),
        }),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Err(LinkError::NoSuchLink {
            name: name.to_string(),
        }),
        Err(e) => Err(nl(format!("look up link {name}"))(e)),
    }
}

/// Sets the link administratively up. The kernel treats an already-up link as success.
pub async fn set_up(handle: &Handle, index: u32) -> Result<(), LinkError> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(nl(format!("set link {index} up")))
}

/// The IPv4 addresses on a link, as (address, prefix length).
pub async fn ipv4_addresses(handle: &Handle, index: u32) -> Result<Vec<(Ipv4Addr, u8)>, LinkError> {
    let msgs: Vec<AddressMessage> = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(nl(format!("list addresses of link {index}")))?;
    Ok(msgs
        .iter()
        .filter_map(|m| {
            // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on p2p links.
            let local = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            });
            let addr = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            });
            local.or(addr).map(|ip| (ip, m.header.prefix_len))
        })
        .collect())
}

/// Lifetimes for an address the kernel should drop by itself (a DHCP lease), in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    pub valid: u32,
    pub preferred: u32,
}

/// Makes sure `addr/prefix` is on the link. Without a lifetime an identical existing address is
/// left alone; with one the address is replaced so the kernel's expiry follows the lease.
/// Returns whether the kernel changed.
pub async fn ensure_address(
    handle: &Handle,
    index: u32,
    addr: Ipv4Addr,
    prefix: u8,
    lifetime: Option<Lifetime>,
) -> Result<bool, LinkError> {
    let present = ipv4_addresses(handle, index)
        .await?
        .contains(&(addr, prefix));
    if present && lifetime.is_none() {
        return Ok(false);
    }
    let mut req = handle.address().add(index, IpAddr::V4(addr), prefix);
    if let Some(l) = lifetime {
        let mut info = CacheInfo::default();
        info.ifa_preferred = l.preferred;
        info.ifa_valid = l.valid;
        req.message_mut()
            .attributes
            .push(AddressAttribute::CacheInfo(info));
        req = req.replace();
    }
    match req.execute().await {
        Ok(()) => Ok(!present || lifetime.is_some()),
        // Someone added it between our dump and our request: the state is what we want.
        Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(false),
        Err(e) => Err(nl(format!("add {addr}/{prefix} to link {index}"))(e)),
    }
}

/// Removes `addr/prefix` from the link; an absent address is success. Returns whether it was there.
pub async fn remove_address(
    handle: &Handle,
    index: u32,
    addr: Ipv4Addr,
    prefix: u8,
) -> Result<bool, LinkError> {
    let msg = rtnetlink::AddressMessageBuilder::<Ipv4Addr>::new()
        .index(index)
        .address(addr, prefix)
        .build();
    match handle.address().del(msg).execute().await {
        Ok(()) => Ok(true),
        Err(e) if errno(&e) == Some(libc::EADDRNOTAVAIL) => Ok(false),
        Err(e) => Err(nl(format!("remove {addr}/{prefix} from link {index}"))(e)),
    }
}

/// A default route in the main table as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultRoute {
    pub gateway: Option<Ipv4Addr>,
    pub oif: Option<u32>,
}

pub async fn default_routes(handle: &Handle) -> Result<Vec<DefaultRoute>, LinkError> {
    let msgs: Vec<RouteMessage> = handle
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute()
        .try_collect()
        .await
        .map_err(nl("list IPv4 routes"))?;
    Ok(msgs
        .iter()
        .filter(|m| m.header.destination_prefix_length == 0 && table_of(m) == main_table())
        .map(|m| DefaultRoute {
            gateway: m.attributes.iter().find_map(|a| match a {
                RouteAttribute::Gateway(RouteAddress::Inet(ip)) => Some(*ip),
                _ => None,
            }),
            oif: m.attributes.iter().find_map(|a| match a {
                RouteAttribute::Oif(i) => Some(*i),
                _ => None,
            }),
        })
        .collect())
}

fn main_table() -> u32 {
    u32::from(RouteHeader::RT_TABLE_MAIN)
}

// The header has 8 bits; tables above 255 only appear in the RTA_TABLE attribute.
fn table_of(m: &RouteMessage) -> u32 {
    m.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(m.header.table))
}

/// Makes the main table's default route go via `gateway` on the link, replacing another default
/// route if there is one. Returns whether the kernel changed.
pub async fn ensure_default_route(
    handle: &Handle,
    index: u32,
    gateway: Ipv4Addr,
    protocol: RouteProtocol,
) -> Result<bool, LinkError> {
    let want = DefaultRoute {
        gateway: Some(gateway),
        oif: Some(index),
    };
    if default_routes(handle).await?.contains(&want) {
        return Ok(false);
    }
    let msg = RouteMessageBuilder::<Ipv4Addr>::new()
        .output_interface(index)
        .gateway(gateway)
        .protocol(protocol)
        .build();
    handle
        .route()
        .add(msg)
        .replace()
        .execute()
        .await
        .map_err(nl(format!(
            "add default route via {gateway} on link {index}"
        )))?;
    Ok(true)
}

/// Removes the default route via `gateway` on the link; an absent route is success.
pub async fn remove_default_route(
    handle: &Handle,
    index: u32,
    gateway: Ipv4Addr,
) -> Result<bool, LinkError> {
    // Protocol unspec: the kernel then deletes the route whichever protocol added it.
    let msg = RouteMessageBuilder::<Ipv4Addr>::new()
        .output_interface(index)
        .gateway(gateway)
        .protocol(RouteProtocol::Unspec)
        .build();
    match handle.route().del(msg).execute().await {
        Ok(()) => Ok(true),
        Err(e) if errno(&e) == Some(libc::ESRCH) => Ok(false),
        Err(e) => Err(nl(format!(
            "remove default route via {gateway} on link {index}"
        ))(e)),
    }
}
