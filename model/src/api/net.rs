//! `net.*` and `port.*`: networks and ports, served by netd.

use super::{actions, rpc_type};
use crate::net::{Limits, LimitsChange, NetworkInfo, NetworkSpec, PortInfo, PortSpec};

rpc_type!("struct": NetworkSpec, NetworkInfo, PortSpec, PortInfo, Limits, LimitsChange);

actions! { ACTIONS;
    NetCreate = "net.create", Netd, (spec: NetworkSpec) -> bool,
        "Creates a network from {name, kind: bridged|routed|vlan, uplink?, vlan?, vlan_aware?, \
         bond?, bond_mode?, subnet?, address?, limits?}; the same fields as a [[network]] table \
         in host.toml. Returns true once the kernel has it.";
    NetDelete = "net.delete", Netd, (name: String) -> bool,
        "Deletes a network that has no ports left and host.toml does not declare.";
    NetList = "net.list", Netd, () -> Vec<NetworkInfo>,
        "Every network, as net.info describes it.";
    NetInfo = "net.info", Netd, (name: String) -> NetworkInfo,
        "One network as read back from the kernel: links, VLAN table, addresses, routes and \
         qdiscs, with its aggregate limits (absent when unlimited).";
    NetSetLimits = "net.setLimits", Netd, (target: String, limits: LimitsChange) -> bool,
        "Changes the limits of a port (by its name or its owner's) or the aggregate of a \
         network (by its name), live: {egress?: {rate_bps, burst_bytes?}, ingress?: {…}, police?}, from the \
         guest's view. Only the members given change (at least one), as with ct.set; a \
         direction with rate_bps 0 becomes unlimited. A port's limits are kept for its owner: \
         the port a container or VM gets when it starts again has them, until the guest is \
         deleted.";
    PortAttach = "port.attach", Netd, (spec: PortSpec) -> PortInfo,
        "Attaches a port: {network, owner, kind: veth|tap, netns? (a network namespace file for \
         the veth's guest end), guest_ifname?, mac?, vlan?, tagged_vlans?, addresses?, limits?, \
         port_security? (anti-spoofing, default true)}. Returns the port as port.list shows it. hostd attaches its guests' ports itself; this \
         is for automation and tests.";
    PortDetach = "port.detach", Netd, (name: String) -> bool,
        "Detaches (deletes) a port, named by its link or by its owner (`ct:web1`, `vm:deb`; \
         an owner of several ports is refused with their names).";
    PortList = "port.list", Netd, () -> Vec<PortInfo>,
        "Every port: {name, network, owner, kind, guest_ifname, mac, vlan, tagged_vlans, \
         addresses, limits, spoof_drops (frames anti-spoofing dropped), problem (why it could not be read back; absent when it was)}.";
}
