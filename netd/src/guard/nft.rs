//! nf_tables over netlink, encoded here (the kernel's uapi `linux/netfilter/nf_tables.h`):
//! only what the guard needs — a netdev table, one ingress base chain per port, rules built of
//! meta/payload/cmp/counter/immediate expressions (all built into nf_tables.ko on 6.1, unlike
//! objref, which Debian 12's kernel has as a module of its own). Changes go in
//! one NFNL batch, which the kernel applies atomically (all or nothing).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::GuardError;

pub const NFPROTO_NETDEV: u8 = 5;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 16;
const NFNL_MSG_BATCH_END: u16 = 17;

pub const NFT_MSG_NEWTABLE: u16 = 0;
pub const NFT_MSG_NEWCHAIN: u16 = 3;
pub const NFT_MSG_GETCHAIN: u16 = 4;
pub const NFT_MSG_DELCHAIN: u16 = 5;
pub const NFT_MSG_NEWRULE: u16 = 6;
pub const NFT_MSG_GETRULE: u16 = 7;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_CREATE: u16 = 0x400;
pub const NLM_F_APPEND: u16 = 0x800;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLA_F_NESTED: u16 = 0x8000;

// Attribute numbers, by object.
pub const NFTA_TABLE_NAME: u16 = 1;
pub const NFTA_CHAIN_TABLE: u16 = 1;
pub const NFTA_CHAIN_NAME: u16 = 3;
pub const NFTA_CHAIN_HOOK: u16 = 4;
pub const NFTA_CHAIN_POLICY: u16 = 5;
pub const NFTA_CHAIN_TYPE: u16 = 7;
pub const NFTA_HOOK_HOOKNUM: u16 = 1;
pub const NFTA_HOOK_PRIORITY: u16 = 2;
pub const NFTA_HOOK_DEV: u16 = 3;
pub const NFTA_RULE_TABLE: u16 = 1;
pub const NFTA_RULE_CHAIN: u16 = 2;
pub const NFTA_RULE_EXPRESSIONS: u16 = 4;
pub const NFTA_COUNTER_PACKETS: u16 = 2;
pub const NFTA_LIST_ELEM: u16 = 1;
pub const NFTA_EXPR_NAME: u16 = 1;
pub const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;

/// NF_NETDEV_INGRESS.
pub const HOOK_INGRESS: u32 = 0;
pub const NF_DROP: u32 = 0;
pub const NF_ACCEPT: u32 = 1;
/// 16-byte register 1 (NFT_REG_1); NFT_REG_VERDICT is 0.
const REG1: u32 = 1;

/// Where a payload expression reads from (`enum nft_payload_bases`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    Link = 0,
    Network = 1,
    Transport = 2,
}

/// `enum nft_meta_keys`: what a meta expression loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meta {
    /// skb->protocol, the ethertype (big-endian u16).
    Protocol = 1,
    /// The transport protocol (u8), after IPv6 extension headers.
    L4Proto = 16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// Loads a meta key into register 1.
    Meta(Meta),
    /// Loads `len` bytes at `offset` of `base` into register 1.
    Payload(Base, u32, u32),
    /// Register 1 equal to (`true`) / different from (`false`) the bytes.
    Cmp(bool, Vec<u8>),
    /// Counts the packet (and its bytes) in the rule's own counter.
    Counter,
    /// A verdict: NF_ACCEPT or NF_DROP.
    Verdict(u32),
}

/// Appends one attribute (padded to 4 bytes).
pub fn put(buf: &mut Vec<u8>, ty: u16, data: &[u8]) {
    let len = 4 + data.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(data);
    pad(buf);
}

/// A NUL-terminated string attribute.
pub fn put_str(buf: &mut Vec<u8>, ty: u16, s: &str) {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    put(buf, ty, &v);
}

pub fn put_be32(buf: &mut Vec<u8>, ty: u16, v: u32) {
    put(buf, ty, &v.to_be_bytes());
}

/// A nested attribute whose content `f` writes.
pub fn nest(buf: &mut Vec<u8>, ty: u16, f: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0, 0]);
    buf.extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
    f(buf);
    let len = (buf.len() - start) as u16;
    buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    pad(buf);
}

