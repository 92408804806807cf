//! What a client asks for: a network (`CreateNetwork`) or a port (`AttachPort`).

use serde::{Deserialize, Serialize};

use super::check::{InvalidSpec, Problems, check_cidr, check_vlan, is_ifname, is_name, parse_mac};
use super::{Limits, NETWORK_NAME_MAX, OWNER_MAX};
use crate::config;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkKind {
    /// A Linux bridge named after the network; ports are its members.
    Bridged,
    /// No bridge: each port's addresses become host routes via its host-side link.
    Routed,
    /// An 802.1Q link on a NIC, usable as the uplink of another network.
    Vlan,
}

impl NetworkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkKind::Bridged => "bridged",
            NetworkKind::Routed => "routed",
            NetworkKind::Vlan => "vlan",
        }
    }
}

impl From<config::NetworkKind> for NetworkKind {
    fn from(k: config::NetworkKind) -> Self {
        match k {
            config::NetworkKind::Bridged => NetworkKind::Bridged,
            config::NetworkKind::Routed => NetworkKind::Routed,
            config::NetworkKind::Vlan => NetworkKind::Vlan,
        }
    }
}

/// How a bond spreads traffic over its NICs (the kernel's bonding modes Cairn offers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum BondMode {
    /// One NIC carries the traffic, another takes over when it fails; needs no switch support.
    #[default]
    ActiveBackup,
    /// LACP; the switch ports must form a LAG.
    Ieee8023ad,
    BalanceRr,
    BalanceXor,
}

/// Fewest and most NICs in a bond.
pub const BOND_MIN: usize = 2;
pub const BOND_MAX: usize = 8;

impl BondMode {
    pub const ALL: [BondMode; 4] = [
        BondMode::ActiveBackup,
        BondMode::Ieee8023ad,
        BondMode::BalanceRr,
        BondMode::BalanceXor,
    ];

