//! The `[[network]]`, `[[pool]]`, `[[template]]`, `[[container]]` and `[[vm]]` entries.
//!
//! Each is read into a draft that keeps names, references and positions even when another
//! field is wrong, for the cross-entry checks in `validate.rs`; `build` turns a draft into the
//! typed value once the whole file is known to be valid.

use std::path::PathBuf;

use toml::de::{DeTable, DeValue};

use super::names::{
    ABSOLUTE_RULE, IFNAME_RULE, NAME_MAX, NAME_RULE, NETWORK_NAME_MAX, is_absolute, is_hostname,
    is_ifname, is_name,
};
use super::net::{host_address_problem, parse_cidr};
use super::types::{Cidr, Container, Network, NetworkKind, Pool, PoolKind, Template, Vm};
use super::walk::{At, Problems, Table, describe};
use crate::net::{BOND_MAX, BOND_MIN, BondMode};
use crate::rules;
use crate::vm::{DiskSpec, NicSpec};

pub(super) const DEFAULT_VCPUS: u32 = 1;
/// The kernel's `__NEW_UTS_LEN`: a container hostname is set with sethostname(2).
const CT_HOSTNAME_MAX: usize = 64;

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
    read_name_by(p, t, |s| {
        if is_name(s, max) {
            Ok(())
        } else {
            Err(rule.to_string())
        }
    })
}

/// The entry's `name`, checked by `rule`; a name that breaks it is reported and still returned,
/// so the checks across entries (duplicates, references) see it.
fn read_name_by(
    p: &mut Problems,
    t: &Table<'_, '_>,
    rule: impl FnOnce(&str) -> rules::Rule,
) -> Option<At<String>> {
    let f = t.req(p, "name")?;
    let name = f.at_string(p)?;
    if let Err(problem) = rule(name.value) {
        f.bad(p, format_args!("{:?}", name.value), &problem);
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
    pub bond: Vec<String>,
    pub bond_mode: Option<BondMode>,
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
    let bond = read_bond(p, &t, kind);
    let bond_mode = t.opt("bond_mode").and_then(|f| {
        let s = f.string(p)?;
        let mode = BondMode::parse(s);
        if mode.is_none() {
            f.bad(
                p,
                format_args!("{s:?}"),
                &format!(
                    "is not a bond mode; expected one of {}",
                    BondMode::choices()
                ),
            );
        } else if !t.has("bond") {
            f.bad(
                p,
                format_args!("{s:?}"),
                "is only used with bond; expected a bond key next to it",
            );
        }
        mode
    });
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
        // The rule net.create applies (NetworkSpec::validate): netd puts no address on an
        // 802.1Q link, so one here would be accepted and silently never configured.
        if kind == Some(NetworkKind::Vlan) {
            f.bad(
                p,
                format_args!("{s:?}"),
                "is not used with kind = \"vlan\"; give the address to the network on top of it",
            );
            return None;
        }
        Some(c)
    });
    NetworkDraft {
        name,
        kind,
        uplink,
        vlan,
        bond,
        bond_mode,
        subnet,
        address,
    }
}

/// `bond = ["eth1", "eth2"]`: 2-8 distinct NICs, bridged networks only, not with `uplink`.
fn read_bond(p: &mut Problems, t: &Table<'_, '_>, kind: Option<NetworkKind>) -> Vec<String> {
    let Some(f) = t.opt("bond") else {
        return Vec::new();
    };
    let Some(items) = f.array(p) else {
        return Vec::new();
    };
    let mut nics: Vec<String> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = item.span().start;
        match item.get_ref() {
            DeValue::String(s) if !is_ifname(s) => p.at(
                at,
                format!("bond[{i}] {:?} in {} {IFNAME_RULE}", s.as_ref(), t.label),
            ),
            DeValue::String(s) if nics.iter().any(|n| n == s.as_ref()) => p.at(
                at,
                format!(
                    "bond[{i}] {:?} in {} is listed twice; expected each NIC once",
                    s.as_ref(),
                    t.label
                ),
            ),
            DeValue::String(s) => nics.push(s.to_string()),
            other => p.at(
                at,
                format!(
                    "bond[{i}] in {} must be a string, not {}",
                    t.label,
                    describe(other)
                ),
            ),
        }
    }
    if !(BOND_MIN..=BOND_MAX).contains(&items.len()) {
        p.at(
            f.at(),
            format!(
                "bond in {} has {} NICs; expected {BOND_MIN} to {BOND_MAX}",
                t.label,
                items.len()
            ),
        );
    }
    if t.has("uplink") {
        f.bad(
            p,
            format_args!("{nics:?}"),
            "excludes uplink; the bond is the network's uplink, expected one of the two",
        );
    }
    if let Some(k) = kind
        && k != NetworkKind::Bridged
    {
        f.bad(
            p,
            format_args!("{nics:?}"),
            "is only used with kind = \"bridged\"; expected no bond key on a routed or vlan \
             network",
        );
    }
    nics
}

