//! What a client asks for when it creates a container.

use serde::{Deserialize, Serialize};

use super::Resources;
use crate::config::parse_cidr;

/// Longest container (and template) name: it travels in port owners ("ct:NAME") and directory
/// names, and short names keep `cairnctl` tables readable.
pub const CONTAINER_NAME_MAX: usize = 63;

/// The container's PID 1 when the spec gives no command: the template's own init.
pub const DEFAULT_INIT: &str = "/sbin/init";

/// Everything wrong with a spec, each problem naming its field. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", problems.join("; "))]
pub struct InvalidContainer {
    pub problems: Vec<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerSpec {
    pub name: String,
    /// The template whose rootfs is the container's read-only lower layer.
    pub template: String,
    /// The network (netd) the container's eth0 is a port on; none = only loopback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// eth0's addresses, `addr/prefix`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// The default route's next hop (an address inside one of `addresses`' subnets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// The container's hostname; its name when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// PID 1 and its arguments; the template's `/sbin/init` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// false (default): an id-mapped user namespace, container root is an unprivileged host
    /// uid. true: no user namespace, container root is host root (opt-in, trusted guests only).
    #[serde(default, skip_serializing_if = "is_false")]
    pub privileged: bool,
    #[serde(default, skip_serializing_if = "Resources::is_unset")]
    pub resources: Resources,
    /// Started when the host boots (as host.toml's `autostart`; Proxmox's onboot).
    #[serde(default, skip_serializing_if = "is_false")]
    pub autostart: bool,
    /// A stord pool for the container's writable layer: a volume of `disk` bytes
    /// (`POOL/ct-NAME`, ext4), so `disk` is a real quota. Both or neither; without, the layer
    /// is a directory on the state partition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<u64>,
}

/// The smallest writable layer on a volume: ext4's journal and metadata need a few MiB.
pub const MIN_DISK: u64 = 16 << 20;

/// `[a-z0-9][a-z0-9-]*`, at most `max` bytes: the rule host.toml applies to names.
pub fn is_ct_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    match bytes.next() {
        Some(first) if first.is_ascii_lowercase() || first.is_ascii_digit() => {}
        _ => return false,
    }
    s.len() <= CONTAINER_NAME_MAX
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// RFC 1123 labels joined by dots, at most 64 bytes (the kernel's `__NEW_UTS_LEN`).
fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

impl ContainerSpec {
    /// The hostname the container gets.
    pub fn hostname(&self) -> &str {
        self.hostname.as_deref().unwrap_or(&self.name)
    }

    /// PID 1's argv.
    pub fn argv(&self) -> Vec<String> {
        self.command
            .clone()
            .unwrap_or_else(|| vec![DEFAULT_INIT.to_string()])
    }

