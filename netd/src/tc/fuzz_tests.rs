//! Fuzzing the reading of the kernel's tc dumps (testkit::fuzz), seeded with the messages the
//! encoders make and iproute2's own (testdata/*.hex, byte-identical to ours where we agree).

use netlink_packet_route::tc::{TcAttribute, TcMessage, TcOption};
use rtnetlink::packet_core::{Nla, Parseable};
use testkit::fuzz::{Budget, Input, Mutator, Rng, run};

use super::decode::{DecodeError, decode};
use super::encode::*;
use super::encode_tests::{captured, ours};
use super::psched::Psched;

const P: Psched = Psched::MODERN;

/// Every message the encoders make, at rates below and above 32 bits, and iproute2's.
fn corpus() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (rate, burst) in [
        (1_250u64, 1_514u64),
        (12_500_000, 125_000),
        (6_250_000_000, 62_500_000),
    ] {
        let class = HtbClass {
            rate_bytes: rate,
            ceil_bytes: rate * 2,
            burst,
            cburst: burst,
        };
        if let Ok(m) = htb_class(&P, 2, HTB_HANDLE, HTB_CLASS, &class) {
            out.push(ours(m));
        }
        if let Ok(m) = tbf_qdisc(&P, 3, TC_H_ROOT, HTB_HANDLE, rate, burst, 50_000) {
            out.push(ours(m));
        }
        let police = IngressAction::Police {
            rate_bytes: rate,
            burst,
        };
        if let Ok(m) = u32_match_all(&P, 3, &police) {
            out.push(ours(m));
        }
    }
    out.push(ours(htb_qdisc(2, TC_H_ROOT, HTB_HANDLE, 1)));
    out.push(ours(ingress_qdisc(3)));
    out.push(ours(bare(3, TC_H_ROOT, HTB_HANDLE, 0)));
    if let Ok(m) = u32_match_all(&P, 3, &IngressAction::Redirect { ifb_ifindex: 4 }) {
        out.push(ours(m));
    }
    for name in [
        "htb_qdisc",
        "htb_class_100m",
        "htb_class_50g",
        "htb_class_10k",
        "tbf_10m",
        "tbf_40g",
        "ingress",
        "u32_mirred",
        "u32_police_10m",
        "u32_police_50g",
    ] {
        out.push(captured(name));
    }
    out
}

/// Attribute headers (length, type) of the options netd reads, and the kinds.
const TC_TOKENS: &[&[u8]] = &[
    b"htb\0",
    b"tbf\0",
    b"ingress\0",
    b"u32\0",
    &[8, 0, 1, 0],
    &[48, 0, 1, 0],
    &[40, 0, 1, 0],
    &[12, 0, 6, 0],
    &[12, 0, 7, 0],
    &[12, 0, 4, 0],
    &[24, 0, 2, 0],
    &[4, 0, 2, 0],
    &[5, 0, 2, 0],
    &[0xff; 8],
];

/// What a reader of the kernel's structs must refuse, worked out from the bytes on their own:
/// for htb and tbf (the kinds netd reads), an option attribute that runs past the end of
/// TCA_OPTIONS, or a struct or 64-bit rate shorter than the kernel's. `None` when the message
/// is fine to read.
fn must_refuse(m: &TcMessage, object: &str) -> Option<&'static str> {
    let kind = m.attributes.iter().find_map(|a| match a {
        TcAttribute::Kind(k) => Some(k.as_str()),
        _ => None,
    })?;
    let opts = m.attributes.iter().find_map(|a| match a {
        TcAttribute::Options(o) => o.iter().find_map(|o| match o {
            TcOption::Other(nla) => {
                let mut v = vec![0u8; nla.value_len()];
                nla.emit_value(&mut v);
                Some(v)
            }
            _ => None,
        }),
        _ => None,
    })?;
    if kind != "htb" && kind != "tbf" {
        return None;
    }
    // (type, payload length) of each attribute, the first of a type winning.
    let mut found: Vec<(u16, usize)> = Vec::new();
    let mut rest = opts.as_slice();
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Some("a cut attribute header");
        }
        let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
        if len < 4 || len > rest.len() {
            return Some("an attribute longer than what is left");
        }
        let t = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3FFF;
        if !found.iter().any(|(k, _)| *k == t) {
            found.push((t, len - 4));
        }
        rest = rest.get((len + 3) & !3..).unwrap_or(&[]);
    }
    let size = |t: u16| found.iter().find(|(k, _)| *k == t).map(|(_, n)| *n);
    let short = |t: u16, want: usize| size(t).is_some_and(|n| n < want);
    let parms = size(1).is_some();
    let refuse = match (kind, object) {
        ("htb", "qdisc") => short(2, 20),
        ("htb", "class") => parms && (short(1, 44) || short(6, 8) || short(7, 8)),
        ("tbf", _) => parms && (short(1, 36) || short(4, 8)),
        _ => false,
    };
    refuse.then_some("a struct shorter than the kernel's")
}

