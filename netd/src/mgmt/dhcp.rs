//! A DHCPv4 client (RFC 2131) for the management interface.
//!
//! The packet building/parsing and the timer arithmetic are pure functions so they can be tested
//! without a network; `run` is the state machine that drives them over a UDP socket.
//!
//! The socket is an ordinary UDP socket on 0.0.0.0:68 bound to the interface: the BROADCAST flag
//! in every request before we hold an address makes servers broadcast their replies, which the
//! kernel delivers to an unconfigured interface (a unicast to the offered address would not be).

use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Duration;

use dhcproto::v4::{
    self, CLIENT_PORT, DhcpOption, Flags, Message, MessageType, Opcode, OptionCode, SERVER_PORT,
};
use dhcproto::{Decodable, Encodable};
use netlink_packet_route::route::RouteProtocol;
use rtnetlink::Handle;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{MgmtError, MgmtStatus, Source};
use crate::link::{self, Lifetime, LinkError, LinkInfo};
use crate::resolv;

/// RFC 2131's "infinite" lease.
pub const INFINITE: u32 = u32::MAX;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParseError {
    #[error("not a DHCP packet: {0}")]
    Decode(String),
    #[error("not a BOOTREPLY")]
    NotReply,
    #[error("reply for another transaction (xid {0:#010x})")]
    OtherXid(u32),
    #[error("reply for another client")]
    OtherClient,
    #[error("no DHCP message type")]
    NoMessageType,
    #[error("unexpected message type {0:?}")]
    UnexpectedType(MessageType),
    #[error("{0:?} without a server identifier")]
    NoServerId(MessageType),
    #[error("ACK without a lease time")]
    NoLeaseTime,
    #[error("reply offers no address")]
    NoAddress,
}

/// Who we are to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub mac: Vec<u8>,
    pub hostname: Option<String>,
}

/// A server's offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offer {
    pub addr: Ipv4Addr,
    pub server: Ipv4Addr,
}

/// What an ACK grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub addr: Ipv4Addr,
    pub prefix: u8,
    pub routers: Vec<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub server: Ipv4Addr,
    pub times: LeaseTimes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Offer(Offer),
    Ack(Lease),
    Nak,
}

/// When to renew (T1), rebind (T2) and give up (expiry), measured from when the REQUEST that
/// got the ACK was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTimes {
    pub lease_secs: u32,
    pub t1: Duration,
    pub t2: Duration,
    pub expiry: Duration,
}

/// RFC 2131 §4.4.5 defaults (T1 = ½, T2 = ⅞ of the lease), keeping server-sent values only when
/// they are ordered T1 < T2 < lease, since a bad pair would have us renew after expiry.
pub fn lease_times(lease_secs: u32, t1: Option<u32>, t2: Option<u32>) -> LeaseTimes {
    let lease = u64::from(lease_secs);
    let mut t1 = t1
        .map(u64::from)
        .filter(|&t| t < lease)
        .unwrap_or(lease / 2);
    let mut t2 = t2
        .map(u64::from)
        .filter(|&t| t > t1 && t < lease)
        .unwrap_or(lease * 7 / 8);
    if t2 <= t1 {
        t1 = lease / 2;
        t2 = lease * 7 / 8;
    }
    LeaseTimes {
        lease_secs,
        t1: Duration::from_secs(t1),
        t2: Duration::from_secs(t2),
        expiry: Duration::from_secs(lease),
    }
}

/// Retransmission delay for DISCOVER and SELECTING-state REQUESTs: RFC 2131 §4.1's 4, 8, 16,
/// 32, 64 s, randomized by ±1 s so that a rack of hosts booting together does not stay in step.
pub fn retransmit_delay(attempt: u32, jitter_ms: i64) -> Duration {
    let base_ms = 4000u64 << attempt.min(4);
    let jitter = jitter_ms.clamp(-1000, 1000);
    Duration::from_millis(base_ms.saturating_add_signed(jitter))
}

