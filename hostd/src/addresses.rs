//! Guests' addresses on netd's networks, the same rules for a container's `addresses` and a
//! VM NIC's (`model::rules`, as host.toml checks them): inside the network's subnet, and held
//! once per network — by the host (the network's `address`) or by one guest.

use std::net::IpAddr;

use model::config::parse_cidr;
use model::net::NetworkSpec;
use model::rules;

use crate::error::{HostError, HostResult};

/// An address a guest holds on a network.
#[derive(Debug, Clone)]
pub struct Held {
    pub network: String,
    pub addr: IpAddr,
    /// "container \"web\"", "VM \"db\" nic 0".
    pub holder: String,
}

impl Held {
    /// The addresses of `list` that parse, held by `holder` on `network`.
    pub fn of<'a>(
        network: &str,
        list: impl IntoIterator<Item = &'a String>,
        holder: &str,
    ) -> Vec<Held> {
        list.into_iter()
            .filter_map(|a| parse_cidr(a).ok())
            .map(|c| Held {
                network: network.to_string(),
                addr: c.addr,
                holder: holder.to_string(),
            })
            .collect()
    }
}

/// The other kind's guests, for a create: containers and VMs share one namespace and the
/// networks' addresses.
#[derive(Debug, Default)]
pub struct Others {
    pub names: Vec<String>,
    pub held: Vec<Held>,
}

/// `addresses` (the request's `field`, "addresses" or "nics[0].addresses") on network `net`:
/// each inside its subnet (invalid argument otherwise, all listed) and held by nobody in
/// `held` nor by the host (conflict).
pub fn check(
    field: &str,
    addresses: &[String],
    net: &NetworkSpec,
    held: &[Held],
) -> HostResult<()> {
    let subnet = net.subnet.as_deref().and_then(|s| parse_cidr(s).ok());
    let mut outside = Vec::new();
    for (i, a) in addresses.iter().enumerate() {
        let Ok(cidr) = parse_cidr(a) else { continue };
        let field = format!("{field}[{i}]");
        if let Some(subnet) = subnet {
            outside.extend(rules::problem(
                &field,
                format_args!("{a:?}"),
                rules::address_in_subnet(cidr, subnet, &net.name),
            ));
        }
        let holder = if net
            .address
            .iter()
            .any(|h| parse_cidr(h).is_ok_and(|o| o.addr == cidr.addr))
        {
            Some(format!("the host (network {:?} address)", net.name))
        } else {
            held.iter()
                .find(|h| h.network == net.name && h.addr == cidr.addr)
                .map(|h| h.holder.clone())
        };
        if let Some(taken) = rules::problem(
            &field,
            format_args!("{a:?}"),
            rules::address_free(holder.as_deref()),
        ) {
            return Err(HostError::Conflict(taken));
        }
    }
    if outside.is_empty() {
        Ok(())
    } else {
        Err(HostError::InvalidArgs(outside.join("; ")))
    }
}
