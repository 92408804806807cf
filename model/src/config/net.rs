//! CIDR parsing and arithmetic for network subnets, host addresses and the management address.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::types::{Cidr, Ipv4Cidr};

/// What is wrong with a CIDR string. Each message completes a sentence that starts with the
/// field and the value, e.g. `subnet "10.0.0.0" in network "lan" ` + message. The parts quoted
/// are escaped (`{:?}`): they are the user's text, and a line break in it would split a
/// `file:line:col: message` diagnostic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("has no prefix length; expected address/prefix such as \"10.0.0.0/24\"")]
    NoPrefix,
    #[error("has an invalid address {0:?}; expected an IPv4 or IPv6 address before the '/'")]
    BadAddress(String),
    #[error("is not IPv4; expected an IPv4 address/prefix such as \"192.0.2.10/24\"")]
    NotIpv4,
    #[error("has an invalid prefix length {0:?}; expected 0 to {1}")]
    BadPrefix(String, u8),
}

/// Parses `addr/prefix` for either family. Host bits may be set; callers that need a network
/// (subnets) check that with [`Cidr::network`].
pub fn parse_cidr(s: &str) -> Result<Cidr, CidrError> {
    let (addr, prefix) = s.split_once('/').ok_or(CidrError::NoPrefix)?;
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| CidrError::BadAddress(addr.to_string()))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    // `u8::from_str` accepts a leading '+', which no one means in a prefix length.
    let prefix = match prefix.parse::<u8>() {
        Ok(p) if p <= max && prefix.bytes().all(|b| b.is_ascii_digit()) => p,
        _ => return Err(CidrError::BadPrefix(prefix.to_string(), max)),
    };
    Ok(Cidr { addr, prefix })
}

/// Parses an IPv4 `addr/prefix`, for the management interface (which DHCP-less installs
/// configure with IPv4 only).
pub fn parse_ipv4_cidr(s: &str) -> Result<Ipv4Cidr, CidrError> {
    let cidr = parse_cidr(s)?;
    match cidr.addr {
        IpAddr::V4(addr) => Ok(Ipv4Cidr {
            addr,
            prefix: cidr.prefix,
        }),
        IpAddr::V6(_) => Err(CidrError::NotIpv4),
    }
}

/// The address as a 128-bit number with its width, so v4 and v6 share one implementation.
fn bits(addr: IpAddr) -> (u128, u8) {
    match addr {
        IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
        IpAddr::V6(a) => (u128::from(a), 128),
    }
}

fn from_bits(value: u128, v4: bool) -> IpAddr {
    if v4 {
        // The value came from a 32-bit address masked within 32 bits, so it fits.
        IpAddr::V4(Ipv4Addr::from(u32::try_from(value).unwrap_or(u32::MAX)))
    } else {
        IpAddr::V6(Ipv6Addr::from(value))
    }
}

/// The mask of `prefix` leading ones within a `width`-bit address.
fn mask(prefix: u8, width: u8) -> u128 {
    let all = if width == 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    };
    let host = u32::from(width - prefix.min(width));
    // A shift by the full width would overflow, and means "no network bits".
    let host_mask = if host >= 128 {
        u128::MAX
    } else {
        (1u128 << host) - 1
    };
    all & !host_mask
}

impl Cidr {
    /// The same prefix with the host bits cleared: `10.0.0.7/24` → `10.0.0.0/24`.
    pub fn network(&self) -> Cidr {
        let (value, width) = bits(self.addr);
        Cidr {
            addr: from_bits(value & mask(self.prefix, width), width == 32),
            prefix: self.prefix,
        }
    }

    /// True when the host bits are all zero, as a subnet's must be.
    pub fn is_network(&self) -> bool {
        self.network() == *self
    }

    /// The last address in the subnet (the IPv4 broadcast address).
    pub fn last(&self) -> IpAddr {
        let (value, width) = bits(self.addr);
        let m = mask(self.prefix, width);
        let all = mask(width, width);
        from_bits((value & m) | (all & !m), width == 32)
    }

    /// True when `ip` is inside this subnet. Addresses of the other family never are.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (net, width) = bits(self.addr);
        let (other, other_width) = bits(ip);
        let m = mask(self.prefix, width);
        width == other_width && net & m == other & m
    }

    /// Sorts blocks by family, then address, then prefix: a block comes before every block
    /// inside it, and the blocks inside it follow it without a gap.
    pub(super) fn order_key(&self) -> (u8, u128, u8) {
        let (value, width) = bits(self.addr);
        (width, value & mask(self.prefix, width), self.prefix)
    }

    /// True when the two subnets share any address; CIDR blocks either nest or are disjoint,
    /// so it is enough to test the shorter prefix against the other's address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        if self.prefix <= other.prefix {
            self.contains(other.addr)
        } else {
            other.contains(self.addr)
        }
    }
}