/// The decoder's properties on one dump message: no panic (no read out of bounds, no
/// overflow) and a refusal exactly when the bytes call for one.
fn check_message(input: &[u8]) -> Result<String, String> {
    let Ok(m) = <TcMessage as Parseable<[u8]>>::parse(input) else {
        return Ok("not a tc message".into());
    };
    let mut label = String::new();
    for object in ["qdisc", "class"] {
        let expected = must_refuse(&m, object);
        match (decode(&P, &m, object), expected) {
            (Ok(info), None) => label.push_str(&format!(
                "{object} {} read{} ",
                match info.kind.as_str() {
                    k @ ("htb" | "tbf" | "ingress" | "u32") => k,
                    _ => "other kind",
                },
                if info.rate_bps.is_some() {
                    " with a rate"
                } else {
                    ""
                }
            )),
            (Err(e), Some(_)) => label.push_str(&format!("{object} refused: {} ", kind_of(&e))),
            (Ok(info), Some(why)) => {
                return Err(format!("{object} with {why} was read as {info:?}"));
            }
            (Err(e), None) => return Err(format!("{object} refused for no reason: {e}")),
        }
    }
    Ok(label)
}

fn kind_of(e: &DecodeError) -> &'static str {
    match e {
        DecodeError::Truncated { .. } => "truncated",
        DecodeError::Short { what, .. } => what,
    }
}

/// Netlink attributes as (type with flags, payload); `None` if `buf` is not a clean list.
fn split_attrs(buf: &[u8]) -> Option<Vec<(u16, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut rest = buf;
    while !rest.is_empty() {
        let len = usize::from(u16::from_ne_bytes([*rest.first()?, *rest.get(1)?]));
        let t = u16::from_ne_bytes([*rest.get(2)?, *rest.get(3)?]);
        out.push((t, rest.get(4..len)?.to_vec()));
        rest = rest.get((len + 3) & !3..).unwrap_or(&[]);
    }
    Some(out)
}

fn join_attrs(list: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (t, payload) in list {
        let len = u16::try_from(payload.len() + 4).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_ne_bytes());
        out.extend_from_slice(&t.to_ne_bytes());
        out.extend_from_slice(payload);
        out.resize((out.len() + 3) & !3, 0);
    }
    out
}

const INTERESTING_U64: &[u64] = &[0, 1, u32::MAX as u64, 1 << 32, 1 << 61, u64::MAX];

/// Mutations that keep the netlink framing consistent (every length fixed up), so the message
/// reaches the decoder: option attributes cut short or grown, dropped, repeated, retyped, given
/// a 64-bit value at some edge; the kind changed or moved after the options.
fn mutate_attributes(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let Some((header, Some(mut top))) = seed.split_at_checked(20).map(|(h, a)| (h, split_attrs(a)))
    else {
        return seed.to_vec();
    };
    let Some(opts_at) = top.iter().position(|(t, _)| t & 0x3FFF == 2) else {
        return seed.to_vec();
    };
    let mut opts = split_attrs(&top[opts_at].1).unwrap_or_default();
    for _ in 0..1 + rng.below(2) {
        let n = opts.len();
        let i = rng.below(n);
        match rng.below(8) {
            0 | 1 if n > 0 => {
                let keep = rng.below(opts[i].1.len() + 1);
                opts[i].1.truncate(keep);
            }
            2 if n > 0 => {
                let extra = 1 + rng.below(8);
                opts[i].1.extend((0..extra).map(|_| rng.next_u64() as u8));
            }
            3 if n > 0 => {
                opts.remove(i);
            }
            4 if n > 0 => {
                let copy = opts[i].clone();
                opts.insert(rng.below(n + 1), copy);
            }
            5 if n > 0 => opts[i].0 = [1u16, 2, 4, 6, 7, 0x8001][rng.below(6)],
            6 => {
                let v = INTERESTING_U64[rng.below(INTERESTING_U64.len())];
                opts.insert(
                    rng.below(n + 1),
                    ([4u16, 6, 7][rng.below(3)], v.to_ne_bytes().to_vec()),
                );
            }
            _ => {
                if let Some(k) = top.iter_mut().find(|(t, _)| *t == 1) {
                    k.1 = [&b"htb\0"[..], b"tbf\0", b"ingress\0", b"htb"][rng.below(4)].to_vec();
                }
                if rng.chance(1, 4) {
                    top.rotate_left(1);
                }
            }
        }
    }
    if let Some(o) = top.iter_mut().find(|(t, _)| t & 0x3FFF == 2) {
        o.1 = join_attrs(&opts);
    }
    let mut out = header.to_vec();
    out.extend(join_attrs(&top));
    out
}

