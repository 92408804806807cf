//! Deterministic interface names for what netd creates per port or per VLAN. Linux names stop
//! at 15 bytes, so long inputs are hashed; the same inputs always give the same name, which
//! is what lets a restarted netd find its links again and makes a duplicate owner collide.

/// FNV-1a, 32 bits: stable across releases and platforms (std's hasher is not).
fn fnv1a(parts: &[&str]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            // 0xff never occurs in UTF-8, so ("ab","c") and ("a","bc") hash differently.
            h ^= 0xff;
            h = h.wrapping_mul(0x0100_0193);
        }
        for b in part.bytes() {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
    }
    h
}

/// The host-side link of a port: "cp" + 8 hex + "v" (veth) or "t" (tap) = 11 bytes.
pub fn port_ifname(network: &str, owner: &str, kind: model::net::PortKind) -> String {
    let suffix = match kind {
        model::net::PortKind::Veth => 'v',
        model::net::PortKind::Tap => 't',
    };
    format!("cp{:08x}{suffix}", fnv1a(&[network, owner]))
}

/// A classic bridged network's bridge for one VLAN: "<network>.<vid>" when it fits, else
/// "cb" + 8 hex + "." + vid.
pub fn vlan_bridge(network: &str, vid: u16) -> String {
    let name = format!("{network}.{vid}");
    if name.len() <= 15 {
        name
    } else {
        format!("cb{:08x}.{vid}", fnv1a(&[network]))
    }
}

/// The 802.1Q sub-interface of an uplink for one VLAN: "<uplink>.<vid>" when it fits, else
/// "cq" + 8 hex + "." + vid. Prefixed "q" keeps it apart from a same-named vlan bridge.
pub fn vlan_subif(uplink: &str, vid: u16) -> String {
    let name = format!("{uplink}.{vid}");
    if name.len() <= 15 {
        name
    } else {
        format!("cq{:08x}.{vid}", fnv1a(&[uplink]))
    }
}

/// A bridged network's bond of uplink NICs: "<network>b" when it fits, else "cg" + 8 hex + "b".
pub fn bond(network: &str) -> String {
    let name = format!("{network}b");
    if name.len() <= 15 {
        name
    } else {
        format!("cg{:08x}b", fnv1a(&[network]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::net::PortKind;

    #[test]
    fn names_fit_and_are_stable() {
        let a = port_ifname("lan", "ct:web1", PortKind::Veth);
        assert_eq!(a.len(), 11);
        assert!(a.starts_with("cp") && a.ends_with('v'));
        assert_eq!(a, port_ifname("lan", "ct:web1", PortKind::Veth));
        assert_ne!(a, port_ifname("lan", "ct:web2", PortKind::Veth));
        assert_ne!(
            port_ifname("ab", "c", PortKind::Tap),
            port_ifname("a", "bc", PortKind::Tap)
        );
        assert_eq!(vlan_bridge("lan", 10), "lan.10");
        let long = vlan_bridge("fifteen-chars-x", 4094);
        assert!(long.len() <= 15, "{long}");
        assert_eq!(vlan_subif("eno1", 100), "eno1.100");
        assert!(vlan_subif("enp129s0f1np1", 4094).len() <= 15);
        assert_eq!(bond("lan"), "lanb");
        assert_eq!(bond("fourteen-chars"), "fourteen-charsb");
        let long = bond("fifteen-chars-x");
        assert!(long.len() == 11 && long.starts_with("cg"), "{long}");
        assert_eq!(long, bond("fifteen-chars-x"));
    }
}
