//! Port security against the real kernel: guests in their own namespaces on netd's ports try
//! foreign addresses and MACs; the port's nf_tables guard drops and counts them, an opted-out
//! port does not, and the rules follow the ports through reconcile and detach. Needs root and
//! busybox; skips otherwise.

mod common;

use std::process::Command;

use common::{Netns, TempDir, root_or_skip};
use model::net::{NetworkSpec, PortInfo, PortSpec};
use netd::net::Reconciler;
use netd::net::kernel::Kernel;

/// One busybox ping from `ns`; whether a reply came.
fn ping(ns: &Netns, args: &[&str]) -> bool {
    Command::new("ip")
        .args([
            "netns", "exec", &ns.name, "busybox", "ping", "-c", "1", "-W", "1",
        ])
        .args(args)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn spec(network: &str, owner: &str, ns: &Netns, addrs: &[&str], security: bool) -> PortSpec {
    PortSpec {
        network: network.into(),
        owner: owner.into(),
        kind: model::net::PortKind::Veth,
        netns: Some(ns.path().display().to_string()),
        guest_ifname: None,
        mac: None,
        vlan: None,
        tagged_vlans: Vec::new(),
        addresses: addrs.iter().map(|a| a.to_string()).collect(),
        limits: None,
        port_security: security,
    }
}

fn chains(host: &Netns) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", &host.name, "nft", "list", "chains"])
        .output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

async fn drops(r: &Reconciler, p: &PortInfo) -> u64 {
    r.port_info(&p.name)
        .await
        .expect("port info")
        .spoof_drops
        .expect("a guarded port reports its drops")
}

#[test]
fn guests_send_only_from_their_own_mac_and_addresses() {
    if !root_or_skip("guests_send_only_from_their_own_mac_and_addresses") {
        return;
    }
    let host = Netns::new("netd-gd");
    let g1 = Netns::new("netd-gd1");
    let g2 = Netns::new("netd-gd2");
    let g3 = Netns::new("netd-gd3");
    let r1 = Netns::new("netd-gdr1");
    let r2 = Netns::new("netd-gdr2");
    let dir = TempDir::new("netd-guard");
    let state = dir.0.join("state");
    host.run(async || {
        let k = Kernel::new(
            netd::link::connect().expect("rtnetlink"),
            Default::default(),
        );
        let mut r = Reconciler::new(k, Some(state.clone()), &[]);
        let lan: NetworkSpec = serde_json::from_str(
            r#"{"name":"lan","kind":"bridged","subnet":"10.80.0.0/24","address":"10.80.0.1/24"}"#,
        )
        .expect("spec");
        r.create_network(lan).await.expect("create lan");
        let rt: NetworkSpec =
            serde_json::from_str(r#"{"name":"rt","kind":"routed","subnet":"fd00:81::/64"}"#)
                .expect("spec");
        r.create_network(rt).await.expect("create rt");
        let p1 = r
            .attach_port(spec("lan", "ct:1", &g1, &["10.80.0.5/24"], true))
            .await
            .expect("attach g1");
        let p2 = r
            .attach_port(spec("lan", "ct:2", &g2, &["10.80.0.6/24"], true))
            .await
            .expect("attach g2");
        let p3 = r
            .attach_port(spec("lan", "ct:3", &g3, &["10.80.0.7/24"], false))
            .await
            .expect("attach g3");
        assert_eq!(p3.spoof_drops, None, "opted-out port has a guard");
        let pr1 = r
            .attach_port(spec("rt", "ct:r1", &r1, &["fd00:81::1/128"], true))
            .await
            .expect("attach r1");
        r.attach_port(spec("rt", "ct:r2", &r2, &["fd00:81::2/128"], true))
            .await
            .expect("attach r2");

        // Own addresses pass (guest to guest, guest to host).
        assert!(ping(&g1, &["10.80.0.6"]), "g1 → g2");
        assert!(ping(&g1, &["10.80.0.1"]), "g1 → host");
        let base = drops(&r, &p1).await;

        // An unused address and another guest's address are dropped, and counted.
        g1.ip(&["addr", "add", "10.80.0.99/32", "dev", "eth0"]);
        assert!(!ping(&g1, &["-I", "10.80.0.99", "10.80.0.1"]), "unused IP");
        g1.ip(&["addr", "add", "10.80.0.7/32", "dev", "eth0"]);
        assert!(!ping(&g1, &["-I", "10.80.0.7", "10.80.0.6"]), "g3's IP");
        let after_ip = drops(&r, &p1).await;
        assert!(after_ip > base, "no drops counted: {base} → {after_ip}");
        g1.ip(&["addr", "del", "10.80.0.7/32", "dev", "eth0"]);

        // A changed MAC: nothing gets through, not even from its own address.
        let mac = p1.mac.clone().expect("g1's MAC");
        g1.ip(&["neigh", "flush", "dev", "eth0"]);
        g1.ip(&["link", "set", "eth0", "address", "02:aa:bb:cc:dd:ee"]);
        assert!(!ping(&g1, &["10.80.0.6"]), "changed MAC");
        assert!(drops(&r, &p1).await > after_ip);
        g1.ip(&["link", "set", "eth0", "address", &mac]);
        assert!(ping(&g1, &["10.80.0.6"]), "g1 → g2 with its MAC back");

        // DHCP client traffic (0.0.0.0:68 → 67) passes.
        let before_dhcp = drops(&r, &p1).await;
        let _ = Command::new("ip")
            .args(["netns", "exec", &g1.name, "busybox", "udhcpc", "-i", "eth0"])
            .args(["-n", "-q", "-t", "1", "-T", "1", "-s", "/bin/true"])
            .output();
        assert_eq!(drops(&r, &p1).await, before_dhcp, "DHCP discover dropped");

        // ARP with a foreign sender IP is dropped too.
        let before_arp = drops(&r, &p1).await;
        let _ = Command::new("ip")
            .args([
                "netns", "exec", &g1.name, "busybox", "arping", "-c", "2", "-w", "1",
            ])
            .args(["-I", "eth0", "-s", "10.80.0.99", "10.80.0.1"])
            .output();
        assert!(
            drops(&r, &p1).await >= before_arp + 2,
            "ARP spoof not dropped"
        );

        // The opted-out port may use any address.
        g3.ip(&["addr", "add", "10.80.0.98/24", "dev", "eth0"]);
        assert!(ping(&g3, &["-I", "10.80.0.98", "10.80.0.1"]), "opt-out");

        // Routed IPv6 from a foreign source is dropped at the port.
        let base6 = drops(&r, &pr1).await;
        r1.ip(&["addr", "add", "fd00:81::99/128", "dev", "eth0", "nodad"]);
        let _ = Command::new("ip")
            .args([
                "netns", "exec", &r1.name, "busybox", "ping", "-6", "-c", "2",
            ])
            .args(["-W", "1", "-I", "fd00:81::99", "fd00:81::2"])
            .output();
        assert!(drops(&r, &pr1).await >= base6 + 2, "v6 spoof not dropped");

        // A second reconcile changes nothing; a detach takes the port's rules with it.
        let again = r.reconcile().await;
        assert!(again.failed.is_empty(), "{:?}", again.failed);
        assert_eq!(again.changes, 0, "reconcile changed something");
        assert!(chains(&host).contains(&format!("chain {}-", p2.name)));
        r.detach_port(&p2.name).await.expect("detach");
        assert!(!chains(&host).contains(&format!("chain {}-", p2.name)));
    });
}
