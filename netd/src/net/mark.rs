//! How netd marks the links it creates, in IFLA_IFALIAS, so that reconcile can tell them from
//! links others made (which it never touches) and a restarted netd can re-adopt its ports.
//!
//! - `cairn:<network>`: a network's bridge or 802.1Q link;
//! - `cairn:<network>:vlan<vid>`: a classic bridged network's per-VLAN bridge and sub-interface;
//! - `cairn:<network>:bond`: a bridged network's bond of uplink NICs;
//! - `cairn-port:<network>:<owner>`: a port's host-side link.

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