fn pad(buf: &mut Vec<u8>) {
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

fn expr(buf: &mut Vec<u8>, name: &str, f: impl FnOnce(&mut Vec<u8>)) {
    nest(buf, NFTA_LIST_ELEM, |b| {
        put_str(b, NFTA_EXPR_NAME, name);
        nest(b, NFTA_EXPR_DATA, f);
    });
}

/// The NFTA_RULE_EXPRESSIONS list of a rule.
pub fn expressions(buf: &mut Vec<u8>, exprs: &[Expr]) {
    nest(buf, NFTA_RULE_EXPRESSIONS, |b| {
        for e in exprs {
            match e {
                Expr::Meta(key) => expr(b, "meta", |d| {
                    put_be32(d, 2, *key as u32); // NFTA_META_KEY
                    put_be32(d, 1, REG1); // NFTA_META_DREG
                }),
                Expr::Payload(base, offset, len) => expr(b, "payload", |d| {
                    put_be32(d, 1, REG1); // NFTA_PAYLOAD_DREG
                    put_be32(d, 2, *base as u32); // NFTA_PAYLOAD_BASE
                    put_be32(d, 3, *offset); // NFTA_PAYLOAD_OFFSET
                    put_be32(d, 4, *len); // NFTA_PAYLOAD_LEN
                }),
                Expr::Cmp(eq, data) => expr(b, "cmp", |d| {
                    put_be32(d, 1, REG1); // NFTA_CMP_SREG
                    put_be32(d, 2, if *eq { 0 } else { 1 }); // NFTA_CMP_OP: EQ, NEQ
                    nest(d, 3, |v| put(v, NFTA_DATA_VALUE, data)); // NFTA_CMP_DATA
                }),
                Expr::Counter => expr(b, "counter", |_| {}),
                Expr::Verdict(code) => expr(b, "immediate", |d| {
                    put_be32(d, 1, 0); // NFTA_IMMEDIATE_DREG: the verdict register
                    nest(d, 2, |v| {
                        // NFTA_IMMEDIATE_DATA
                        nest(v, NFTA_DATA_VERDICT, |c| {
                            put_be32(c, NFTA_VERDICT_CODE, *code)
                        });
                    });
                }),
            }
        }
    });
}

/// One nfnetlink message: nlmsghdr, nfgenmsg, attributes.
fn message(ty: u16, flags: u16, seq: u32, family: u8, res_id: u16, attrs: &[u8]) -> Vec<u8> {
    let len = 16 + 4 + attrs.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&ty.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.push(family);
    m.push(0); // NFNETLINK_V0
    m.extend_from_slice(&res_id.to_be_bytes());
    m.extend_from_slice(attrs);
    m
}

fn nft_type(msg: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | msg
}

/// A transaction: messages between BATCH_BEGIN and BATCH_END, each acknowledged.
pub struct Batch {
    buf: Vec<u8>,
    seq: u32,
    acks: usize,
}

impl Default for Batch {
    fn default() -> Self {
        Batch::new()
    }
}

impl Batch {
    pub fn new() -> Batch {
        let buf = message(
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            0,
            0,
            NFNL_SUBSYS_NFTABLES,
            &[],
        );
        Batch {
            buf,
            seq: 1,
            acks: 0,
        }
    }

    /// Adds an nf_tables message of the netdev family.
    pub fn add(&mut self, msg: u16, flags: u16, attrs: &[u8]) {
        self.buf.extend(message(
            nft_type(msg),
            NLM_F_REQUEST | NLM_F_ACK | flags,
            self.seq,
            NFPROTO_NETDEV,
            0,
            attrs,
        ));
        self.seq += 1;
        self.acks += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.acks == 0
    }

    /// The bytes sent: the messages and BATCH_END.
    pub fn finish(mut self) -> (Vec<u8>, usize) {
        self.buf.extend(message(
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            self.seq,
            0,
            NFNL_SUBSYS_NFTABLES,
            &[],
        ));
        (self.buf, self.acks)
    }
}

/// A NETLINK_NETFILTER socket in the calling thread's network namespace.
pub struct Socket {
    fd: OwnedFd,
}

impl Socket {
    pub fn open() -> Result<Socket, GuardError> {
        // SAFETY: plain socket(2); the fd is owned from here on.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_NETFILTER,
            )
        };
        if fd < 0 {
            return Err(GuardError::io("open a netfilter netlink socket"));
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // A local kernel socket answers at once; the timeout only guards against a kernel
        // that never answers, so netd does not hang on it.
        let tv = libc::timeval {
            tv_sec: 5,
            tv_usec: 0,
        };
        // SAFETY: SO_RCVTIMEO takes a timeval that lives for the call.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(GuardError::io("set the netlink receive timeout"));
        }
        Ok(Socket { fd })
    }

    fn send(&self, bytes: &[u8]) -> Result<(), GuardError> {
        // SAFETY: sockaddr_nl zeroed addresses the kernel (pid 0).
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: buffer and address live for the call.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                0,
                (&sa as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(GuardError::io("send to nf_tables"));
        }
        Ok(())
    }

    /// The next datagram's messages as (type, payload after nlmsghdr).
    fn recv(&self) -> Result<Vec<(u16, Vec<u8>)>, GuardError> {
        let mut buf = vec![0u8; 1 << 16];
        // SAFETY: the buffer lives for the call and recv writes at most its length.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(GuardError::io("receive from nf_tables"));
        }
        let mut out = Vec::new();
        let mut rest = &buf[..n as usize];
        while rest.len() >= 16 {
            let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let ty = u16::from_ne_bytes([rest[4], rest[5]]);
            if len < 16 || len > rest.len() {
                break;
            }
            out.push((ty, rest[16..len].to_vec()));
            rest = &rest[len.next_multiple_of(4).min(rest.len())..];
        }
        Ok(out)
    }

    /// Sends a batch and waits for every message's acknowledgement; the first error wins
    /// (the kernel then applied none of the batch).
    pub fn commit(&self, batch: Batch) -> Result<(), GuardError> {
        let (bytes, mut acks) = batch.finish();
        self.send(&bytes)?;
        while acks > 0 {
            for (ty, payload) in self.recv()? {
                if ty == NLMSG_ERROR {
                    let code = errno_of(&payload);
                    if code != 0 {
                        return Err(GuardError::Kernel(std::io::Error::from_raw_os_error(code)));
                    }
                    acks = acks.saturating_sub(1);
                }
            }
        }
        Ok(())
    }

    /// A GET request (`dump` or one object); each reply's attributes (after nfgenmsg).
    /// ENOENT (no such table/object) is an empty answer.
    pub fn get(&self, msg: u16, dump: bool, attrs: &[u8]) -> Result<Vec<Vec<u8>>, GuardError> {
        let flags = NLM_F_REQUEST | NLM_F_ACK | if dump { NLM_F_DUMP } else { 0 };
        self.send(&message(nft_type(msg), flags, 1, NFPROTO_NETDEV, 0, attrs))?;
        let mut out = Vec::new();
        loop {
            for (ty, payload) in self.recv()? {
                match ty {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        let code = errno_of(&payload);
                        return match code {
                            0 => Ok(out),
                            libc::ENOENT => Ok(Vec::new()),
                            c => Err(GuardError::Kernel(std::io::Error::from_raw_os_error(c))),
                        };
                    }
                    _ if payload.len() >= 4 => out.push(payload[4..].to_vec()),
                    _ => {}
                }
            }
        }
    }
}

