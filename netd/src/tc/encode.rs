//! Byte encoders for the tc objects netlink-packet-route has no builders for: htb (qdisc and
//! class), tbf, the ingress qdisc, and a u32 match-all filter carrying a mirred-redirect or a
//! police action. Every layout follows the kernel's uapi structs (pkt_sched.h, pkt_cls.h,
//! tc_act/tc_mirred.h) and is checked against what iproute2 6.1 sends for the same command
//! (testdata/*.hex, captured from `tc` with strace).
//!
//! Options travel as one raw TCA_OPTIONS attribute (`TcAttribute::Other`): netlink-packet-route
//! can only emit TCA_OPTIONS for kinds it knows, and emitting our own nested bytes keeps the
//! wire image exactly what we test.

use netlink_packet_route::AddressFamily;
use netlink_packet_route::tc::{TcAttribute, TcHeader, TcMessage};
use rtnetlink::packet_core::DefaultNla;

use super::psched::{Psched, cell_log};

/// `TC_H_ROOT`: the device's root (egress) qdisc slot.
pub const TC_H_ROOT: u32 = 0xFFFF_FFFF;
/// `TC_H_INGRESS`: the ingress qdisc slot.
pub const TC_H_INGRESS: u32 = 0xFFFF_FFF1;
/// The htb qdisc Cairn owns: `1:`.
pub const HTB_HANDLE: u32 = 0x0001_0000;
/// Its single class `1:1`, also the default class (all traffic lands there).
pub const HTB_CLASS: u32 = 0x0001_0001;
/// The ingress qdisc's handle `ffff:`.
pub const INGRESS_HANDLE: u32 = 0xFFFF_0000;
/// Our filter's fixed handle `800::800` (root hash table 800, key 0x800). A fixed handle makes
/// re-applying replace the filter in place instead of adding a duplicate.
pub const U32_HANDLE: u32 = 0x8000_0800;
/// Our filter's priority on `ffff:`.
pub const FILTER_PRIO: u16 = 1;

const TCA_OPTIONS: u16 = 2;
const NLA_F_NESTED: u16 = 0x8000;

const TCA_HTB_PARMS: u16 = 1;
const TCA_HTB_INIT: u16 = 2;
const TCA_HTB_RATE64: u16 = 6;
const TCA_HTB_CEIL64: u16 = 7;

const TCA_TBF_PARMS: u16 = 1;
const TCA_TBF_RATE64: u16 = 4;
const TCA_TBF_BURST: u16 = 6;

const TCA_U32_SEL: u16 = 5;
const TCA_U32_ACT: u16 = 7;
const TC_U32_TERMINAL: u8 = 1;

const TCA_ACT_KIND: u16 = 1;
const TCA_ACT_OPTIONS: u16 = 2;
const TCA_MIRRED_PARMS: u16 = 2;
const TCA_EGRESS_REDIR: i32 = 1;
const TC_ACT_SHOT: i32 = 2;
const TC_ACT_STOLEN: i32 = 4;

const TCA_POLICE_TBF: u16 = 1;
const TCA_POLICE_RATE: u16 = 2;
const TCA_POLICE_RATE64: u16 = 8;

/// `ETH_P_ALL`, sent in network byte order inside tcm_info.
const ETH_P_ALL: u16 = 0x0003;
/// tc_ratespec.linklayer: TC_LINKLAYER_ETHERNET. With it set the kernel computes times from
/// the rate itself and needs no rate tables for htb and tbf.
const LINKLAYER_ETHERNET: u8 = 1;
/// htb's default "mtu" for the cell size in iproute2 (q_htb.c).
const HTB_MTU: u32 = 1600;
/// The kernel's own bounds for an automatic htb quantum; we send the same value explicitly so
/// the kernel does not log "quantum of class is big" on every apply at high rates.
const HTB_QUANTUM_MIN: u64 = 1000;
const HTB_QUANTUM_MAX: u64 = 200_000;

/// A value that cannot be put into the kernel's fields.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "burst of {burst} bytes at {rate_bytes} bytes/s is longer than the kernel's 32-bit psched ticks allow (~274 s): lower the burst or raise the rate"
)]
pub struct EncodeError {
    pub rate_bytes: u64,
    pub burst: u64,
}