/// Retransmission delay in RENEWING/REBINDING: half the time left to the next deadline
/// (RFC 2131 §4.4.5), with a floor so short leases do not flood the server; never past the
/// deadline itself.
pub fn renew_retry(remaining: Duration) -> Duration {
    (remaining / 2).max(Duration::from_secs(2)).min(remaining)
}

/// The prefix length of a contiguous netmask.
pub fn prefix_from_mask(mask: Ipv4Addr) -> Option<u8> {
    let bits = u32::from(mask);
    let ones = bits.leading_ones();
    (bits.checked_shl(ones).unwrap_or(0) == 0).then_some(ones as u8)
}

// Without a subnet mask option the classful prefix is what other clients assume too.
fn classful_prefix(addr: Ipv4Addr) -> u8 {
    match addr.octets()[0] {
        0..=127 => 8,
        128..=191 => 16,
        _ => 24,
    }
}

fn base(xid: u32, client: &Client, msg_type: MessageType, broadcast: bool) -> Message {
    let mut chaddr = [0u8; 16];
    let n = client.mac.len().min(16);
    chaddr[..n].copy_from_slice(&client.mac[..n]);
    let mut msg = Message::new_with_id(
        xid,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &chaddr[..n],
    );
    msg.set_opcode(Opcode::BootRequest);
    if broadcast {
        msg.set_flags(Flags::default().set_broadcast());
    }
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::MessageType(msg_type));
    // Type 1 (Ethernet) + MAC, as RFC 2132 §9.14 suggests, so servers key leases on the NIC.
    let mut id = vec![1u8];
    id.extend_from_slice(&client.mac[..n]);
    opts.insert(DhcpOption::ClientIdentifier(id));
    opts.insert(DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::Router,
        OptionCode::DomainNameServer,
        OptionCode::AddressLeaseTime,
        OptionCode::Renewal,
        OptionCode::Rebinding,
    ]));
    if let Some(h) = client.hostname.as_ref().filter(|h| !h.is_empty()) {
        opts.insert(DhcpOption::Hostname(h.clone()));
    }
    msg
}

/// DHCPDISCOVER, asking for `requested` (e.g. the address we still hold after a restart).
pub fn discover(xid: u32, client: &Client, requested: Option<Ipv4Addr>) -> Message {
    let mut msg = base(xid, client, MessageType::Discover, true);
    if let Some(ip) = requested {
        msg.opts_mut().insert(DhcpOption::RequestedIpAddress(ip));
    }
    msg
}

/// DHCPREQUEST in SELECTING state: accepts `offer`, naming its server so the others withdraw.
pub fn request_selecting(xid: u32, client: &Client, offer: &Offer) -> Message {
    let mut msg = base(xid, client, MessageType::Request, true);
    msg.opts_mut()
        .insert(DhcpOption::RequestedIpAddress(offer.addr));
    msg.opts_mut()
        .insert(DhcpOption::ServerIdentifier(offer.server));
    msg
}

/// DHCPREQUEST in RENEWING (unicast) or REBINDING (broadcast) state: `ciaddr` carries the
/// address, and neither the server identifier nor the requested address may be sent
/// (RFC 2131 §4.3.2). We can receive unicast now, so no BROADCAST flag.
pub fn request_extend(xid: u32, client: &Client, ciaddr: Ipv4Addr) -> Message {
    let mut msg = base(xid, client, MessageType::Request, false);
    msg.set_ciaddr(ciaddr);
    msg
}

pub fn encode(msg: &Message) -> Result<Vec<u8>, MgmtError> {
    let mut bytes = msg.to_vec().map_err(|e| MgmtError::Encode(e.to_string()))?;
    // Some relays and old servers drop BOOTP packets shorter than the classic 300 bytes.
    if bytes.len() < v4::MIN_PACKET_SIZE {
        bytes.resize(v4::MIN_PACKET_SIZE, 0);
    }
    Ok(bytes)
}

