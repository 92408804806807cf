//! Reading back what the kernel holds: qdiscs and classes of a device, with htb/tbf rates and
//! bursts decoded from their TCA_OPTIONS the way `tc -d` prints them.

use netlink_packet_route::tc::{TcAttribute, TcMessage, TcOption};
use rtnetlink::packet_core::Nla;
use serde::Serialize;

use super::encode::{TC_H_INGRESS, TC_H_ROOT};
use super::error::TcError;
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

/// A dump the kernel would never send: an attribute cut short, or one of the structs netd reads
/// smaller than the kernel's. Reported as an error, not read as "no rate here": that would show
/// a shaped link as unshaped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error(
        "attribute at byte {offset} of TCA_OPTIONS is truncated: it needs {needs} bytes, {left} are left"
    )]
    Truncated {
        offset: usize,
        needs: usize,
        left: usize,
    },
    #[error("{what} is {got} bytes, shorter than the kernel's {want}")]
    Short {
        what: &'static str,
        got: usize,
        want: usize,
    },
}

/// Splits netlink attributes into (type without flags, payload). The last attribute's padding
/// may be missing; anything else left over, or an attribute longer than what is left, is an
/// error.
pub(crate) fn attrs(buf: &[u8]) -> Result<Vec<(u16, &[u8])>, DecodeError> {
    let mut out = Vec::new();
    let mut offset = 0;
    while let Some(rest) = buf.get(offset..).filter(|r| !r.is_empty()) {
        let truncated = |needs| DecodeError::Truncated {
            offset,
            needs,
            left: rest.len(),
        };
        let (Some(len), Some(kind)) = (rest.get(0..2), rest.get(2..4)) else {
            return Err(truncated(4));
        };
        let len = usize::from(u16::from_ne_bytes([len[0], len[1]]));
        let kind = u16::from_ne_bytes([kind[0], kind[1]]) & 0x3FFF;
        // A length below 4 (the header itself) is as wrong as one past the end.
        let payload = rest.get(4..len).ok_or_else(|| truncated(len.max(4)))?;
        out.push((kind, payload));
        offset += (len + 3) & !3;
    }
    Ok(out)
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    b.get(off..off + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_ne_bytes)
}

/// An attribute's payload, checked to hold the kernel's whole struct (or number).
fn sized<'a>(what: &'static str, payload: &'a [u8], want: usize) -> Result<&'a [u8], DecodeError> {
    if payload.len() < want {
        Err(DecodeError::Short {
            what,
            got: payload.len(),
            want,
        })
    } else {
        Ok(payload)
    }
}

fn u64_of(what: &'static str, b: &[u8]) -> Result<u64, DecodeError> {
    match b.first_chunk::<8>() {
        Some(n) => Ok(u64::from_ne_bytes(*n)),
        None => Err(DecodeError::Short {
            what,
            got: b.len(),
            want: 8,
        }),
    }
}

/// Sizes of the kernel's structs (include/uapi/linux/pkt_sched.h).
const TC_HTB_GLOB: usize = 20;
const TC_HTB_OPT: usize = 44;
const TC_TBF_QOPT: usize = 36;

/// Bytes/s as tc's bits/s. A rate the kernel holds as 64 bits may not fit 64 bits times 8: it
/// saturates (no real link is that fast; a wrapped number would be a wrong, small rate).
fn bits(bytes_per_sec: u64) -> u64 {
    bytes_per_sec.saturating_mul(8)
}

pub fn decode(p: &Psched, m: &TcMessage, object: &'static str) -> Result<QdiscInfo, DecodeError> {
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
    if let Some(opts) = options_payload(m) {
        decode_options(p, &mut info, &opts)?;
    }
    Ok(info)
}

/// Reads the rates and bursts of `info.kind` from its TCA_OPTIONS payload.
pub(crate) fn decode_options(
    p: &Psched,
    info: &mut QdiscInfo,
    opts: &[u8],
) -> Result<(), DecodeError> {
    let known = matches!(info.kind.as_str(), "htb" | "tbf");
    if !known {
        // Kinds netd does not read (fq_codel, noqueue, …) are only listed, however their
        // options look.
        return Ok(());
    }
    let opts = attrs(opts)?;
    let find = |t: u16| opts.iter().find(|(k, _)| *k == t).map(|(_, v)| *v);
    match (info.kind.as_str(), info.object) {
        ("htb", "qdisc") => {
            if let Some(glob) = find(2) {
                let glob = sized("TCA_HTB_INIT", glob, TC_HTB_GLOB)?;
                info.default_class = u32_at(glob, 8);
            }
        }
        ("htb", "class") => {
            if let Some(parms) = find(1) {
                let parms = sized("TCA_HTB_PARMS", parms, TC_HTB_OPT)?;
                let rate = match find(6) {
                    Some(r) => u64_of("TCA_HTB_RATE64", r)?,
                    None => u32_at(parms, 8).map_or(0, u64::from),
                };
                let ceil = match find(7) {
                    Some(c) => u64_of("TCA_HTB_CEIL64", c)?,
                    None => u32_at(parms, 20).map_or(0, u64::from),
                };
                info.rate_bps = Some(bits(rate));
                info.ceil_bps = Some(bits(ceil));
                info.burst_bytes = u32_at(parms, 24).map(|b| p.xmitsize(rate, b));
            }
        }
        ("tbf", _) => {
            if let Some(parms) = find(1) {
                let parms = sized("TCA_TBF_PARMS", parms, TC_TBF_QOPT)?;
                let rate = match find(4) {
                    Some(r) => u64_of("TCA_TBF_RATE64", r)?,
                    None => u32_at(parms, 8).map_or(0, u64::from),
                };
                info.rate_bps = Some(bits(rate));
                info.burst_bytes = u32_at(parms, 28).map(|b| p.xmitsize(rate, b));
            }
        }
        _ => {}
    }
    Ok(())
}

/// Decodes a dump of `object`s (qdiscs or classes) of device `ifindex`.
pub(crate) fn decode_all(
    p: &Psched,
    dump: &[TcMessage],
    object: &'static str,
    ifindex: u32,
) -> Result<Vec<QdiscInfo>, TcError> {
    dump.iter()
        .map(|m| {
            decode(p, m, object).map_err(|source| TcError::Decode {
                object: format!(
                    "{object} {} on ifindex {ifindex}",
                    fmt_handle(u32::from(m.header.handle))
                ),
                source,
            })
        })
        .collect()
}
