//! The `[[network]]`, `[[pool]]`, `[[template]]`, `[[container]]` and `[[vm]]` entries.
//!
//! Each is read into a draft that keeps names, references and positions even when another
//! field is wrong, for the cross-entry checks in `validate.rs`; `build` turns a draft into the
//! typed value once the whole file is known to be valid.

use std::path::PathBuf;

use toml::de::{DeTable, DeValue};

use super::names::{
    ABSOLUTE_RULE, IFNAME_RULE, NAME_MAX, NAME_RULE, NETWORK_NAME_MAX, is_absolute, is_ifname,
    is_name,
};
use super::net::{host_address_problem, parse_cidr};
use super::types::{Cidr, Container, Network, NetworkKind, Pool, PoolKind, Template, Vm};
use super::walk::{At, Problems, Table};

pub(super) const VCPUS_MAX: i64 = 8;
pub(super) const DEFAULT_VCPUS: u8 = 1;
/// 100% per host CPU, up to 1024 CPUs.
pub(super) const CPU_LIMIT_MAX: i64 = 100 * 1024;

/// `network "lan"` when the entry has a string name, else `network #2` (1-based, in file
/// order), so messages about an entry name it the way the operator wrote it.
pub(super) fn item_label(kind: &str, entries: &DeTable<'_>, index: usize) -> String {
    match entries.get("name").map(|v| v.get_ref()) {
        Some(DeValue::String(name)) => format!("{kind} {:?}", name.as_ref()),
        _ => format!("{kind} #{}", index + 1),
    }
}

/// Reads `name`, reporting a bad one but keeping it: references to it should still resolve.
pub(super) fn read_name(
    p: &mut Problems,
    t: &Table<'_, '_>,
    max: usize,
    rule: &str,
) -> Option<At<String>> {
    let f = t.req(p, "name")?;
    let name = f.at_string(p)?;
    if !is_name(name.value, max) {
        f.bad(p, format_args!("{:?}", name.value), rule);
    }
    Some(At {
        at: name.at,
        value: name.value.to_string(),
    })
}

/// An optional reference to another entry by name; it is resolved in `validate.rs`.
fn read_ref(p: &mut Problems, t: &Table<'_, '_>, key: &str) -> Option<At<String>> {
    let s = t.opt(key)?.at_string(p)?;
    Some(At {
        at: s.at,
        value: s.value.to_string(),
    })
}

/// A string that must be one of `choices`, mapped to its value.
fn read_choice<T: Copy>(
    p: &mut Problems,
    t: &Table<'_, '_>,
    key: &str,
    what: &str,
    choices: &[(&str, T)],
) -> Option<T> {
    let f = t.req(p, key)?;
    let s = f.string(p)?;
    let found = choices.iter().find(|(name, _)| *name == s).map(|(_, v)| *v);
    if found.is_none() {
        let names: Vec<String> = choices.iter().map(|(n, _)| format!("{n:?}")).collect();
        f.bad(
            p,
            format_args!("{s:?}"),
            &format!("is not a {what}; expected one of {}", names.join(", ")),
        );
    }
    found
}

#[derive(Debug)]
pub(super) struct NetworkDraft {
    pub name: Option<At<String>>,
    pub kind: Option<NetworkKind>,
    pub uplink: Option<At<String>>,
    pub vlan: Option<At<u16>>,
    pub subnet: Option<At<Cidr>>,
    pub address: Option<Cidr>,
}

const NETWORK_NAME_RULE: &str = "is not a valid network name; expected lowercase letters, \
    digits and hyphens, starting with a letter or digit, at most 15 characters (it names a \
    Linux bridge)";