/// Why `c` cannot be a host's own address, if it cannot: the subnet's network address or its
/// IPv4 broadcast address (point-to-point /31, /32 and their v6 peers have neither).
pub fn host_address_problem(c: Cidr) -> Option<String> {
    let width = if c.addr.is_ipv4() { 32 } else { 128 };
    if c.prefix + 1 >= width {
        return None;
    }
    let net = c.network();
    if c.addr == net.addr {
        Some(format!(
            "is the network address of {net}; expected a host address inside it"
        ))
    } else if c.addr.is_ipv4() && c.addr == net.last() {
        Some(format!(
            "is the broadcast address of {net}; expected a host address inside it"
        ))
    } else {
        None
    }
}

impl Ipv4Cidr {
    pub fn to_cidr(self) -> Cidr {
        Cidr {
            addr: IpAddr::V4(self.addr),
            prefix: self.prefix,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        parse_cidr(s).expect("valid CIDR in test")
    }

    #[test]
    fn parses_both_families() {
        let c = cidr("10.10.0.1/24");
        assert_eq!(c.addr, IpAddr::V4(Ipv4Addr::new(10, 10, 0, 1)));
        assert_eq!(c.prefix, 24);
        assert_eq!(cidr("fd00::1/64").prefix, 64);
        assert_eq!(cidr("0.0.0.0/0").to_string(), "0.0.0.0/0");
        assert_eq!(cidr("fd00::/128").to_string(), "fd00::/128");
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(parse_cidr("10.0.0.0"), Err(CidrError::NoPrefix));
        assert_eq!(
            parse_cidr("10.0.0.256/24"),
            Err(CidrError::BadAddress("10.0.0.256".into()))
        );
        assert_eq!(
            parse_cidr("10.0.0.0/33"),
            Err(CidrError::BadPrefix("33".into(), 32))
        );
        assert_eq!(
            parse_cidr("fd00::/129"),
            Err(CidrError::BadPrefix("129".into(), 128))
        );
        assert_eq!(
            parse_cidr("10.0.0.0/+8"),
            Err(CidrError::BadPrefix("+8".into(), 32))
        );
        assert_eq!(
            parse_cidr("10.0.0.0/"),
            Err(CidrError::BadPrefix("".into(), 32))
        );
        assert_eq!(parse_ipv4_cidr("fd00::1/64"), Err(CidrError::NotIpv4));
    }

    #[test]
    fn network_and_host_bits() {
        assert_eq!(cidr("10.10.0.7/24").network(), cidr("10.10.0.0/24"));
        assert!(cidr("10.10.0.0/24").is_network());
        assert!(!cidr("10.10.0.1/24").is_network());
        assert!(cidr("0.0.0.0/0").is_network());
        assert!(cidr("10.0.0.1/32").is_network());
        assert!(cidr("fd00:1::/32").is_network());
        assert!(!cidr("fd00:1::1/64").is_network());
        assert_eq!(cidr("::/0").network(), cidr("::/0"));
        assert_eq!(
            cidr("10.10.0.0/24").last(),
            IpAddr::V4(Ipv4Addr::new(10, 10, 0, 255))
        );
    }

    #[test]
    fn containment_and_overlap() {
        let net = cidr("10.10.0.0/24");
        assert!(net.contains("10.10.0.200".parse().expect("ip")));
        assert!(!net.contains("10.10.1.1".parse().expect("ip")));
        assert!(!net.contains("fd00::1".parse().expect("ip")));
        assert!(net.overlaps(&cidr("10.10.0.128/25")));
        assert!(cidr("10.0.0.0/8").overlaps(&net));
        assert!(!net.overlaps(&cidr("10.10.1.0/24")));
        assert!(!net.overlaps(&cidr("fd00::/8")));
        assert!(cidr("fd00::/8").overlaps(&cidr("fd12:3456::/32")));
        assert!(cidr("0.0.0.0/0").overlaps(&net));
    }

    #[test]
    fn host_addresses() {
        assert_eq!(host_address_problem(cidr("10.0.0.1/24")), None);
        assert_eq!(host_address_problem(cidr("10.0.0.1/31")), None);
        assert_eq!(host_address_problem(cidr("10.0.0.0/32")), None);
        assert_eq!(host_address_problem(cidr("fd00::ffff/120")), None);
        let net = host_address_problem(cidr("10.0.0.0/24")).expect("network address");
        assert!(net.starts_with("is the network address of 10.0.0.0/24"));
        let bcast = host_address_problem(cidr("10.0.0.255/24")).expect("broadcast address");
        assert!(bcast.starts_with("is the broadcast address of 10.0.0.0/24"));
        assert!(host_address_problem(cidr("fd00::/64")).is_some());
    }

    #[test]
    fn ipv4_only_for_management() {
        let c = parse_ipv4_cidr("192.0.2.10/24").expect("valid");
        assert_eq!(c.addr, Ipv4Addr::new(192, 0, 2, 10));
        assert_eq!(c.to_cidr().network().to_string(), "192.0.2.0/24");
    }
}
