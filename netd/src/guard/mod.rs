//! Port security: a guest may send only from its own MAC and its own addresses.
//!
//! **How.** nf_tables, netdev family: one table `cairn-guard`, and per port one base chain on
//! the port's host-side link at the ingress hook (what the guest sends arrives there, before
//! the bridge or the routing decision sees it). The chain accepts what the guest may send and
//! ends in "count, drop"; every dropping rule has its own counter.
//! Chosen over a cls_bpf program because the rules stay declarative and readable with `nft
//! list ruleset`, a batch replaces a port's rules atomically, the drop count is a kernel
//! of its own (an ingress qdisc's drop count would mix in police drops), and nothing
//! needs an eBPF assembler; over iptables/ebtables because those are legacy front ends. The
//! messages are encoded in `nft` (netlink, no nft binary), like `tc/` does for tc.
//! (Per-port named counter objects would survive a rule change, but the `objref` expression
//! that feeds them is a separate module on Debian 12's 6.1 kernel; anonymous counters are
//! built into nf_tables.ko.)
//!
//! **What is allowed** (see `rules`), all from the port's MAC when the spec has one:
//! - ARP with that MAC as sender hardware address and, when the spec has IPv4 addresses, one
//!   of them or 0.0.0.0 (ARP probes) as sender IP;
//! - IPv4 from one of the spec's IPv4 addresses, and DHCP client traffic (0.0.0.0, udp
//!   68→67) so a guest can ask for an address;
//! - IPv6 from one of the spec's IPv6 addresses, from any link-local fe80::/64 address (not
//!   only the MAC's EUI-64: guests with stable-privacy or random link-local addresses are
//!   common, and the MAC check already ties link-local traffic to the port), and ICMPv6 from
//!   :: (duplicate address detection);
//! - neighbour solicitations/advertisements only with the port's MAC in their source/target
//!   link-layer address option (checked first: a spoofed one is dropped whatever its source);
//! - other ethertypes (LLDP, VLAN-tagged frames of trunk ports…) from the port's MAC.
//!
//! A family for which the spec lists no address is not filtered by address (a guest that
//! takes its address by DHCP from a server beyond the uplink would otherwise be cut off);
//! only by MAC. A tap without a `mac` in its spec is filtered by address only.
//!
//! **Counted** per port: the sum of its drop rules' counters, which `port.list`/`port_info`
//! report as `spoof_drops` (since the port's rules last changed). Chains are named `<port>-<fingerprint of the rules>`, so a re-apply with
//! unchanged rules sends nothing and a changed spec replaces the chain in one batch.

pub mod nft;

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use nft::{Base, Batch, Expr, Meta, Socket};

pub const TABLE: &str = "cairn-guard";
/// Before anything else that might hook ingress in the netdev family.
const PRIORITY: i32 = -500;

#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "nf_tables refused the port's rules: {0} (is nf_tables with the netdev family in the kernel?)"
    )]
    Kernel(#[source] std::io::Error),
}

impl GuardError {
    fn io(what: &'static str) -> GuardError {
        GuardError::Io {
            what,
            source: std::io::Error::last_os_error(),
        }
    }
}

/// What a port may send from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowed {
    pub mac: Option<[u8; 6]>,
    pub v4: Vec<Ipv4Addr>,
    pub v6: Vec<Ipv6Addr>,
}

const ETH_ARP: u16 = 0x0806;
const ETH_IP: u16 = 0x0800;
const ETH_IP6: u16 = 0x86dd;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;

fn proto(p: u16) -> [Expr; 2] {
    [
        Expr::Meta(Meta::Protocol),
        Expr::Cmp(true, p.to_be_bytes().to_vec()),
    ]
}

fn l4(p: u8) -> [Expr; 2] {
    [Expr::Meta(Meta::L4Proto), Expr::Cmp(true, vec![p])]
}

fn at(base: Base, offset: u32, eq: bool, bytes: &[u8]) -> [Expr; 2] {
    [
        Expr::Payload(base, offset, bytes.len() as u32),
        Expr::Cmp(eq, bytes.to_vec()),
    ]
}