/// Parses a server's reply to transaction `xid` from the client with hardware address `mac`.
pub fn parse_reply(bytes: &[u8], xid: u32, mac: &[u8]) -> Result<Reply, ParseError> {
    let msg = Message::from_bytes(bytes).map_err(|e| ParseError::Decode(e.to_string()))?;
    if msg.opcode() != Opcode::BootReply {
        return Err(ParseError::NotReply);
    }
    if msg.xid() != xid {
        return Err(ParseError::OtherXid(msg.xid()));
    }
    if msg.chaddr().get(..mac.len()) != Some(mac) {
        return Err(ParseError::OtherClient);
    }
    let opts = msg.opts();
    let msg_type = opts.msg_type().ok_or(ParseError::NoMessageType)?;
    let server = match opts.get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
        _ => None,
    };
    match msg_type {
        MessageType::Nak => Ok(Reply::Nak),
        MessageType::Offer => {
            let server = server.ok_or(ParseError::NoServerId(msg_type))?;
            let addr = msg.yiaddr();
            if addr.is_unspecified() {
                return Err(ParseError::NoAddress);
            }
            Ok(Reply::Offer(Offer { addr, server }))
        }
        MessageType::Ack => {
            let server = server.ok_or(ParseError::NoServerId(msg_type))?;
            let addr = msg.yiaddr();
            if addr.is_unspecified() {
                return Err(ParseError::NoAddress);
            }
            let lease_secs = match opts.get(OptionCode::AddressLeaseTime) {
                Some(DhcpOption::AddressLeaseTime(t)) => *t,
                _ => return Err(ParseError::NoLeaseTime),
            };
            let t1 = match opts.get(OptionCode::Renewal) {
                Some(DhcpOption::Renewal(t)) => Some(*t),
                _ => None,
            };
            let t2 = match opts.get(OptionCode::Rebinding) {
                Some(DhcpOption::Rebinding(t)) => Some(*t),
                _ => None,
            };
            let prefix = match opts.get(OptionCode::SubnetMask) {
                Some(DhcpOption::SubnetMask(m)) => prefix_from_mask(*m),
                _ => None,
            }
            .unwrap_or_else(|| classful_prefix(addr));
            let routers = match opts.get(OptionCode::Router) {
                Some(DhcpOption::Router(r)) => r.clone(),
                _ => Vec::new(),
            };
            let dns = match opts.get(OptionCode::DomainNameServer) {
                Some(DhcpOption::DomainNameServer(d)) => d.clone(),
                _ => Vec::new(),
            };
            Ok(Reply::Ack(Lease {
                addr,
                prefix,
                routers,
                dns,
                server,
                times: lease_times(lease_secs, t1, t2),
            }))
        }
        other => Err(ParseError::UnexpectedType(other)),
    }
}

/// What the client needs besides the netlink handle.
#[derive(Debug, Clone)]
pub struct DhcpConfig {
    pub interface: String,
    pub hostname: Option<String>,
    /// Servers from host.toml; when empty the lease's DNS servers go to resolv.conf.
    pub dns_override: Vec<IpAddr>,
    /// Where resolv.conf is written.
    pub run_dir: PathBuf,
}

fn random_u32() -> u32 {
    // std seeds RandomState from the OS once per thread; hashing the clock on top of it is
    // plenty for transaction ids and jitter, which only need to differ between hosts and tries.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish() as u32
}

fn jitter_ms() -> i64 {
    i64::from(random_u32() % 2001) - 1000
}

/// The UDP socket on port 68 of one interface.
pub struct DhcpSocket {
    sock: UdpSocket,
}

