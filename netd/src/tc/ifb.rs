//! The IFB device that carries a port's ingress traffic through an egress qdisc: its name,
//! creation (marked with an ifalias so netd knows it owns it) and removal.

use futures_util::TryStreamExt;
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::{Handle, LinkIfb, LinkUnspec};

use super::error::TcError;

const ALIAS_PREFIX: &str = "cairn-ifb:";
const IFNAMSIZ_MAX: usize = 15;

/// The IFB's name for a port (or bridge): Cairn's port names start with "cp", whose IFB is the
/// same name with "ci"; any other name gets "ci" + a hash of it, which always fits 15 bytes.
/// Collisions are caught by the alias check in [`ensure`].
pub fn ifb_name(port: &str) -> String {
    if let Some(rest) = port.strip_prefix("cp")
        && !rest.is_empty()
    {
        return format!("ci{rest}");
    }
    // FNV-1a: stable across releases, unlike std's hasher.
    let mut h: u32 = 0x811c_9dc5;
    for b in port.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    let name = format!("ci{h:08x}");
    debug_assert!(name.len() <= IFNAMSIZ_MAX);
    name
}

pub fn alias_for(port: &str) -> String {
    format!("{ALIAS_PREFIX}{port}")
}

struct Found {
    index: u32,
    alias: String,
}

async fn find(handle: &Handle, name: &str) -> Result<Option<Found>, TcError> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(msg)) => Ok(Some(Found {
            index: msg.header.index,
            alias: alias_of(&msg),
        })),
        Ok(None) => Ok(None),
        Err(rtnetlink::Error::NetlinkError(e))
            if e.code.map(|c| -c.get()) == Some(libc::ENODEV) =>
        {
            Ok(None)
        }
        Err(source) => Err(TcError::Netlink {
            op: "look up",
            object: format!("interface {name}"),
            source,
        }),
    }
}

fn alias_of(msg: &LinkMessage) -> String {
    msg.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::IfAlias(s) => Some(s.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

fn nl(op: &'static str, object: String) -> impl FnOnce(rtnetlink::Error) -> TcError {
    move |source| match &source {
        rtnetlink::Error::NetlinkError(e) if e.code.is_some() => {
            let errno = e.code.map_or(0, |c| -c.get());
            TcError::Kernel {
                op,
                object,
                errno,
                reason: std::io::Error::from_raw_os_error(errno).to_string(),
            }
        }
        _ => TcError::Netlink { op, object, source },
    }
}

/// Makes sure the port's IFB exists, carries our alias and is up; returns its ifindex. An IFB
/// of that name without any alias is adopted: it is what an apply interrupted between
/// creating and labelling leaves behind.
pub async fn ensure(handle: &Handle, port: &str) -> Result<(String, u32), TcError> {
    let name = ifb_name(port);
    let alias = alias_for(port);
    let index = match find(handle, &name).await? {
        Some(f) if f.alias == alias => f.index,
        Some(f) if f.alias.is_empty() => f.index,
        Some(f) => {
            return Err(TcError::IfbConflict {
                ifb: name,
                port: port.to_string(),
                alias: f.alias,
            });
        }
        None => {
            handle
                .link()
                .add(LinkIfb::new(&name).build())
                .execute()
                .await
                .map_err(nl("create", format!("ifb {name} for {port}")))?;
            tracing::info!(ifb = %name, port, "created IFB for ingress shaping");
            match find(handle, &name).await? {
                Some(f) => f.index,
                None => {
                    return Err(TcError::Kernel {
                        op: "create",
                        object: format!("ifb {name} for {port}"),
                        errno: libc::ENODEV,
                        reason: "it vanished right after creation".to_string(),
                    });
                }
            }
        }
    };
    // The alias is set after creation: the kernel applies IFLA_IFALIAS only on changes.
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).alias(alias).up().build())
        .execute()
        .await
        .map_err(nl("label and bring up", format!("ifb {name} for {port}")))?;
    Ok((name, index))
}

/// Deletes the port's IFB if it exists and is ours; one labelled for another port is left alone.
pub async fn remove(handle: &Handle, port: &str) -> Result<(), TcError> {
    let name = ifb_name(port);
    let Some(f) = find(handle, &name).await? else {
        return Ok(());
    };
    if f.alias != alias_for(port) && !f.alias.is_empty() {
        tracing::warn!(ifb = %name, port, alias = %f.alias, "not deleting an IFB that belongs to someone else");
        return Ok(());
    }
    match handle.link().del(f.index).execute().await {
        Ok(()) => {
            tracing::info!(ifb = %name, port, "deleted IFB");
            Ok(())
        }
        Err(rtnetlink::Error::NetlinkError(e))
            if e.code.map(|c| -c.get()) == Some(libc::ENODEV) =>
        {
            Ok(())
        }
        Err(e) => Err(nl("delete", format!("ifb {name} of {port}"))(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_and_are_derived() {
        assert_eq!(ifb_name("cpweb1-0"), "ciweb1-0");
        assert_eq!(ifb_name("cp0123456789abc"), "ci0123456789abc");
        let other = ifb_name("br-lan-very-long");
        assert!(other.starts_with("ci") && other.len() <= 15, "{other}");
        assert_eq!(other, ifb_name("br-lan-very-long"));
        assert_ne!(other, ifb_name("br-lan-very-lonG"));
        assert_eq!(ifb_name("cp").len(), 10);
    }
}