/// The port's chain, rule by rule (first match wins; the last rule counts and drops).
pub fn rules(a: &Allowed) -> Vec<Vec<Expr>> {
    let counter = || vec![Expr::Counter, Expr::Verdict(nft::NF_DROP)];
    let accept = Expr::Verdict(nft::NF_ACCEPT);
    // Ethernet source address, at offset 6 of the link-layer header.
    let from_mac: Vec<Expr> = a
        .mac
        .map(|m| at(Base::Link, 6, true, &m).to_vec())
        .unwrap_or_default();
    let mut out: Vec<Vec<Expr>> = Vec::new();
    if let Some(mac) = a.mac {
        // NS (135) with a source link-layer option (1), NA (136) with a target one (2): the
        // first option follows the 24-byte ICMPv6 header + target address.
        for (ty, opt) in [(135u8, 1u8), (136, 2)] {
            let mut r = proto(ETH_IP6).to_vec();
            r.extend(l4(IPPROTO_ICMPV6));
            r.extend(at(Base::Transport, 0, true, &[ty]));
            r.extend(at(Base::Transport, 24, true, &[opt]));
            r.extend(at(Base::Transport, 26, false, &mac));
            r.extend(counter());
            out.push(r);
        }
    }
    let rule = |parts: &[&[Expr]]| -> Vec<Expr> {
        let mut r = from_mac.clone();
        for p in parts {
            r.extend_from_slice(p);
        }
        r.push(accept.clone());
        r
    };
    // ARP: sender hardware address at 8, sender IP at 14 of the ARP header.
    let sha: Vec<Expr> = a
        .mac
        .map(|m| at(Base::Network, 8, true, &m).to_vec())
        .unwrap_or_default();
    if a.v4.is_empty() {
        out.push(rule(&[&proto(ETH_ARP), &sha]));
        out.push(rule(&[&proto(ETH_IP)]));
    } else {
        for ip in a.v4.iter().chain([&Ipv4Addr::UNSPECIFIED]) {
            out.push(rule(&[
                &proto(ETH_ARP),
                &sha,
                &at(Base::Network, 14, true, &ip.octets()),
            ]));
        }
        for ip in &a.v4 {
            out.push(rule(&[
                &proto(ETH_IP),
                &at(Base::Network, 12, true, &ip.octets()),
            ]));
        }
        // DHCP client: from 0.0.0.0, udp 68 → 67.
        out.push(rule(&[
            &proto(ETH_IP),
            &at(Base::Network, 12, true, &[0; 4]),
            &l4(IPPROTO_UDP),
            &at(Base::Transport, 0, true, &68u16.to_be_bytes()),
            &at(Base::Transport, 2, true, &67u16.to_be_bytes()),
        ]));
    }
    if a.v6.is_empty() {
        out.push(rule(&[&proto(ETH_IP6)]));
    } else {
        for ip in &a.v6 {
            out.push(rule(&[
                &proto(ETH_IP6),
                &at(Base::Network, 8, true, &ip.octets()),
            ]));
        }
        // Link-local fe80::/64: the first 8 bytes of the source.
        out.push(rule(&[
            &proto(ETH_IP6),
            &at(Base::Network, 8, true, &[0xfe, 0x80, 0, 0, 0, 0, 0, 0]),
        ]));
        out.push(rule(&[
            &proto(ETH_IP6),
            &at(Base::Network, 8, true, &[0; 16]),
            &l4(IPPROTO_ICMPV6),
        ]));
    }
    // Anything that is not ARP, IPv4 or IPv6.
    out.push(rule(&[&[
        Expr::Meta(Meta::Protocol),
        Expr::Cmp(false, ETH_ARP.to_be_bytes().to_vec()),
        Expr::Cmp(false, ETH_IP.to_be_bytes().to_vec()),
        Expr::Cmp(false, ETH_IP6.to_be_bytes().to_vec()),
    ]]));
    out.push(counter());
    out
}

/// FNV-1a over the rules' encoding: the chain name's suffix.
fn fingerprint(rules: &[Vec<Expr>]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for r in rules {
        let mut b = Vec::new();
        nft::expressions(&mut b, r);
        for byte in b {
            h ^= u32::from(byte);
            h = h.wrapping_mul(0x0100_0193);
        }
    }
    h
}