#[test]
fn fuzz_tc_dump_messages() {
    let seeds = corpus();
    let mutator = Mutator::new(&seeds, TC_TOKENS);
    let report = run(
        "tc dumps",
        Budget::from_env(30_000),
        &seeds,
        |rng, seed| {
            // Half break the bytes anywhere (the framing, too), half the attributes' contents.
            if rng.chance(1, 2) {
                mutator.mutate(rng, seed)
            } else {
                mutate_attributes(rng, seed)
            }
        },
        |input: &Vec<u8>| check_message(input),
    );
    for wanted in ["truncated", "TCA_HTB_PARMS", "TCA_TBF_PARMS", "with a rate"] {
        assert!(
            report.outcomes.keys().any(|k| k.contains(wanted)),
            "no {wanted:?} in {report}: {:?}",
            report.outcomes
        );
    }
}

/// Every cut of a real options payload inside an attribute is refused; cuts between
/// attributes (or in the last one's padding) are not. Exhaustive over the encoders' messages.
#[test]
fn truncated_options_are_refused_at_every_length() {
    for seed in corpus() {
        let Ok(m) = <TcMessage as Parseable<[u8]>>::parse(&seed[..]) else {
            panic!("a seed does not parse")
        };
        let Some(TcAttribute::Kind(kind)) = m
            .attributes
            .iter()
            .find(|a| matches!(a, TcAttribute::Kind(_)))
        else {
            continue;
        };
        if kind != "htb" && kind != "tbf" {
            continue;
        }
        let Some(opts) = seed_options(&seed) else {
            continue;
        };
        // Attribute boundaries: where a cut leaves whole attributes.
        let mut whole = vec![0];
        let mut at = 0;
        while at + 4 <= opts.len() {
            let len = usize::from(u16::from_ne_bytes([opts[at], opts[at + 1]]));
            whole.extend(at + len..=(at + ((len + 3) & !3)).min(opts.len()));
            at += (len + 3) & !3;
        }
        for cut in 0..opts.len() {
            let mut info = super::decode::QdiscInfo {
                object: "class",
                kind: kind.clone(),
                handle: String::new(),
                parent: String::new(),
                rate_bps: None,
                ceil_bps: None,
                burst_bytes: None,
                default_class: None,
                raw_handle: 0,
                raw_parent: 0,
            };
            let r = super::decode::decode_options(&P, &mut info, &opts[..cut]);
            if whole.contains(&cut) {
                assert!(
                    !matches!(r, Err(DecodeError::Truncated { .. })),
                    "{kind}: a cut at {cut} between attributes is refused: {r:?}"
                );
            } else {
                assert!(
                    matches!(r, Err(DecodeError::Truncated { .. })),
                    "{kind}: a cut at {cut} inside an attribute is {r:?}"
                );
            }
        }
    }
}

/// TCA_OPTIONS' payload in a message body (tcmsg, then attributes; TCA_OPTIONS is type 2).
fn seed_options(body: &[u8]) -> Option<Vec<u8>> {
    let mut at = 20;
    while at + 4 <= body.len() {
        let len = usize::from(u16::from_ne_bytes([body[at], body[at + 1]]));
        let t = u16::from_ne_bytes([body[at + 2], body[at + 3]]) & 0x3FFF;
        if len < 4 {
            return None;
        }
        if t == 2 {
            return body.get(at + 4..at + len).map(<[u8]>::to_vec);
        }
        at += (len + 3) & !3;
    }
    None
}

/// A rate and burst to shape with.
#[derive(Debug, Clone, Copy)]
struct Shape {
    rate_bytes: u64,
    burst: u64,
}

impl Input for Shape {
    fn shrink(&self) -> Vec<Shape> {
        let mut out = Vec::new();
        if self.rate_bytes > 1 {
            out.push(Shape {
                rate_bytes: self.rate_bytes / 2,
                ..*self
            });
        }
        if self.burst > 1 {
            out.push(Shape {
                burst: self.burst / 2,
                ..*self
            });
        }
        out
    }
}

/// A number spread evenly over the powers of two up to 2^`max_log`.
fn log_uniform(rng: &mut Rng, max_log: usize) -> u64 {
    let shift = rng.below(max_log + 1);
    (rng.next_u64() >> (63 - shift.min(63))).max(1)
}