pub(super) fn read_network(p: &mut Problems, t: Table<'_, '_>) -> NetworkDraft {
    let name = read_name(p, &t, NETWORK_NAME_MAX, NETWORK_NAME_RULE);
    let kind = read_choice(
        p,
        &t,
        "kind",
        "network kind",
        &[
            ("bridged", NetworkKind::Bridged),
            ("routed", NetworkKind::Routed),
            ("vlan", NetworkKind::Vlan),
        ],
    );
    let uplink = t.opt("uplink").and_then(|f| {
        let at = f.at();
        let s = f.string_matching(p, is_ifname, IFNAME_RULE)?;
        Some(At {
            at,
            value: s.to_string(),
        })
    });
    let vlan = t.opt("vlan").and_then(|f| {
        let id = u16::try_from(f.int(p, 1..=4094)?).ok()?;
        Some(At {
            at: f.at(),
            value: id,
        })
    });
    if kind == Some(NetworkKind::Vlan) {
        for key in ["vlan", "uplink"] {
            if !t.has(key) {
                p.at(
                    t.at,
                    format!(
                        "{} is missing the required key {key:?} (kind = \"vlan\" needs both \
                         vlan and uplink)",
                        t.label
                    ),
                );
            }
        }
    } else if kind.is_some()
        && let Some(f) = t.opt("vlan")
    {
        f.bad(
            p,
            f.shown(),
            "is only used with kind = \"vlan\"; expected no vlan key on a bridged or routed network",
        );
    }
    let subnet = t.opt("subnet").and_then(|f| {
        let s = f.string(p)?;
        let c = match parse_cidr(s) {
            Ok(c) => c,
            Err(e) => {
                f.bad(p, format_args!("{s:?}"), &e.to_string());
                return None;
            }
        };
        if !c.is_network() {
            f.bad(
                p,
                format_args!("{s:?}"),
                &format!("has host bits set; expected \"{}\"", c.network()),
            );
            return None;
        }
        Some(At {
            at: f.at(),
            value: c,
        })
    });
    let address = t.opt("address").and_then(|f| {
        let s = f.string(p)?;
        let c = match parse_cidr(s) {
            Ok(c) => c,
            Err(e) => {
                f.bad(p, format_args!("{s:?}"), &e.to_string());
                return None;
            }
        };
        if let Some(subnet) = subnet.map(|s| s.value) {
            if !subnet.contains(c.addr) {
                f.bad(
                    p,
                    format_args!("{s:?}"),
                    &format!("lies outside the network's subnet {subnet}"),
                );
                return None;
            }
            if c.prefix != subnet.prefix {
                f.bad(
                    p,
                    format_args!("{s:?}"),
                    &format!(
                        "has prefix /{} but the network's subnet is {subnet}; expected \"{}/{}\"",
                        c.prefix, c.addr, subnet.prefix
                    ),
                );
                return None;
            }
        }
        if let Some(problem) = host_address_problem(c) {
            f.bad(p, format_args!("{s:?}"), &problem);
            return None;
        }
        Some(c)
    });
    NetworkDraft {
        name,
        kind,
        uplink,
        vlan,
        subnet,
        address,
    }
}

impl NetworkDraft {
    pub fn build(self) -> Option<Network> {
        Some(Network {
            name: self.name?.value,
            kind: self.kind?,
            uplink: self.uplink.map(|u| u.value),
            vlan: self.vlan.map(|v| v.value),
            subnet: self.subnet.map(|s| s.value),
            address: self.address,
        })
    }
}

#[derive(Debug)]
pub(super) struct PoolDraft {
    pub name: Option<At<String>>,
    pub kind: Option<PoolKind>,
    pub path: Option<PathBuf>,
    pub size: Option<u64>,
    pub source: Option<String>,
}

pub(super) fn read_pool(p: &mut Problems, t: Table<'_, '_>) -> PoolDraft {
    let name = read_name(p, &t, NAME_MAX, NAME_RULE);
    let kind = read_choice(
        p,
        &t,
        "kind",
        "pool kind",
        &[
            ("dir", PoolKind::Dir),
            ("thin", PoolKind::Thin),
            ("nfs", PoolKind::Nfs),
            ("iscsi", PoolKind::Iscsi),
        ],
    );
    let path = t
        .opt("path")
        .and_then(|f| f.string_matching(p, is_absolute, ABSOLUTE_RULE))
        .map(PathBuf::from);
    let size = t.opt("size").and_then(|f| f.size(p));
    let source_field = t.opt("source");
    let source = match (kind, &source_field) {
        (Some(PoolKind::Nfs), Some(f)) => f.string_matching(
            p,
            is_nfs_source,
            "is not an NFS export; expected \"server:/export\"",
        ),
        (Some(PoolKind::Iscsi), Some(f)) => f.string_matching(
            p,
            is_iscsi_source,
            "is not an iSCSI target; expected \"iscsi://portal/iqn/lun\"",
        ),
        (Some(PoolKind::Nfs), None) | (Some(PoolKind::Iscsi), None) => {
            p.at(
                t.at,
                format!(
                    "{} is missing the required key \"source\" (nfs and iscsi pools need one)",
                    t.label
                ),
            );
            None
        }
        (Some(PoolKind::Dir), Some(f)) | (Some(PoolKind::Thin), Some(f)) => {
            f.bad(p, f.shown(), "is only used by nfs and iscsi pools");
            None
        }
        // No source, or a kind already reported as wrong: nothing more to say.
        _ => source_field.as_ref().and_then(|f| f.string(p)),
    };
    PoolDraft {
        name,
        kind,
        path,
        size,
        source: source.map(str::to_string),
    }
}