impl DhcpSocket {
    pub fn open(interface: &str) -> Result<Self, MgmtError> {
        use nix::sys::socket::{
            AddressFamily, SockFlag, SockType, SockaddrIn, bind, setsockopt, socket, sockopt,
        };
        let err = |e: nix::Error| MgmtError::Socket {
            interface: interface.to_string(),
            source: std::io::Error::from(e),
        };
        let fd = socket(
            AddressFamily::Inet,
            SockType::Datagram,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(err)?;
        setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(err)?;
        setsockopt(&fd, sockopt::Broadcast, &true).map_err(err)?;
        // Port 68 on 0.0.0.0 is shared by every interface: the device binding keeps this client
        // to its own NIC, both for what it sends and for what it receives.
        setsockopt(
            &fd,
            sockopt::BindToDevice,
            &std::ffi::OsString::from(interface),
        )
        .map_err(err)?;
        bind(fd.as_raw_fd(), &SockaddrIn::new(0, 0, 0, 0, CLIENT_PORT)).map_err(err)?;
        let sock = UdpSocket::from_std(std::net::UdpSocket::from(fd)).map_err(|source| {
            MgmtError::Socket {
                interface: interface.to_string(),
                source,
            }
        })?;
        Ok(DhcpSocket { sock })
    }

    async fn send(&self, msg: &Message, to: Ipv4Addr) -> Result<(), MgmtError> {
        let bytes = encode(msg)?;
        let dest = SocketAddr::V4(SocketAddrV4::new(to, SERVER_PORT));
        self.sock
            .send_to(&bytes, dest)
            .await
            .map_err(MgmtError::Send)?;
        Ok(())
    }

    /// Waits until `deadline` for a reply to `xid` that `accept` takes; other packets on the
    /// port (other transactions, other clients' broadcasts) are skipped.
    async fn recv_until(
        &self,
        xid: u32,
        mac: &[u8],
        deadline: Instant,
        accept: impl Fn(&Reply) -> bool,
    ) -> Result<Option<Reply>, MgmtError> {
        let mut buf = vec![0u8; 1500];
        loop {
            let recv = tokio::time::timeout_at(deadline, self.sock.recv_from(&mut buf)).await;
            let (n, from) = match recv {
                Err(_) => return Ok(None),
                Ok(r) => r.map_err(MgmtError::Recv)?,
            };
            match parse_reply(&buf[..n], xid, mac) {
                Ok(reply) if accept(&reply) => return Ok(Some(reply)),
                Ok(reply) => tracing::debug!(%from, ?reply, "ignoring DHCP reply"),
                Err(e) => tracing::trace!(%from, error = %e, "ignoring packet on port 68"),
            }
        }
    }
}

/// Runs the client for as long as the daemon runs: acquires a lease, applies it, renews it, and
/// starts over when it is refused or lost. Only returns on an error that retrying cannot fix.
pub async fn run(
    handle: &Handle,
    cfg: &DhcpConfig,
    status: &watch::Sender<MgmtStatus>,
) -> Result<(), MgmtError> {
    let handle = handle.clone();
    let iface = cfg.interface.as_str();
    let link = wait_for_link(&handle, iface).await?;
    link::set_up(&handle, link.index).await?;
    let client = Client {
        mac: link.mac.clone(),
        hostname: cfg.hostname.clone(),
    };
    let sock = DhcpSocket::open(iface)?;
    // After a netd restart the address from the previous run is still on the link: ask for it
    // back, so the appliance keeps its address.
    let mut requested = link::ipv4_addresses(&handle, link.index)
        .await?
        .first()
        .map(|a| a.0);
    loop {
        let (mut lease, mut acquired) = acquire(&sock, &client, requested).await?;
        apply(&handle, cfg, &link, None, &lease, status).await?;
        loop {
            tokio::time::sleep_until(acquired + lease.times.t1).await;
            tracing::info!(iface, addr = %lease.addr, server = %lease.server, "renewing DHCP lease");
            let mut got = extend(
                &sock,
                &client,
                &lease,
                lease.server,
                acquired + lease.times.t2,
            )
            .await?;
            if got.is_none() {
                tracing::warn!(iface, server = %lease.server, "no answer to renewal; rebinding");
                got = extend(
                    &sock,
                    &client,
                    &lease,
                    Ipv4Addr::BROADCAST,
                    acquired + lease.times.expiry,
                )
                .await?;
            }
            match got {
                Some((Reply::Ack(new), at)) => {
                    let old = lease;
                    lease = new;
                    acquired = at;
                    apply(&handle, cfg, &link, Some(&old), &lease, status).await?;
                }
                Some((_, _)) => {
                    tracing::warn!(iface, addr = %lease.addr, "server refused the lease (NAK)");
                    drop_lease(&handle, &link, &lease, status).await?;
                    break;
                }
                None => {
                    tracing::warn!(iface, addr = %lease.addr, "DHCP lease expired");
                    drop_lease(&handle, &link, &lease, status).await?;
                    break;
                }
            }
        }
        requested = None;
    }
}

async fn wait_for_link(handle: &Handle, iface: &str) -> Result<LinkInfo, MgmtError> {
    let mut warned = false;
    loop {
        match link::link_by_name(handle, iface).await {
            Ok(l) => return Ok(l),
            // A NIC may show up late (slow driver, USB); keep looking instead of crash-looping.
            Err(e @ LinkError::NoSuchLink { .. }) => {
                if !warned {
                    tracing::warn!(iface, error = %e, "waiting for the management interface");
                    warned = true;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// INIT → SELECTING → REQUESTING until a server ACKs. Returns the lease and the time its
/// REQUEST was sent, from which its timers run.
async fn acquire(
    sock: &DhcpSocket,
    client: &Client,
    mut requested: Option<Ipv4Addr>,
) -> Result<(Lease, Instant), MgmtError> {
    loop {
        let xid = random_u32();
        let mut attempt = 0;
        let offer = loop {
            tracing::debug!(xid, attempt, "sending DHCPDISCOVER");
            sock.send(&discover(xid, client, requested), Ipv4Addr::BROADCAST)
                .await?;
            let deadline = Instant::now() + retransmit_delay(attempt, jitter_ms());
            if let Some(Reply::Offer(o)) = sock
                .recv_until(xid, &client.mac, deadline, |r| matches!(r, Reply::Offer(_)))
                .await?
            {
                break o;
            }
            attempt += 1;
        };
        tracing::info!(addr = %offer.addr, server = %offer.server, "DHCP offer");
        // A few REQUESTs, then start over: the offer may have been given to someone else.
        for attempt in 0..4 {
            let sent = Instant::now();
            sock.send(&request_selecting(xid, client, &offer), Ipv4Addr::BROADCAST)
                .await?;
            let deadline = sent + retransmit_delay(attempt, jitter_ms());
            let reply = sock
                .recv_until(xid, &client.mac, deadline, |r| {
                    matches!(r, Reply::Ack(_) | Reply::Nak)
                })
                .await?;
            match reply {
                Some(Reply::Ack(lease)) => return Ok((lease, sent)),
                Some(_) => {
                    tracing::warn!(addr = %offer.addr, "server refused our request (NAK)");
                    break;
                }
                None => {}
            }
        }
        requested = None;
    }
}

/// RENEWING (to the server, unicast) or REBINDING (broadcast) until `deadline`. Returns the ACK
/// or NAK and when its REQUEST was sent, or None when nobody answered in time.
async fn extend(
    sock: &DhcpSocket,
    client: &Client,
    lease: &Lease,
    to: Ipv4Addr,
    deadline: Instant,
) -> Result<Option<(Reply, Instant)>, MgmtError> {
    let xid = random_u32();
    loop {
        let sent = Instant::now();
        if sent >= deadline {
            return Ok(None);
        }
        if let Err(e) = sock
            .send(&request_extend(xid, client, lease.addr), to)
            .await
        {
            // E.g. no route to the server any more: keep trying until the deadline.
            tracing::warn!(error = %e, server = %to, "cannot send DHCPREQUEST");
        }
        let wait = sent + renew_retry(deadline - sent);
        let reply = sock
            .recv_until(xid, &client.mac, wait, |r| {
                matches!(r, Reply::Ack(_) | Reply::Nak)
            })
            .await?;
        if let Some(r) = reply {
            return Ok(Some((r, sent)));
        }
    }
}

async fn apply(
    handle: &Handle,
    cfg: &DhcpConfig,
    link: &LinkInfo,
    old: Option<&Lease>,
    lease: &Lease,
    status: &watch::Sender<MgmtStatus>,
) -> Result<(), MgmtError> {
    let iface = cfg.interface.as_str();
    let lifetime = Lifetime {
        valid: lease.times.lease_secs,
        preferred: lease.times.lease_secs,
    };
    link::ensure_address(handle, link.index, lease.addr, lease.prefix, Some(lifetime)).await?;
    if let Some(old) = old.filter(|o| (o.addr, o.prefix) != (lease.addr, lease.prefix)) {
        link::remove_address(handle, link.index, old.addr, old.prefix).await?;
    }
    let gateway = lease.routers.first().copied();
    if let Some(gw) = gateway {
        link::ensure_default_route(handle, link.index, gw, RouteProtocol::Dhcp).await?;
    }
    if cfg.dns_override.is_empty() {
        let servers: Vec<IpAddr> = lease.dns.iter().copied().map(IpAddr::V4).collect();
        resolv::write(&cfg.run_dir, &servers)?;
    }
    tracing::info!(
        iface,
        addr = %lease.addr,
        prefix = lease.prefix,
        gateway = ?gateway,
        dns = ?lease.dns,
        lease_secs = lease.times.lease_secs,
        "DHCP lease bound"
    );
    status.send_modify(|s| {
        s.address = Some(model::config::Ipv4Cidr {
            addr: lease.addr,
            prefix: lease.prefix,
        });
        s.gateway = gateway;
        s.source = Source::Dhcp;
        s.leases_bound += 1;
    });
    Ok(())
}

async fn drop_lease(
    handle: &Handle,
    link: &LinkInfo,
    lease: &Lease,
    status: &watch::Sender<MgmtStatus>,
) -> Result<(), MgmtError> {
    // The kernel flushes the device's routes with its last address, but not when the link has
    // other addresses: remove our default route explicitly.
    if let Some(gw) = lease.routers.first() {
        link::remove_default_route(handle, link.index, *gw).await?;
    }
    link::remove_address(handle, link.index, lease.addr, lease.prefix).await?;
    status.send_modify(|s| {
        s.address = None;
        s.gateway = None;
        s.source = Source::None;
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x42];

    fn client() -> Client {
        Client {
            mac: MAC.to_vec(),
            hostname: Some("cairn1".into()),
        }
    }

    fn decode(msg: &Message) -> Message {
        Message::from_bytes(&encode(msg).unwrap()).unwrap()
    }

    /// A server's reply to `xid` with the options given.
    fn reply(xid: u32, yiaddr: Ipv4Addr, opts: Vec<DhcpOption>) -> Vec<u8> {
        let mut m = Message::new_with_id(
            xid,
            Ipv4Addr::UNSPECIFIED,
            yiaddr,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &MAC,
        );
        m.set_opcode(Opcode::BootReply);
        for o in opts {
            m.opts_mut().insert(o);
        }
        m.to_vec().unwrap()
    }

    #[test]
    fn discover_is_broadcast_with_client_id_and_requests() {
        let m = decode(&discover(7, &client(), Some(Ipv4Addr::new(10, 0, 0, 5))));
        assert_eq!(m.opcode(), Opcode::BootRequest);
        assert_eq!(m.xid(), 7);
        assert!(m.flags().broadcast());
        assert_eq!(&m.chaddr()[..6], &MAC);
        assert_eq!(m.opts().msg_type(), Some(MessageType::Discover));
        assert_eq!(
            m.opts().get(OptionCode::RequestedIpAddress),
            Some(&DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 0, 0, 5)))
        );
        let mut id = vec![1];
        id.extend_from_slice(&MAC);
        assert_eq!(
            m.opts().get(OptionCode::ClientIdentifier),
            Some(&DhcpOption::ClientIdentifier(id))
        );
        assert_eq!(
            m.opts().get(OptionCode::Hostname),
            Some(&DhcpOption::Hostname("cairn1".into()))
        );
        match m.opts().get(OptionCode::ParameterRequestList) {
            Some(DhcpOption::ParameterRequestList(l)) => {
                assert!(
                    l.contains(&OptionCode::Router) && l.contains(&OptionCode::DomainNameServer)
                )
            }
            other => panic!("no parameter request list: {other:?}"),
        }
        assert!(encode(&discover(7, &client(), None)).unwrap().len() >= v4::MIN_PACKET_SIZE);
    }

    #[test]
    fn selecting_request_names_server_and_address() {
        let offer = Offer {
            addr: Ipv4Addr::new(10, 0, 0, 9),
            server: Ipv4Addr::new(10, 0, 0, 1),
        };
        let m = decode(&request_selecting(9, &client(), &offer));
        assert_eq!(m.opts().msg_type(), Some(MessageType::Request));
        assert!(m.flags().broadcast());
        assert!(m.ciaddr().is_unspecified());
        assert_eq!(
            m.opts().get(OptionCode::ServerIdentifier),
            Some(&DhcpOption::ServerIdentifier(offer.server))
        );
        assert_eq!(
            m.opts().get(OptionCode::RequestedIpAddress),
            Some(&DhcpOption::RequestedIpAddress(offer.addr))
        );
    }

    #[test]
    fn renewing_request_uses_ciaddr_only() {
        let m = decode(&request_extend(3, &client(), Ipv4Addr::new(10, 0, 0, 9)));
        assert_eq!(m.opts().msg_type(), Some(MessageType::Request));
        assert_eq!(m.ciaddr(), Ipv4Addr::new(10, 0, 0, 9));
        assert!(!m.flags().broadcast());
        assert!(m.opts().get(OptionCode::ServerIdentifier).is_none());
        assert!(m.opts().get(OptionCode::RequestedIpAddress).is_none());
    }

    #[test]
    fn parses_offer_and_ack() {
        let server = Ipv4Addr::new(10, 0, 0, 1);
        let addr = Ipv4Addr::new(10, 0, 0, 50);
        let offer = reply(
            5,
            addr,
            vec![
                DhcpOption::MessageType(MessageType::Offer),
                DhcpOption::ServerIdentifier(server),
            ],
        );
        assert_eq!(
            parse_reply(&offer, 5, &MAC),
            Ok(Reply::Offer(Offer { addr, server }))
        );

        let ack = reply(
            5,
            addr,
            vec![
                DhcpOption::MessageType(MessageType::Ack),
                DhcpOption::ServerIdentifier(server),
                DhcpOption::AddressLeaseTime(600),
                DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)),
                DhcpOption::Router(vec![server]),
                DhcpOption::DomainNameServer(vec![
                    Ipv4Addr::new(10, 0, 0, 53),
                    Ipv4Addr::new(10, 0, 0, 54),
                ]),
            ],
        );
        let Ok(Reply::Ack(lease)) = parse_reply(&ack, 5, &MAC) else {
            panic!("not an ACK")
        };
        assert_eq!(lease.addr, addr);
        assert_eq!(lease.prefix, 24);
        assert_eq!(lease.routers, vec![server]);
        assert_eq!(lease.dns.len(), 2);
        assert_eq!(lease.server, server);
        assert_eq!(lease.times, lease_times(600, None, None));
    }

    #[test]
    fn rejects_foreign_and_malformed_replies() {
        let server = Ipv4Addr::new(10, 0, 0, 1);
        let ok = vec![
            DhcpOption::MessageType(MessageType::Offer),
            DhcpOption::ServerIdentifier(server),
        ];
        let offer = reply(5, Ipv4Addr::new(10, 0, 0, 50), ok.clone());
        assert_eq!(parse_reply(&offer, 6, &MAC), Err(ParseError::OtherXid(5)));
        assert_eq!(
            parse_reply(&offer, 5, &[2, 0, 0, 0, 0, 0x43]),
            Err(ParseError::OtherClient)
        );
        assert!(matches!(
            parse_reply(&offer[..20], 5, &MAC),
            Err(ParseError::Decode(_))
        ));

        let no_server = reply(
            5,
            Ipv4Addr::new(10, 0, 0, 50),
            vec![DhcpOption::MessageType(MessageType::Offer)],
        );
        assert_eq!(
            parse_reply(&no_server, 5, &MAC),
            Err(ParseError::NoServerId(MessageType::Offer))
        );
        let no_addr = reply(5, Ipv4Addr::UNSPECIFIED, ok);
        assert_eq!(parse_reply(&no_addr, 5, &MAC), Err(ParseError::NoAddress));
        let ack_no_time = reply(
            5,
            Ipv4Addr::new(10, 0, 0, 50),
            vec![
                DhcpOption::MessageType(MessageType::Ack),
                DhcpOption::ServerIdentifier(server),
            ],
        );
        assert_eq!(
            parse_reply(&ack_no_time, 5, &MAC),
            Err(ParseError::NoLeaseTime)
        );
        let nak = reply(
            5,
            Ipv4Addr::UNSPECIFIED,
            vec![DhcpOption::MessageType(MessageType::Nak)],
        );
        assert_eq!(parse_reply(&nak, 5, &MAC), Ok(Reply::Nak));

        // Our own broadcast REQUEST, looped back to the port, is not a reply.
        let ours = encode(&discover(5, &client(), None)).unwrap();
        assert_eq!(parse_reply(&ours, 5, &MAC), Err(ParseError::NotReply));
    }

    #[test]
    fn ack_without_mask_gets_classful_prefix() {
        let ack = reply(
            1,
            Ipv4Addr::new(172, 16, 3, 4),
            vec![
                DhcpOption::MessageType(MessageType::Ack),
                DhcpOption::ServerIdentifier(Ipv4Addr::new(172, 16, 0, 1)),
                DhcpOption::AddressLeaseTime(60),
            ],
        );
        let Ok(Reply::Ack(lease)) = parse_reply(&ack, 1, &MAC) else {
            panic!("not an ACK")
        };
        assert_eq!(lease.prefix, 16);
        assert!(lease.routers.is_empty());
    }

    #[test]
    fn lease_timer_defaults_and_sanitizing() {
        let t = lease_times(3600, None, None);
        assert_eq!((t.t1, t.t2, t.expiry), (secs(1800), secs(3150), secs(3600)));
        let t = lease_times(3600, Some(1000), Some(2000));
        assert_eq!((t.t1, t.t2), (secs(1000), secs(2000)));
        // T2 before T1, or past the lease: the default T2 replaces it.
        let t = lease_times(3600, Some(3000), Some(2000));
        assert_eq!((t.t1, t.t2), (secs(3000), secs(3150)));
        // ... and when even the default T2 is not after T1, both fall back to the defaults.
        let t = lease_times(3600, Some(3500), Some(2000));
        assert_eq!((t.t1, t.t2), (secs(1800), secs(3150)));
        let t = lease_times(3600, Some(100), Some(4000));
        assert_eq!((t.t1, t.t2), (secs(100), secs(3150)));
        let t = lease_times(3600, Some(5000), None);
        assert_eq!((t.t1, t.t2), (secs(1800), secs(3150)));
        // An infinite lease must not overflow.
        let t = lease_times(INFINITE, None, None);
        assert!(t.t1 < t.t2 && t.t2 < t.expiry);
        // Tiny leases still order their timers.
        let t = lease_times(1, None, None);
        assert!(t.t1 <= t.t2 && t.t2 <= t.expiry);
    }

    #[test]
    fn retransmit_backoff_doubles_to_64s_with_jitter() {
        let base: Vec<u64> = (0..7).map(|a| retransmit_delay(a, 0).as_secs()).collect();
        assert_eq!(base, [4, 8, 16, 32, 64, 64, 64]);
        assert_eq!(retransmit_delay(0, 5000), Duration::from_millis(5000));
        assert_eq!(retransmit_delay(0, -5000), Duration::from_millis(3000));
    }

    #[test]
    fn renew_retry_halves_remaining_time() {
        assert_eq!(renew_retry(secs(600)), secs(300));
        assert_eq!(renew_retry(secs(3)), secs(2));
        assert_eq!(
            renew_retry(Duration::from_millis(500)),
            Duration::from_millis(500)
        );
    }

    #[test]
    fn netmask_to_prefix() {
        assert_eq!(prefix_from_mask(Ipv4Addr::new(255, 255, 255, 0)), Some(24));
        assert_eq!(
            prefix_from_mask(Ipv4Addr::new(255, 255, 255, 255)),
            Some(32)
        );
        assert_eq!(prefix_from_mask(Ipv4Addr::new(0, 0, 0, 0)), Some(0));
        assert_eq!(prefix_from_mask(Ipv4Addr::new(255, 255, 252, 0)), Some(22));
        assert_eq!(prefix_from_mask(Ipv4Addr::new(255, 0, 255, 0)), None);
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }
}
