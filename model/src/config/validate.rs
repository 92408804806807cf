//! Checks across entries: unique names, references that resolve, network uplinks and VLANs,
//! and subnets that do not overlap.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use super::items::NetworkDraft;
use super::read::Document;
use super::types::{Cidr, NetworkKind};
use super::walk::{At, LineIndex, Problems};
use crate::rules;

pub(super) fn check(p: &mut Problems, d: &Document, lines: &LineIndex<'_>) {
    let line = |at: usize| lines.line(at);

    let networks = unique(
        p,
        "network",
        d.networks.iter().map(|n| n.name.as_ref()),
        line,
    );
    let pools = unique(p, "pool", d.pools.iter().map(|n| n.name.as_ref()), line);
    let templates = unique(
        p,
        "template",
        d.templates.iter().map(|n| n.name.as_ref()),
        line,
    );
    unique(p, "api token", d.token_names.iter().map(Some), line);
    unique_guests(p, d, line);

    let network_names = known(&networks);
    let pool_names = known(&pools);
    let template_names = known(&templates);

    for c in &d.containers {
        let who = guest_label("container", c.name.as_ref());
        resolve(p, &who, "template", c.template.as_ref(), &template_names);
        resolve(p, &who, "network", c.network.as_ref(), &network_names);
        resolve(p, &who, "pool", c.pool.as_ref(), &pool_names);
        // One rule with ct.create's (model::ct::ContainerSpec): the layer's volume needs both.
        match (&c.pool, c.disk) {
            (Some(pool), None) => p.at(
                pool.at,
                format!(
                    "{who} has pool {:?} but no disk (the size of its volume)",
                    pool.value
                ),
            ),
            (Some(pool), Some(d)) if d < crate::ct::MIN_DISK => p.at(
                pool.at,
                format!(
                    "{who} disk {d} is less than the {} MiB a writable layer needs",
                    crate::ct::MIN_DISK >> 20
                ),
            ),
            (None, Some(_)) => {
                if let Some(name) = &c.name {
                    p.at(
                        name.at,
                        format!("{who} has a disk but no pool to keep it in"),
                    );
                }
            }
            _ => {}
        }
    }
    for t in &d.templates {
        let who = guest_label("template", t.name.as_ref());
        resolve(p, &who, "pool", t.pool.as_ref(), &pool_names);
        // One rule with template.import's: only a pool of files can keep a template.
        let Some(pool) = &t.pool else { continue };
        let kind = d
            .pools
            .iter()
            .find(|q| q.name.as_ref().is_some_and(|n| n.value == pool.value))
            .and_then(|q| q.kind);
        if let Some(Err(problem)) = kind.map(rules::template_pool_kind) {
            p.at(pool.at, format!("pool {:?} in {who} {problem}", pool.value));
        }
    }
    for v in &d.vms {
        let who = guest_label("vm", v.name.as_ref());
        for (i, nic) in v.nics.iter().enumerate() {
            let who = format!("{who} nic {i}");
            resolve(p, &who, "network", nic.network.as_ref(), &network_names);
        }
    }
    check_vm_macs(p, d, line);

    check_guest_addresses(p, d);
    check_address_holders(p, d, line);
    check_uplinks(p, &d.networks, line);
    check_overlaps(p, &d.networks, line);
}

/// Reports every name seen before, at the later definition; returns each name's first offset.
fn unique<'d>(
    p: &mut Problems,
    kind: &str,
    names: impl Iterator<Item = Option<&'d At<String>>>,
    line: impl Fn(usize) -> usize,
) -> HashMap<&'d str, usize> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for name in names.flatten() {
        match seen.get(name.value.as_str()) {
            Some(&first) => p.at(
                name.at,
                format!(
                    "{kind} {:?} is defined twice (first at line {})",
                    name.value,
                    line(first)
                ),
            ),
            None => {
                seen.insert(&name.value, name.at);
            }
        }
    }
    seen
}