/// Appends netlink attributes (4-byte aligned TLVs) to a buffer.
#[derive(Default)]
pub(crate) struct NlaWriter {
    buf: Vec<u8>,
}

impl NlaWriter {
    pub(crate) fn put(&mut self, kind: u16, payload: &[u8]) {
        let len = 4 + payload.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.pad();
    }

    pub(crate) fn nest(&mut self, kind: u16, fill: impl FnOnce(&mut NlaWriter)) {
        let mut inner = NlaWriter::default();
        fill(&mut inner);
        self.put(kind, &inner.buf);
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    pub(crate) fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Little helper for the kernel's packed structs (host byte order, no padding where the C
/// layout has none).
#[derive(Default)]
struct Fields(Vec<u8>);

impl Fields {
    fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    fn u16(mut self, v: u16) -> Self {
        self.0.extend_from_slice(&v.to_ne_bytes());
        self
    }
    fn i16(mut self, v: i16) -> Self {
        self.0.extend_from_slice(&v.to_ne_bytes());
        self
    }
    fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_ne_bytes());
        self
    }
    fn i32(mut self, v: i32) -> Self {
        self.0.extend_from_slice(&v.to_ne_bytes());
        self
    }
    fn bytes(mut self, v: &[u8]) -> Self {
        self.0.extend_from_slice(v);
        self
    }
}

/// The 32-bit rate field: saturated when the real rate needs the 64-bit attribute.
fn rate32(rate_bytes: u64) -> u32 {
    u32::try_from(rate_bytes).unwrap_or(u32::MAX)
}

/// `struct tc_ratespec` (12 bytes) as `tc_calc_rtable` leaves it: ethernet link layer, no
/// overhead, cell_align -1.
pub fn ratespec(rate_bytes: u64, cell_log: u8) -> [u8; 12] {
    let f = Fields::default()
        .u8(cell_log)
        .u8(LINKLAYER_ETHERNET)
        .u16(0) // overhead
        .i16(-1) // cell_align
        .u16(0) // mpu
        .u32(rate32(rate_bytes));
    let mut out = [0u8; 12];
    out.copy_from_slice(&f.0);
    out
}

fn ticks(p: &Psched, rate_bytes: u64, burst: u64) -> Result<u32, EncodeError> {
    p.xmittime(rate_bytes, burst)
        .ok_or(EncodeError { rate_bytes, burst })
}

fn header(ifindex: u32, parent: u32, handle: u32, info: u32) -> TcHeader {
    TcHeader {
        family: AddressFamily::Unspec,
        index: ifindex as i32,
        handle: handle.into(),
        parent: parent.into(),
        info,
    }
}

fn message(header: TcHeader, kind: &str, options: Option<Vec<u8>>) -> TcMessage {
    let mut attributes = vec![TcAttribute::Kind(kind.to_string())];
    if let Some(options) = options {
        attributes.push(TcAttribute::Other(DefaultNla::new(TCA_OPTIONS, options)));
    }
    TcMessage::from_parts(header, attributes)
}

/// `tc qdisc add dev D parent P handle H htb default DEFCLS`: `struct tc_htb_glob` (20 bytes)
/// in TCA_HTB_INIT.
pub fn htb_qdisc(ifindex: u32, parent: u32, handle: u32, defcls: u32) -> TcMessage {
    let glob = Fields::default()
        .u32(3) // version: what the kernel's htb expects (HTB_VER >> 16)
        .u32(10) // rate2quantum, iproute2's default
        .u32(defcls)
        .u32(0) // debug
        .u32(0); // direct_pkts (out only)
    let mut opts = NlaWriter::default();
    opts.put(TCA_HTB_INIT, &glob.0);
    message(
        header(ifindex, parent, handle, 0),
        "htb",
        Some(opts.finish()),
    )
}

/// What one htb class guarantees and may borrow up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HtbClass {
    pub rate_bytes: u64,
    pub ceil_bytes: u64,
    pub burst: u64,
    pub cburst: u64,
}

impl HtbClass {
    /// The quantum the kernel would derive (rate / r2q, clamped), made explicit.
    pub fn quantum(&self) -> u32 {
        (self.rate_bytes / 10).clamp(HTB_QUANTUM_MIN, HTB_QUANTUM_MAX) as u32
    }
}

