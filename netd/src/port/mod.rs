//! Ports: a veth pair (containers) or a persistent tap (VMs) on a network, named
//! deterministically from network + owner and marked `cairn-port:<network>:<owner>`.

mod guest;
mod tap;

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsRawFd;

use model::net::{Limits, LimitsChange, NetworkKind, PortInfo, PortKind, PortSpec};

use crate::net::bridge_vlan::{self, PortVlan};
use crate::net::kernel::KLink;
use crate::net::store::{Pending, PortRecord};
use crate::net::{NetError, Reconciler, Snapshot, Tx, mark, naming, sysctl};

impl Reconciler {
    /// Creates a port and returns it as read back. On any failure the links this call made are
    /// deleted again and the error names the step. A spec without limits gets those its owner
    /// was last given on this network (`set_limits`): a guest's port is made anew at each start.
    pub async fn attach_port(&mut self, mut spec: PortSpec) -> Result<PortInfo, NetError> {
        spec.validate()
            .map_err(|e| NetError::Invalid(e.to_string()))?;
        if spec.limits.is_none()
            && let Some(kept) = self
                .owner_limits
                .get(&(spec.network.clone(), spec.owner.clone()))
        {
            tracing::info!(owner = %spec.owner, network = %spec.network, "the owner's limits apply to its new port");
            spec.limits = Some(*kept);
        }
        let net = self
            .network(&spec.network)
            .ok_or_else(|| NetError::NotFound(format!("network {} does not exist", spec.network)))?
            .spec
            .clone();
        self.forget_vanished_rivals(&spec).await?;
        self.check_port(&spec, &net)?;
        let name = naming::port_ifname(&spec.network, &spec.owner, spec.kind);
        let mut names = vec![name.clone(), net.name.clone()];
        names.extend(net.uplink.clone());
        if let Some(vid) = spec.vlan {
            names.push(naming::vlan_bridge(&net.name, vid));
            if let Some(u) = &net.uplink {
                names.push(naming::vlan_subif(u, vid));
            }
        }
        let mut snap = Snapshot::of(&self.k, &names).await?;
        if let Some(l) = snap.links.get(&name).cloned()
            && mark::unfinished(l.alias.as_deref(), l.group)
        {
            // Left by an attach of this port that a stopped netd never finished: ours.
            self.k.delete(l.index, &l.name).await?;
            snap.links.remove(&name);
            tracing::info!(port = %name, "deleted the link of an interrupted attach");
        }
        if snap.links.contains_key(&name) {
            return Err(NetError::Conflict(format!(
                "link {name} (the port of owner {} on network {}) already exists",
                spec.owner, spec.network
            )));
        }
        let mut rec = PortRecord {
            name: name.clone(),
            spec,
            guest_mac: None,
            guest_addresses: Vec::new(),
        };
        // The record is written aside before the kernel is touched, so a state filesystem
        // that cannot take it fails the call with nothing changed; the final record (with
        // what the guest end read back) replaces it after the port is made, and a port whose
        // record cannot be put in place is taken down again.
        self.ports.insert(name.clone(), rec.clone());
        let first = self.prepare_ports();
        self.ports.remove(&name);
        drop(first?);
        let mut tx = Tx::default();
        if let Err(e) = self.create_port(&mut rec, &mut snap, &mut tx).await {
            self.undo_port(&rec, tx, &mut snap).await;
            return Err(e);
        }
        self.ports.insert(name.clone(), rec.clone());
        if let Err(e) = self.prepare_ports().and_then(Pending::commit) {
            self.ports.remove(&name);
            self.undo_port(&rec, tx, &mut snap).await;
            return Err(e);
        }
        tracing::info!(port = %name, network = %rec.spec.network, owner = %rec.spec.owner, kind = rec.spec.kind.as_str(), "port attached");
        self.port_info(&name).await
    }

    /// Takes down what a failed attach made: the port's IFB, its links, its proxy entries on
    /// the other ports.
    async fn undo_port(&self, rec: &PortRecord, tx: Tx, snap: &mut Snapshot) {
        if rec.spec.limits.is_some()
            && let Some(l) = snap.links.get(&rec.name)
            && let Err(e) = crate::tc::clear_port_limits(self.k.handle(), l.index, &l.name).await
        {
            tracing::warn!(port = %rec.name, error = %e, "cannot clear limits while rolling back");
        }
        tx.rollback(&self.k, snap).await;
        if let Err(e) = crate::guard::retain(&|p| p != rec.name) {
            tracing::warn!(port = %rec.name, error = %e, "cannot remove port security while rolling back");
        }
        if let Err(e) = self.remove_peer_proxies(rec).await {
            tracing::warn!(port = %rec.name, error = %e, "cannot remove proxy entries while rolling back");
        }
    }

