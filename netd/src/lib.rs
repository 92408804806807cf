//! netd: Cairn's network daemon. This slice configures the management interface (static or
//! DHCP), writes resolv.conf and serves `org.cairn.Network1`; bridges, VLANs, routed networks,
//! ports and shaping come with their own issues.

pub mod dbus;
pub mod link;
pub mod mgmt;
pub mod resolv;