/// `tc class add dev D parent P classid C htb rate R ceil C burst B cburst CB quantum Q`:
/// TCA_HTB_RATE64/CEIL64 when above 32 bits, then `struct tc_htb_opt` (44 bytes) in
/// TCA_HTB_PARMS. iproute2 also sends TCA_HTB_RTAB/CTAB; the kernel ignores them once
/// linklayer is set, so they are left out.
pub fn htb_class(
    p: &Psched,
    ifindex: u32,
    parent: u32,
    classid: u32,
    class: &HtbClass,
) -> Result<TcMessage, EncodeError> {
    let cl = cell_log(HTB_MTU);
    let opt = Fields::default()
        .bytes(&ratespec(class.rate_bytes, cl))
        .bytes(&ratespec(class.ceil_bytes, cl))
        .u32(ticks(p, class.rate_bytes, class.burst)?)
        .u32(ticks(p, class.ceil_bytes, class.cburst)?)
        .u32(class.quantum())
        .u32(0) // level (out only)
        .u32(0); // prio
    let mut opts = NlaWriter::default();
    if class.rate_bytes > u64::from(u32::MAX) {
        opts.put(TCA_HTB_RATE64, &class.rate_bytes.to_ne_bytes());
    }
    if class.ceil_bytes > u64::from(u32::MAX) {
        opts.put(TCA_HTB_CEIL64, &class.ceil_bytes.to_ne_bytes());
    }
    opts.put(TCA_HTB_PARMS, &opt.0);
    Ok(message(
        header(ifindex, parent, classid, 0),
        "htb",
        Some(opts.finish()),
    ))
}

/// `tc qdisc add dev D parent P handle H tbf rate R burst B limit L`: `struct tc_tbf_qopt`
/// (36 bytes) in TCA_TBF_PARMS, the burst in bytes in TCA_TBF_BURST, TCA_TBF_RATE64 above 32
/// bits. Unlike iproute2 6.1, the buffer is computed from the 64-bit rate (tc uses the
/// saturated 32-bit field there, so `tc` shows 995000b for a 1000000-byte burst at 40gbit).
pub fn tbf_qdisc(
    p: &Psched,
    ifindex: u32,
    parent: u32,
    handle: u32,
    rate_bytes: u64,
    burst: u64,
    limit: u32,
) -> Result<TcMessage, EncodeError> {
    let qopt = Fields::default()
        .bytes(&ratespec(rate_bytes, cell_log(0)))
        .bytes(&[0u8; 12]) // peakrate: none
        .u32(limit)
        .u32(ticks(p, rate_bytes, burst)?)
        .u32(0); // mtu: only with a peak rate
    let mut opts = NlaWriter::default();
    opts.put(TCA_TBF_PARMS, &qopt.0);
    opts.put(
        TCA_TBF_BURST,
        &(burst.min(u64::from(u32::MAX)) as u32).to_ne_bytes(),
    );
    if rate_bytes > u64::from(u32::MAX) {
        opts.put(TCA_TBF_RATE64, &rate_bytes.to_ne_bytes());
    }
    Ok(message(
        header(ifindex, parent, handle, 0),
        "tbf",
        Some(opts.finish()),
    ))
}

/// `tc qdisc add dev D handle ffff: ingress`: no options.
pub fn ingress_qdisc(ifindex: u32) -> TcMessage {
    message(
        header(ifindex, TC_H_INGRESS, INGRESS_HANDLE, 0),
        "ingress",
        None,
    )
}

/// The action a match-all filter on `ffff:` runs for every packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngressAction {
    /// `action mirred egress redirect dev IFB`: hand every frame to the IFB, whose htb shapes it.
    Redirect { ifb_ifindex: u32 },
    /// `action police rate R burst B drop`: drop what exceeds the rate (no queue).
    Police { rate_bytes: u64, burst: u64 },
}

/// `struct tc_mirred` (28 bytes).
fn mirred_parms(ifb_ifindex: u32) -> Vec<u8> {
    Fields::default()
        .u32(0) // index: a new action
        .u32(0) // capab
        .i32(TC_ACT_STOLEN) // the redirected skb is consumed here
        .i32(0) // refcnt
        .i32(0) // bindcnt
        .i32(TCA_EGRESS_REDIR)
        .u32(ifb_ifindex)
        .0
}