/// Containers and VMs share one namespace: both become guests with that name in the API, in
/// cgroup paths and on the bridge, so a container and a VM may not share a name.
fn unique_guests(p: &mut Problems, d: &Document, line: impl Fn(usize) -> usize) {
    let mut guests: Vec<(&str, &At<String>)> = d
        .containers
        .iter()
        .filter_map(|c| Some(("container", c.name.as_ref()?)))
        .chain(d.vms.iter().filter_map(|v| Some(("vm", v.name.as_ref()?))))
        .collect();
    // In file order, so the first definition is the one kept and the later ones reported.
    guests.sort_by_key(|(_, name)| name.at);
    let mut seen: HashMap<&str, (&str, usize)> = HashMap::new();
    for (kind, name) in guests {
        match seen.get(name.value.as_str()) {
            Some(&(first_kind, first)) if first_kind == kind => p.at(
                name.at,
                format!(
                    "{kind} {:?} is defined twice (first at line {})",
                    name.value,
                    line(first)
                ),
            ),
            Some(&(first_kind, first)) => {
                let other = format!("{first_kind} {:?} (line {})", name.value, line(first));
                if let Err(problem) = rules::guest_name_free(Some(&other)) {
                    p.at(name.at, format!("{kind} {:?} {problem}", name.value));
                }
            }
            None => {
                seen.insert(&name.value, (kind, name.at));
            }
        }
    }
}

/// The defined names, sorted, for "defined: a, b" hints.
fn known<'d>(names: &HashMap<&'d str, usize>) -> Vec<&'d str> {
    let mut list: Vec<&str> = names.keys().copied().collect();
    list.sort_unstable();
    list
}

fn guest_label(kind: &str, name: Option<&At<String>>) -> String {
    match name {
        Some(n) => format!("{kind} {:?}", n.value),
        None => format!("a {kind} without a name"),
    }
}

/// How many defined names an "unknown name" message lists: enough to spot a typo, few enough
/// that a host with thousands of networks does not get thousands of names per message.
const HINT_NAMES: usize = 10;

