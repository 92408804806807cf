//! What host.toml declares. The host is what its host.toml says: an item declared there is
//! re-created from it at every start, so deleting it over the API would last only until the
//! next boot. Like netd with host.toml's networks, hostd refuses to delete a declared
//! template, container or VM and says where to remove it instead; once gone from host.toml
//! the item is an ordinary one the API may delete.

use std::collections::BTreeSet;

use model::config::HostConfig;

use crate::error::{HostError, HostResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Template,
    Container,
    Vm,
}

impl Kind {
    fn noun(self) -> &'static str {
        match self {
            Kind::Template => "template",
            Kind::Container => "container",
            Kind::Vm => "VM",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Declared(BTreeSet<(Kind, String)>);

impl Declared {
    pub fn of(config: &HostConfig) -> Declared {
        let templates = config.templates.iter().map(|t| (Kind::Template, &t.name));
        let containers = config.containers.iter().map(|c| (Kind::Container, &c.name));
        let vms = config.vms.iter().map(|v| (Kind::Vm, &v.name));
        Declared(
            templates
                .chain(containers)
                .chain(vms)
                .map(|(kind, name)| (kind, name.clone()))
                .collect(),
        )
    }

    /// A conflict when host.toml declares `name` of `kind`.
    pub fn check_delete(&self, kind: Kind, name: &str) -> HostResult<()> {
        if self.0.contains(&(kind, name.to_string())) {
            return Err(HostError::Conflict(format!(
                "{} {name:?} comes from host.toml; remove it there",
                kind.noun()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_items_are_refused_by_kind_and_name() {
        let text = r#"
[host]
hostname = "h"
[host.management]
interface = "eth0"
dhcp = true
[[template]]
name = "web"
[[container]]
name = "web"
template = "web"
[[vm]]
name = "db"
memory = "256M"
kernel = "/boot/vmlinux"
"#;
        let config = model::config::parse("host.toml", text).unwrap();
        let d = Declared::of(&config);
        let e = d.check_delete(Kind::Container, "web").unwrap_err();
        assert_eq!(
            e.to_string(),
            "container \"web\" comes from host.toml; remove it there"
        );
        assert!(d.check_delete(Kind::Template, "web").is_err());
        assert!(d.check_delete(Kind::Vm, "db").is_err());
        assert!(d.check_delete(Kind::Vm, "web").is_ok());
        assert!(d.check_delete(Kind::Container, "db").is_ok());
    }
}