impl NetworkDraft {
    pub fn build(self) -> Option<Network> {
        Some(Network {
            name: self.name?.value,
            kind: self.kind?,
            uplink: self.uplink.map(|u| u.value),
            vlan: self.vlan.map(|v| v.value),
            bond: self.bond,
            bond_mode: self.bond_mode,
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
    pub options: Option<String>,
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
    // Mount options: stord checks each against the ones it lets through.
    let options = match (kind, t.opt("options")) {
        (Some(PoolKind::Nfs), Some(f)) => f.string(p).map(str::to_string),
        (_, Some(f)) => {
            f.bad(p, f.shown(), "is only used by nfs pools");
            None
        }
        (_, None) => None,
    };
    PoolDraft {
        name,
        kind,
        path,
        size,
        source: source.map(str::to_string),
        options,
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
            options: self.options,
        })
    }
}

#[derive(Debug)]
pub(super) struct TemplateDraft {
    pub name: Option<At<String>>,
    pub source: Option<String>,
    pub sha256: Option<[u8; 32]>,
    pub pool: Option<At<String>>,
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
                    || crate::ct::bundled_name(s).is_some_and(crate::ct::is_bundled_name)
            },
            "is not a path, URL or bundled template; expected an absolute path, an http(s):// \
             URL or bundled:NAME (a template the image carries, e.g. bundled:busybox)",
        )
    });
    let sha256 = t.opt("sha256").and_then(|f| f.digest(p));
    TemplateDraft {
        name,
        source: source.map(str::to_string),
        sha256,
        pool: read_ref(p, &t, "pool"),
    }
}

impl TemplateDraft {
    pub fn build(self) -> Option<Template> {
        Some(Template {
            name: self.name?.value,
            source: self.source,
            sha256: self.sha256,
            pool: self.pool.map(|n| n.value),
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
    pub cpu_weight: Option<u32>,
    /// Each address with its position, for the subnet check in `validate.rs`.
    pub addresses: Vec<At<Cidr>>,
    pub gateway: Option<std::net::IpAddr>,
    pub hostname: Option<String>,
    pub autostart: Option<bool>,
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
    let network = read_ref(p, &t, "network");
    let addresses = read_addresses(p, &t);
    if !addresses.is_empty()
        && network.is_none()
        && let Some(f) = t.opt("addresses")
    {
        p.at(
            f.at(),
            format!(
                "addresses in {} need a network; expected a network key naming the [[network]] \
                 eth0 joins",
                t.label
            ),
        );
    }
    let gateway = t.opt("gateway").and_then(|f| {
        let s = f.string(p)?;
        let Ok(ip) = s.parse::<std::net::IpAddr>() else {
            f.bad(
                p,
                format_args!("{s:?}"),
                "is not an IP address; expected e.g. \"10.10.0.1\"",
            );
            return None;
        };
        if addresses.is_empty() {
            f.bad(
                p,
                format_args!("{s:?}"),
                "needs addresses; expected an addresses key for eth0",
            );
        } else if !addresses.iter().any(|a| a.value.contains(ip)) {
            f.bad(
                p,
                format_args!("{s:?}"),
                "lies outside every subnet of addresses; expected an address the container \
                 reaches directly",
            );
        }
        Some(ip)
    });
    let hostname = t.opt("hostname").and_then(|f| {
        f.string_matching(
            p,
            |s| is_hostname(s) && s.len() <= CT_HOSTNAME_MAX,
            "is not a valid container hostname; expected letters, digits and hyphens in \
             dot-separated labels, not starting or ending with a hyphen, at most 64 characters",
        )
    });
    ContainerDraft {
        name,
        template,
        network,
        pool: read_ref(p, &t, "pool"),
        memory: t.opt("memory").and_then(|f| {
            let bytes = f.size(p)?;
            match rules::ct_memory(bytes) {
                Ok(()) => Some(bytes),
                Err(problem) => {
                    f.bad(p, f.shown(), &problem);
                    None
                }
            }
        }),
        disk: t.opt("disk").and_then(|f| f.size(p)),
        cpu_limit: u32_rule(p, &t, "cpu_limit", rules::cpu_limit),
        cpu_weight: u32_rule(p, &t, "cpu_weight", rules::weight),
        addresses,
        gateway,
        hostname: hostname.map(str::to_string),
        autostart: match t.opt("autostart") {
            Some(f) => f.bool(p),
            None => Some(true),
        },
    }
}

/// `addresses = ["10.10.0.5/24", …]`: host addresses with their prefix.
fn read_addresses(p: &mut Problems, t: &Table<'_, '_>) -> Vec<At<Cidr>> {
    let Some(f) = t.opt("addresses") else {
        return Vec::new();
    };
    let Some(items) = f.array(p) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = item.span().start;
        let DeValue::String(s) = item.get_ref() else {
            p.at(
                at,
                format!(
                    "addresses[{i}] in {} must be a string such as \"10.10.0.5/24\", not {}",
                    t.label,
                    super::walk::describe(item.get_ref())
                ),
            );
            continue;
        };
        let problem = match parse_cidr(s) {
            Ok(c) => match host_address_problem(c) {
                None => {
                    out.push(At { at, value: c });
                    continue;
                }
                Some(problem) => problem,
            },
            Err(e) => e.to_string(),
        };
        p.at(
            at,
            format!("addresses[{i}] {:?} in {} {problem}", s.as_ref(), t.label),
        );
    }
    out
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
            cpu_weight: self.cpu_weight,
            addresses: self.addresses.into_iter().map(|a| a.value).collect(),
            gateway: self.gateway,
            hostname: self.hostname,
            autostart: self.autostart?,
        })
    }
}

