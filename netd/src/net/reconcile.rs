//! The reconciler: reads what the kernel has (links with our marks), compares it with the
//! desired networks and applies the difference. Every change request goes through
//! `Kernel`, which counts it, so "a second run changes nothing" is observable.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use model::config::Cidr;
use model::net::{Limits, NetworkKind, NetworkSpec, PortKind};

use super::bridge_vlan::{self, PortVlan};
use super::error::NetError;
use super::kernel::{self, KLink, Kernel};
use super::mark::{self, Mark};
use super::naming;
use super::store::{OwnerLimits, Pending, PortRecord, Store};
use super::sysctl;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// From host.toml: re-derived on every start, not deletable over D-Bus.
    Config,
    /// Created over D-Bus and persisted under --state.
    Runtime,
}

#[derive(Debug, Clone)]
pub struct Network {
    pub spec: NetworkSpec,
    pub origin: Origin,
}

/// The kernel's links as read at the start of an apply, kept current as the apply changes them.
#[derive(Default)]
pub struct Snapshot {
    pub links: HashMap<String, KLink>,
    pub addresses: HashMap<u32, Vec<Cidr>>,
}

impl Snapshot {
    pub async fn read(k: &Kernel) -> Result<Snapshot, NetError> {
        let links = k.links().await?;
        Ok(Snapshot {
            links: links.into_iter().map(|l| (l.name.clone(), l)).collect(),
            addresses: k.addresses().await?,
        })
    }

    /// Only the named links (absent ones left out) and no addresses: what a port's apply
    /// touches, without dumping every link on a host with thousands of ports.
    pub async fn of(k: &Kernel, names: &[String]) -> Result<Snapshot, NetError> {
        let mut snap = Snapshot::default();
        for n in names {
            if !snap.links.contains_key(n)
                && let Some(l) = k.link(n).await?
            {
                snap.put(&l);
            }
        }
        Ok(snap)
    }

    pub fn put(&mut self, l: &KLink) {
        self.links.insert(l.name.clone(), l.clone());
    }

    pub fn marked(&self) -> impl Iterator<Item = (&KLink, Mark)> {
        self.links
            .values()
            .filter_map(|l| l.alias.as_deref().and_then(mark::parse).map(|m| (l, m)))
    }
}

/// The links one apply created, deleted again if a later step fails.
#[derive(Default)]
pub struct Tx {
    created: Vec<KLink>,
}

impl Tx {
    pub fn created(&mut self, l: &KLink) {
        self.created.push(l.clone());
    }

    /// Deletes what this apply created, newest first. Failures are logged: the caller reports
    /// the error that made it roll back.
    pub async fn rollback(self, k: &Kernel, snap: &mut Snapshot) {
        for l in self.created.iter().rev() {
            match k.delete(l.index, &l.name).await {
                Ok(()) => tracing::info!(link = %l.name, "rolled back"),
                Err(e) => tracing::warn!(link = %l.name, error = %e, "rollback failed"),
            }
            snap.links.remove(&l.name);
        }
    }
}

#[derive(Debug, Default)]
pub struct ReconcileReport {
    /// Change requests this run sent.
    pub changes: u64,
    /// Links with our mark that no network wants any more, deleted.
    pub removed: Vec<String>,
    /// (network or port, error) for each object that could not be applied.
    pub failed: Vec<(String, String)>,
}

pub struct Reconciler {
    pub(crate) k: Kernel,
    pub(crate) store: Store,
    pub(crate) networks: BTreeMap<String, Network>,
    /// Ports by host-side link name.
    pub(crate) ports: BTreeMap<String, PortRecord>,
    /// The limits set on an owner's port, by (network, owner): what its next port gets.
    pub(crate) owner_limits: BTreeMap<(String, String), Limits>,
    /// Networks whose last apply failed, with the error.
    pub(crate) failed: BTreeMap<String, String>,
}