/// The positive errno of an NLMSG_ERROR payload (0: an acknowledgement).
fn errno_of(payload: &[u8]) -> i32 {
    payload
        .get(..4)
        .map(|b| -i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(libc::EIO)
}

/// The top-level attributes of `buf` as (type without flags, data).
pub fn attrs(buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut rest = buf;
    while rest.len() >= 4 {
        let len = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
        let ty = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        if len < 4 || len > rest.len() {
            break;
        }
        out.push((ty, &rest[4..len]));
        rest = &rest[len.next_multiple_of(4).min(rest.len())..];
    }
    out
}

/// A string attribute's value without its NUL.
pub fn attr_str(buf: &[u8], ty: u16) -> Option<String> {
    attrs(buf)
        .into_iter()
        .find(|(t, _)| *t == ty)
        .map(|(_, d)| {
            let d = d.split(|b| *b == 0).next().unwrap_or(d);
            String::from_utf8_lossy(d).into_owned()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_and_nested_lengths_cover_their_content() {
        let mut b = Vec::new();
        put_str(&mut b, 1, "ab");
        assert_eq!(b, [7, 0, 1, 0, b'a', b'b', 0, 0]);
        let mut n = Vec::new();
        nest(&mut n, 4, |x| put_be32(x, 1, 0x0102_0304));
        assert_eq!(n, [12, 0, 4, 0x80, 8, 0, 1, 0, 1, 2, 3, 4]);
        assert_eq!(attrs(&n), [(4, &n[4..])]);
        assert_eq!(attr_str(&b, 1).as_deref(), Some("ab"));
    }

    #[test]
    fn a_cmp_expression_is_encoded_as_the_kernel_expects() {
        let mut b = Vec::new();
        expressions(&mut b, &[Expr::Cmp(false, vec![0x08, 0x00])]);
        // RULE_EXPRESSIONS { LIST_ELEM { NAME "cmp", DATA { SREG 1, OP NEQ, DATA { VALUE } } } }
        let want: Vec<u8> = [
            &[48u8, 0, 4, 0x80][..],
            &[44, 0, 1, 0x80],
            &[8, 0, 1, 0, b'c', b'm', b'p', 0],
            &[32, 0, 2, 0x80],
            &[8, 0, 1, 0, 0, 0, 0, 1],
            &[8, 0, 2, 0, 0, 0, 0, 1],
            &[12, 0, 3, 0x80, 6, 0, 1, 0, 8, 0, 0, 0],
        ]
        .concat();
        assert_eq!(b, want);
    }

    #[test]
    fn a_batch_is_framed_by_begin_and_end_for_the_nftables_subsystem() {
        let mut batch = Batch::new();
        let mut a = Vec::new();
        put_str(&mut a, NFTA_TABLE_NAME, "t");
        batch.add(NFT_MSG_NEWTABLE, NLM_F_CREATE, &a);
        let (bytes, acks) = batch.finish();
        assert_eq!(acks, 1);
        // BATCH_BEGIN: type 16, res_id NFNL_SUBSYS_NFTABLES (big-endian) in nfgenmsg.
        assert_eq!(&bytes[4..6], &16u16.to_ne_bytes());
        assert_eq!(&bytes[18..20], &[0, 10]);
        // NEWTABLE: type 0x0a00, REQUEST|ACK|CREATE, family netdev.
        let m = &bytes[20..];
        assert_eq!(&m[4..6], &0x0a00u16.to_ne_bytes());
        assert_eq!(&m[6..8], &0x405u16.to_ne_bytes());
        assert_eq!(m[16], NFPROTO_NETDEV);
        let end = &bytes[bytes.len() - 20..];
        assert_eq!(&end[4..6], &17u16.to_ne_bytes());
    }
}
