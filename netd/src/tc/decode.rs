//! Reading back what the kernel holds: qdiscs and classes of a device, with htb/tbf rates and
//! bursts decoded from their TCA_OPTIONS the way `tc -d` prints them.

use netlink_packet_route::tc::{TcAttribute, TcMessage, TcOption};
use rtnetlink::packet_core::Nla;
use serde::Serialize;

use super::encode::{TC_H_INGRESS, TC_H_ROOT};
use super::psched::Psched;

/// One qdisc or class as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QdiscInfo {
    /// "qdisc" or "class".
    pub object: &'static str,
    pub kind: String,
    /// `maj:min` in hex as tc prints it (`1:`, `1:1`, `ffff:`).
    pub handle: String,
    /// `root`, `ingress` or `maj:min`.
    pub parent: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_bps: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ceil_bps: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst_bytes: Option<u64>,
    /// htb qdisc only: the class unclassified traffic goes to (minor number).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_class: Option<u32>,
    /// Raw handles, for netd's own comparisons.
    #[serde(skip)]
    pub raw_handle: u32,
    #[serde(skip)]
    pub raw_parent: u32,
}

pub fn fmt_handle(h: u32) -> String {
    match h {
        TC_H_ROOT => "root".to_string(),
        TC_H_INGRESS => "ingress".to_string(),
        _ if h & 0xFFFF == 0 => format!("{:x}:", h >> 16),
        _ => format!("{:x}:{:x}", h >> 16, h & 0xFFFF),
    }
}

/// The nested attributes inside TCA_OPTIONS for kinds netlink-packet-route does not know: it
/// hands the whole TCA_OPTIONS over as one opaque attribute.
fn options_payload(m: &TcMessage) -> Option<Vec<u8>> {
    m.attributes.iter().find_map(|a| match a {
        TcAttribute::Options(opts) => opts.iter().find_map(|o| match o {
            TcOption::Other(nla) => {
                let mut v = vec![0u8; nla.value_len()];
                nla.emit_value(&mut v);
                Some(v)
            }
            _ => None,
        }),
        _ => None,
    })
}

/// Splits netlink attributes into (type without flags, payload); stops at malformed input.
pub(crate) fn attrs(mut buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([buf[0], buf[1]]));
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & 0x3FFF;
        if len < 4 || len > buf.len() {
            break;
        }
        out.push((kind, &buf[4..len]));
        let next = (len + 3) & !3;
        buf = buf.get(next..).unwrap_or(&[]);
    }
    out
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    b.get(off..off + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_ne_bytes)
}

fn u64_of(b: &[u8]) -> Option<u64> {
    b.get(..8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_ne_bytes)
}

pub fn decode(p: &Psched, m: &TcMessage, object: &'static str) -> QdiscInfo {
    let kind = m
        .attributes
        .iter()
        .find_map(|a| match a {
            TcAttribute::Kind(k) => Some(k.clone()),
            _ => None,
        })
        .unwrap_or_default();
    let raw_handle = u32::from(m.header.handle);
    let raw_parent = u32::from(m.header.parent);
    let mut info = QdiscInfo {
        object,
        kind,
        handle: fmt_handle(raw_handle),
        parent: fmt_handle(raw_parent),
        rate_bps: None,
        ceil_bps: None,
        burst_bytes: None,
        default_class: None,
        raw_handle,
        raw_parent,
    };
    let Some(opts) = options_payload(m) else {
        return info;
    };
    let opts = attrs(&opts);
    let find = |t: u16| opts.iter().find(|(k, _)| *k == t).map(|(_, v)| *v);
    match (info.kind.as_str(), object) {
        ("htb", "qdisc") => info.default_class = find(2).and_then(|g| u32_at(g, 8)),
        ("htb", "class") => {
            if let Some(parms) = find(1) {
                let rate = find(6).and_then(u64_of).or(u32_at(parms, 8).map(u64::from));
                let ceil = find(7)
                    .and_then(u64_of)
                    .or(u32_at(parms, 20).map(u64::from));
                info.rate_bps = rate.map(|r| r * 8);
                info.ceil_bps = ceil.map(|r| r * 8);
                info.burst_bytes = rate.zip(u32_at(parms, 24)).map(|(r, b)| p.xmitsize(r, b));
            }
        }
        ("tbf", _) => {
            if let Some(parms) = find(1) {
                let rate = find(4).and_then(u64_of).or(u32_at(parms, 8).map(u64::from));
                info.rate_bps = rate.map(|r| r * 8);
                info.burst_bytes = rate.zip(u32_at(parms, 28)).map(|(r, b)| p.xmitsize(r, b));
            }
        }
        _ => {}
    }
    info
}