impl Reconciler {
    /// Desired state from host.toml's networks and what `state` holds. A state file that
    /// cannot be read is logged and counted as failed, never fatal: netd must still come up.
    pub fn new(k: Kernel, state: Option<PathBuf>, config: &[model::config::Network]) -> Reconciler {
        let store = Store::new(state);
        let mut r = Reconciler {
            k,
            store,
            networks: BTreeMap::new(),
            ports: BTreeMap::new(),
            owner_limits: BTreeMap::new(),
            failed: BTreeMap::new(),
        };
        for n in config {
            r.networks.insert(
                n.name.clone(),
                Network {
                    spec: NetworkSpec::from(n),
                    origin: Origin::Config,
                },
            );
        }
        match r.store.networks() {
            Ok(specs) => {
                for spec in specs {
                    if r.networks.contains_key(&spec.name) {
                        tracing::warn!(network = %spec.name, "runtime network shadowed by host.toml; host.toml wins");
                        continue;
                    }
                    r.networks.insert(
                        spec.name.clone(),
                        Network {
                            spec,
                            origin: Origin::Runtime,
                        },
                    );
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot load runtime networks");
                r.failed.insert("state".into(), e.to_string());
            }
        }
        match r.store.ports() {
            Ok(ports) => r.ports = ports.into_iter().map(|p| (p.name.clone(), p)).collect(),
            Err(e) => {
                tracing::error!(error = %e, "cannot load ports");
                r.failed.insert("state".into(), e.to_string());
            }
        }
        match r.store.owner_limits() {
            Ok(kept) => {
                r.owner_limits = kept
                    .into_iter()
                    .map(|k| ((k.network, k.owner), k.limits))
                    .collect();
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot load the owners' limits");
                r.failed.insert("state".into(), e.to_string());
            }
        }
        r
    }

    pub fn kernel(&self) -> &Kernel {
        &self.k
    }

    /// Change requests sent since this reconciler was made.
    pub fn changes(&self) -> u64 {
        self.k.changes()
    }

    pub fn network_count(&self) -> usize {
        self.networks.len()
    }

    pub fn port_count(&self) -> usize {
        self.ports.len()
    }

    pub fn failed_count(&self) -> usize {
        self.failed.len()
    }

    /// host.toml's networks that could not be applied, with why (`ConfigFailures`).
    pub fn failures(&self) -> Vec<(String, String)> {
        self.failed
            .iter()
            .map(|(name, why)| (format!("network {name}"), why.clone()))
            .collect()
    }

    pub fn network(&self, name: &str) -> Option<&Network> {
        self.networks.get(name)
    }

    /// Brings the kernel to the desired state: adopts ports from their marks, applies every
    /// network (each rolled back alone when it fails), re-applies the ports' host side, and
    /// deletes marked links nothing wants.
    pub async fn reconcile(&mut self) -> ReconcileReport {
        let before = self.k.changes();
        let mut report = ReconcileReport::default();
        let mut snap = match Snapshot::read(&self.k).await {
            Ok(s) => s,
            Err(e) => {
                report.failed.push(("kernel".into(), e.to_string()));
                return report;
            }
        };
        self.adopt_ports(&snap);
        self.failed.retain(|k, _| k == "state");
        // vlan networks first: bridged and routed networks may sit on them.
        let mut order: Vec<String> = self.networks.keys().cloned().collect();
        order.sort_by_key(|n| {
            self.networks
                .get(n)
                .is_none_or(|n| n.spec.kind != NetworkKind::Vlan)
        });
        for name in order {
            if let Err(e) = self.apply_network_tx(&name, &mut snap).await {
                tracing::error!(network = %name, error = %e, "network not applied");
                self.failed.insert(name.clone(), e.to_string());
                report.failed.push((name, e.to_string()));
            }
        }
        let names: Vec<String> = self.ports.keys().cloned().collect();
        for name in names {
            let Some(rec) = self.ports.get(&name).cloned() else {
                continue;
            };
            if self.failed.contains_key(&rec.spec.network) {
                continue;
            }
            let mut tx = Tx::default();
            let r = match self.apply_port_host(&rec, &mut snap, &mut tx).await {
                Ok(()) => self.apply_guard(&rec),
                Err(e) => Err(e),
            };
            if let Err(e) = r {
                tracing::error!(port = %name, error = %e, "port not applied");
                tx.rollback(&self.k, &mut snap).await;
                report.failed.push((name, e.to_string()));
            }
        }
        // Port security of ports that are gone (a restart after their links went).
        match crate::guard::retain(&|p| self.ports.contains_key(p)) {
            Ok(true) => self.k.count(),
            Ok(false) => {}
            Err(e) => report.failed.push(("port security".into(), e.to_string())),
        }
        let wanted = self.wanted_links();
        let mut stale: Vec<KLink> = snap
            .marked()
            .filter(|(l, m)| matches!(m, Mark::Network(_)) && !wanted.contains(&l.name))
            .map(|(l, _)| l.clone())
            .collect();
        // Links whose creation was interrupted and that nothing wants (a network since
        // removed, a port whose attach never completed): ours, and unfinished, so deleted.
        stale.extend(
            snap.links
                .values()
                .filter(|l| mark::unfinished(l.alias.as_deref(), l.group))
                .filter(|l| !wanted.contains(&l.name) && !self.ports.contains_key(&l.name))
                .cloned(),
        );
        for l in stale {
            match self.remove_link(&l, snap.links.values()).await {
                Ok(()) => {
                    tracing::info!(link = %l.name, "removed: no network wants it");
                    report.removed.push(l.name.clone());
                }
                Err(e) => report.failed.push((l.name.clone(), e.to_string())),
            }
        }
        report.changes = self.k.changes() - before;
        report
    }

    /// Ports whose links still exist keep their records; records without a link are dropped
    /// (the guest's namespace went away and took the pair with it); marked links without a
    /// record (a lost state file) are adopted from their mark.
    fn adopt_ports(&mut self, snap: &Snapshot) {
        let before = self.ports.len();
        self.ports.retain(|name, _| {
            let alive = snap.links.contains_key(name);
            if !alive {
                tracing::info!(port = %name, "port link is gone; forgetting it");
            }
            alive
        });
        let mut changed = before != self.ports.len();
        for (l, m) in snap.marked() {
            let Mark::Port { network, owner } = m else {
                continue;
            };
            if self.ports.contains_key(&l.name) {
                continue;
            }
            tracing::info!(port = %l.name, %network, %owner, "adopting port from its mark");
            let kind = if l.kind == "tun" {
                PortKind::Tap
            } else {
                PortKind::Veth
            };
            self.ports.insert(
                l.name.clone(),
                PortRecord {
                    name: l.name.clone(),
                    spec: model::net::PortSpec {
                        network,
                        owner,
                        kind,
                        netns: None,
                        guest_ifname: None,
                        mac: None,
                        vlan: None,
                        tagged_vlans: Vec::new(),
                        addresses: Vec::new(),
                        limits: None,
                        // Adopted without its spec (lost state): port security on, with
                        // what the kernel shows of the guest (nothing, for now).
                        port_security: true,
                    },
                    guest_mac: None,
                    guest_addresses: Vec::new(),
                },
            );
            changed = true;
        }
        if changed && let Err(e) = self.save_ports() {
            tracing::error!(error = %e, "cannot persist ports");
        }
    }

    pub(crate) fn save_ports(&self) -> Result<(), NetError> {
        self.store
            .save_ports(&self.ports.values().collect::<Vec<_>>())
    }

    /// The ports file as `self.ports` has it now, written aside (see `store`).
    pub(crate) fn prepare_ports(&self) -> Result<Pending, NetError> {
        self.store
            .prepare_ports(&self.ports.values().collect::<Vec<_>>())
    }

    /// The owners' limits as `self.owner_limits` has them now, written aside (see `store`).
    pub(crate) fn prepare_owner_limits(&self) -> Result<Pending, NetError> {
        let kept: Vec<OwnerLimits> = self
            .owner_limits
            .iter()
            .map(|((network, owner), limits)| OwnerLimits {
                network: network.clone(),
                owner: owner.clone(),
                limits: *limits,
            })
            .collect();
        self.store.prepare_owner_limits(&kept)
    }

    /// The runtime networks as `self.networks` has them now, written aside (see `store`).
    pub(crate) fn prepare_networks(&self) -> Result<Pending, NetError> {
        self.store.prepare_networks(
            &self
                .networks
                .values()
                .filter(|n| n.origin == Origin::Runtime)
                .map(|n| &n.spec)
                .collect::<Vec<_>>(),
        )
    }

    /// The names of every link the desired state has: networks' bridges and 802.1Q links, and
    /// the per-VLAN bridges and sub-interfaces of classic bridged networks.
    pub(crate) fn wanted_links(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for n in self.networks.values() {
            match n.spec.kind {
                NetworkKind::Bridged | NetworkKind::Vlan => {
                    out.insert(n.spec.name.clone());
                    if !n.spec.bond.is_empty() {
                        out.insert(naming::bond(&n.spec.name));
                    }
                }
                NetworkKind::Routed => {}
            }
            for vid in self.classic_vids(&n.spec) {
                out.insert(naming::vlan_bridge(&n.spec.name, vid));
                if let Some(u) = self.uplink_link(&n.spec) {
                    out.insert(naming::vlan_subif(&u, vid));
                }
            }
        }
        out
    }

    /// The VLANs ports use on a classic (not VLAN-aware) bridged network: one bridge each.
    pub(crate) fn classic_vids(&self, spec: &NetworkSpec) -> BTreeSet<u16> {
        if spec.kind != NetworkKind::Bridged || spec.vlan_aware {
            return BTreeSet::new();
        }
        self.ports
            .values()
            .filter(|p| p.spec.network == spec.name)
            .filter_map(|p| p.spec.vlan)
            .collect()
    }

    /// The link an uplink name stands for: a vlan network's 802.1Q link is named after the
    /// network, anything else is a NIC; a bonded network's uplink is its bond.
    pub(crate) fn uplink_link(&self, spec: &NetworkSpec) -> Option<String> {
        if spec.bond.is_empty() {
            spec.uplink.clone()
        } else {
            Some(naming::bond(&spec.name))
        }
    }

    /// Deletes one of our links; a bond first releases its NICs (`nomaster`), so they are
    /// left as plain NICs rather than however the driver leaves them.
    pub(crate) async fn remove_link<'a>(
        &self,
        l: &KLink,
        all: impl Iterator<Item = &'a KLink>,
    ) -> Result<(), NetError> {
        if l.kind == "bond" {
            for nic in all.filter(|n| n.master == Some(l.index)) {
                self.k.release(nic).await?;
                tracing::info!(nic = %nic.name, bond = %l.name, "NIC released");
            }
        }
        self.k.delete(l.index, &l.name).await
    }