/// What the encoders write, the decoder reads back as `tc -d` would show it: the rate exactly
/// (saturated where bits/s do not fit 64 bits), the burst to within what the kernel's tick
/// arithmetic loses (whole microseconds, twice, and float rounding), never more.
#[test]
fn fuzz_tc_encode_decode_round_trip() {
    let report = run(
        "tc round trip",
        Budget::from_env(20_000),
        &[Shape {
            rate_bytes: 12_500_000,
            burst: 125_000,
        }],
        |rng, _| Shape {
            rate_bytes: log_uniform(rng, 63),
            burst: log_uniform(rng, 40),
        },
        |s: &Shape| {
            let class = HtbClass {
                rate_bytes: s.rate_bytes,
                ceil_bytes: s.rate_bytes.saturating_mul(2),
                burst: s.burst,
                cburst: s.burst,
            };
            let encoded = [
                htb_class(&P, 2, HTB_HANDLE, HTB_CLASS, &class).map(|m| (m, "class")),
                tbf_qdisc(&P, 3, TC_H_ROOT, HTB_HANDLE, s.rate_bytes, s.burst, 50_000)
                    .map(|m| (m, "qdisc")),
            ];
            let mut label = String::new();
            for e in encoded {
                let Ok((m, object)) = e else {
                    // The burst does not fit the kernel's 32-bit ticks at this rate.
                    label.push_str("refused ");
                    continue;
                };
                let body = ours(m);
                let parsed = <TcMessage as Parseable<[u8]>>::parse(&body[..])
                    .map_err(|e| format!("our own message does not parse: {e}"))?;
                let info = decode(&P, &parsed, object)
                    .map_err(|e| format!("our own message is refused: {e}"))?;
                if info.rate_bps != Some(s.rate_bytes.saturating_mul(8)) {
                    return Err(format!(
                        "rate {} B/s read back as {:?} bit/s",
                        s.rate_bytes, info.rate_bps
                    ));
                }
                if object == "class" && info.ceil_bps != Some(class.ceil_bytes.saturating_mul(8)) {
                    return Err(format!(
                        "ceil {} B/s read back as {:?}",
                        class.ceil_bytes, info.ceil_bps
                    ));
                }
                let burst = info.burst_bytes.ok_or("no burst read back")?;
                let slack = s.rate_bytes / 500_000 + 2 + s.burst / 1_000_000_000;
                if burst > s.burst + s.burst / 1_000_000_000 || burst + slack < s.burst {
                    return Err(format!(
                        "burst {} at {} B/s read back as {burst}",
                        s.burst, s.rate_bytes
                    ));
                }
                label.push_str(object);
                label.push(' ');
            }
            Ok(label)
        },
    );
    assert!(
        report.outcomes.len() >= 2,
        "{report}: {:?}",
        report.outcomes
    );
}

/// Found by fuzz_tc_dump_messages: a 64-bit rate above 2^61 bytes/s overflowed when turned
/// into bits/s (a panic in debug builds, a wrong small rate in release). It saturates now.
#[test]
fn huge_64_bit_rates_saturate() {
    let class = HtbClass {
        rate_bytes: u64::MAX - 1,
        ceil_bytes: 0xfe00_0002_e90e_dd00,
        burst: 1,
        cburst: 1,
    };
    let m = htb_class(&P, 2, HTB_HANDLE, HTB_CLASS, &class).unwrap();
    let parsed = <TcMessage as Parseable<[u8]>>::parse(&ours(m)[..]).unwrap();
    let info = decode(&P, &parsed, "class").unwrap();
    assert_eq!(info.rate_bps, Some(u64::MAX));
    assert_eq!(info.ceil_bps, Some(u64::MAX));
}

/// A TCA_HTB_PARMS cut to 40 of its 44 bytes is refused, not read as "no rate".
#[test]
fn short_structs_are_refused() {
    let class = HtbClass {
        rate_bytes: 12_500_000,
        ceil_bytes: 12_500_000,
        burst: 125_000,
        cburst: 125_000,
    };
    let mut body = ours(htb_class(&P, 2, HTB_HANDLE, HTB_CLASS, &class).unwrap());
    // The last 4 bytes of TCA_HTB_PARMS (prio) and the lengths around them.
    let opts_at = body.len() - 4 - 48;
    body.truncate(body.len() - 4);
    let shrink = |b: &mut [u8], at: usize| {
        let len = u16::from_ne_bytes([b[at], b[at + 1]]) - 4;
        b[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    };
    shrink(&mut body, opts_at);
    shrink(&mut body, opts_at + 4);
    let parsed = <TcMessage as Parseable<[u8]>>::parse(&body[..]).unwrap();
    assert_eq!(
        decode(&P, &parsed, "class"),
        Err(DecodeError::Short {
            what: "TCA_HTB_PARMS",
            got: 40,
            want: 44
        })
    );
}
