//! Reading the document section by section: [host], [api] and the top level. The `[[…]]`
//! item sections are in `items.rs`. Everything checkable within one section is checked here;
//! checks across sections are in `validate.rs`.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use toml::de::{DeTable, DeValue};

use super::items::{
    ContainerDraft, NetworkDraft, PoolDraft, TemplateDraft, VmDraft, item_label, read_container,
    read_name, read_network, read_pool, read_template, read_vm,
};
use super::names::{
    ABSOLUTE_RULE, HOSTNAME_RULE, IFNAME_RULE, NAME_MAX, NAME_RULE, is_absolute, is_hostname,
    is_ifname, is_timezone,
};
use super::net::{host_address_problem, parse_ipv4_cidr};
use super::types::{Api, ApiToken, Host, HostConfig, Management, MgmtAddress, Tls, Update};
use super::walk::{At, Field, Problems, Table, describe};

pub(super) const DEFAULT_TIMEZONE: &str = "UTC";
pub(super) const DEFAULT_LISTEN: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
pub(super) const DEFAULT_PORT: u16 = 8443;

/// Everything read from the file, valid or not. Items keep their names and positions even when
/// some other field was wrong, so cross-section checks do not report follow-on errors (a
/// container on network "lan" is fine even if network "lan" has a bad subnet).
#[derive(Debug, Default)]
pub(super) struct Document {
    pub host: Option<Host>,
    pub api: Option<Api>,
    /// Token names with their positions, for the uniqueness check.
    pub token_names: Vec<At<String>>,
    pub networks: Vec<NetworkDraft>,
    pub pools: Vec<PoolDraft>,
    pub templates: Vec<TemplateDraft>,
    pub containers: Vec<ContainerDraft>,
    pub vms: Vec<VmDraft>,
    pub update: Option<Update>,
}

impl Document {
    /// The typed config; `None` when anything required is missing or invalid, which the
    /// caller has already been told about through `Problems`.
    pub fn build(self) -> Option<HostConfig> {
        Some(HostConfig {
            host: self.host?,
            api: self.api?,
            networks: self
                .networks
                .into_iter()
                .map(NetworkDraft::build)
                .collect::<Option<_>>()?,
            pools: self
                .pools
                .into_iter()
                .map(PoolDraft::build)
                .collect::<Option<_>>()?,
            templates: self
                .templates
                .into_iter()
                .map(TemplateDraft::build)
                .collect::<Option<_>>()?,
            containers: self
                .containers
                .into_iter()
                .map(ContainerDraft::build)
                .collect::<Option<_>>()?,
            vms: self
                .vms
                .into_iter()
                .map(VmDraft::build)
                .collect::<Option<_>>()?,
            update: self.update?,
        })
    }
}

pub(super) fn read_document(p: &mut Problems, doc: &DeTable<'_>) -> Document {
    let top = Table::top(
        p,
        doc,
        &[
            "host",
            "api",
            "network",
            "pool",
            "template",
            "container",
            "vm",
            "update",
        ],
    );
    let mut d = Document::default();
    d.host = match top.opt("host") {
        Some(f) => f.table(p).and_then(|t| read_host(p, t, f.at())),
        None => {
            p.at(0, "missing the required [host] table");
            None
        }
    };
    // [api] may be left out entirely: every key in it has a default (an API without tokens
    // just refuses every call, which is the safe reading of "nothing configured").
    d.api = match top.opt("api") {
        Some(f) => f
            .table(p)
            .and_then(|t| read_api(p, t, f.at(), &mut d.token_names)),
        None => Some(Api {
            listen: DEFAULT_LISTEN,
            port: DEFAULT_PORT,
            tls: Tls::Generate,
            tokens: Vec::new(),
        }),
    };
    d.update = match top.opt("update") {
        Some(f) => f.table(p).and_then(|t| read_update(p, t, f.at())),
        None => Some(Update::default()),
    };
    d.networks = items(p, &top, "network", read_network);
    d.pools = items(p, &top, "pool", read_pool);
    d.templates = items(p, &top, "template", read_template);
    d.containers = items(p, &top, "container", read_container);
    d.vms = items(p, &top, "vm", read_vm);
    d
}

/// Reads every `[[kind]]` entry with `read`, which gets the entry's table and header offset.
fn items<T>(
    p: &mut Problems,
    top: &Table<'_, '_>,
    kind: &str,
    read: impl Fn(&mut Problems, Table<'_, '_>) -> T,
) -> Vec<T> {
    let Some(field) = top.opt(kind) else {
        return Vec::new();
    };
    field
        .tables(p)
        .into_iter()
        .enumerate()
        .map(|(i, (at, entries))| {
            let label = item_label(kind, entries, i);
            let table = Table::new(p, entries, at, label, allowed_keys(kind));
            read(p, table)
        })
        .collect()
}

