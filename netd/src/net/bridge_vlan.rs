//! Per-port VLANs on a VLAN-filtering bridge: RTM_SETLINK / RTM_DELLINK with family AF_BRIDGE
//! and IFLA_AF_SPEC { IFLA_BRIDGE_VLAN_INFO { flags, vid } }, as `bridge vlan add|del` sends.
//! This machine's kernel has no bridge VLAN filtering, so the messages are unit-tested here and
//! exercised for real only in the appliance.

use netlink_packet_route::AddressFamily;
use netlink_packet_route::link::{
    AfSpecBridge, BridgeVlanInfo, BridgeVlanInfoFlags, LinkAttribute, LinkMessage,
};

/// One VLAN on one port: `pvid` + `untagged` for the access VLAN, neither for a tagged one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortVlan {
    /// The port's ifindex (0 in a request: the message carries it).
    pub port: u32,
    pub vid: u16,
    pub pvid: bool,
    pub untagged: bool,
}

impl PortVlan {
    pub fn access(vid: u16) -> PortVlan {
        PortVlan {
            port: 0,
            vid,
            pvid: true,
            untagged: true,
        }
    }

    pub fn tagged(vid: u16) -> PortVlan {
        PortVlan {
            port: 0,
            vid,
            pvid: false,
            untagged: false,
        }
    }
}

/// The request for `v` on the port `port_index` (send with SETLINK to add, DELLINK to remove).
pub fn message(port_index: u32, v: PortVlan) -> LinkMessage {
    let mut flags = BridgeVlanInfoFlags::empty();
    if v.pvid {
        flags |= BridgeVlanInfoFlags::Pvid;
    }
    if v.untagged {
        flags |= BridgeVlanInfoFlags::Untagged;
    }
    let mut msg = LinkMessage::default();
    msg.header.interface_family = AddressFamily::Bridge;
    msg.header.index = port_index;
    msg.attributes
        .push(LinkAttribute::AfSpecBridge(vec![AfSpecBridge::VlanInfo(
            BridgeVlanInfo { flags, vid: v.vid },
        )]));
    msg
}

/// The VLANs one link of an AF_BRIDGE dump carries.
pub fn parse_dump(m: &LinkMessage) -> Vec<PortVlan> {
    let mut out = Vec::new();
    for a in &m.attributes {
        if let LinkAttribute::AfSpecBridge(specs) = a {
            for s in specs {
                if let AfSpecBridge::VlanInfo(info) = s {
                    out.push(PortVlan {
                        port: m.header.index,
                        vid: info.vid,
                        pvid: info.flags.contains(BridgeVlanInfoFlags::Pvid),
                        untagged: info.flags.contains(BridgeVlanInfoFlags::Untagged),
                    });
                }
            }
        }
    }
    out
}

/// What a port on a VLAN-aware bridge must carry: the access VLAN as PVID+untagged (VLAN 1,
/// the kernel's default PVID, otherwise) and each tagged VLAN.
pub fn wanted(access: Option<u16>, tagged: &[u16]) -> Vec<PortVlan> {
    let mut v = vec![PortVlan::access(access.unwrap_or(1))];
    v.extend(tagged.iter().map(|t| PortVlan::tagged(*t)));
    v
}

/// The requests that turn `have` into `want` on one port: removals first (so the default
/// VLAN 1 stops being the PVID before the access VLAN takes over), then additions. A VLAN whose
/// flags differ is simply re-added: the kernel updates its flags in place.
pub fn diff(have: &[PortVlan], want: &[PortVlan]) -> (Vec<PortVlan>, Vec<PortVlan>) {
    let same =
        |a: &PortVlan, b: &PortVlan| a.vid == b.vid && a.pvid == b.pvid && a.untagged == b.untagged;
    let remove = have
        .iter()
        .filter(|h| !want.iter().any(|w| w.vid == h.vid))
        .copied()
        .collect();
    let add = want
        .iter()
        .filter(|w| !have.iter().any(|h| same(h, w)))
        .copied()
        .collect();
    (remove, add)
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::RouteNetlinkMessage;
    use rtnetlink::packet_core::{
        NLM_F_ACK, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
    };

    fn bytes(msg: LinkMessage) -> Vec<u8> {
        let mut nl = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::from(RouteNetlinkMessage::SetLink(msg)),
        );
        nl.header.flags = NLM_F_REQUEST | NLM_F_ACK;
        nl.finalize();
        let mut buf = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut buf);
        buf
    }

    #[test]
    fn access_vlan_message_is_what_bridge_vlan_add_sends() {
        let b = bytes(message(7, PortVlan::access(10)));
        // nlmsghdr (16) + ifinfomsg (16) + IFLA_AF_SPEC { IFLA_BRIDGE_VLAN_INFO { u16, u16 } }.
        assert_eq!(b.len(), 16 + 16 + 4 + 4 + 4);
        assert_eq!(u16::from_ne_bytes([b[4], b[5]]), libc::RTM_SETLINK);
        assert_eq!(b[16], libc::AF_BRIDGE as u8);
        assert_eq!(u32::from_ne_bytes([b[20], b[21], b[22], b[23]]), 7);
        let af_spec = &b[32..];
        assert_eq!(u16::from_ne_bytes([af_spec[0], af_spec[1]]), 12);
        // IFLA_AF_SPEC = 26; the kernel accepts it with or without NLA_F_NESTED.
        assert_eq!(u16::from_ne_bytes([af_spec[2], af_spec[3]]) & 0x3fff, 26);
        let info = &af_spec[4..];
        assert_eq!(u16::from_ne_bytes([info[0], info[1]]), 8);
        assert_eq!(u16::from_ne_bytes([info[2], info[3]]), 2); // IFLA_BRIDGE_VLAN_INFO
        // struct bridge_vlan_info { u16 flags; u16 vid; }: PVID (2) | UNTAGGED (4).
        assert_eq!(u16::from_ne_bytes([info[4], info[5]]), 2 | 4);
        assert_eq!(u16::from_ne_bytes([info[6], info[7]]), 10);
    }

    #[test]
    fn tagged_vlan_has_no_flags_and_parses_back() {
        let msg = message(3, PortVlan::tagged(200));
        let b = bytes(msg.clone());
        assert_eq!(u16::from_ne_bytes([b[40], b[41]]), 0);
        assert_eq!(u16::from_ne_bytes([b[42], b[43]]), 200);
        assert_eq!(
            parse_dump(&msg),
            [PortVlan {
                port: 3,
                vid: 200,
                pvid: false,
                untagged: false
            }]
        );
    }

    #[test]
    fn diff_replaces_the_default_pvid() {
        let have = [PortVlan {
            port: 3,
            ..PortVlan::access(1)
        }];
        let want = wanted(Some(10), &[20]);
        let (remove, add) = diff(&have, &want);
        assert_eq!(remove.iter().map(|v| v.vid).collect::<Vec<_>>(), [1]);
        assert_eq!(add, [PortVlan::access(10), PortVlan::tagged(20)]);
        let done: Vec<PortVlan> = want.iter().map(|v| PortVlan { port: 3, ..*v }).collect();
        assert_eq!(diff(&done, &want), (vec![], vec![]));
        // No access VLAN: the default stays.
        assert_eq!(diff(&have, &wanted(None, &[])), (vec![], vec![]));
    }
}