    /// Checks the spec on its own: names, addresses, command, limits. Whether the template and
    /// network exist is for hostd to say.
    pub fn validate(&self) -> Result<(), InvalidContainer> {
        let mut p: Vec<String> = Vec::new();
        if !is_ct_name(&self.name) {
            p.push(format!(
                "name {:?} is not a valid container name; expected lowercase letters, digits and \
                 hyphens, starting with a letter or digit, at most {CONTAINER_NAME_MAX} characters",
                self.name
            ));
        }
        if !is_ct_name(&self.template) {
            p.push(format!(
                "template {:?} is not a valid template name; expected lowercase letters, digits \
                 and hyphens",
                self.template
            ));
        }
        if let Some(n) = &self.network
            && !is_ct_name(n)
        {
            p.push(format!("network {n:?} is not a valid network name"));
        }
        let mut cidrs = Vec::new();
        for (i, a) in self.addresses.iter().enumerate() {
            match parse_cidr(a) {
                Ok(c) => cidrs.push(c),
                Err(e) => p.push(format!(
                    "addresses[{i}] {a:?} is not an address with prefix like \"10.0.0.5/24\": {e}"
                )),
            }
        }
        if !self.addresses.is_empty() && self.network.is_none() {
            p.push("addresses need a network: set network to the netd network eth0 joins".into());
        }
        if let Some(g) = &self.gateway {
            match g.parse::<std::net::IpAddr>() {
                Err(_) => p.push(format!("gateway {g:?} is not an IP address")),
                Ok(ip) => {
                    if !cidrs.is_empty() && !cidrs.iter().any(|c| c.contains(ip)) {
                        p.push(format!(
                            "gateway {g:?} is outside every subnet of addresses; expected an \
                             address the container reaches directly"
                        ));
                    }
                    if self.addresses.is_empty() {
                        p.push("gateway needs addresses on eth0".into());
                    }
                }
            }
        }
        if let Some(h) = &self.hostname
            && !is_hostname(h)
        {
            p.push(format!(
                "hostname {h:?} is not a valid hostname; expected dot-separated labels of \
                 letters, digits and hyphens, at most 64 characters"
            ));
        }
        if let Some(cmd) = &self.command {
            match cmd.first() {
                None => p.push("command is empty; give at least the program to run".into()),
                Some(prog) if !prog.starts_with('/') => p.push(format!(
                    "command[0] {prog:?} is not an absolute path inside the container"
                )),
                _ => {}
            }
            if cmd.iter().any(|a| a.contains('\0')) {
                p.push("command has an argument with a NUL byte".into());
            }
        }
        if let Err(problems) = self.resources.validate() {
            p.extend(problems.into_iter().map(|m| format!("resources.{m}")));
        }
        match (&self.pool, self.disk) {
            (Some(pool), _) if !is_ct_name(pool) => {
                p.push(format!("pool {pool:?} is not a valid pool name"))
            }
            (Some(_), Some(d)) if d < MIN_DISK => p.push(format!(
                "disk {d} is less than the {} MiB a writable layer needs",
                MIN_DISK >> 20
            )),
            (Some(_), None) => p.push("pool needs disk: the size of the container's volume".into()),
            (None, Some(_)) => p.push("disk needs pool: the stord pool its volume is in".into()),
            _ => {}
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(InvalidContainer { problems: p })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ContainerSpec {
        ContainerSpec {
            name: "web1".into(),
            template: "busybox".into(),
            network: Some("lan".into()),
            addresses: vec!["10.50.0.5/24".into()],
            gateway: Some("10.50.0.1".into()),
            hostname: None,
            command: None,
            privileged: false,
            autostart: false,
            resources: Resources::default(),
            pool: None,
            disk: None,
        }
    }

    #[test]
    fn a_good_spec_passes_and_defaults_apply() {
        let s = spec();
        assert_eq!(s.validate(), Ok(()));
        assert_eq!(s.hostname(), "web1");
        assert_eq!(s.argv(), vec!["/sbin/init".to_string()]);
        let json = r#"{"name":"a","template":"t"}"#;
        let s: ContainerSpec = serde_json::from_str(json).unwrap();
        assert!(!s.privileged);
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let json = r#"{"name":"a","template":"t","memroy":5}"#;
        let e = serde_json::from_str::<ContainerSpec>(json).unwrap_err();
        assert!(e.to_string().contains("memroy"), "{e}");
    }

    #[test]
    fn every_problem_names_its_field() {
        let s = ContainerSpec {
            name: "Bad_Name".into(),
            template: "".into(),
            network: None,
            addresses: vec!["10.0.0.5".into()],
            gateway: Some("192.168.9.1".into()),
            hostname: Some("-x".into()),
            command: Some(vec!["sbin/init".into()]),
            privileged: false,
            autostart: false,
            resources: Resources {
                cpu_weight: Some(0),
                ..Resources::default()
            },
            pool: Some("fast".into()),
            disk: Some(1 << 20),
        };
        let p = s.validate().unwrap_err().problems;
        for field in [
            "name ",
            "template ",
            "addresses[0]",
            "addresses need a network",
            "hostname ",
            "command[0]",
            "resources.cpu_weight",
            "disk 1048576 is less than the 16 MiB",
        ] {
            assert!(p.iter().any(|m| m.starts_with(field)), "{field}: {p:?}");
        }
        let mut s = spec();
        s.gateway = Some("192.168.9.1".into());
        let p = s.validate().unwrap_err().problems;
        assert!(p[0].starts_with("gateway"), "{p:?}");
        let mut s = spec();
        s.pool = Some("fast".into());
        assert_eq!(
            s.validate().unwrap_err().problems,
            ["pool needs disk: the size of the container's volume"]
        );
        s.disk = Some(64 << 20);
        assert_eq!(s.validate(), Ok(()));
    }
}