    /// The name host.toml, the API and `ip -d link` use.
    pub fn as_str(self) -> &'static str {
        match self {
            BondMode::ActiveBackup => "active-backup",
            BondMode::Ieee8023ad => "802.3ad",
            BondMode::BalanceRr => "balance-rr",
            BondMode::BalanceXor => "balance-xor",
        }
    }

    pub fn parse(s: &str) -> Option<BondMode> {
        BondMode::ALL.into_iter().find(|m| m.as_str() == s)
    }

    /// `"active-backup", "802.3ad", …` for messages.
    pub fn choices() -> String {
        BondMode::ALL
            .iter()
            .map(|m| format!("{:?}", m.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    pub name: String,
    pub kind: NetworkKind,
    /// A NIC, or the name of a `vlan` network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink: Option<String>,
    /// The 802.1Q id of a `vlan` network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// Bridged only: the bridge filters by VLAN (IFLA_BR_VLAN_FILTERING) and ports carry
    /// access/tagged VLANs on it, instead of one bridge per VLAN.
    #[serde(default, skip_serializing_if = "is_false")]
    pub vlan_aware: bool,
    /// Bridged only, instead of `uplink`: 2-8 NICs bonded into one uplink link.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bond: Vec<String>,
    /// The bond's mode (see [`BondMode`]); "active-backup" when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bond_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    /// The host's own address on the network (on the bridge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The aggregate limit of all the network's traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
}

impl From<&config::Network> for NetworkSpec {
    fn from(n: &config::Network) -> Self {
        NetworkSpec {
            name: n.name.clone(),
            kind: n.kind.into(),
            uplink: n.uplink.clone(),
            vlan: n.vlan,
            vlan_aware: false,
            bond: n.bond.clone(),
            bond_mode: n.bond_mode.map(|m| m.as_str().to_string()),
            subnet: n.subnet.map(|c| c.to_string()),
            address: n.address.map(|c| c.to_string()),
            limits: None,
        }
    }
}

impl NetworkSpec {
    /// Checks the spec on its own (names, ranges, CIDRs, which fields go with which kind).
    /// Whether the uplink exists or the subnet overlaps another network is for netd to say.
    pub fn validate(&self) -> Result<(), InvalidSpec> {
        let mut p = Problems::default();
        if !is_name(&self.name, NETWORK_NAME_MAX) {
            p.push(format!(
                "name {:?} is not a valid network name; expected lowercase letters, digits and \
                 hyphens, starting with a letter or digit, at most 15 characters",
                self.name
            ));
        }
        if let Some(u) = &self.uplink
            && !is_ifname(u)
        {
            p.push(format!(
                "uplink {u:?} is not a valid interface or network name; expected 1-15 \
                 characters without '/', ':' or spaces"
            ));
        }
        self.check_bond(&mut p);
        match (self.kind, self.vlan) {
            (NetworkKind::Vlan, Some(vid)) => check_vlan(&mut p, "vlan", vid),
            (NetworkKind::Vlan, None) => {
                p.push("vlan is required for kind \"vlan\" (the 802.1Q id, 1..=4094)")
            }
            (_, Some(vid)) => {
                check_vlan(&mut p, "vlan", vid);
                p.push(format!(
                    "vlan = {vid} is only used with kind \"vlan\"; put the VLAN on a vlan \
                     network and use it as uplink, or on the ports of a vlan_aware network"
                ));
            }
            (_, None) => {}
        }
        if self.kind == NetworkKind::Vlan && self.uplink.is_none() {
            p.push("uplink is required for kind \"vlan\" (the NIC that carries the tags)");
        }
        if self.vlan_aware && self.kind != NetworkKind::Bridged {
            p.push(format!(
                "vlan_aware is only used with kind \"bridged\", not {:?}",
                self.kind.as_str()
            ));
        }
        let subnet = self
            .subnet
            .as_deref()
            .and_then(|s| check_cidr(&mut p, "subnet", s, false).map(|c| (s, c)));
        if let Some((s, c)) = subnet
            && !c.is_network()
        {
            p.push(format!(
                "subnet {s:?} has host bits set; expected \"{}\"",
                c.network()
            ));
        }
        if let Some(a) = &self.address
            && let Some(c) = check_cidr(&mut p, "address", a, true)
            && let Some((_, net)) = subnet
        {
            if !net.contains(c.addr) {
                p.push(format!(
                    "address {a:?} lies outside the network's subnet {net}"
                ));
            } else if c.prefix != net.prefix {
                p.push(format!(
                    "address {a:?} has prefix /{} but the subnet is {net}; expected \"{}/{}\"",
                    c.prefix, c.addr, net.prefix
                ));
            }
        }
        if self.address.is_some() && self.kind == NetworkKind::Vlan {
            p.push("address is not used with kind \"vlan\"; give it to the network on top");
        }
        if let Some(l) = &self.limits
            && let Err(e) = l.validate()
        {
            p.push(format!("limits.{e}"));
        }
        p.finish()
    }

    fn check_bond(&self, p: &mut Problems) {
        if let Some(m) = &self.bond_mode {
            if BondMode::parse(m).is_none() {
                p.push(format!(
                    "bond_mode {m:?} is not a bond mode; expected one of {}",
                    BondMode::choices()
                ));
            }
            if self.bond.is_empty() {
                p.push("bond_mode is only used with bond");
            }
        }
        if self.bond.is_empty() {
            return;
        }
        if !(BOND_MIN..=BOND_MAX).contains(&self.bond.len()) {
            p.push(format!(
                "bond has {} NICs; expected {BOND_MIN} to {BOND_MAX}",
                self.bond.len()
            ));
        }
        for (i, nic) in self.bond.iter().enumerate() {
            if !is_ifname(nic) {
                p.push(format!(
                    "bond[{i}] {nic:?} is not a valid interface name; expected 1-15 \
                     characters without '/', ':' or spaces"
                ));
            } else if self.bond[..i].contains(nic) {
                p.push(format!("bond[{i}] {nic:?} is listed twice"));
            }
        }
        if self.uplink.is_some() {
            p.push("bond and uplink exclude each other; the bond is the network's uplink");
        }
        if self.kind != NetworkKind::Bridged {
            p.push(format!(
                "bond is only used with kind \"bridged\", not {:?}",
                self.kind.as_str()
            ));
        }
    }

    /// The bond's mode: as given, or active-backup (validate first).
    pub fn bond_mode(&self) -> BondMode {
        self.bond_mode
            .as_deref()
            .and_then(BondMode::parse)
            .unwrap_or_default()
    }

    /// The subnet as parsed; `None` when absent or invalid (validate first).
    pub fn subnet_cidr(&self) -> Option<config::Cidr> {
        self.subnet
            .as_deref()
            .and_then(|s| config::parse_cidr(s).ok())
    }

    pub fn address_cidr(&self) -> Option<config::Cidr> {
        self.address
            .as_deref()
            .and_then(|s| config::parse_cidr(s).ok())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortKind {
    /// A veth pair; the guest end lives in the guest's network namespace (containers).
    Veth,
    /// A persistent tap device the VMM opens by name (VMs).
    Tap,
}

impl PortKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PortKind::Veth => "veth",
            PortKind::Tap => "tap",
        }
    }
}

pub const DEFAULT_GUEST_IFNAME: &str = "eth0";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortSpec {
    pub network: String,
    /// Who the port is for, e.g. "ct:web1" or "vm:db": one port per owner and network.
    pub owner: String,
    pub kind: PortKind,
    /// Veth only: the network namespace file of the guest end (`/proc/PID/ns/net`,
    /// `/run/netns/NAME`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    /// Veth only: the guest end's name inside the namespace; "eth0" when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_ifname: Option<String>,
    /// The guest's MAC (the veth's guest end, or the VM's NIC behind a tap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Access VLAN (PVID, untagged) on a vlan_aware network, or the VLAN of a classic bridged
    /// network's per-VLAN bridge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// VLANs the port carries tagged (vlan_aware networks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tagged_vlans: Vec<u16>,
    /// The guest's addresses, `addr/prefix`: set inside the namespace for a veth, routed to
    /// the port on a routed network.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    /// Anti-spoofing (on unless false): the guest may send only from its MAC and its
    /// addresses (netd's `guard` module says exactly what passes).
    #[serde(default = "port_security_default", skip_serializing_if = "is_true")]
    pub port_security: bool,
}

fn port_security_default() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

impl PortSpec {
    pub fn guest_ifname(&self) -> &str {
        self.guest_ifname.as_deref().unwrap_or(DEFAULT_GUEST_IFNAME)
    }

    /// The MAC as bytes; `None` when absent or invalid (validate first).
    pub fn mac_bytes(&self) -> Option<[u8; 6]> {
        self.mac.as_deref().and_then(parse_mac)
    }

    /// The addresses as parsed, skipping invalid ones (validate first).
    pub fn address_cidrs(&self) -> Vec<config::Cidr> {
        self.addresses
            .iter()
            .filter_map(|a| config::parse_cidr(a).ok())
            .collect()
    }

    pub fn validate(&self) -> Result<(), InvalidSpec> {
        let mut p = Problems::default();
        if !is_name(&self.network, NETWORK_NAME_MAX) {
            p.push(format!(
                "network {:?} is not a valid network name; expected lowercase letters, digits \
                 and hyphens, at most 15 characters",
                self.network
            ));
        }
        let owner_ok = !self.owner.is_empty()
            && self.owner.len() <= OWNER_MAX
            && self
                .owner
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:@".contains(&b));
        if !owner_ok {
            p.push(format!(
                "owner {:?} is not a valid owner; expected 1-128 letters, digits and '-_.:@', \
                 such as \"ct:web1\"",
                self.owner
            ));
        }
        match (self.kind, &self.netns) {
            (PortKind::Veth, None) => p.push(
                "netns is required for a veth port (the guest's namespace file, such as \
                 /proc/PID/ns/net)",
            ),
            (PortKind::Veth, Some(ns)) if !ns.starts_with('/') => p.push(format!(
                "netns {ns:?} is not an absolute path; expected /proc/PID/ns/net or \
                 /run/netns/NAME"
            )),
            (PortKind::Tap, Some(_)) => {
                p.push("netns is only used with kind \"veth\"; a tap stays in the host")
            }
            _ => {}
        }
        if let Some(g) = &self.guest_ifname {
            if self.kind == PortKind::Tap {
                p.push("guest_ifname is only used with kind \"veth\"");
            } else if !is_ifname(g) {
                p.push(format!(
                    "guest_ifname {g:?} is not a valid interface name; expected 1-15 \
                     characters without '/', ':' or spaces"
                ));
            }
        }
        if let Some(m) = &self.mac
            && parse_mac(m).is_none()
        {
            p.push(format!(
                "mac {m:?} is not a unicast MAC address; expected six hex pairs such as \
                 \"02:00:00:00:00:01\""
            ));
        }
        if let Some(vid) = self.vlan {
            check_vlan(&mut p, "vlan", vid);
        }
        for (i, vid) in self.tagged_vlans.iter().enumerate() {
            check_vlan(&mut p, &format!("tagged_vlans[{i}]"), *vid);
            if Some(*vid) == self.vlan {
                p.push(format!(
                    "tagged_vlans[{i}] = {vid} is also the access vlan; expected it once"
                ));
            } else if self.tagged_vlans[..i].contains(vid) {
                p.push(format!("tagged_vlans[{i}] = {vid} is listed twice"));
            }
        }
        for (i, a) in self.addresses.iter().enumerate() {
            let field = format!("addresses[{i}]");
            if let Some(c) = check_cidr(&mut p, &field, a, true)
                && self.addresses[..i]
                    .iter()
                    .any(|o| config::parse_cidr(o).is_ok_and(|o| o.addr == c.addr))
            {
                p.push(format!("{field} {a:?} repeats an earlier address"));
            }
        }
        if let Some(l) = &self.limits
            && let Err(e) = l.validate()
        {
            p.push(format!("limits.{e}"));
        }
        p.finish()
    }
}
