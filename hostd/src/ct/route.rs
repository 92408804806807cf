//! The container's default route, added by its first process inside its own network namespace
//! before init runs (netd sets eth0's addresses; routes beyond the subnet are the guest's).
//! One rtnetlink request, encoded by hand: this runs in the freshly cloned child, where a
//! tokio-based rtnetlink handle has no place.

use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::errno::Errno;

const NLMSG_HDR: usize = 16;
const RTMSG: usize = 12;

/// Builds RTM_NEWROUTE "default via `gw`" (main table, boot protocol, universe scope).
pub fn default_route_message(gw: IpAddr, seq: u32) -> Vec<u8> {
    let (family, addr): (u8, Vec<u8>) = match gw {
        IpAddr::V4(a) => (libc::AF_INET as u8, a.octets().to_vec()),
        IpAddr::V6(a) => (libc::AF_INET6 as u8, a.octets().to_vec()),
    };
    let attr_len = 4 + addr.len();
    let total = NLMSG_HDR + RTMSG + attr_len;
    let mut m = Vec::with_capacity(total);
    m.extend_from_slice(&(total as u32).to_ne_bytes());
    m.extend_from_slice(&libc::RTM_NEWROUTE.to_ne_bytes());
    let flags =
        (libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags(u32)
    m.extend_from_slice(&[
        family,
        0,
        0,
        0,
        libc::RT_TABLE_MAIN,
        libc::RTPROT_BOOT,
        libc::RT_SCOPE_UNIVERSE,
        libc::RTN_UNICAST,
    ]);
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&(attr_len as u16).to_ne_bytes());
    m.extend_from_slice(&libc::RTA_GATEWAY.to_ne_bytes());
    m.extend_from_slice(&addr);
    m
}

/// Adds the default route via `gw` in the current network namespace.
pub fn add_default(gw: &str) -> Result<(), Errno> {
    let gw: IpAddr = gw.parse().map_err(|_| Errno::EINVAL)?;
    // SAFETY: plain socket(2); the fd is owned right away.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if raw < 0 {
        return Err(Errno::last());
    }
    // SAFETY: raw is a fresh fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let msg = default_route_message(gw, 1);
    // SAFETY: msg is a valid buffer; the kernel is the default destination of a netlink socket.
    let n = unsafe { libc::send(fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
    if n < 0 {
        return Err(Errno::last());
    }
    let mut buf = [0u8; 1024];
    // SAFETY: buf is writable for its length.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(Errno::last());
    }
    // The ack is NLMSG_ERROR with error 0; anything else carries a negative errno.
    if n as usize >= NLMSG_HDR + 4 {
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        if kind == libc::NLMSG_ERROR as u16 {
            let err = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
            if err != 0 {
                return Err(Errno::from_raw(-err));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_message_has_the_kernel_layout() {
        let m = super::default_route_message("10.0.0.1".parse().unwrap(), 7);
        assert_eq!(m.len(), 16 + 12 + 8);
        assert_eq!(u32::from_ne_bytes([m[0], m[1], m[2], m[3]]), 36);
        assert_eq!(m[16], libc::AF_INET as u8);
        assert_eq!(&m[32..36], &[10, 0, 0, 1]);
    }
}