fn allowed_keys(kind: &str) -> &'static [&'static str] {
    match kind {
        "network" => &[
            "name",
            "kind",
            "uplink",
            "vlan",
            "bond",
            "bond_mode",
            "subnet",
            "address",
        ],
        "pool" => &["name", "kind", "path", "size", "source", "options"],
        "template" => &["name", "source", "sha256", "pool"],
        "container" => &[
            "name",
            "template",
            "network",
            "pool",
            "memory",
            "disk",
            "cpu_limit",
            "cpu_weight",
            "addresses",
            "gateway",
            "hostname",
            "autostart",
        ],
        "vm" => &[
            "name",
            "vcpus",
            "memory",
            "kernel",
            "initrd",
            "cmdline",
            "disk",
            "nic",
            "cpu_limit",
            "cpu_weight",
            "autostart",
        ],
        _ => &[],
    }
}

fn read_host(p: &mut Problems, entries: &DeTable<'_>, at: usize) -> Option<Host> {
    let t = Table::new(
        p,
        entries,
        at,
        "[host]",
        &["hostname", "timezone", "dns", "management"],
    );
    let hostname = t
        .req(p, "hostname")
        .and_then(|f| f.string_matching(p, is_hostname, HOSTNAME_RULE));
    let timezone = match t.opt("timezone") {
        Some(f) => f.string_matching(
            p,
            is_timezone,
            "is not a timezone; expected \"UTC\" or an IANA name such as \"Europe/Berlin\"",
        ),
        None => Some(DEFAULT_TIMEZONE),
    };
    let dns = match t.opt("dns") {
        Some(f) => read_dns(p, &f),
        None => Some(Vec::new()),
    };
    let management = t.req(p, "management").and_then(|f| {
        let entries = f.table(p)?;
        read_management(p, entries, f.at())
    });
    Some(Host {
        hostname: hostname?.to_string(),
        timezone: timezone?.to_string(),
        dns: dns?,
        management: management?,
    })
}

fn read_dns(p: &mut Problems, f: &Field<'_, '_, '_>) -> Option<Vec<IpAddr>> {
    let list = f.array(p)?;
    let mut ok = true;
    let mut out = Vec::with_capacity(list.len());
    for item in list.iter() {
        let at = item.span().start;
        match item.get_ref() {
            DeValue::String(s) => match s.parse::<IpAddr>() {
                Ok(ip) => out.push(ip),
                Err(_) => {
                    ok = false;
                    p.at(
                        at,
                        format!(
                            "dns entry {:?} in [host] is not an IP address; expected e.g. \"10.0.2.3\"",
                            s.as_ref()
                        ),
                    );
                }
            },
            other => {
                ok = false;
                p.at(
                    at,
                    format!(
                        "each dns entry in [host] must be a string, not {}",
                        describe(other)
                    ),
                );
            }
        }
    }
    ok.then_some(out)
}

fn read_management(p: &mut Problems, entries: &DeTable<'_>, at: usize) -> Option<Management> {
    let t = Table::new(
        p,
        entries,
        at,
        "[host.management]",
        &["interface", "dhcp", "address", "gateway"],
    );
    let interface = t
        .req(p, "interface")
        .and_then(|f| f.string_matching(p, is_ifname, IFNAME_RULE));
    let dhcp_field = t.opt("dhcp");
    let dhcp = dhcp_field.as_ref().map(|f| f.bool(p));
    let address_field = t.opt("address");
    let address = address_field.as_ref().and_then(|f| {
        let s = f.string(p)?;
        match parse_ipv4_cidr(s) {
            Ok(c) => match host_address_problem(c.to_cidr()) {
                None => Some(c),
                Some(problem) => {
                    f.bad(p, format_args!("{s:?}"), &problem);
                    None
                }
            },
            Err(e) => {
                f.bad(p, format_args!("{s:?}"), &e.to_string());
                None
            }
        }
    });
    let gateway_field = t.opt("gateway");
    let gateway = gateway_field.as_ref().and_then(|f| {
        f.string_matching(
            p,
            |s| s.parse::<Ipv4Addr>().is_ok(),
            "is not an IPv4 address; expected e.g. \"192.0.2.1\"",
        )?
        .parse::<Ipv4Addr>()
        .ok()
    });

    // A wrongly typed dhcp has been reported already; guessing what was meant would only add
    // noise, so the dhcp/address rules apply to a real boolean or an absent key.
    let wants_dhcp = match dhcp {
        Some(Some(b)) => b,
        Some(None) => return None,
        None => false,
    };
    if wants_dhcp {
        if let Some(f) = &address_field {
            f.bad(
                p,
                f.shown(),
                "cannot be used with dhcp = true; expected either dhcp = true or a static address",
            );
        }
        if let Some(f) = &gateway_field {
            f.bad(
                p,
                f.shown(),
                "cannot be used with dhcp = true; DHCP provides the gateway",
            );
        }
        return Some(Management {
            interface: interface?.to_string(),
            address: MgmtAddress::Dhcp,
        });
    }
    if address_field.is_none() {
        p.at(
            t.at,
            "[host.management] needs either dhcp = true or a static address \
             (address = \"192.0.2.10/24\")",
        );
        if let Some(f) = &gateway_field {
            f.bad(p, f.shown(), "needs a static address to go with it");
        }
        return None;
    }
    let address = address?;
    if let (Some(f), Some(gw)) = (&gateway_field, gateway) {
        let subnet = address.to_cidr().network();
        if gw == address.addr {
            f.bad(
                p,
                f.shown(),
                "is the management address itself; expected the router's address",
            );
        } else if !subnet.contains(IpAddr::V4(gw)) {
            f.bad(
                p,
                f.shown(),
                &format!("lies outside {subnet}, the subnet of address \"{address}\""),
            );
        }
    }
    Some(Management {
        interface: interface?.to_string(),
        address: MgmtAddress::Static { address, gateway },
    })
}

