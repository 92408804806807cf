//! Network objects as the API carries them: over D-Bus as JSON, over XML-RPC as structs, in
//! cairnctl as flags. Specs are what a client asks for (validated here, before any daemon acts);
//! infos are what netd read back from the kernel.

mod check;
mod info;
mod limits;
mod spec;

pub use check::InvalidSpec;
pub use info::{LinkEntry, NetworkInfo, PortInfo, RouteEntry, VlanEntry};
pub use limits::{Limits, LimitsChange, Rate};
pub use spec::{BOND_MAX, BOND_MIN, BondMode, NetworkKind, NetworkSpec, PortKind, PortSpec};

/// The access VLAN ids a bridge accepts: 0 means "untagged" and 4095 is reserved by 802.1Q.
pub const VLAN_RANGE: std::ops::RangeInclusive<u16> = 1..=4094;
/// Longest network name: the network's bridge (or 802.1Q link) is named after it, and Linux
/// interface names stop at 15 bytes.
pub const NETWORK_NAME_MAX: usize = 15;
/// Longest port owner ("ct:web1", "vm:db"): it travels in the link's alias (at most 255 bytes)
/// next to the network name.
pub const OWNER_MAX: usize = 128;

pub use check::{format_mac, parse_mac};

#[cfg(test)]
mod tests;
