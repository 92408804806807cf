//! The kernel as netd's networks see it: one rtnetlink handle, reads that are free, and change
//! requests that are counted. The counter is how tests (and the log) see that a second
//! reconcile is a no-op: it sends no change request at all.

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::TryStreamExt;
use model::config::Cidr;
use model::net::BondMode;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage};
use netlink_packet_route::link::{
    BondMode as KBondMode, InfoBond, InfoBridge, InfoData, InfoKind, InfoVeth, LinkAttribute,
    LinkExtentMask, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
};
use rtnetlink::{Handle, LinkBond, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, LinkVlan};

use super::bridge_vlan::{self, PortVlan};
use super::error::{NetError, errno};
use super::mark::GROUP;

/// A link as netd needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KLink {
    pub index: u32,
    pub name: String,
    /// "bridge", "veth", "tun", "vlan", …; "" for a NIC.
    pub kind: String,
    pub alias: Option<String>,
    pub master: Option<u32>,
    pub up: bool,
    pub mac: Vec<u8>,
    /// For bridges: IFLA_BR_VLAN_FILTERING as the kernel reports it.
    pub vlan_filtering: Option<bool>,
    /// For bonds: IFLA_BOND_MODE as the kernel reports it.
    pub bond_mode: Option<u8>,
    /// IFLA_GROUP: `mark::GROUP` for links netd created.
    pub group: u32,
}

