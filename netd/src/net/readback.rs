//! NetworkInfo as the kernel has it: the network's links, their VLANs, addresses and routes.

use std::collections::{BTreeSet, HashMap};

use model::net::{LinkEntry, NetworkInfo, NetworkKind, RouteEntry, VlanEntry};

use super::NetError;
use super::kernel::KLink;
use super::mark::{self, Mark};
use super::reconcile::Reconciler;

impl Reconciler {
    pub async fn network_info(&self, name: &str) -> Result<NetworkInfo, NetError> {
        let net = self
            .network(name)
            .ok_or_else(|| NetError::NotFound(format!("network {name} does not exist")))?;
        let links = self.k.links().await?;
        let by_index: HashMap<u32, &KLink> = links.iter().map(|l| (l.index, l)).collect();
        let marked_ours = |l: &KLink| match l.alias.as_deref().and_then(mark::parse) {
            Some(Mark::Network(n)) | Some(Mark::Port { network: n, .. }) => n == name,
            None => false,
        };
        // The network's own links (marked), what is enslaved to them, and its uplink.
        let own: BTreeSet<u32> = links
            .iter()
            .filter(|l| marked_ours(l))
            .map(|l| l.index)
            .collect();
        let mut members: BTreeSet<u32> = own.clone();
        for l in &links {
            if l.master.is_some_and(|m| own.contains(&m))
                || Some(&l.name) == net.spec.uplink.as_ref()
            {
                members.insert(l.index);
            }
        }
        let entry = |l: &KLink| LinkEntry {
            name: l.name.clone(),
            ifindex: l.index,
            kind: l.kind.clone(),
            master: l
                .master
                .and_then(|m| by_index.get(&m))
                .map(|m| m.name.clone()),
            up: l.up,
            alias: l.alias.clone(),
        };
        let vlans = if net.spec.vlan_aware {
            self.k
                .bridge_vlans()
                .await?
                .into_iter()
                .filter(|v| members.contains(&v.port))
                .filter_map(|v| {
                    by_index.get(&v.port).map(|l| VlanEntry {
                        port: l.name.clone(),
                        vid: v.vid,
                        pvid: v.pvid,
                        untagged: v.untagged,
                    })
                })
                .collect()
        } else {
            Vec::new()
        };
        let addresses = match net.spec.kind {
            NetworkKind::Bridged => {
                let all = self.k.addresses().await?;
                links
                    .iter()
                    .find(|l| l.name == name && own.contains(&l.index))
                    .and_then(|l| all.get(&l.index))
                    .into_iter()
                    .flatten()
                    .filter(|c| {
                        !c.addr.is_ipv6()
                            || c.prefix != 64
                            || !c.addr.to_string().starts_with("fe80")
                    })
                    .map(|c| c.to_string())
                    .collect()
            }
            _ => Vec::new(),
        };
        let routes = self
            .k
            .routes()
            .await?
            .into_iter()
            .filter(|r| own.contains(&r.oif))
            .filter(|r| !r.dst.addr.to_string().starts_with("fe80"))
            .filter_map(|r| {
                by_index.get(&r.oif).map(|l| RouteEntry {
                    dst: r.dst.to_string(),
                    dev: l.name.clone(),
                })
            })
            .collect();
        let mut qdiscs = Vec::new();
        for l in links.iter().filter(|l| own.contains(&l.index)) {
            let found = crate::tc::read_qdiscs(self.k.handle(), l.index)
                .await
                .map_err(|e| NetError::tc(format!("read the qdiscs of {}", l.name), e))?;
            for q in found {
                // Only shaping: the kernel's default noqueue/pfifo entries say nothing.
                if !matches!(q.kind.as_str(), "htb" | "tbf" | "ingress") {
                    continue;
                }
                let mut v = serde_json::to_value(&q)
                    .map_err(|e| NetError::io("encode qdiscs", std::io::Error::other(e)))?;
                if let Some(obj) = v.as_object_mut() {
                    obj.insert("dev".into(), l.name.clone().into());
                }
                qdiscs.push(v);
            }
        }
        Ok(NetworkInfo {
            name: name.to_string(),
            kind: net.spec.kind,
            links: links
                .iter()
                .filter(|l| members.contains(&l.index))
                .map(entry)
                .collect(),
            vlans,
            subnet: net.spec.subnet.clone(),
            addresses,
            routes,
            qdiscs,
            limits: net.spec.limits,
        })
    }

    pub async fn list_networks(&self) -> Result<Vec<NetworkInfo>, NetError> {
        let mut out = Vec::new();
        for name in self.networks.keys() {
            out.push(self.network_info(name).await?);
        }
        Ok(out)
    }
}
