//! Field checks shared by the specs. Every message starts with the field (and its value), so a
//! client can point at what to change.

use std::fmt;

use crate::config::{Cidr, host_address_problem, parse_cidr};

/// Everything wrong with a spec, each problem naming its field. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct InvalidSpec {
    pub problems: Vec<String>,
}

impl fmt::Display for InvalidSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.problems.join("; "))
    }
}

/// Collects problems while a spec is checked field by field.
#[derive(Default)]
pub(super) struct Problems(pub Vec<String>);

impl Problems {
    pub fn push(&mut self, problem: impl Into<String>) {
        self.0.push(problem.into());
    }

    pub fn finish(self) -> Result<(), InvalidSpec> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(InvalidSpec { problems: self.0 })
        }
    }
}

/// `[a-z0-9][a-z0-9-]*`, at most `max` bytes: the rule host.toml applies to names.
pub(super) fn is_name(s: &str, max: usize) -> bool {
    let mut bytes = s.bytes();
    match bytes.next() {
        Some(first) if first.is_ascii_lowercase() || first.is_ascii_digit() => {}
        _ => return false,
    }
    s.len() <= max && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// What the kernel accepts as an interface name (`dev_valid_name`).
pub(super) fn is_ifname(s: &str) -> bool {
    (1..=15).contains(&s.len())
        && s != "."
        && s != ".."
        && !s.chars().any(|c| c == '/' || c == ':' || c.is_whitespace())
}

pub(super) fn check_vlan(p: &mut Problems, field: &str, vid: u16) {
    if !super::VLAN_RANGE.contains(&vid) {
        p.push(format!("{field} = {vid} is out of range 1..=4094"));
    }
}

/// Parses `field`'s CIDR; a host address must not be a network or broadcast address.
pub(super) fn check_cidr(p: &mut Problems, field: &str, s: &str, host: bool) -> Option<Cidr> {
    match parse_cidr(s) {
        Ok(c) => {
            if host && let Some(problem) = host_address_problem(c) {
                p.push(format!("{field} {s:?} {problem}"));
                return None;
            }
            Some(c)
        }
        Err(e) => {
            p.push(format!("{field} {s:?} is not a CIDR: it {e}"));
            None
        }
    }
}

/// `aa:bb:cc:dd:ee:ff`, unicast and not all zero (the kernel refuses both for a NIC).
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(part, 16).ok()?;
    }
    if parts.next().is_some() || mac[0] & 1 == 1 || mac == [0; 6] {
        return None;
    }
    Some(mac)
}

pub fn format_mac(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