pub fn chain_name(port: &str, rules: &[Vec<Expr>]) -> String {
    format!("{port}-{:08x}", fingerprint(rules))
}

/// The port a chain or counter belongs to: chains are `<port>-<8 hex>`, counters `<port>`.
fn port_of_chain(chain: &str) -> &str {
    chain.rsplit_once('-').map_or(chain, |(p, _)| p)
}

/// The guard's chains as the kernel has them.
fn chains(s: &Socket) -> Result<Vec<String>, GuardError> {
    let mut table = Vec::new();
    nft::put_str(&mut table, nft::NFTA_CHAIN_TABLE, TABLE);
    Ok(s.get(nft::NFT_MSG_GETCHAIN, true, &table)?
        .iter()
        .filter(|c| nft::attr_str(c, nft::NFTA_CHAIN_TABLE).as_deref() == Some(TABLE))
        .filter_map(|c| nft::attr_str(c, nft::NFTA_CHAIN_NAME))
        .collect())
}

fn del_chain(batch: &mut Batch, chain: &str) {
    let mut a = Vec::new();
    nft::put_str(&mut a, nft::NFTA_CHAIN_TABLE, TABLE);
    nft::put_str(&mut a, nft::NFTA_CHAIN_NAME, chain);
    batch.add(nft::NFT_MSG_DELCHAIN, 0, &a);
}

/// Makes port `port`'s chain enforce `allowed`; `false` when it already did (no request
/// sent). One batch: the table when missing, the old chain out, the new one in.
pub fn apply(port: &str, allowed: &Allowed) -> Result<bool, GuardError> {
    let rules = rules(allowed);
    let want = chain_name(port, &rules);
    let s = Socket::open()?;
    let have = chains(&s)?;
    if have.contains(&want) {
        return Ok(false);
    }
    let mut batch = Batch::new();
    let mut t = Vec::new();
    nft::put_str(&mut t, nft::NFTA_TABLE_NAME, TABLE);
    batch.add(nft::NFT_MSG_NEWTABLE, nft::NLM_F_CREATE, &t);
    for c in have.iter().filter(|c| port_of_chain(c) == port) {
        del_chain(&mut batch, c);
    }
    let mut a = Vec::new();
    nft::put_str(&mut a, nft::NFTA_CHAIN_TABLE, TABLE);
    nft::put_str(&mut a, nft::NFTA_CHAIN_NAME, &want);
    nft::nest(&mut a, nft::NFTA_CHAIN_HOOK, |h| {
        nft::put_be32(h, nft::NFTA_HOOK_HOOKNUM, nft::HOOK_INGRESS);
        nft::put_be32(h, nft::NFTA_HOOK_PRIORITY, PRIORITY as u32);
        nft::put_str(h, nft::NFTA_HOOK_DEV, port);
    });
    nft::put_be32(&mut a, nft::NFTA_CHAIN_POLICY, nft::NF_ACCEPT);
    nft::put_str(&mut a, nft::NFTA_CHAIN_TYPE, "filter");
    batch.add(nft::NFT_MSG_NEWCHAIN, nft::NLM_F_CREATE, &a);
    for r in &rules {
        let mut a = Vec::new();
        nft::put_str(&mut a, nft::NFTA_RULE_TABLE, TABLE);
        nft::put_str(&mut a, nft::NFTA_RULE_CHAIN, &want);
        nft::expressions(&mut a, r);
        batch.add(
            nft::NFT_MSG_NEWRULE,
            nft::NLM_F_CREATE | nft::NLM_F_APPEND,
            &a,
        );
    }
    s.commit(batch)?;
    Ok(true)
}

/// Removes the chains of every port not in `keep`; `true` when it sent a request. With
/// `keep` refusing one port only, this is that port's removal.
pub fn retain(keep: &dyn Fn(&str) -> bool) -> Result<bool, GuardError> {
    let s = Socket::open()?;
    let mut batch = Batch::new();
    for c in chains(&s)?.iter().filter(|c| !keep(port_of_chain(c))) {
        del_chain(&mut batch, c);
    }
    if batch.is_empty() {
        return Ok(false);
    }
    s.commit(batch)?;
    Ok(true)
}