/// `known` is sorted.
fn resolve(p: &mut Problems, who: &str, kind: &str, r: Option<&At<String>>, known: &[&str]) {
    let Some(r) = r else { return };
    if known.binary_search(&r.value.as_str()).is_ok() {
        return;
    }
    // Escaped: a defined name may itself be invalid (its own diagnostic says so), and a line
    // break in it would split this diagnostic's one line of `file:line:col: message`.
    let listed = |names: &[&str]| {
        names
            .iter()
            .map(|n| n.escape_debug().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let hint = if known.is_empty() {
        format!("no [[{kind}]] is defined")
    } else if known.len() <= HINT_NAMES {
        format!("defined: {}", listed(known))
    } else {
        format!(
            "defined: {}, … ({} in all)",
            listed(&known[..HINT_NAMES]),
            known.len()
        )
    };
    p.at(
        r.at,
        format!("{who} refers to unknown {kind} {:?} ({hint})", r.value),
    );
}

/// A MAC is given to one NIC only, across every VM: two guests with one MAC on a bridge steal
/// each other's traffic. Compared without regard to case.
fn check_vm_macs(p: &mut Problems, d: &Document, line: impl Fn(usize) -> usize) {
    let mut seen: HashMap<String, (String, usize)> = HashMap::new();
    for v in &d.vms {
        let who = guest_label("vm", v.name.as_ref());
        for (i, nic) in v.nics.iter().enumerate() {
            let Some(mac) = &nic.mac else { continue };
            let who = format!("{who} nic {i}");
            match seen.get(&mac.value.to_ascii_lowercase()) {
                Some((first, at)) => p.at(
                    mac.at,
                    format!(
                        "mac {:?} in {who} is already used by {first} (line {}); expected each \
                         MAC once",
                        mac.value,
                        line(*at)
                    ),
                ),
                None => {
                    seen.insert(mac.value.to_ascii_lowercase(), (who, mac.at));
                }
            }
        }
    }
}

/// Every guest address written, with its network and who wrote it: containers' `addresses`
/// and VM NICs' `addresses`, which follow the same rules.
fn guest_addresses(d: &Document) -> Vec<(&str, String, usize, &At<Cidr>)> {
    let mut out = Vec::new();
    for c in &d.containers {
        let Some(net) = &c.network else { continue };
        let who = guest_label("container", c.name.as_ref());
        for (i, a) in c.addresses.iter().enumerate() {
            out.push((net.value.as_str(), who.clone(), i, a));
        }
    }
    for v in &d.vms {
        let vm = guest_label("vm", v.name.as_ref());
        for (n, nic) in v.nics.iter().enumerate() {
            let Some(net) = &nic.network else { continue };
            let who = format!("{vm} nic {n}");
            for (i, a) in nic.addresses.iter().enumerate() {
                out.push((net.value.as_str(), who.clone(), i, a));
            }
        }
    }
    out
}

/// A guest's addresses lie inside its network's subnet, with the subnet's prefix, when the
/// network has a subnet.
fn check_guest_addresses(p: &mut Problems, d: &Document) {
    // The first network of each name, as references resolve to it; looked up once per
    // address rather than searched for.
    let mut subnets: HashMap<&str, Option<Cidr>> = HashMap::new();
    for n in &d.networks {
        if let Some(name) = &n.name {
            subnets
                .entry(name.value.as_str())
                .or_insert(n.subnet.as_ref().map(|s| s.value));
        }
    }
    for (net, who, i, a) in guest_addresses(d) {
        let Some(&Some(subnet)) = subnets.get(net) else {
            continue;
        };
        if let Err(problem) = rules::address_in_subnet(a.value, subnet, net) {
            p.at(
                a.at,
                format!("addresses[{i}] \"{}\" in {who} {problem}", a.value),
            );
        }
    }
}

/// Each address is held once on a network: by one guest (a container or a VM's NIC), or by
/// the host (the network's own `address`).
fn check_address_holders(p: &mut Problems, d: &Document, line: impl Fn(usize) -> usize) {
    let mut held: HashMap<(&str, IpAddr), String> = HashMap::new();
    for n in &d.networks {
        if let (Some(name), Some(addr)) = (&n.name, n.address) {
            held.insert(
                (name.value.as_str(), addr.addr),
                format!("the host (network {:?} address)", name.value),
            );
        }
    }
    for (net, who, i, a) in guest_addresses(d) {
        let key = (net, a.value.addr);
        if let Err(problem) = rules::address_free(held.get(&key).map(String::as_str)) {
            p.at(
                a.at,
                format!("addresses[{i}] \"{}\" in {who} {problem}", a.value),
            );
        } else {
            held.insert(key, format!("{who} (line {})", line(a.at)));
        }
    }
}

/// An uplink is a NIC or a `vlan` network. A bridged or routed network may sit on a vlan
/// network; a vlan network itself sits on a NIC, so uplinks never chain or loop.
fn check_uplinks(p: &mut Problems, networks: &[NetworkDraft], line: impl Fn(usize) -> usize) {
    let by_name: HashMap<&str, &NetworkDraft> = networks
        .iter()
        .filter_map(|n| Some((n.name.as_ref()?.value.as_str(), n)))
        .collect();
    // (uplink, vlan id) → first network using it, to catch two networks on one 802.1Q link.
    let mut tags: HashMap<(&str, u16), (&str, usize)> = HashMap::new();
    for n in networks {
        let Some(name) = &n.name else { continue };
        let Some(uplink) = &n.uplink else { continue };
        match by_name.get(uplink.value.as_str()) {
            Some(_) if uplink.value == name.value => p.at(
                uplink.at,
                format!(
                    "network {:?} has itself as uplink; expected a NIC or a vlan network",
                    name.value
                ),
            ),
            // A network name is never a NIC, whatever that network's own problems are.
            Some(_) if n.kind == Some(NetworkKind::Vlan) => p.at(
                uplink.at,
                format!(
                    "vlan network {:?} has uplink {:?}, which is a network; expected a NIC \
                     (vlan networks do not stack)",
                    name.value, uplink.value
                ),
            ),
            Some(NetworkDraft {
                kind: Some(kind), ..
            }) if *kind != NetworkKind::Vlan => p.at(
                uplink.at,
                format!(
                    "network {:?} has uplink {:?}, which is a {} network; expected a NIC or a \
                     vlan network",
                    name.value,
                    uplink.value,
                    kind_name(*kind)
                ),
            ),
            // A NIC (not known until runtime), or a vlan network as it should be.
            _ => {}
        }
        if n.kind == Some(NetworkKind::Vlan)
            && let Some(vlan) = &n.vlan
        {
            let key = (uplink.value.as_str(), vlan.value);
            match tags.get(&key) {
                Some(&(first, first_at)) => p.at(
                    vlan.at,
                    format!(
                        "vlan {} in network {:?} is already used on uplink {:?} by network {:?} \
                         (line {}); expected each VLAN id once per uplink",
                        vlan.value,
                        name.value,
                        uplink.value,
                        first,
                        line(first_at)
                    ),
                ),
                None => {
                    tags.insert(key, (name.value.as_str(), vlan.at));
                }
            }
        }
    }
}

fn kind_name(kind: NetworkKind) -> &'static str {
    match kind {
        NetworkKind::Bridged => "bridged",
        NetworkKind::Routed => "routed",
        NetworkKind::Vlan => "vlan",
    }
}

/// Two networks with overlapping subnets would make the host's routes ambiguous. Each network
/// whose subnet overlaps an earlier one is reported once, at its subnet, naming the first
/// network in the file that it overlaps: one line per network to fix. (A line per overlapping
/// pair grows with the square of the networks: 500 000 lines for 1 000 networks on one subnet.)
/// The second definition of a name is left out; it is reported as a duplicate already.
///
/// CIDR blocks either nest or are disjoint, so sorted by (family, address, prefix) the subnets
/// form a forest in which a block's ancestors are on a stack and its descendants follow it.
/// One sweep finds, for every subnet, the first network in file order among its ancestors
/// and among its descendants: O(n log n) rather than a comparison of every pair.
fn check_overlaps(p: &mut Problems, networks: &[NetworkDraft], line: impl Fn(usize) -> usize) {
    let mut names = HashSet::new();
    let subnets: Vec<(&NetworkDraft, &At<Cidr>)> = networks
        .iter()
        .filter(|n| n.name.as_ref().is_none_or(|name| names.insert(&name.value)))
        .filter_map(|n| Some((n, n.subnet.as_ref()?)))
        .collect();
    let mut order: Vec<usize> = (0..subnets.len()).collect();
    // Ties (one subnet written twice) stay in file order, so the later one nests in the earlier.
    order.sort_by_key(|&i| (subnets[i].1.value.order_key(), i));

    const NONE: usize = usize::MAX;
    // Per subnet (index in file order): the first of its ancestors, the first of its descendants.
    let mut first_above = vec![NONE; subnets.len()];
    let mut first_below = vec![NONE; subnets.len()];
    // (subnet, the first of it and its ancestors): the chain of blocks containing the current one.
    let mut stack: Vec<(usize, usize)> = Vec::new();
    // A block leaves the stack after all its descendants, so its `first_below` is complete and
    // can be passed up to its parent.
    let pop = |stack: &mut Vec<(usize, usize)>, first_below: &mut [usize]| {
        if let Some((done, _)) = stack.pop()
            && let Some(&(parent, _)) = stack.last()
        {
            first_below[parent] = first_below[parent].min(done).min(first_below[done]);
        }
    };
    for &i in &order {
        // In this order a block that overlaps the stack's top lies inside it.
        while let Some(&(top, _)) = stack.last() {
            if subnets[top].1.value.overlaps(&subnets[i].1.value) {
                break;
            }
            pop(&mut stack, &mut first_below);
        }
        first_above[i] = stack.last().map_or(NONE, |&(_, first)| first);
        stack.push((i, first_above[i].min(i)));
    }
    while !stack.is_empty() {
        pop(&mut stack, &mut first_below);
    }

    for (i, (n, subnet)) in subnets.iter().enumerate() {
        let first = first_above[i].min(first_below[i]);
        // The first overlapping network is earlier in the file only if this one is not first.
        if first >= i {
            continue;
        }
        let (earlier, earlier_subnet) = subnets[first];
        p.at(
            subnet.at,
            format!(
                "subnet \"{}\" in {} overlaps subnet {} of {} (line {})",
                subnet.value,
                network_label(n),
                earlier_subnet.value,
                network_label(earlier),
                line(earlier_subnet.at)
            ),
        );
    }
}

fn network_label(n: &NetworkDraft) -> String {
    match &n.name {
        Some(name) => format!("network {:?}", name.value),
        None => "a network without a name".to_string(),
    }
}
