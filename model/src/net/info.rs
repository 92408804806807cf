//! What netd reports, read back from the kernel rather than echoed from the request.

use serde::{Deserialize, Serialize};

use super::{Limits, NetworkKind, PortKind};

/// A port as it exists: `name` is the host-side link (a veth's host end, or the tap the VMM
/// opens by name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortInfo {
    pub name: String,
    pub ifindex: u32,
    pub network: String,
    pub owner: String,
    pub kind: PortKind,
    /// The guest end's name in its namespace (veth only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_ifname: Option<String>,
    /// The guest end's MAC as the kernel reports it (veth), or the MAC given for the VM (tap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tagged_vlans: Vec<u16>,
    /// The guest end's addresses as the kernel reports them (veth), or the routed ones (tap).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    /// Frames the port's anti-spoofing dropped (what the guest sent from a MAC or address
    /// not its own); absent when the port has no port security.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spoof_drops: Option<u64>,
    /// Why the port could not be read back from the kernel (then the other members are its
    /// record's); absent when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// One link that belongs to a network: its bridge, uplink, 802.1Q link or a port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkEntry {
    pub name: String,
    pub ifindex: u32,
    /// The kernel's kind ("bridge", "veth", "tun", "vlan"), "" for a NIC.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,
    pub up: bool,
    /// The link's alias: Cairn's mark (`cairn:…`, `cairn-port:…`), absent on foreign links.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
}

/// One VLAN on one bridge port, from the kernel's AF_BRIDGE dump.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VlanEntry {
    pub port: String,
    pub vid: u16,
    pub pvid: bool,
    pub untagged: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteEntry {
    /// `addr/prefix`.
    pub dst: String,
    pub dev: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkInfo {
    pub name: String,
    pub kind: NetworkKind,
    pub links: Vec<LinkEntry>,
    pub vlans: Vec<VlanEntry>,
    /// The network's subnet (`addr/prefix`) when it has one: its guests' addresses lie in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    /// The host's addresses on the network (on its bridge), `addr/prefix`.
    pub addresses: Vec<String>,
    /// Routes through the network's links (the host routes of a routed network).
    pub routes: Vec<RouteEntry>,
    /// The shaping in place on the network's bridge, as netd's tc module reads it back.
    pub qdiscs: Vec<serde_json::Value>,
    /// The network's aggregate limits (bridged networks), as net.setLimits or net.create set
    /// them; absent when unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
}