    async fn apply_network_tx(&mut self, name: &str, snap: &mut Snapshot) -> Result<(), NetError> {
        let mut tx = Tx::default();
        let r = self.apply_network(name, snap, &mut tx).await;
        if r.is_err() {
            tx.rollback(&self.k, snap).await;
        }
        r
    }

    /// One network's links, addresses and uplink, created or fixed as needed.
    pub(crate) async fn apply_network(
        &self,
        name: &str,
        snap: &mut Snapshot,
        tx: &mut Tx,
    ) -> Result<(), NetError> {
        let Some(net) = self.networks.get(name) else {
            return Err(NetError::NotFound(format!("network {name} does not exist")));
        };
        let spec = &net.spec;
        match spec.kind {
            NetworkKind::Vlan => {
                let uplink = self.uplink(spec, snap)?;
                let vid = spec.vlan.ok_or_else(|| {
                    NetError::Invalid(format!("network {name}: vlan is required for kind vlan"))
                })?;
                let link = self
                    .ensure_vlan(snap, tx, name, &mark::network(name), &uplink, vid)
                    .await?;
                self.ensure_up(snap, &link, None).await?;
            }
            NetworkKind::Bridged => {
                let br = self
                    .ensure_bridge(snap, tx, name, &mark::network(name), spec.vlan_aware)
                    .await?;
                if let Some(c) = spec.address_cidr() {
                    self.ensure_address(snap, &br, c).await?;
                }
                let uplink = match &spec.uplink {
                    _ if !spec.bond.is_empty() => {
                        Some(self.ensure_bond(snap, tx, spec, br.index).await?)
                    }
                    Some(_) => {
                        let u = self.uplink(spec, snap)?;
                        self.ensure_up(snap, &u, Some(br.index)).await?;
                        Some(u)
                    }
                    None => None,
                };
                if spec.vlan_aware
                    && let Some(u) = &uplink
                {
                    // The uplink is a trunk: it carries every VLAN a port uses, tagged.
                    let mut vids: BTreeSet<u16> = BTreeSet::new();
                    for p in self.ports.values().filter(|p| p.spec.network == name) {
                        vids.extend(p.spec.vlan);
                        vids.extend(p.spec.tagged_vlans.iter().copied());
                    }
                    let vids: Vec<u16> = vids.into_iter().collect();
                    self.ensure_port_vlans(u, bridge_vlan::wanted(None, &vids))
                        .await?;
                }
                for vid in self.classic_vids(spec) {
                    self.ensure_classic_vlan(snap, tx, spec, uplink.as_ref(), vid)
                        .await?;
                }
                if let Some(limits) = &spec.limits {
                    crate::tc::apply_network_aggregate(self.k.handle(), br.index, &br.name, limits)
                        .await
                        .map_err(|e| NetError::tc(format!("limits of network {name}"), e))?;
                }
            }
            NetworkKind::Routed => {
                if spec.uplink.is_some() {
                    let u = self.uplink(spec, snap)?;
                    let v6 = spec.subnet_cidr().is_some_and(|c| c.addr.is_ipv6());
                    sysctl::routed_link(&self.k, &u.name, false, v6)?;
                }
            }
        }
        Ok(())
    }