    /// `rec`'s IPv6 proxy entries on the other ports of a routed network (those on its own
    /// link go with the link).
    async fn remove_peer_proxies(&self, rec: &PortRecord) -> Result<(), NetError> {
        let mine = v6_addrs(rec);
        if !mine.is_empty()
            && let Some(net) = self.network(&rec.spec.network).map(|n| n.spec.clone())
            && net.kind == NetworkKind::Routed
        {
            let have: BTreeSet<(u32, IpAddr)> =
                self.k.proxy_neighbours().await?.into_iter().collect();
            for (peer, _) in self.routed_peers(rec, &net, &Snapshot::default()).await? {
                for ip in &mine {
                    if have.contains(&(peer.index, *ip)) {
                        self.k.del_proxy_neighbour(&peer, *ip).await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The records `spec` would conflict with (same owner on the network, or a routed address
    /// it asks for) whose host link has gone — a veth dies with its guest's network namespace
    /// while hostd may not be there to detach it — are detached first: a guest that died
    /// unseen must not block its own next start. Only the rivals are looked up, so an attach
    /// stays one link lookup on a network with many ports.
    async fn forget_vanished_rivals(&mut self, spec: &PortSpec) -> Result<(), NetError> {
        let mine = spec.address_cidrs();
        let rivals: Vec<String> = self
            .ports
            .values()
            .filter(|p| {
                p.spec.network == spec.network
                    && (p.spec.owner == spec.owner
                        || p.spec
                            .address_cidrs()
                            .iter()
                            .any(|o| mine.iter().any(|c| c.addr == o.addr)))
            })
            .map(|p| p.name.clone())
            .collect();
        for name in rivals {
            if self.k.link(&name).await?.is_none() {
                tracing::info!(port = %name, "port link is gone; forgetting it");
                self.detach_port(&name).await?;
            }
        }
        Ok(())
    }

    /// What the spec asks that the network cannot give; nothing has been changed yet.
    fn check_port(&self, spec: &PortSpec, net: &model::net::NetworkSpec) -> Result<(), NetError> {
        if let Some(p) = self
            .ports
            .values()
            .find(|p| p.spec.network == spec.network && p.spec.owner == spec.owner)
        {
            return Err(NetError::Conflict(format!(
                "owner {} already has port {} on network {}",
                spec.owner, p.name, spec.network
            )));
        }
        match net.kind {
            NetworkKind::Vlan => {
                return Err(NetError::Invalid(format!(
                    "network {} is a vlan network; attach ports to a bridged or routed network \
                     that uses it as uplink",
                    spec.network
                )));
            }
            NetworkKind::Routed if spec.vlan.is_some() || !spec.tagged_vlans.is_empty() => {
                return Err(NetError::Invalid(format!(
                    "vlan and tagged_vlans are only used on bridged networks; {} is routed",
                    spec.network
                )));
            }
            NetworkKind::Bridged if !net.vlan_aware && !spec.tagged_vlans.is_empty() => {
                return Err(NetError::Invalid(format!(
                    "tagged_vlans needs a vlan_aware network; {} is a classic bridge (one bridge \
                     per VLAN)",
                    spec.network
                )));
            }
            _ => {}
        }
        if net.kind == NetworkKind::Routed {
            for (i, c) in spec.address_cidrs().iter().enumerate() {
                if let Some(p) = self.ports.values().find(|p| {
                    p.spec.network == spec.network
                        && p.spec.address_cidrs().iter().any(|o| o.addr == c.addr)
                }) {
                    return Err(NetError::Conflict(format!(
                        "addresses[{i}] {c} is already routed to port {} ({})",
                        p.name, p.spec.owner
                    )));
                }
            }
        }
        Ok(())
    }

    async fn create_port(
        &self,
        rec: &mut PortRecord,
        snap: &mut Snapshot,
        tx: &mut Tx,
    ) -> Result<(), NetError> {
        let spec = rec.spec.clone();
        let mut netns_file = None;
        let link = match spec.kind {
            PortKind::Veth => {
                let path = spec.netns.clone().unwrap_or_default();
                let f = File::open(&path).map_err(|e| {
                    let what = format!("netns {path}");
                    if e.kind() == std::io::ErrorKind::NotFound {
                        NetError::NotFound(format!("{what} does not exist: {e}"))
                    } else {
                        NetError::io(what, e)
                    }
                })?;
                let l = self
                    .k
                    .create_veth(
                        &rec.name,
                        &mark::port(&spec.network, &spec.owner),
                        spec.guest_ifname(),
                        f.as_raw_fd(),
                        spec.mac_bytes(),
                    )
                    .await?;
                netns_file = Some((f, path));
                l
            }
            PortKind::Tap => {
                tap::create(&self.k, &rec.name)?;
                self.k
                    .link(&rec.name)
                    .await?
                    .ok_or_else(|| NetError::Kernel {
                        what: format!("read back tap {}", rec.name),
                        reason: "it does not exist right after TUNSETPERSIST".into(),
                    })?
            }
        };
        tx.created(&link);
        let m = mark::port(&spec.network, &spec.owner);
        self.k.configure(&link, Some(&m), None, false).await?;
        let mut link = link;
        link.alias = Some(m);
        snap.put(&link);
        self.apply_port_host(rec, snap, tx).await?;
        if let Some((f, path)) = netns_file {
            let g = guest::configure(
                f,
                path,
                spec.guest_ifname().to_string(),
                spec.address_cidrs(),
                // Routed IPv6 guests reach everything through the host side's fe80::1.
                self.network(&spec.network)
                    .is_some_and(|n| n.spec.kind == NetworkKind::Routed)
                    && spec.address_cidrs().iter().any(|c| c.addr.is_ipv6()),
                self.k.counter(),
            )
            .await?;
            rec.guest_mac = Some(g.mac);
            rec.guest_addresses = g.addresses;
        }
        // After the guest end's configuration: a veth's MAC is known from here on.
        self.apply_guard(rec)?;
        Ok(())
    }

    /// The port's anti-spoofing rules (`crate::guard`) as its spec says: enforced with the
    /// spec's (or the guest end's) MAC and the spec's addresses, or removed when
    /// `port_security` is off. Idempotent: unchanged rules send nothing.
    pub(crate) fn apply_guard(&self, rec: &PortRecord) -> Result<(), NetError> {
        let what = || format!("port security of port {}", rec.name);
        let err = |e: crate::guard::GuardError| NetError::Kernel {
            what: what(),
            reason: e.to_string(),
        };
        let changed = if rec.spec.port_security {
            let mac = rec
                .spec
                .mac_bytes()
                .or_else(|| rec.guest_mac.as_deref().and_then(model::net::parse_mac));
            let mut allowed = crate::guard::Allowed {
                mac,
                ..Default::default()
            };
            for c in rec.spec.address_cidrs() {
                match c.addr {
                    IpAddr::V4(a) => allowed.v4.push(a),
                    IpAddr::V6(a) => allowed.v6.push(a),
                }
            }
            crate::guard::apply(&rec.name, &allowed).map_err(err)?
        } else {
            crate::guard::retain(&|p| p != rec.name).map_err(err)?
        };
        if changed {
            self.k.count();
        }
        Ok(())
    }

    /// The host side of a port: in its bridge (or per-VLAN bridge) with its VLANs, or routed
    /// with host routes and proxy ARP; up. Idempotent: reconcile re-runs it for every port.
    pub(crate) async fn apply_port_host(
        &self,
        rec: &PortRecord,
        snap: &mut Snapshot,
        tx: &mut Tx,
    ) -> Result<(), NetError> {
        let Some(net) = self.network(&rec.spec.network).map(|n| n.spec.clone()) else {
            tracing::warn!(port = %rec.name, network = %rec.spec.network, "port's network is not configured; left alone");
            return Ok(());
        };
        let Some(link) = snap.links.get(&rec.name).cloned() else {
            return Err(NetError::NotFound(format!(
                "port link {} does not exist",
                rec.name
            )));
        };
        match net.kind {
            NetworkKind::Bridged => {
                let master = match rec.spec.vlan {
                    Some(vid) if !net.vlan_aware => {
                        let uplink = match &net.uplink {
                            Some(u) => Some(snap.links.get(u).cloned().ok_or_else(|| {
                                NetError::NotFound(format!(
                                    "uplink {u} of network {} does not exist",
                                    net.name
                                ))
                            })?),
                            None => None,
                        };
                        self.ensure_classic_vlan(snap, tx, &net, uplink.as_ref(), vid)
                            .await?
                    }
                    _ => snap.links.get(&net.name).cloned().ok_or_else(|| {
                        NetError::NotFound(format!(
                            "bridge {} of network {} does not exist (see the network's error)",
                            net.name, net.name
                        ))
                    })?,
                };
                self.ensure_up(snap, &link, Some(master.index)).await?;
                if net.vlan_aware {
                    let want = bridge_vlan::wanted(rec.spec.vlan, &rec.spec.tagged_vlans);
                    self.ensure_port_vlans(&link, want).await?;
                    if let Some(u) = &net.uplink
                        && let Some(u) = snap.links.get(u).cloned()
                    {
                        // Keep the trunk carrying this port's VLANs (added, never removed here).
                        let mut vids: Vec<u16> = rec.spec.vlan.into_iter().collect();
                        vids.extend(rec.spec.tagged_vlans.iter().copied());
                        let have: BTreeSet<u16> = self
                            .k
                            .bridge_vlans()
                            .await?
                            .into_iter()
                            .filter(|v| v.port == u.index)
                            .map(|v| v.vid)
                            .collect();
                        for vid in vids.into_iter().filter(|v| !have.contains(v)) {
                            self.k.bridge_vlan(&u, PortVlan::tagged(vid), false).await?;
                        }
                    }
                }
            }
            NetworkKind::Routed => {
                let addrs = rec.spec.address_cidrs();
                let v6 = addrs.iter().any(|c| c.addr.is_ipv6());
                sysctl::routed_link(&self.k, &rec.name, true, v6)?;
                self.ensure_up(snap, &link, None).await?;
                self.ensure_routes(&link, addrs.iter().map(|c| c.addr).collect())
                    .await?;
                let mut want = Vec::new();
                if v6 {
                    // The guests' IPv6 gateway: fe80::1 on every host side, usable at once.
                    want.push(host_link_local());
                }
                if let Some(a) = net.address_cidr() {
                    // The network's host address, on every host side as a host address (/32,
                    // /128): the guests reach it on-link (their subnet covers it) and no
                    // port's link gets a route for the whole subnet, which belongs to the
                    // per-guest host routes.
                    want.push(model::config::Cidr {
                        addr: a.addr,
                        prefix: if a.addr.is_ipv4() { 32 } else { 128 },
                    });
                }
                if !want.is_empty() {
                    let have = self.k.addresses().await?;
                    for c in want {
                        if !have.get(&link.index).is_some_and(|a| a.contains(&c)) {
                            self.k.add_address_nodad(&link, c).await?;
                        }
                    }
                }
                self.ensure_proxy_neighbours(rec, &link, &net, snap).await?;
            }
            NetworkKind::Vlan => {}
        }
        if let Some(limits) = &rec.spec.limits {
            // Idempotent on the tc side: an unchanged port gets no request.
            if let Err(e) =
                crate::tc::apply_port_limits(self.k.handle(), link.index, &link.name, limits).await
            {
                // The IFB the tc module may have made is not in our Tx: clear it explicitly.
                let _ = crate::tc::clear_port_limits(self.k.handle(), link.index, &link.name).await;
                return Err(NetError::tc(format!("limits of port {}", rec.name), e));
            }
        }
        Ok(())
    }

    /// The links of `net` other than `rec`'s own port that must answer NDP for `rec`'s
    /// addresses (the other ports and the uplink), with each other port's IPv6 addresses.
    async fn routed_peers(
        &self,
        rec: &PortRecord,
        net: &model::net::NetworkSpec,
        snap: &Snapshot,
    ) -> Result<Vec<(KLink, Vec<IpAddr>)>, NetError> {
        let mut out = Vec::new();
        for p in self
            .ports
            .values()
            .filter(|p| p.spec.network == rec.spec.network && p.name != rec.name)
        {
            let l = match snap.links.get(&p.name) {
                Some(l) => Some(l.clone()),
                None => self.k.link(&p.name).await?,
            };
            if let Some(l) = l {
                out.push((l, v6_addrs(p)));
            }
        }
        if let Some(u) = &net.uplink {
            let l = match snap.links.get(u) {
                Some(l) => Some(l.clone()),
                None => self.k.link(u).await?,
            };
            if let Some(l) = l {
                out.push((l, Vec::new()));
            }
        }
        Ok(out)
    }

    /// IPv6 proxy neighbours on a routed network: `rec`'s addresses on every other port and
    /// the uplink, and the other ports' addresses on `rec`'s link. Only missing entries are
    /// requested.
    async fn ensure_proxy_neighbours(
        &self,
        rec: &PortRecord,
        link: &KLink,
        net: &model::net::NetworkSpec,
        snap: &Snapshot,
    ) -> Result<(), NetError> {
        let mine = v6_addrs(rec);
        let peers = self.routed_peers(rec, net, snap).await?;
        if mine.is_empty() && peers.iter().all(|(_, a)| a.is_empty()) {
            return Ok(());
        }
        let have: BTreeSet<(u32, IpAddr)> = self.k.proxy_neighbours().await?.into_iter().collect();
        for (peer, theirs) in &peers {
            for ip in &mine {
                if !have.contains(&(peer.index, *ip)) {
                    self.k.add_proxy_neighbour(peer, *ip).await?;
                }
            }
            for ip in theirs {
                if !have.contains(&(link.index, *ip)) {
                    self.k.add_proxy_neighbour(link, *ip).await?;
                }
            }
        }
        Ok(())
    }

    async fn ensure_routes(&self, link: &KLink, ips: Vec<IpAddr>) -> Result<(), NetError> {
        if ips.is_empty() {
            return Ok(());
        }
        let have = self.k.routes().await?;
        for ip in ips {
            let prefix = if ip.is_ipv4() { 32 } else { 128 };
            let present = have
                .iter()
                .any(|r| r.oif == link.index && r.dst.addr == ip && r.dst.prefix == prefix);
            if !present {
                self.k.add_host_route(link, ip).await?;
            }
        }
        Ok(())
    }

    /// Deletes a port's link (the veth pair goes with its host end; routes and qdiscs with
    /// the link), and a classic per-VLAN bridge no port needs any more.
    pub async fn detach_port(&mut self, name: &str) -> Result<(), NetError> {
        let Some(name) = self.port_of(name)? else {
            return Err(NetError::NotFound(format!(
                "{name} is neither a port nor the owner of one"
            )));
        };
        let name = name.as_str();
        let Some(rec) = self.ports.get(name).cloned() else {
            return Err(NetError::NotFound(format!("port {name} does not exist")));
        };
        // The record without the port first (aside): a state filesystem that cannot take it
        // fails the call with nothing changed. Should the rename after the deletion fail, the
        // old record names a link that is gone, which the next start forgets (adopt_ports).
        self.ports.remove(name);
        let pending = self.prepare_ports();
        self.ports.insert(name.to_string(), rec.clone());
        let pending = pending?;
        if let Some(l) = self.k.link(name).await? {
            // The port's IFB (guest egress shaping) is a link of its own: it goes first.
            if rec.spec.limits.is_some() {
                crate::tc::clear_port_limits(self.k.handle(), l.index, &l.name)
                    .await
                    .map_err(|e| NetError::tc(format!("clear the limits of port {name}"), e))?;
            }
            self.k.delete(l.index, &l.name).await?;
        }
        // The link is gone: from here on the port is detached, whatever else fails.
        self.ports.remove(name);
        if let Err(e) = crate::guard::retain(&|p| p != name) {
            tracing::warn!(port = name, error = %e, "cannot remove the port security of a detached port");
        }
        if let Err(e) = self.remove_peer_proxies(&rec).await {
            tracing::warn!(port = name, error = %e, "cannot remove proxy entries of a detached port");
        }
        if let Some(vid) = rec.spec.vlan
            && let Some(net) = self.network(&rec.spec.network).map(|n| n.spec.clone())
            && !self.classic_vids(&net).contains(&vid)
            && net.kind == NetworkKind::Bridged
            && !net.vlan_aware
        {
            let m = mark::network_vlan(&net.name, vid);
            for l in self.k.links().await? {
                if l.alias.as_deref() == Some(m.as_str()) {
                    self.k.delete(l.index, &l.name).await?;
                }
            }
        }
        tracing::info!(port = name, "port detached");
        pending.commit()
    }

    /// Every port. Records whose host link has gone are forgotten first (as at start); a
    /// port that cannot be read back is listed from its record with the reason in `problem`,
    /// so one bad port never fails the whole list. One dump each of links, bridge VLANs and
    /// guard counters serves every port (a lookup per port made a list O(ports²)).
    pub async fn list_ports(&mut self) -> Result<Vec<PortInfo>, NetError> {
        if self.ports.is_empty() {
            return Ok(Vec::new());
        }
        let links: HashMap<String, KLink> = self
            .k
            .links()
            .await?
            .into_iter()
            .map(|l| (l.name.clone(), l))
            .collect();
        let gone: Vec<String> = self
            .ports
            .keys()
            .filter(|n| !links.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            tracing::info!(port = %name, "port link is gone; forgetting it");
            if let Err(e) = self.detach_port(&name).await {
                tracing::warn!(port = %name, error = %e, "cannot forget a port whose link is gone");
            }
        }
        let vlans = if self.ports.values().any(|r| self.on_vlan_aware(r)) {
            Some(self.k.bridge_vlans().await)
        } else {
            None
        };
        let drops = crate::guard::all_drops();
        let mut out = Vec::new();
        for (name, rec) in &self.ports {
            let read = match (links.get(name), &vlans, &drops) {
                (None, ..) => Err(format!("port link {name} does not exist")),
                (Some(_), Some(Err(e)), _) => Err(e.to_string()),
                (Some(_), _, Err(e)) => Err(format!("port security: {e}")),
                (Some(link), vlans, Ok(drops)) => Ok(self.read_back(
                    rec,
                    link,
                    vlans
                        .as_ref()
                        .and_then(|v| v.as_ref().ok())
                        .map(Vec::as_slice),
                    drops.get(name).copied(),
                )),
            };
            out.push(read.unwrap_or_else(|problem| {
                tracing::warn!(port = %name, %problem, "cannot read the port back");
                PortInfo {
                    problem: Some(problem),
                    ..record_info(rec)
                }
            }));
        }
        Ok(out)
    }

    /// The port `target` names: the port of that name, else the one port owned by `target`
    /// (`ct:web1`, `vm:deb`: how hostd's guests own theirs). An owner of several ports is
    /// refused with their names, so one is chosen by name.
    fn port_of(&self, target: &str) -> Result<Option<String>, NetError> {
        if self.ports.contains_key(target) {
            return Ok(Some(target.to_string()));
        }
        let owned: Vec<&PortRecord> = self
            .ports
            .values()
            .filter(|p| p.spec.owner == target)
            .collect();
        match owned.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one.name.clone())),
            many => Err(NetError::Invalid(format!(
                "{target} owns {} ports: {}; name one",
                many.len(),
                many.iter()
                    .map(|p| format!("{} (network {})", p.name, p.spec.network))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// Detaches every port whose owner `select` picks; returns their names. Each is tried,
    /// and the first failure is returned after the others were detached.
    async fn detach_where(
        &mut self,
        select: impl Fn(&str) -> bool,
    ) -> Result<Vec<String>, NetError> {
        let names: Vec<String> = self
            .ports
            .values()
            .filter(|p| select(&p.spec.owner))
            .map(|p| p.name.clone())
            .collect();
        let (mut done, mut first_err) = (Vec::new(), None);
        for name in names {
            match self.detach_port(&name).await {
                Ok(()) => done.push(name),
                Err(e) => {
                    tracing::warn!(port = %name, error = %e, "cannot detach");
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(done),
        }
    }

    /// Detaches every port of `owner` (hostd's `ct:NAME`, `vm:NAME`), whatever hostd
    /// remembers of them; returns their names.
    pub async fn detach_owner(&mut self, owner: &str) -> Result<Vec<String>, NetError> {
        if owner.is_empty() {
            return Err(NetError::Invalid("owner must not be empty".into()));
        }
        self.detach_where(|o| o == owner).await
    }

    /// The owner is gone for good (its guest deleted): its ports are detached and the limits
    /// kept for its next ports dropped; returns the detached ports' names. Nothing is
    /// forgotten when a port cannot be detached.
    pub async fn forget_owner(&mut self, owner: &str) -> Result<Vec<String>, NetError> {
        let gone = self.detach_owner(owner).await?;
        if self.owner_limits.keys().any(|(_, o)| o == owner) {
            let before = std::mem::take(&mut self.owner_limits);
            self.owner_limits = before
                .iter()
                .filter(|((_, o), _)| o != owner)
                .map(|(k, l)| (k.clone(), *l))
                .collect();
            if let Err(e) = self.prepare_owner_limits().and_then(Pending::commit) {
                self.owner_limits = before;
                return Err(e);
            }
            tracing::info!(owner, "forgot the owner's limits");
        }
        Ok(gone)
    }

    /// An owner of ports (hostd) says which of its guests run: every port whose owner starts
    /// with one of `prefixes` and is not in `keep` is detached; returns their names.
    pub async fn keep_owners(
        &mut self,
        prefixes: &[String],
        keep: &BTreeSet<String>,
    ) -> Result<Vec<String>, NetError> {
        if prefixes.iter().any(String::is_empty) {
            return Err(NetError::Invalid(
                "an owner prefix must not be empty (it would select every port)".into(),
            ));
        }
        self.detach_where(|o| {
            prefixes.iter().any(|p| o.starts_with(p.as_str())) && !keep.contains(o)
        })
        .await
    }

    /// A port as the kernel has it: the host link's index and VLANs from rtnetlink; the guest
    /// end's MAC and addresses as last read inside its namespace.
    pub async fn port_info(&self, name: &str) -> Result<PortInfo, NetError> {
        let rec = self
            .ports
            .get(name)
            .ok_or_else(|| NetError::NotFound(format!("port {name} does not exist")))?;
        let link = self
            .k
            .link(name)
            .await?
            .ok_or_else(|| NetError::NotFound(format!("port link {name} does not exist")))?;
        let vlans = if self.on_vlan_aware(rec) {
            Some(self.k.bridge_vlans().await?)
        } else {
            None
        };
        let drops = if rec.spec.port_security {
            crate::guard::drops(name).ok().flatten()
        } else {
            None
        };
        Ok(self.read_back(rec, &link, vlans.as_deref(), drops))
    }

    fn on_vlan_aware(&self, rec: &PortRecord) -> bool {
        self.network(&rec.spec.network)
            .is_some_and(|n| n.spec.vlan_aware)
    }

    /// `rec` with what was read back: its link, the bridge's VLANs (when its network is
    /// VLAN-aware) and its guard's drops.
    fn read_back(
        &self,
        rec: &PortRecord,
        link: &KLink,
        vlans: Option<&[PortVlan]>,
        drops: Option<u64>,
    ) -> PortInfo {
        let (vlan, tagged) = match vlans {
            Some(all) => {
                let mine: Vec<&PortVlan> = all.iter().filter(|v| v.port == link.index).collect();
                (
                    mine.iter().find(|v| v.pvid).map(|v| v.vid),
                    mine.iter().filter(|v| !v.pvid).map(|v| v.vid).collect(),
                )
            }
            None => (rec.spec.vlan, Vec::new()),
        };
        PortInfo {
            ifindex: link.index,
            vlan,
            tagged_vlans: tagged,
            spoof_drops: if rec.spec.port_security { drops } else { None },
            ..record_info(rec)
        }
    }

    /// Changes the limits of a port (by its link name) or of a network's aggregate, live: only
    /// what `change` names.
    pub async fn set_limits(&mut self, target: &str, change: LimitsChange) -> Result<(), NetError> {
        change
            .validate()
            .map_err(|e| NetError::Invalid(format!("limits: {e}")))?;
        // A network's name first: a port owner never shadows an aggregate.
        let port = if self.networks.contains_key(target) && !self.ports.contains_key(target) {
            None
        } else {
            self.port_of(target)?
        };
        if let Some(port) = port
            && let Some(rec) = self.ports.get(&port)
        {
            let target = port.as_str();
            let limits = change.apply(rec.spec.limits);
            let owner = (rec.spec.network.clone(), rec.spec.owner.clone());
            let link =
                self.k.link(target).await?.ok_or_else(|| {
                    NetError::NotFound(format!("port link {target} does not exist"))
                })?;
            // Records aside (the port's, and its owner's for its next port), tc, records in
            // place; a record that cannot be put in place puts the old limits back.
            let old = self.ports.get(target).and_then(|r| r.spec.limits);
            let pending = self.with_port_limits(target, limits, Self::prepare_ports)?;
            let kept = self.with_owner_limits(&owner, limits, Self::prepare_owner_limits)?;
            let l = limits.unwrap_or_default();
            crate::tc::apply_port_limits(self.k.handle(), link.index, &link.name, &l)
                .await
                .map_err(|e| NetError::tc(format!("limits of port {target}"), e))?;
            let mut committed = pending.commit();
            if committed.is_ok()
                && let Err(e) = kept.commit()
            {
                // The port's record has the new limits already: the old one goes back.
                if let Err(again) = self.save_ports() {
                    tracing::error!(port = target, error = %again, "cannot restore the port's record");
                }
                committed = Err(e);
            }
            if let Err(e) = committed {
                let back = old.unwrap_or_default();
                if let Err(again) =
                    crate::tc::apply_port_limits(self.k.handle(), link.index, &link.name, &back)
                        .await
                {
                    tracing::error!(port = target, error = %again, "cannot restore the old limits");
                }
                return Err(e);
            }
            if let Some(rec) = self.ports.get_mut(target) {
                rec.spec.limits = limits;
            }
            match limits {
                Some(l) => self.owner_limits.insert(owner, l),
                None => self.owner_limits.remove(&owner),
            };
            return Ok(());
        }
        if let Some(net) = self.networks.get(target) {
            let limits = change.apply(net.spec.limits);
            if net.spec.kind != NetworkKind::Bridged {
                return Err(NetError::Invalid(format!(
                    "network {target} is {}; an aggregate limit needs a bridged network (limit \
                     its ports instead)",
                    net.spec.kind.as_str()
                )));
            }
            let br = self.k.link(target).await?.ok_or_else(|| {
                NetError::NotFound(format!("bridge {target} does not exist (see its error)"))
            })?;
            // A host.toml network's limits last until the next start: host.toml has no
            // limits key yet, and runtime overrides of it are not persisted.
            let old = net.spec.limits;
            let pending = self.with_network_limits(target, limits, Self::prepare_networks);
            let pending = pending?;
            let l = limits.unwrap_or_default();
            crate::tc::apply_network_aggregate(self.k.handle(), br.index, &br.name, &l)
                .await
                .map_err(|e| NetError::tc(format!("limits of network {target}"), e))?;
            if let Err(e) = pending.commit() {
                let back = old.unwrap_or_default();
                if let Err(again) =
                    crate::tc::apply_network_aggregate(self.k.handle(), br.index, &br.name, &back)
                        .await
                {
                    tracing::error!(network = target, error = %again, "cannot restore the old limits");
                }
                return Err(e);
            }
            if let Some(net) = self.networks.get_mut(target) {
                net.spec.limits = limits;
            }
            return Ok(());
        }
        Err(NetError::NotFound(format!(
            "{target} is neither a port, the owner of one, nor a network"
        )))
    }
}

impl Reconciler {
    /// `f` run with port `target`'s limits set to `limits`, then put back.
    fn with_port_limits<T>(
        &mut self,
        target: &str,
        limits: Option<Limits>,
        f: impl FnOnce(&Self) -> T,
    ) -> T {
        let old = self
            .ports
            .get_mut(target)
            .map(|r| std::mem::replace(&mut r.spec.limits, limits));
        let out = f(self);
        if let (Some(old), Some(r)) = (old, self.ports.get_mut(target)) {
            r.spec.limits = old;
        }
        out
    }

    /// `f` run with `owner`'s kept limits set to `limits`, then put back.
    fn with_owner_limits<T>(
        &mut self,
        owner: &(String, String),
        limits: Option<Limits>,
        f: impl FnOnce(&Self) -> T,
    ) -> T {
        let old = match limits {
            Some(l) => self.owner_limits.insert(owner.clone(), l),
            None => self.owner_limits.remove(owner),
        };
        let out = f(self);
        match old {
            Some(l) => self.owner_limits.insert(owner.clone(), l),
            None => self.owner_limits.remove(owner),
        };
        out
    }

    /// `f` run with network `target`'s limits set to `limits`, then put back.
    fn with_network_limits<T>(
        &mut self,
        target: &str,
        limits: Option<Limits>,
        f: impl FnOnce(&Self) -> T,
    ) -> T {
        let old = self
            .networks
            .get_mut(target)
            .map(|n| std::mem::replace(&mut n.spec.limits, limits));
        let out = f(self);
        if let (Some(old), Some(n)) = (old, self.networks.get_mut(target)) {
            n.spec.limits = old;
        }
        out
    }
}

/// fe80::1/64, the host side's address on every routed port with IPv6 guests.
pub(crate) fn host_link_local() -> model::config::Cidr {
    model::config::Cidr {
        addr: IpAddr::V6(std::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1)),
        prefix: 64,
    }
}

/// A port as its record has it (ifindex 0: not read back from the kernel).
fn record_info(rec: &PortRecord) -> PortInfo {
    let (guest_ifname, mac, addresses) = match rec.spec.kind {
        PortKind::Veth => (
            Some(rec.spec.guest_ifname().to_string()),
            rec.guest_mac.clone(),
            rec.guest_addresses.clone(),
        ),
        PortKind::Tap => (None, rec.spec.mac.clone(), rec.spec.addresses.clone()),
    };
    PortInfo {
        name: rec.name.clone(),
        ifindex: 0,
        network: rec.spec.network.clone(),
        owner: rec.spec.owner.clone(),
        kind: rec.spec.kind,
        guest_ifname,
        mac,
        vlan: rec.spec.vlan,
        tagged_vlans: rec.spec.tagged_vlans.clone(),
        addresses,
        limits: rec.spec.limits,
        spoof_drops: None,
        problem: None,
    }
}

fn v6_addrs(rec: &PortRecord) -> Vec<IpAddr> {
    rec.spec
        .address_cidrs()
        .iter()
        .map(|c| c.addr)
        .filter(IpAddr::is_ipv6)
        .collect()
}