fn read_update(p: &mut Problems, entries: &DeTable<'_>, at: usize) -> Option<Update> {
    let t = Table::new(p, entries, at, "[update]", &["public_key"]);
    let public_key = match t.opt("public_key") {
        Some(f) => Some(f.string_matching(
            p,
            is_minisign_key,
            "is not a minisign public key (the base64 line of minisign.pub, \"RW…\", 56 \
             characters)",
        )?),
        None => None,
    };
    Some(Update {
        public_key: public_key.map(str::to_string),
    })
}

/// The base64 line of a minisign public key: "Ed", an 8-byte key id and a 32-byte Ed25519 key
/// (42 bytes, 56 characters, so always starting "RW").
fn is_minisign_key(s: &str) -> bool {
    s.len() == 56
        && s.starts_with("RW")
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

fn read_api(
    p: &mut Problems,
    entries: &DeTable<'_>,
    at: usize,
    token_names: &mut Vec<At<String>>,
) -> Option<Api> {
    let t = Table::new(p, entries, at, "[api]", &["listen", "port", "tls", "token"]);
    let listen = match t.opt("listen") {
        Some(f) => f
            .string_matching(
                p,
                |s| s.parse::<IpAddr>().is_ok(),
                "is not an IP address; expected e.g. \"0.0.0.0\" or \"::\"",
            )
            .and_then(|s| s.parse().ok()),
        None => Some(DEFAULT_LISTEN),
    };
    let port = match t.opt("port") {
        Some(f) => f.int(p, 1..=65535).and_then(|n| u16::try_from(n).ok()),
        None => Some(DEFAULT_PORT),
    };
    let tls = match t.opt("tls") {
        Some(f) => read_tls(p, &f),
        None => Some(Tls::Generate),
    };
    let mut tokens = Some(Vec::new());
    if let Some(f) = t.opt("token") {
        for (i, (at, entries)) in f.tables(p).into_iter().enumerate() {
            let label = item_label("api token", entries, i);
            let tt = Table::new(p, entries, at, label, &["name", "sha256"]);
            let token = read_token(p, &tt, token_names);
            match (&mut tokens, token) {
                (Some(list), Some(token)) => list.push(token),
                _ => tokens = None,
            }
        }
    }
    Some(Api {
        listen: listen?,
        port: port?,
        tls: tls?,
        tokens: tokens?,
    })
}

fn read_tls(p: &mut Problems, f: &Field<'_, '_, '_>) -> Option<Tls> {
    const EXPECTED: &str = "expected \"generate\" or { cert = \"/path\", key = \"/path\" }";
    match f.value.get_ref() {
        DeValue::String(s) if s == "generate" => Some(Tls::Generate),
        DeValue::String(s) => {
            f.bad(
                p,
                format_args!("{:?}", s.as_ref()),
                &format!("is not understood; {EXPECTED}"),
            );
            None
        }
        DeValue::Table(entries) => {
            let t = Table::new(p, entries, f.at(), "api.tls", &["cert", "key"]);
            let mut path = |key: &str| -> Option<PathBuf> {
                t.req(p, key)?
                    .string_matching(p, is_absolute, ABSOLUTE_RULE)
                    .map(PathBuf::from)
            };
            let cert = path("cert");
            let key = path("key");
            Some(Tls::Files {
                cert: cert?,
                key: key?,
            })
        }
        other => {
            p.at(
                f.at(),
                format!(
                    "tls in [api] must be \"generate\" or a table, not {}",
                    describe(other)
                ),
            );
            None
        }
    }
}

fn read_token(
    p: &mut Problems,
    t: &Table<'_, '_>,
    token_names: &mut Vec<At<String>>,
) -> Option<ApiToken> {
    let name = read_name(p, t, NAME_MAX, NAME_RULE);
    if let Some(name) = &name {
        token_names.push(name.clone());
    }
    let sha256 = t.req(p, "sha256").and_then(|f| f.digest(p));
    Some(ApiToken {
        name: name?.value,
        sha256: sha256?,
    })
}
