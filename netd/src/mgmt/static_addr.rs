//! A fixed management address from host.toml.

use std::net::Ipv4Addr;

use model::config::Ipv4Cidr;
use netlink_packet_route::route::RouteProtocol;
use rtnetlink::Handle;

use super::MgmtError;
use crate::link;

/// Brings the interface up with `address` and, when given, a default route via `gateway`.
/// Returns whether anything in the kernel changed; a second call with the same values returns
/// false.
pub async fn apply(
    handle: &Handle,
    interface: &str,
    address: Ipv4Cidr,
    gateway: Option<Ipv4Addr>,
) -> Result<bool, MgmtError> {
    let link = link::link_by_name(handle, interface).await?;
    link::set_up(handle, link.index).await?;
    let mut changed =
        link::ensure_address(handle, link.index, address.addr, address.prefix, None).await?;
    if let Some(gw) = gateway {
        changed |=
            link::ensure_default_route(handle, link.index, gw, RouteProtocol::Static).await?;
    }
    tracing::info!(
        iface = interface,
        addr = %address.addr,
        prefix = address.prefix,
        gateway = ?gateway,
        changed,
        "static management address configured"
    );
    Ok(changed)
}