fn is_nfs_source(s: &str) -> bool {
    s.split_once(':')
        .is_some_and(|(server, export)| !server.is_empty() && export.starts_with('/'))
}

fn is_iscsi_source(s: &str) -> bool {
    s.strip_prefix("iscsi://")
        .is_some_and(|rest| rest.split('/').filter(|part| !part.is_empty()).count() >= 2)
}

impl PoolDraft {
    pub fn build(self) -> Option<Pool> {
        Some(Pool {
            name: self.name?.value,
            kind: self.kind?,
            path: self.path,
            size: self.size,
            source: self.source,
        })
    }
}

#[derive(Debug)]
pub(super) struct TemplateDraft {
    pub name: Option<At<String>>,
    pub source: Option<String>,
    pub sha256: Option<[u8; 32]>,
}

pub(super) fn read_template(p: &mut Problems, t: Table<'_, '_>) -> TemplateDraft {
    let name = read_name(p, &t, NAME_MAX, NAME_RULE);
    let source = t.opt("source").and_then(|f| {
        f.string_matching(
            p,
            |s| {
                is_absolute(s)
                    || ["http://", "https://"]
                        .iter()
                        .any(|scheme| s.strip_prefix(scheme).is_some_and(|rest| !rest.is_empty()))
            },
            "is not a path or URL; expected an absolute path or an http(s):// URL",
        )
    });
    let sha256 = t.opt("sha256").and_then(|f| f.digest(p));
    TemplateDraft {
        name,
        source: source.map(str::to_string),
        sha256,
    }
}

impl TemplateDraft {
    pub fn build(self) -> Option<Template> {
        Some(Template {
            name: self.name?.value,
            source: self.source,
            sha256: self.sha256,
        })
    }
}

#[derive(Debug)]
pub(super) struct ContainerDraft {
    pub name: Option<At<String>>,
    pub template: Option<At<String>>,
    pub network: Option<At<String>>,
    pub pool: Option<At<String>>,
    pub memory: Option<u64>,
    pub disk: Option<u64>,
    pub cpu_limit: Option<u32>,
}

pub(super) fn read_container(p: &mut Problems, t: Table<'_, '_>) -> ContainerDraft {
    let name = read_name(p, &t, NAME_MAX, NAME_RULE);
    let template = match t.req(p, "template") {
        Some(f) => f.at_string(p).map(|s| At {
            at: s.at,
            value: s.value.to_string(),
        }),
        None => None,
    };
    ContainerDraft {
        name,
        template,
        network: read_ref(p, &t, "network"),
        pool: read_ref(p, &t, "pool"),
        memory: t.opt("memory").and_then(|f| f.size(p)),
        disk: t.opt("disk").and_then(|f| f.size(p)),
        cpu_limit: t
            .opt("cpu_limit")
            .and_then(|f| f.int(p, 1..=CPU_LIMIT_MAX))
            .and_then(|n| u32::try_from(n).ok()),
    }
}

impl ContainerDraft {
    pub fn build(self) -> Option<Container> {
        Some(Container {
            name: self.name?.value,
            template: self.template?.value,
            network: self.network.map(|n| n.value),
            pool: self.pool.map(|n| n.value),
            memory: self.memory,
            disk: self.disk,
            cpu_limit: self.cpu_limit,
        })
    }
}

#[derive(Debug)]
pub(super) struct VmDraft {
    pub name: Option<At<String>>,
    pub vcpus: Option<u8>,
    pub memory: Option<u64>,
    pub network: Option<At<String>>,
    pub pool: Option<At<String>>,
    pub disk: Option<u64>,
}

pub(super) fn read_vm(p: &mut Problems, t: Table<'_, '_>) -> VmDraft {
    let name = read_name(p, &t, NAME_MAX, NAME_RULE);
    let vcpus = match t.opt("vcpus") {
        Some(f) => f.int(p, 1..=VCPUS_MAX).and_then(|n| u8::try_from(n).ok()),
        None => Some(DEFAULT_VCPUS),
    };
    VmDraft {
        name,
        vcpus,
        memory: t.req(p, "memory").and_then(|f| f.size(p)),
        network: read_ref(p, &t, "network"),
        pool: read_ref(p, &t, "pool"),
        disk: t.opt("disk").and_then(|f| f.size(p)),
    }
}

impl VmDraft {
    pub fn build(self) -> Option<Vm> {
        Some(Vm {
            name: self.name?.value,
            vcpus: self.vcpus?,
            memory: self.memory?,
            network: self.network.map(|n| n.value),
            pool: self.pool.map(|n| n.value),
            disk: self.disk,
        })
    }
}