/// A `[[vm.disk]]` or `[[vm.nic]]` entry as read, with where it was written.
#[derive(Debug)]
pub(super) struct VmNicDraft {
    pub network: Option<At<String>>,
    pub addresses: Vec<At<Cidr>>,
    pub mac: Option<At<String>>,
}

#[derive(Debug)]
pub(super) struct VmDraft {
    pub name: Option<At<String>>,
    pub vcpus: Option<u32>,
    /// Bytes, a whole number of MiB.
    pub memory: Option<u64>,
    pub kernel: Option<String>,
    pub initrd: Option<String>,
    pub cmdline: Option<String>,
    /// `None` for an entry with a problem (already reported).
    pub disks: Vec<Option<DiskSpec>>,
    pub nics: Vec<VmNicDraft>,
    pub cpu_limit: Option<u32>,
    pub cpu_weight: Option<u32>,
    pub autostart: Option<bool>,
}

const MIB: u64 = 1 << 20;

pub(super) fn read_vm(p: &mut Problems, t: Table<'_, '_>) -> VmDraft {
    let name = read_name_by(p, &t, rules::vm_name);
    let vcpus = match t.opt("vcpus") {
        Some(_) => u32_rule(p, &t, "vcpus", rules::vcpus),
        None => Some(DEFAULT_VCPUS),
    };
    let memory = t.req(p, "memory").and_then(|f| {
        let bytes = f.size(p)?;
        if bytes % MIB != 0 {
            f.bad(
                p,
                f.shown(),
                "is not a whole number of MiB; expected a size such as \"512M\" or \"2G\"",
            );
            return None;
        }
        if let Err(problem) = rules::vm_memory_mib(bytes / MIB) {
            f.bad(p, f.shown(), &problem);
            return None;
        }
        Some(bytes)
    });
    let path = |p: &mut Problems, key: &str, required: bool| -> Option<String> {
        let f = if required { t.req(p, key) } else { t.opt(key) }?;
        f.string_rule(p, rules::host_path).map(str::to_string)
    };
    let kernel = path(p, "kernel", true);
    let initrd = path(p, "initrd", false);
    let cmdline = t.opt("cmdline").and_then(|f| {
        let s = f.string(p)?;
        if let Err(problem) = rules::cmdline(s) {
            f.bad(p, rules::cmdline_shown(s), &problem);
            return None;
        }
        Some(s.to_string())
    });
    let disks = sub_tables(p, &t, "disk", &["volume", "path", "read_only"])
        .into_iter()
        .map(|d| read_vm_disk(p, d))
        .collect();
    let nics = sub_tables(p, &t, "nic", &["network", "mac", "addresses"])
        .into_iter()
        .map(|n| VmNicDraft {
            addresses: read_addresses(p, &n),
            network: match n.req(p, "network") {
                Some(f) => f.at_string(p).map(|s| At {
                    at: s.at,
                    value: s.value.to_string(),
                }),
                None => None,
            },
            mac: n.opt("mac").and_then(|f| {
                let at = f.at();
                let s = f.string_rule(p, rules::mac)?;
                Some(At {
                    at,
                    value: s.to_string(),
                })
            }),
        })
        .collect();
    VmDraft {
        name,
        vcpus,
        memory,
        kernel,
        initrd,
        cmdline,
        disks,
        nics,
        cpu_limit: u32_rule(p, &t, "cpu_limit", rules::cpu_limit),
        cpu_weight: u32_rule(p, &t, "cpu_weight", rules::weight),
        autostart: match t.opt("autostart") {
            Some(f) => f.bool(p),
            None => Some(true),
        },
    }
}

