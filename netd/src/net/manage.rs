//! Networks created and deleted at runtime (CreateNetwork / DeleteNetwork).

use model::net::{NetworkKind, NetworkSpec};

use super::reconcile::{Network, Origin, Reconciler, Snapshot, Tx};
use super::{NetError, mark};

impl Reconciler {
    /// Checks a new network against the others, applies it (rolled back on failure) and
    /// persists it.
    pub async fn create_network(&mut self, spec: NetworkSpec) -> Result<(), NetError> {
        spec.validate()
            .map_err(|e| NetError::Invalid(e.to_string()))?;
        self.check_network(&spec)?;
        let name = spec.name.clone();
        self.networks.insert(
            name.clone(),
            Network {
                spec,
                origin: Origin::Runtime,
            },
        );
        // The record first (aside), then the kernel, then the record in place: a state
        // filesystem that cannot take it fails the call before the kernel is touched.
        let pending = match self.prepare_networks() {
            Ok(p) => p,
            Err(e) => {
                self.networks.remove(&name);
                return Err(e);
            }
        };
        let mut snap = match Snapshot::read(&self.k).await {
            Ok(s) => s,
            Err(e) => {
                self.networks.remove(&name);
                return Err(e);
            }
        };
        let mut tx = Tx::default();
        let applied = match self.apply_network(&name, &mut snap, &mut tx).await {
            Ok(()) => pending.commit(),
            Err(e) => Err(e),
        };
        if let Err(e) = applied {
            tx.rollback(&self.k, &mut snap).await;
            self.networks.remove(&name);
            return Err(e);
        }
        tracing::info!(network = %name, "network created");
        Ok(())
    }

    fn check_network(&self, spec: &NetworkSpec) -> Result<(), NetError> {
        if self.networks.contains_key(&spec.name) {
            return Err(NetError::Conflict(format!(
                "network {} already exists",
                spec.name
            )));
        }
        if let Some(u) = &spec.uplink
            && let Some(other) = self.networks.get(u)
        {
            if spec.kind == NetworkKind::Vlan {
                return Err(NetError::Invalid(format!(
                    "uplink {u:?} is a network; a vlan network's uplink must be a NIC (vlan \
                     networks do not stack)"
                )));
            }
            if other.spec.kind != NetworkKind::Vlan {
                return Err(NetError::Invalid(format!(
                    "uplink {u:?} is a {} network; expected a NIC or a vlan network",
                    other.spec.kind.as_str()
                )));
            }
        }
        if spec.kind == NetworkKind::Vlan
            && let Some(other) = self.networks.values().find(|n| {
                n.spec.kind == NetworkKind::Vlan
                    && n.spec.uplink == spec.uplink
                    && n.spec.vlan == spec.vlan
            })
        {
            return Err(NetError::Conflict(format!(
                "vlan {} on uplink {} is already network {}",
                spec.vlan.unwrap_or(0),
                spec.uplink.as_deref().unwrap_or(""),
                other.spec.name
            )));
        }
        // A NIC is the uplink of one network, alone or in its bond.
        for nic in &spec.bond {
            if self.networks.contains_key(nic) {
                return Err(NetError::Invalid(format!(
                    "bond NIC {nic:?} is a network; expected NICs"
                )));
            }
            if let Some(other) = self
                .networks
                .values()
                .find(|n| n.spec.bond.contains(nic) || n.spec.uplink.as_ref() == Some(nic))
            {
                return Err(NetError::Conflict(format!(
                    "bond NIC {nic} is already used by network {}",
                    other.spec.name
                )));
            }
        }
        if let Some(u) = &spec.uplink
            && let Some(other) = self.networks.values().find(|n| n.spec.bond.contains(u))
        {
            return Err(NetError::Conflict(format!(
                "uplink {u} is in the bond of network {}",
                other.spec.name
            )));
        }
        if let Some(mine) = spec.subnet_cidr() {
            for n in self.networks.values() {
                if let Some(theirs) = n.spec.subnet_cidr()
                    && mine.overlaps(&theirs)
                {
                    return Err(NetError::Conflict(format!(
                        "subnet {mine} overlaps subnet {theirs} of network {}",
                        n.spec.name
                    )));
                }
            }
        }
        Ok(())
    }

    /// Deletes a runtime network without ports, with every link carrying its mark.
    pub async fn delete_network(&mut self, name: &str) -> Result<(), NetError> {
        let Some(net) = self.networks.get(name) else {
            return Err(NetError::NotFound(format!("network {name} does not exist")));
        };
        if net.origin == Origin::Config {
            return Err(NetError::Conflict(format!(
                "network {name} comes from host.toml; remove it there"
            )));
        }
        let ports: Vec<&str> = self
            .ports
            .values()
            .filter(|p| p.spec.network == name)
            .map(|p| p.name.as_str())
            .collect();
        if !ports.is_empty() {
            return Err(NetError::Conflict(format!(
                "network {name} still has ports: {}; detach them first",
                ports.join(", ")
            )));
        }
        if let Some(user) = self
            .networks
            .values()
            .find(|n| n.spec.uplink.as_deref() == Some(name))
        {
            return Err(NetError::Conflict(format!(
                "network {name} is the uplink of network {}",
                user.spec.name
            )));
        }
        // The record without it first (aside), then the links, then the record in place;
        // if the links or the record fail, the network is applied again (what was deleted
        // comes back) and stays.
        let Some(net) = self.networks.remove(name) else {
            return Err(NetError::NotFound(format!("network {name} does not exist")));
        };
        let pending = match self.prepare_networks() {
            Ok(p) => p,
            Err(e) => {
                self.networks.insert(name.to_string(), net);
                return Err(e);
            }
        };
        let r = match self.delete_network_links(name).await {
            Ok(()) => pending.commit(),
            Err(e) => Err(e),
        };
        if let Err(e) = r {
            self.networks.insert(name.to_string(), net);
            let mut snap = Snapshot::read(&self.k).await.unwrap_or_default();
            let mut tx = Tx::default();
            if let Err(again) = self.apply_network(name, &mut snap, &mut tx).await {
                tracing::error!(network = name, error = %again, "cannot restore the network after a failed delete");
                self.failed.insert(name.to_string(), again.to_string());
            }
            return Err(e);
        }
        self.failed.remove(name);
        tracing::info!(network = name, "network deleted");
        Ok(())
    }

    async fn delete_network_links(&self, name: &str) -> Result<(), NetError> {
        let links = self.k.links().await?;
        for l in &links {
            if let Some(mark::Mark::Network(n)) = l.alias.as_deref().and_then(mark::parse)
                && n == name
            {
                self.remove_link(l, links.iter()).await?;
            }
        }
        Ok(())
    }
}