/// Packets dropped for port `port` by its current rules (the sum of its drop rules'
/// counters; a changed spec starts a new chain, and the count with it); None when the port
/// has no guard.
pub fn drops(port: &str) -> Result<Option<u64>, GuardError> {
    let s = Socket::open()?;
    let Some(chain) = chains(&s)?.into_iter().find(|c| port_of_chain(c) == port) else {
        return Ok(None);
    };
    Ok(chain_drops(&s, Some(&chain))?
        .get(port)
        .copied()
        .or(Some(0)))
}

/// [`drops`] of every guarded port, from one dump of the table's chains and one of its rules.
pub fn all_drops() -> Result<HashMap<String, u64>, GuardError> {
    let s = Socket::open()?;
    let mut out: HashMap<String, u64> = chains(&s)?
        .iter()
        .map(|c| (port_of_chain(c).to_string(), 0))
        .collect();
    for (port, n) in chain_drops(&s, None)? {
        out.insert(port, n);
    }
    Ok(out)
}

/// The drop counters of the rules of `chain` (every chain of the table when None), summed by
/// port.
fn chain_drops(s: &Socket, chain: Option<&str>) -> Result<HashMap<String, u64>, GuardError> {
    let mut a = Vec::new();
    nft::put_str(&mut a, nft::NFTA_RULE_TABLE, TABLE);
    if let Some(chain) = chain {
        nft::put_str(&mut a, nft::NFTA_RULE_CHAIN, chain);
    }
    let mut out: HashMap<String, u64> = HashMap::new();
    for rule in s.get(nft::NFT_MSG_GETRULE, true, &a)? {
        if nft::attr_str(&rule, nft::NFTA_RULE_TABLE).as_deref() != Some(TABLE) {
            continue;
        }
        let Some(rule_chain) = nft::attr_str(&rule, nft::NFTA_RULE_CHAIN) else {
            continue;
        };
        if chain.is_some_and(|c| c != rule_chain) {
            continue;
        }
        let mut packets = 0u64;
        for (ty, list) in nft::attrs(&rule) {
            if ty != nft::NFTA_RULE_EXPRESSIONS {
                continue;
            }
            for (_, elem) in nft::attrs(list) {
                if nft::attr_str(elem, nft::NFTA_EXPR_NAME).as_deref() != Some("counter") {
                    continue;
                }
                packets += nft::attrs(elem)
                    .into_iter()
                    .find(|(t, _)| *t == nft::NFTA_EXPR_DATA)
                    .and_then(|(_, d)| {
                        nft::attrs(d)
                            .into_iter()
                            .find(|(t, _)| *t == nft::NFTA_COUNTER_PACKETS)
                    })
                    .and_then(|(_, p)| p.get(..8)?.try_into().ok())
                    .map(u64::from_be_bytes)
                    .unwrap_or(0);
            }
        }
        *out.entry(port_of_chain(&rule_chain).to_string())
            .or_default() += packets;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_name_follows_the_rules() {
        let a = Allowed {
            mac: Some([2, 0, 0, 0, 0, 1]),
            v4: vec![Ipv4Addr::new(10, 0, 0, 5)],
            v6: Vec::new(),
        };
        let r1 = rules(&a);
        assert_eq!(chain_name("cp1v", &r1), chain_name("cp1v", &rules(&a)));
        let mut b = a.clone();
        b.v4.push(Ipv4Addr::new(10, 0, 0, 6));
        assert_ne!(chain_name("cp1v", &r1), chain_name("cp1v", &rules(&b)));
        assert_eq!(port_of_chain(&chain_name("cp1v", &r1)), "cp1v");
        // NDP checks first, the counting drop last.
        assert_eq!(
            r1.last(),
            Some(&vec![Expr::Counter, Expr::Verdict(nft::NF_DROP)])
        );
        assert_eq!(r1.len(), 2 + 2 + 1 + 1 + 1 + 1 + 1);
    }
}
