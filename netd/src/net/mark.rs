//! How netd marks the links it creates, in IFLA_IFALIAS, so that reconcile can tell them from
//! links others made (which it never touches) and a restarted netd can re-adopt its ports.
//!
//! - `cairn:<network>`: a network's bridge or 802.1Q link;
//! - `cairn:<network>:vlan<vid>`: a classic bridged network's per-VLAN bridge and sub-interface;
//! - `cairn:<network>:bond`: a bridged network's bond of uplink NICs;
//! - `cairn-port:<network>:<owner>`: a port's host-side link.

//!
//! The alias cannot be set by the request that creates a link: Linux (checked on 6.1 and 6.18)
//! ignores IFLA_IFALIAS in a creating RTM_NEWLINK, so the alias needs a second request, and a
//! netd killed between the two would leave a link that every later netd takes for someone
//! else's. What a creating RTM_NEWLINK does honour is IFLA_GROUP: every link netd creates is
//! made in [`GROUP`], so a link in that group without an alias is one of ours whose creation
//! was interrupted — reconcile finishes it (sets the alias) when the desired state wants a
//! link of that name, and deletes it otherwise. The create requests carry the alias as well,
//! for a kernel that takes it.

/// IFLA_GROUP of every link netd creates (0 is the kernel's default group; this value is
/// "CA12" + "cafe" read as hex, unlikely to be chosen by anyone else).
pub const GROUP: u32 = 0xca12_cafe;

/// Whether a link is one netd began to create and did not get to mark.
pub fn unfinished(alias: Option<&str>, group: u32) -> bool {
    alias.is_none() && group == GROUP
}

const NET: &str = "cairn:";
const PORT: &str = "cairn-port:";

pub fn network(name: &str) -> String {
    format!("{NET}{name}")
}

pub fn network_vlan(name: &str, vid: u16) -> String {
    format!("{NET}{name}:vlan{vid}")
}

pub fn network_bond(name: &str) -> String {
    format!("{NET}{name}:bond")
}

pub fn port(network: &str, owner: &str) -> String {
    format!("{PORT}{network}:{owner}")
}

/// What a link's alias says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mark {
    /// `cairn:…`: a network link; the network's name.
    Network(String),
    /// A port: network and owner (network names have no ':', owners may).
    Port { network: String, owner: String },
}

pub fn parse(alias: &str) -> Option<Mark> {
    if let Some(rest) = alias.strip_prefix(PORT) {
        let (network, owner) = rest.split_once(':')?;
        return Some(Mark::Port {
            network: network.to_string(),
            owner: owner.to_string(),
        });
    }
    let rest = alias.strip_prefix(NET)?;
    let network = rest.split(':').next().unwrap_or(rest);
    Some(Mark::Network(network.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_round_trip() {
        assert_eq!(parse(&network("lan")), Some(Mark::Network("lan".into())));
        assert_eq!(
            parse(&network_vlan("lan", 10)),
            Some(Mark::Network("lan".into()))
        );
        assert_eq!(
            parse(&network_bond("lan")),
            Some(Mark::Network("lan".into()))
        );
        assert_eq!(
            parse(&port("lan", "ct:web1")),
            Some(Mark::Port {
                network: "lan".into(),
                owner: "ct:web1".into()
            })
        );
        assert_eq!(parse("uplink to the rack"), None);
        assert_eq!(parse("cairn-port:broken"), None);
    }
}