/// An optional whole-number field that follows `rule` and fits a `u32`.
fn u32_rule(
    p: &mut Problems,
    t: &Table<'_, '_>,
    key: &str,
    rule: fn(u64) -> rules::Rule,
) -> Option<u32> {
    t.opt(key)
        .and_then(|f| f.int_rule(p, rule))
        .and_then(|n| u32::try_from(n).ok())
}

/// `[[vm.disk]]` entries (`key` = "disk") of the VM `t`, each labelled `vm "x" disk 0`.
fn sub_tables<'a, 'i>(
    p: &mut Problems,
    t: &Table<'a, 'i>,
    key: &str,
    allowed: &'static [&'static str],
) -> Vec<Table<'a, 'i>> {
    let Some(f) = t.opt(key) else {
        return Vec::new();
    };
    let DeValue::Array(items) = f.value.get_ref() else {
        p.at(
            f.at(),
            format!(
                "{key} in {} must be [[vm.{key}]] tables, not {}",
                t.label,
                describe(f.value.get_ref())
            ),
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item.get_ref() {
            DeValue::Table(entries) => out.push(Table::new(
                p,
                entries,
                item.span().start,
                format!("{} {key} {i}", t.label),
                allowed,
            )),
            other => p.at(
                item.span().start,
                format!(
                    "{key} {i} in {} must be a table ([[vm.{key}]]), not {}",
                    t.label,
                    describe(other)
                ),
            ),
        }
    }
    out
}

fn read_vm_disk(p: &mut Problems, d: Table<'_, '_>) -> Option<DiskSpec> {
    let volume = d
        .opt("volume")
        .and_then(|f| f.string_rule(p, rules::volume_name).map(str::to_string));
    let path = d
        .opt("path")
        .and_then(|f| f.string_rule(p, rules::host_path).map(str::to_string));
    let read_only = match d.opt("read_only") {
        Some(f) => f.bool(p),
        None => Some(false),
    };
    if d.has("volume") == d.has("path") {
        p.at(
            d.at,
            format!(
                "{} {}{}",
                d.label,
                rules::ONE_DISK_SOURCE,
                if d.has("path") { ", not both" } else { "" }
            ),
        );
        return None;
    }
    if d.has("volume") && volume.is_none() || d.has("path") && path.is_none() {
        return None;
    }
    Some(DiskSpec {
        volume,
        path,
        read_only: read_only?,
    })
}

impl VmDraft {
    pub fn build(self) -> Option<Vm> {
        Some(Vm {
            name: self.name?.value,
            vcpus: self.vcpus?,
            memory: self.memory?,
            kernel: self.kernel?,
            initrd: self.initrd,
            cmdline: self.cmdline.unwrap_or_default(),
            disks: self.disks.into_iter().collect::<Option<_>>()?,
            nics: self
                .nics
                .into_iter()
                .map(|n| {
                    Some(NicSpec {
                        network: n.network?.value,
                        mac: n.mac.map(|m| m.value),
                        addresses: n.addresses.iter().map(|a| a.value.to_string()).collect(),
                    })
                })
                .collect::<Option<_>>()?,
            cpu_limit: self.cpu_limit,
            cpu_weight: self.cpu_weight,
            autostart: self.autostart?,
        })
    }
}