    /// The per-VLAN bridge of a classic bridged network, with the uplink's 802.1Q
    /// sub-interface in it when the network has an uplink.
    pub(crate) async fn ensure_classic_vlan(
        &self,
        snap: &mut Snapshot,
        tx: &mut Tx,
        spec: &NetworkSpec,
        uplink: Option<&KLink>,
        vid: u16,
    ) -> Result<KLink, NetError> {
        let m = mark::network_vlan(&spec.name, vid);
        let br = self
            .ensure_bridge(snap, tx, &naming::vlan_bridge(&spec.name, vid), &m, false)
            .await?;
        if let Some(u) = uplink {
            let sub = self
                .ensure_vlan(snap, tx, &naming::vlan_subif(&u.name, vid), &m, u, vid)
                .await?;
            self.ensure_up(snap, &sub, Some(br.index)).await?;
        }
        Ok(br)
    }

    /// A bridged network's bond in the bridge, in the spec's mode, with exactly the spec's NICs.
    async fn ensure_bond(
        &self,
        snap: &mut Snapshot,
        tx: &mut Tx,
        spec: &NetworkSpec,
        bridge: u32,
    ) -> Result<KLink, NetError> {
        let name = naming::bond(&spec.name);
        let m = mark::network_bond(&spec.name);
        let mode = spec.bond_mode();
        let want = u8::from(kernel::bond_mode(mode));
        let mut nics = Vec::with_capacity(spec.bond.len());
        for n in &spec.bond {
            let nic = snap.links.get(n).cloned().ok_or_else(|| {
                NetError::NotFound(format!(
                    "bond NIC {n} of network {} does not exist: check the NIC's name (ip link)",
                    spec.name
                ))
            })?;
            if nic.alias.as_deref().and_then(mark::parse).is_some() {
                return Err(NetError::Conflict(format!(
                    "bond NIC {n} of network {} is a link Cairn made; expected a NIC",
                    spec.name
                )));
            }
            nics.push(nic);
        }
        let existing = self.owned(snap, &name, &m)?.cloned();
        let bond = match existing {
            Some(l) if l.bond_mode == Some(want) => self.finish_mark(snap, l, &m).await?,
            other => {
                if let Some(old) = other {
                    // The mode of a bond with NICs cannot change: make it again.
                    let all: Vec<KLink> = snap.links.values().cloned().collect();
                    self.remove_link(&old, all.iter()).await?;
                    snap.links.remove(&old.name);
                    for nic in all.iter().filter(|n| n.master == Some(old.index)) {
                        let mut n = nic.clone();
                        n.master = None;
                        snap.put(&n);
                    }
                    tracing::info!(bond = %name, mode = mode.as_str(), "bond mode changed; recreating");
                }
                let mut l = self.k.create_bond(&name, &m, mode).await?;
                tx.created(&l);
                self.k.configure(&l, Some(&m), None, false).await?;
                l.alias = Some(m.clone());
                l.bond_mode = Some(want);
                snap.put(&l);
                tracing::info!(bond = %name, mode = mode.as_str(), nics = ?spec.bond, "bond created");
                l
            }
        };
        // NICs that left the spec go back to being plain NICs.
        let leaving: Vec<KLink> = snap
            .links
            .values()
            .filter(|l| l.master == Some(bond.index) && !spec.bond.contains(&l.name))
            .cloned()
            .collect();
        for l in leaving {
            self.k.release(&l).await?;
            let mut now = l;
            now.master = None;
            snap.put(&now);
        }
        for nic in nics {
            let cur = snap.links.get(&nic.name).cloned().unwrap_or(nic);
            if cur.master == Some(bond.index) {
                self.ensure_up(snap, &cur, None).await?;
                continue;
            }
            self.k.enslave(&cur, &bond).await?;
            let mut now = cur;
            now.master = Some(bond.index);
            now.up = true;
            snap.put(&now);
            tracing::info!(nic = %now.name, bond = %name, "NIC added to bond");
        }
        self.ensure_up(snap, &bond, Some(bridge)).await?;
        Ok(snap.links.get(&name).cloned().unwrap_or(bond))
    }

