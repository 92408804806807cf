//! What applying one host.toml over another changes, in words, for `host.applyConfig`'s answer
//! and its dry run. Each line names one item and what happens to it, as the daemons apply a
//! config: netd makes its networks what host.toml says (one removed is deleted); hostd creates
//! declared templates, containers and VMs that do not exist and never rewrites or deletes one
//! that does.

use super::types::HostConfig;

pub fn diff(old: &HostConfig, new: &HostConfig) -> Vec<String> {
    let mut out = Vec::new();
    if old.host.hostname != new.host.hostname {
        out.push(format!(
            "hostname: {:?} -> {:?}",
            old.host.hostname, new.host.hostname
        ));
    }
    if old.host.management != new.host.management {
        out.push(format!(
            "management: {} -> {}",
            management(old),
            management(new)
        ));
    }
    if (&old.host.timezone, &old.host.dns) != (&new.host.timezone, &new.host.dns) {
        out.push("host: timezone or dns changed".into());
    }
    if old.api != new.api {
        out.push("api: listener, certificate or tokens changed (apid restarts with them)".into());
    }
    match (&old.update.public_key, &new.update.public_key) {
        (None, Some(_)) => {
            out.push("update: a signing key is pinned (bundles must be signed)".into())
        }
        (Some(_), None) => out.push("update: no signing key pinned any more".into()),
        (Some(a), Some(b)) if a != b => out.push("update: the pinned signing key changed".into()),
        _ => {}
    }
    items(
        &mut out,
        "network",
        &old.networks,
        &new.networks,
        |n| &n.name,
        Removal::Deleted,
    );
    items(
        &mut out,
        "pool",
        &old.pools,
        &new.pools,
        |p| &p.name,
        Removal::Kept,
    );
    items(
        &mut out,
        "template",
        &old.templates,
        &new.templates,
        |t| &t.name,
        Removal::Kept,
    );
    items(
        &mut out,
        "container",
        &old.containers,
        &new.containers,
        |c| &c.name,
        Removal::Kept,
    );
    items(
        &mut out,
        "vm",
        &old.vms,
        &new.vms,
        |v| &v.name,
        Removal::Kept,
    );
    out
}

fn management(c: &HostConfig) -> String {
    let m = &c.host.management;
    match &m.address {
        super::types::MgmtAddress::Dhcp => format!("{} dhcp", m.interface),
        super::types::MgmtAddress::Static { address, .. } => {
            format!("{} {}/{}", m.interface, address.addr, address.prefix)
        }
    }
}

/// What becomes of an item no longer declared.
#[derive(Clone, Copy, PartialEq)]
enum Removal {
    /// Its daemon removes it (netd's networks).
    Deleted,
    /// It stays, no longer declared: the API may delete it.
    Kept,
}

fn items<T: PartialEq>(
    out: &mut Vec<String>,
    kind: &str,
    old: &[T],
    new: &[T],
    name: impl Fn(&T) -> &String,
    removal: Removal,
) {
    let find = |list: &[T], n: &String| list.iter().any(|i| name(i) == n);
    for n in new {
        match old.iter().find(|o| name(o) == name(n)) {
            None => out.push(format!("{kind} {:?}: added", name(n))),
            Some(o) if o != n => out.push(match removal {
                Removal::Deleted => format!("{kind} {:?}: changed", name(n)),
                Removal::Kept => format!(
                    "{kind} {:?}: changed in host.toml; an existing one is not rewritten",
                    name(n)
                ),
            }),
            Some(_) => {}
        }
    }
    for o in old {
        if !find(new, name(o)) {
            out.push(match removal {
                Removal::Deleted => format!("{kind} {:?}: removed (deleted)", name(o)),
                Removal::Kept => format!(
                    "{kind} {:?}: no longer declared (kept; the API may delete it)",
                    name(o)
                ),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> HostConfig {
        let text = format!(
            "[host]\nhostname = \"h\"\n[host.management]\ninterface = \"eth0\"\ndhcp = true\n{extra}"
        );
        crate::config::parse("host.toml", &text).unwrap()
    }

    #[test]
    fn each_item_says_what_happens_to_it() {
        let old = config(
            "[[network]]\nname = \"lan\"\nkind = \"bridged\"\n\
             [[network]]\nname = \"gone\"\nkind = \"bridged\"\n\
             [[template]]\nname = \"old\"\n",
        );
        let new = config(
            "[[network]]\nname = \"lan\"\nkind = \"bridged\"\nsubnet = \"10.1.0.0/24\"\n\
             [[network]]\nname = \"wan\"\nkind = \"bridged\"\n",
        );
        assert_eq!(
            diff(&old, &new),
            [
                "network \"lan\": changed",
                "network \"wan\": added",
                "network \"gone\": removed (deleted)",
                "template \"old\": no longer declared (kept; the API may delete it)",
            ]
        );
        assert!(diff(&new, &new).is_empty());
        let renamed = crate::config::parse(
            "host.toml",
            "[host]\nhostname = \"other\"\n[host.management]\ninterface = \"eth1\"\ndhcp = true\n",
        )
        .unwrap();
        assert_eq!(
            diff(&config(""), &renamed),
            [
                "hostname: \"h\" -> \"other\"",
                "management: eth0 dhcp -> eth1 dhcp"
            ]
        );
    }

    #[test]
    fn a_pinned_update_key_is_a_change() {
        let key = "RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3";
        let none = config("");
        let pinned = config(&format!("[update]\npublic_key = \"{key}\"\n"));
        assert_eq!(pinned.update.public_key.as_deref(), Some(key));
        assert_eq!(
            diff(&none, &pinned),
            ["update: a signing key is pinned (bundles must be signed)"]
        );
        assert_eq!(
            diff(&pinned, &none),
            ["update: no signing key pinned any more"]
        );
        assert!(diff(&pinned, &pinned).is_empty());
        let bad = crate::config::parse(
            "host.toml",
            "[host]\nhostname = \"h\"\n[host.management]\ninterface = \"eth0\"\ndhcp = true\n\
             [update]\npublic_key = \"nope\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            bad.contains("host.toml:7:") && bad.contains("minisign public key"),
            "{bad}"
        );
    }
}