/// `struct tc_police` (56 bytes), burst in ticks, exceed action drop, conform action ok.
fn police_parms(p: &Psched, rate_bytes: u64, burst: u64) -> Result<Vec<u8>, EncodeError> {
    Ok(Fields::default()
        .u32(0) // index
        .i32(TC_ACT_SHOT) // over the rate: drop
        .u32(0) // limit
        .u32(ticks(p, rate_bytes, burst)?)
        .u32(0) // mtu: the kernel takes 255 << cell_log (2040), GSO skbs checked per segment
        .bytes(&ratespec(rate_bytes, cell_log(0)))
        .bytes(&[0u8; 12]) // peakrate: none
        .i32(0) // refcnt
        .i32(0) // bindcnt
        .u32(0) // capab
        .0)
}

/// The rate table act_police requires when rate ≠ 0 (it checks the attribute is 1024 bytes).
pub fn police_rate_table(p: &Psched, rate_bytes: u64) -> Vec<u8> {
    p.rate_table(rate_bytes, cell_log(0))
        .iter()
        .flat_map(|t| t.to_ne_bytes())
        .collect()
}

/// `struct tc_u32_sel` with one all-zero key: `match u32 0 0`, i.e. every packet.
fn u32_match_all_sel() -> Vec<u8> {
    Fields::default()
        .u8(TC_U32_TERMINAL) // flags: a match ends the lookup (we have actions)
        .u8(0) // offshift
        .u8(1) // nkeys
        .u8(0) // padding before the __be16
        .u16(0) // offmask
        .u16(0) // off
        .i16(0) // offoff
        .i16(0) // hoff
        .u32(0) // hmask
        // key: mask, val, off, offmask
        .u32(0)
        .u32(0)
        .i32(0)
        .i32(0)
        .0
}

/// `tc filter add dev D parent ffff: protocol all prio 1 handle 800::800 u32 match u32 0 0
/// action …`.
pub fn u32_match_all(
    p: &Psched,
    ifindex: u32,
    action: &IngressAction,
) -> Result<TcMessage, EncodeError> {
    let (kind, act_opts) = match *action {
        IngressAction::Redirect { ifb_ifindex } => {
            let mut w = NlaWriter::default();
            w.put(TCA_MIRRED_PARMS, &mirred_parms(ifb_ifindex));
            ("mirred", w.finish())
        }
        IngressAction::Police { rate_bytes, burst } => {
            let mut w = NlaWriter::default();
            w.put(TCA_POLICE_TBF, &police_parms(p, rate_bytes, burst)?);
            w.put(TCA_POLICE_RATE, &police_rate_table(p, rate_bytes));
            if rate_bytes > u64::from(u32::MAX) {
                w.put(TCA_POLICE_RATE64, &rate_bytes.to_ne_bytes());
            }
            ("police", w.finish())
        }
    };
    let mut opts = NlaWriter::default();
    opts.nest(TCA_U32_ACT, |acts| {
        // Actions are numbered from 1 in the order they run.
        acts.nest(1, |a| {
            let mut name = kind.as_bytes().to_vec();
            name.push(0);
            a.put(TCA_ACT_KIND, &name);
            a.put(TCA_ACT_OPTIONS | NLA_F_NESTED, &act_opts);
        });
    });
    opts.put(TCA_U32_SEL, &u32_match_all_sel());
    let info = (u32::from(FILTER_PRIO) << 16) | u32::from(ETH_P_ALL.to_be());
    Ok(message(
        header(ifindex, INGRESS_HANDLE, U32_HANDLE, info),
        "u32",
        Some(opts.finish()),
    ))
}

/// A bare object to delete or look up: kind-less header only.
pub fn bare(ifindex: u32, parent: u32, handle: u32, info: u32) -> TcMessage {
    TcMessage::from_parts(header(ifindex, parent, handle, info), Vec::new())
}

/// tcm_info of our filter, for deleting it by priority and protocol.
pub fn filter_info() -> u32 {
    (u32::from(FILTER_PRIO) << 16) | u32::from(ETH_P_ALL.to_be())
}
