//! netd: Cairn's network daemon. It configures the management interface (static or DHCP),
//! writes resolv.conf, reconciles networks (bridged, routed, 802.1Q) and hands out ports
//! (veth, tap), and serves all of it as `org.cairn.Network1`.

pub mod dbus;
pub mod guard;
pub mod link;
pub mod mgmt;
pub mod net;
pub mod port;
pub mod resolv;
pub mod tc;