impl KLink {
    fn from_msg(m: &LinkMessage) -> KLink {
        let mut l = KLink {
            index: m.header.index,
            name: String::new(),
            kind: String::new(),
            alias: None,
            master: None,
            up: m.header.flags.contains(LinkFlags::Up),
            mac: Vec::new(),
            vlan_filtering: None,
            bond_mode: None,
            group: 0,
        };
        for a in &m.attributes {
            match a {
                LinkAttribute::IfName(n) => l.name = n.clone(),
                LinkAttribute::IfAlias(s) if !s.is_empty() => l.alias = Some(s.clone()),
                LinkAttribute::Controller(c) if *c != 0 => l.master = Some(*c),
                LinkAttribute::Address(mac) => l.mac = mac.clone(),
                LinkAttribute::Group(g) => l.group = *g,
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        match i {
                            LinkInfo::Kind(k) => l.kind = kind_name(k),
                            LinkInfo::Data(InfoData::Bridge(opts)) => {
                                l.vlan_filtering = opts.iter().find_map(|o| match o {
                                    InfoBridge::VlanFiltering(v) => Some(*v),
                                    _ => None,
                                });
                            }
                            LinkInfo::Data(InfoData::Bond(opts)) => {
                                l.bond_mode = opts.iter().find_map(|o| match o {
                                    InfoBond::Mode(m) => Some(u8::from(*m)),
                                    _ => None,
                                });
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        l
    }
}

fn kind_name(k: &InfoKind) -> String {
    match k {
        InfoKind::Bridge => "bridge".into(),
        InfoKind::Veth => "veth".into(),
        InfoKind::Tun => "tun".into(),
        InfoKind::Vlan => "vlan".into(),
        InfoKind::Bond => "bond".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// The kernel's value of a bond mode, as KLink::bond_mode reads it back.
pub fn bond_mode(mode: BondMode) -> KBondMode {
    match mode {
        BondMode::ActiveBackup => KBondMode::ActiveBackup,
        BondMode::Ieee8023ad => KBondMode::Ieee8023Ad,
        BondMode::BalanceRr => KBondMode::BalanceRr,
        BondMode::BalanceXor => KBondMode::BalanceXor,
    }
}

/// A route through one of netd's links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KRoute {
    pub dst: Cidr,
    pub oif: u32,
}

#[derive(Clone)]
pub struct Kernel {
    handle: Handle,
    changes: Arc<AtomicU64>,
}

impl Kernel {
    pub fn new(handle: Handle, changes: Arc<AtomicU64>) -> Kernel {
        Kernel { handle, changes }
    }

    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    pub fn counter(&self) -> Arc<AtomicU64> {
        self.changes.clone()
    }

    /// Change requests sent so far (netlink, tun ioctls and sysctl writes).
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }

    /// Counts one change request about to be sent.
    pub fn count(&self) {
        self.changes.fetch_add(1, Ordering::Relaxed);
    }

    pub async fn links(&self) -> Result<Vec<KLink>, NetError> {
        let msgs: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| NetError::kernel("list links", &e))?;
        Ok(msgs.iter().map(KLink::from_msg).collect())
    }

    pub async fn link(&self, name: &str) -> Result<Option<KLink>, NetError> {
        let mut s = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match s.try_next().await {
            Ok(m) => Ok(m.as_ref().map(KLink::from_msg)),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(NetError::kernel(format!("look up link {name}"), &e)),
        }
    }

    async fn must_link(&self, name: &str) -> Result<KLink, NetError> {
        self.link(name).await?.ok_or_else(|| NetError::Kernel {
            what: format!("read back link {name}"),
            reason: "it vanished right after it was created".into(),
        })
    }

    async fn add(&self, what: String, msg: LinkMessage) -> Result<(), NetError> {
        self.count();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(|e| NetError::kernel(what, &e))
    }

    async fn set(&self, what: String, msg: LinkMessage) -> Result<(), NetError> {
        self.count();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|e| NetError::kernel(what, &e))
    }

    /// A bridge in `mark::GROUP`, with the alias `mark` requested too (see `mark` for why
    /// both).
    pub async fn create_bridge(
        &self,
        name: &str,
        mark: &str,
        vlan_filtering: bool,
    ) -> Result<KLink, NetError> {
        let mut b = LinkBridge::new(name).link_group(GROUP).alias(mark);
        if vlan_filtering {
            b = b.vlan_filtering(true);
        }
        let what = if vlan_filtering {
            format!("create VLAN-filtering bridge {name}")
        } else {
            format!("create bridge {name}")
        };
        self.add(what, b.build()).await?;
        self.must_link(name).await
    }

    pub async fn create_vlan(
        &self,
        name: &str,
        mark: &str,
        parent: &KLink,
        vid: u16,
    ) -> Result<KLink, NetError> {
        self.add(
            format!("create 802.1Q link {name} (vlan {vid} on {})", parent.name),
            LinkVlan::new(name, parent.index, vid)
                .link_group(GROUP)
                .alias(mark)
                .build(),
        )
        .await?;
        self.must_link(name).await
    }

    /// A bond in `mode`, down and without NICs.
    pub async fn create_bond(
        &self,
        name: &str,
        mark: &str,
        mode: BondMode,
    ) -> Result<KLink, NetError> {
        self.add(
            format!("create bond {name} (mode {})", mode.as_str()),
            LinkBond::new(name)
                .mode(bond_mode(mode))
                .link_group(GROUP)
                .alias(mark)
                .build(),
        )
        .await?;
        self.must_link(name).await
    }

    /// Makes `nic` a NIC of `bond`: down (the bonding driver refuses an up device with EPERM),
    /// then master, then up — in separate requests, because one request that sets both has the
    /// kernel raise the link before it sets the master.
    pub async fn enslave(&self, nic: &KLink, bond: &KLink) -> Result<(), NetError> {
        if nic.up {
            self.set(
                format!("set {} down to add it to bond {}", nic.name, bond.name),
                LinkUnspec::new_with_index(nic.index).down().build(),
            )
            .await?;
        }
        self.set(
            format!("add {} to bond {}", nic.name, bond.name),
            LinkUnspec::new_with_index(nic.index)
                .controller(bond.index)
                .build(),
        )
        .await?;
        self.set(
            format!("set {} up in bond {}", nic.name, bond.name),
            LinkUnspec::new_with_index(nic.index).up().build(),
        )
        .await
    }

    /// Takes a link out of its master (`ip link set DEV nomaster`).
    pub async fn release(&self, link: &KLink) -> Result<(), NetError> {
        self.set(
            format!("release {} from its master", link.name),
            LinkUnspec::new_with_index(link.index)
                .nocontroller()
                .build(),
        )
        .await
    }

    /// A veth pair whose peer is created directly in the namespace behind `netns_fd`, already
    /// named `guest` and with `mac` (the kernel picks one when absent).
    pub async fn create_veth(
        &self,
        host: &str,
        mark: &str,
        guest: &str,
        netns_fd: RawFd,
        mac: Option<[u8; 6]>,
    ) -> Result<KLink, NetError> {
        let mut peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(guest.to_string())
            .setns_by_fd(netns_fd);
        if let Some(mac) = mac {
            peer = peer.address(mac.to_vec());
        }
        let msg = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(host.to_string())
            .link_group(GROUP)
            .alias(mark)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())))
            .build();
        self.count();
        match self.handle.link().add(msg).execute().await {
            Ok(()) => {}
            Err(e) if errno(&e) == Some(libc::EEXIST) => {
                return Err(NetError::Conflict(format!(
                    "create veth {host}: the guest namespace already has a link named {guest} \
                     (choose another guest_ifname)"
                )));
            }
            Err(e) => return Err(NetError::kernel(format!("create veth {host}"), &e)),
        }
        self.must_link(host).await
    }

    /// Sets the alias, master and up flag of a link in one request, each only if given.
    pub async fn configure(
        &self,
        link: &KLink,
        alias: Option<&str>,
        master: Option<u32>,
        up: bool,
    ) -> Result<(), NetError> {
        let mut b = LinkUnspec::new_with_index(link.index);
        if let Some(a) = alias {
            b = b.alias(a);
        }
        if let Some(m) = master {
            b = b.controller(m);
        }
        if up {
            b = b.up();
        }
        self.set(format!("configure link {}", link.name), b.build())
            .await
    }

    pub async fn set_vlan_filtering(&self, link: &KLink, on: bool) -> Result<(), NetError> {
        let msg = LinkBridge::new(&link.name)
            .index(link.index)
            .vlan_filtering(on)
            .build();
        // Link-kind options change through RTM_NEWLINK on the existing device (what `ip link
        // set BR type bridge vlan_filtering 1` sends); RTM_SETLINK ignores IFLA_LINKINFO.
        self.count();
        let what = format!(
            "set vlan_filtering={} on bridge {}",
            u8::from(on),
            link.name
        );
        self.handle
            .link()
            .change(msg)
            .execute()
            .await
            .map_err(|e| NetError::kernel(what, &e))
    }

    /// Deletes a link; an already absent one is success.
    pub async fn delete(&self, index: u32, name: &str) -> Result<(), NetError> {
        self.count();
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(()),
            Err(e) => Err(NetError::kernel(format!("delete link {name}"), &e)),
        }
    }

    /// All addresses by link index.
    pub async fn addresses(&self) -> Result<HashMap<u32, Vec<Cidr>>, NetError> {
        let msgs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| NetError::kernel("list addresses", &e))?;
        let mut by_link: HashMap<u32, Vec<Cidr>> = HashMap::new();
        for m in &msgs {
            let local = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
            let addr = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            });
            if let Some(ip) = local.or(addr) {
                by_link.entry(m.header.index).or_default().push(Cidr {
                    addr: ip,
                    prefix: m.header.prefix_len,
                });
            }
        }
        Ok(by_link)
    }

    pub async fn add_address(&self, link: &KLink, c: Cidr) -> Result<(), NetError> {
        self.count();
        match self
            .handle
            .address()
            .add(link.index, c.addr, c.prefix)
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
            Err(e) => Err(NetError::kernel(format!("add {c} to {}", link.name), &e)),
        }
    }

    /// Adds an IPv6 address without duplicate address detection (the host side's fe80::1 on
    /// routed ports, usable at once).
    pub async fn add_address_nodad(&self, link: &KLink, c: Cidr) -> Result<(), NetError> {
        self.count();
        let mut req = self.handle.address().add(link.index, c.addr, c.prefix);
        req.message_mut().header.flags = AddressHeaderFlags::Nodad;
        match req.execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
            Err(e) => Err(NetError::kernel(format!("add {c} to {}", link.name), &e)),
        }
    }

    /// IPv6 proxy neighbour entries (`ip -6 neigh show proxy`) as (link index, address).
    pub async fn proxy_neighbours(&self) -> Result<Vec<(u32, IpAddr)>, NetError> {
        let msgs: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Inet6)
            .proxies()
            .execute()
            .try_collect()
            .await
            .map_err(|e| NetError::kernel("list proxy neighbours", &e))?;
        Ok(msgs
            .iter()
            .filter(|m| m.header.flags.contains(NeighbourFlags::Proxy))
            .filter_map(|m| {
                m.attributes.iter().find_map(|a| match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) => {
                        Some((m.header.ifindex, IpAddr::V6(*ip)))
                    }
                    _ => None,
                })
            })
            .collect())
    }

    /// `ip -6 neigh add proxy <ip> dev <link>`.
    pub async fn add_proxy_neighbour(&self, link: &KLink, ip: IpAddr) -> Result<(), NetError> {
        self.count();
        let r = self
            .handle
            .neighbours()
            .add(link.index, ip)
            .flags(NeighbourFlags::Proxy)
            .execute()
            .await;
        match r {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
            Err(e) => Err(NetError::kernel(
                format!("add proxy neighbour {ip} on {}", link.name),
                &e,
            )),
        }
    }

    /// `ip -6 neigh del proxy <ip> dev <link>`; an entry already gone is fine.
    pub async fn del_proxy_neighbour(&self, link: &KLink, ip: IpAddr) -> Result<(), NetError> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = if ip.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        msg.header.ifindex = link.index;
        msg.header.flags = NeighbourFlags::Proxy;
        msg.attributes
            .push(NeighbourAttribute::Destination(match ip {
                IpAddr::V4(a) => NeighbourAddress::Inet(a),
                IpAddr::V6(a) => NeighbourAddress::Inet6(a),
            }));
        self.count();
        match self.handle.neighbours().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) if matches!(errno(&e), Some(libc::ENOENT) | Some(libc::ENODEV)) => Ok(()),
            Err(e) => Err(NetError::kernel(
                format!("delete proxy neighbour {ip} on {}", link.name),
                &e,
            )),
        }
    }

    /// Routes of the main table that go out through a link, both families.
    pub async fn routes(&self) -> Result<Vec<KRoute>, NetError> {
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut q = RouteMessage::default();
            q.header.address_family = family;
            let msgs: Vec<RouteMessage> = self
                .handle
                .route()
                .get(q)
                .execute()
                .try_collect()
                .await
                .map_err(|e| NetError::kernel("list routes", &e))?;
            for m in &msgs {
                if m.header.table != RouteHeader::RT_TABLE_MAIN {
                    continue;
                }
                let dst = m.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(IpAddr::V4(*ip)),
                    RouteAttribute::Destination(RouteAddress::Inet6(ip)) => Some(IpAddr::V6(*ip)),
                    _ => None,
                });
                let oif = m.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Oif(i) => Some(*i),
                    _ => None,
                });
                if let (Some(addr), Some(oif)) = (dst, oif) {
                    out.push(KRoute {
                        dst: Cidr {
                            addr,
                            prefix: m.header.destination_prefix_length,
                        },
                        oif,
                    });
                }
            }
        }
        Ok(out)
    }

    /// A host route (/32, /128) to `ip` through `link`.
    pub async fn add_host_route(&self, link: &KLink, ip: IpAddr) -> Result<(), NetError> {
        let prefix = if ip.is_ipv4() { 32 } else { 128 };
        let msg = rtnetlink::RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(ip, prefix)
            .map_err(|e| NetError::Invalid(format!("route to {ip}: {e}")))?
            .output_interface(link.index)
            .scope(RouteScope::Link)
            .protocol(RouteProtocol::Static)
            .build();
        self.count();
        match self.handle.route().add(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
            Err(e) => Err(NetError::kernel(
                format!("add route {ip}/{prefix} via {}", link.name),
                &e,
            )),
        }
    }

    /// `ip -6 route add default via <gw> dev <link>` (a link-local gateway needs the link).
    pub async fn add_default_route_v6(
        &self,
        link: &KLink,
        gw: std::net::Ipv6Addr,
    ) -> Result<(), NetError> {
        let msg = rtnetlink::RouteMessageBuilder::<std::net::Ipv6Addr>::new()
            .gateway(gw)
            .output_interface(link.index)
            .protocol(RouteProtocol::Static)
            .build();
        self.count();
        match self.handle.route().add(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
            Err(e) => Err(NetError::kernel(
                format!("add default route via {gw} dev {}", link.name),
                &e,
            )),
        }
    }

    /// VLANs on every bridge port, from the AF_BRIDGE dump with RTEXT_FILTER_BRVLAN.
    pub async fn bridge_vlans(&self) -> Result<Vec<PortVlan>, NetError> {
        let msgs: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .set_filter_mask(AddressFamily::Bridge, vec![LinkExtentMask::Brvlan])
            .execute()
            .try_collect()
            .await
            .map_err(|e| NetError::kernel("list bridge VLANs", &e))?;
        Ok(msgs.iter().flat_map(bridge_vlan::parse_dump).collect())
    }

    /// Adds (or with `del`, removes) one VLAN on a bridge port.
    pub async fn bridge_vlan(&self, port: &KLink, v: PortVlan, del: bool) -> Result<(), NetError> {
        let msg = bridge_vlan::message(port.index, v);
        self.count();
        let what = format!(
            "{} vlan {} on bridge port {}",
            if del { "remove" } else { "add" },
            v.vid,
            port.name
        );
        let r = if del {
            self.handle.link().del_with_message(msg).execute().await
        } else {
            self.handle.link().set(msg).execute().await
        };
        r.map_err(|e| NetError::kernel(what, &e))
    }
}