    /// The uplink's link; NotFound names the network and the uplink.
    fn uplink(&self, spec: &NetworkSpec, snap: &Snapshot) -> Result<KLink, NetError> {
        let Some(u) = &spec.uplink else {
            return Err(NetError::Invalid(format!(
                "network {}: uplink is required",
                spec.name
            )));
        };
        snap.links.get(u).cloned().ok_or_else(|| {
            NetError::NotFound(format!(
                "uplink {u} of network {} does not exist: check the NIC's name (ip link) or \
                 that the vlan network {u} is applied",
                spec.name
            ))
        })
    }

    /// A link named `name` with mark `m`: adopted when it carries the mark, created when
    /// absent, a Conflict when someone else's link has the name.
    fn owned<'a>(
        &self,
        snap: &'a Snapshot,
        name: &str,
        m: &str,
    ) -> Result<Option<&'a KLink>, NetError> {
        match snap.links.get(name) {
            Some(l) if l.alias.as_deref() == Some(m) => Ok(Some(l)),
            // Ours, made by a netd that was stopped before it set the alias: callers finish
            // it with `finish_mark`.
            Some(l) if mark::unfinished(l.alias.as_deref(), l.group) => Ok(Some(l)),
            Some(l) => Err(NetError::Conflict(format!(
                "link {name} exists and is not Cairn's (alias {:?}, kind {:?}); rename it or \
                 choose another network name",
                l.alias.as_deref().unwrap_or(""),
                l.kind
            ))),
            None => Ok(None),
        }
    }

    /// Sets the alias of a link `owned` found unfinished; a marked link is returned as is.
    async fn finish_mark(&self, snap: &mut Snapshot, l: KLink, m: &str) -> Result<KLink, NetError> {
        if l.alias.as_deref() == Some(m) {
            return Ok(l);
        }
        self.k.configure(&l, Some(m), None, false).await?;
        let mut l = l;
        l.alias = Some(m.to_string());
        snap.put(&l);
        tracing::info!(link = %l.name, mark = m, "interrupted creation finished: alias set");
        Ok(l)
    }

    pub(crate) async fn ensure_bridge(
        &self,
        snap: &mut Snapshot,
        tx: &mut Tx,
        name: &str,
        m: &str,
        vlan_aware: bool,
    ) -> Result<KLink, NetError> {
        let existing = self.owned(snap, name, m)?.cloned();
        let mut br = match existing {
            Some(l) => self.finish_mark(snap, l, m).await?,
            None => {
                let mut l = self.k.create_bridge(name, m, vlan_aware).await?;
                tx.created(&l);
                self.k.configure(&l, Some(m), None, true).await?;
                l.alias = Some(m.to_string());
                l.up = true;
                l.vlan_filtering = Some(vlan_aware);
                snap.put(&l);
                tracing::info!(bridge = name, vlan_aware, "bridge created");
                l
            }
        };
        if br.vlan_filtering.unwrap_or(false) != vlan_aware {
            self.k.set_vlan_filtering(&br, vlan_aware).await?;
            br.vlan_filtering = Some(vlan_aware);
            snap.put(&br);
        }
        self.ensure_up(snap, &br, None).await?;
        Ok(br)
    }

    async fn ensure_vlan(
        &self,
        snap: &mut Snapshot,
        tx: &mut Tx,
        name: &str,
        m: &str,
        parent: &KLink,
        vid: u16,
    ) -> Result<KLink, NetError> {
        if let Some(l) = self.owned(snap, name, m)?.cloned() {
            return self.finish_mark(snap, l, m).await;
        }
        let mut l = self.k.create_vlan(name, m, parent, vid).await?;
        tx.created(&l);
        self.k.configure(&l, Some(m), None, true).await?;
        l.alias = Some(m.to_string());
        l.up = true;
        snap.put(&l);
        tracing::info!(link = name, vid, parent = %parent.name, "802.1Q link created");
        Ok(l)
    }

    /// Up, and in `master` when given; one request, only when something differs.
    pub(crate) async fn ensure_up(
        &self,
        snap: &mut Snapshot,
        l: &KLink,
        master: Option<u32>,
    ) -> Result<(), NetError> {
        let cur = snap.links.get(&l.name).unwrap_or(l).clone();
        let wrong_master = master.is_some() && cur.master != master;
        if cur.up && !wrong_master {
            return Ok(());
        }
        self.k
            .configure(&cur, None, master.filter(|_| wrong_master), true)
            .await?;
        let mut now = cur;
        now.up = true;
        if master.is_some() {
            now.master = master;
        }
        snap.put(&now);
        Ok(())
    }

    pub(crate) async fn ensure_address(
        &self,
        snap: &mut Snapshot,
        l: &KLink,
        c: Cidr,
    ) -> Result<(), NetError> {
        let have = snap.addresses.entry(l.index).or_default();
        if have.contains(&c) {
            return Ok(());
        }
        self.k.add_address(l, c).await?;
        have.push(c);
        Ok(())
    }

    /// Makes a bridge port carry exactly `want` (a VLAN-filtering bridge only).
    pub(crate) async fn ensure_port_vlans(
        &self,
        port: &KLink,
        want: Vec<PortVlan>,
    ) -> Result<(), NetError> {
        let have: Vec<PortVlan> = self
            .k
            .bridge_vlans()
            .await?
            .into_iter()
            .filter(|v| v.port == port.index)
            .collect();
        let (remove, add) = bridge_vlan::diff(&have, &want);
        for v in remove {
            self.k.bridge_vlan(port, v, true).await?;
        }
        for v in add {
            self.k.bridge_vlan(port, v, false).await?;
        }
        Ok(())
    }
}
