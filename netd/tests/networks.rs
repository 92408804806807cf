//! Networks and ports against the real kernel: the netd binary on a private bus in its own
//! network namespace (the "host"), guests as further namespaces, traffic with busybox ping.
//! Library-level tests drive `Reconciler` directly to count change requests. Needs root;
//! prints `SKIP` with the reason otherwise (and for the VLAN parts this kernel lacks).

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Netns, Proc, TempDir, ip, start_bus};
use model::dbus::{CairnError, Network1Proxy};
use model::net::{NetworkInfo, NetworkSpec, PortInfo, PortSpec};
use netd::net::Reconciler;
use netd::net::kernel::Kernel;
use testkit::skip;

fn can_run(test: &str, daemon: bool) -> bool {
    if !nix::unistd::geteuid().is_root() {
        skip(test, "needs root to create network namespaces");
        return false;
    }
    let has = |cmd: &str| {
        Command::new(cmd)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    };
    if !has("busybox") {
        skip(test, "busybox (ping) is not installed");
        return false;
    }
    if daemon && !has("dbus-daemon") {
        skip(test, "dbus-daemon is not installed (ci/deps installs it)");
        return false;
    }
    true
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// `ip -o link` names in a namespace.
fn link_names(ns: &Netns) -> BTreeSet<String> {
    ns.ip(&["-o", "link"])
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect()
}

/// One ping from `ns`; returns the reply's TTL, or None when there was no reply.
fn ping(ns: &Netns, args: &[&str]) -> Option<u32> {
    let out = Command::new("ip")
        .args([
            "netns", "exec", &ns.name, "busybox", "ping", "-c", "1", "-W", "2",
        ])
        .args(args)
        .output()
        .expect("run busybox ping");
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("ttl=")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|t| t.parse().ok())
}

/// One iputils `ping -6` from `ns` (DAD of the guest's address may still be running, so a
/// few tries); returns the reply's hop limit, or None when there was no reply.
fn ping6(ns: &Netns, args: &[&str]) -> Option<u32> {
    for _ in 0..3 {
        let out = Command::new("ip")
            .args(["netns", "exec", &ns.name, "ping", "-6", "-c1", "-W2"])
            .args(args)
            .output()
            .expect("run ping -6");
        if out.status.success() {
            let text = String::from_utf8_lossy(&out.stdout);
            return text
                .split("ttl=")
                .nth(1)
                .and_then(|t| t.split_whitespace().next())
                .and_then(|t| t.parse().ok());
        }
        std::thread::sleep(std::time::Duration::from_millis(700));
    }
    None
}

struct Daemon {
    /// Appended to host.toml (`[[network]]` tables).
    extra: String,
    proc: Option<Proc>,
    dir: TempDir,
    bus: String,
    _bus_proc: Proc,
}

impl Daemon {
    fn start(host: &Netns, tag: &str) -> Daemon {
        Daemon::start_with(host, tag, "")
    }

    fn start_with(host: &Netns, tag: &str, extra: &str) -> Daemon {
        let dir = TempDir::new(&format!("netd-{tag}"));
        let (bus_proc, bus) = start_bus(&dir);
        let mut d = Daemon {
            extra: extra.to_string(),
            proc: None,
            dir,
            bus,
            _bus_proc: bus_proc,
        };
        d.spawn(host);
        d
    }

    fn spawn(&mut self, host: &Netns) {
        let cfg = self.dir.0.join("host.toml");
        std::fs::write(
            &cfg,
            format!(
                "[host]\nhostname = \"node1\"\n\n[host.management]\ninterface = \"lo\"\n\
                 address = \"127.0.0.2/8\"\n{}",
                testkit::DEV_API_TOML
            ) + &self.extra,
        )
        .expect("write host.toml");
        let state = self.dir.0.join("state");
        std::fs::create_dir_all(&state).expect("state dir");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.0.join("netd.log"))
            .expect("netd log");
        self.proc = Some(Proc(
            Command::new("ip")
                .args(["netns", "exec", &host.name, env!("CARGO_BIN_EXE_netd")])
                .arg("--config")
                .arg(&cfg)
                .arg("--state")
                .arg(&state)
                .env("DBUS_SYSTEM_BUS_ADDRESS", &self.bus)
                .env("CAIRN_RUN_DIR", self.dir.0.join("run"))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start netd"),
        ));
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("netd.log")).unwrap_or_default()
    }

    fn stop(&mut self) {
        if let Some(p) = &self.proc {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(p.0.id()).expect("pid"));
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
        if let Some(mut p) = self.proc.take() {
            let _ = p.0.wait();
        }
    }

    async fn client(&self) -> Network1Proxy<'static> {
        let conn = zbus::connection::Builder::address(self.bus.as_str())
            .build()
            .await
            .expect("connect to the test bus");
        let proxy = Network1Proxy::new(&conn).await.expect("proxy");
        let start = Instant::now();
        while proxy.status().await.is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "netd not ready:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        proxy
    }
}

fn veth(network: &str, owner: &str, ns: &Netns, addrs: &[&str]) -> String {
    serde_json::to_string(&PortSpec {
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
        port_security: true,
    })
    .expect("port spec JSON")
}

fn port(json: &str) -> PortInfo {
    serde_json::from_str(json).expect("PortInfo JSON")
}

#[test]
fn bridged_guests_reach_each_other_and_ports_survive_a_restart() {
    let t = "bridged_guests_reach_each_other_and_ports_survive_a_restart";
    if !can_run(t, true) {
        return;
    }
    let host = Netns::new("netd-bh");
    let g1 = Netns::new("netd-bg1");
    let g2 = Netns::new("netd-bg2");
    let mut d = Daemon::start(&host, "net-bridged");
    let rt = runtime();
    let (p1, p2) = rt.block_on(async {
        let c = d.client().await;
        c.create_network(
            r#"{"name":"br-t","kind":"bridged","subnet":"10.20.0.0/24","address":"10.20.0.1/24"}"#,
        )
        .await
        .expect("CreateNetwork");
        let p1 = port(
            &c.attach_port(&veth("br-t", "ct:a", &g1, &["10.20.0.5/24"]))
                .await
                .expect("AttachPort a"),
        );
        let p2 = port(
            &c.attach_port(&veth("br-t", "ct:b", &g2, &["10.20.0.6/24"]))
                .await
                .expect("AttachPort b"),
        );
        assert_eq!(p1.addresses, ["10.20.0.5/24"]);
        assert_eq!(p1.guest_ifname.as_deref(), Some("eth0"));
        assert!(p1.mac.as_deref().is_some_and(|m| m.len() == 17), "{p1:?}");
        // The same owner twice on one network.
        match c.attach_port(&veth("br-t", "ct:a", &g1, &[])).await {
            Err(CairnError::Conflict(m)) => assert!(m.contains("owner ct:a"), "{m}"),
            other => panic!("duplicate port: {other:?}"),
        }
        let info: NetworkInfo =
            serde_json::from_str(&c.network_info("br-t").await.expect("NetworkInfo"))
                .expect("json");
        assert_eq!(info.addresses, ["10.20.0.1/24"]);
        let members: BTreeSet<&str> = info
            .links
            .iter()
            .filter(|l| l.master.as_deref() == Some("br-t"))
            .map(|l| l.name.as_str())
            .collect();
        assert_eq!(
            members,
            BTreeSet::from([p1.name.as_str(), p2.name.as_str()])
        );
        assert!(
            info.links
                .iter()
                .any(|l| l.name == "br-t" && l.kind == "bridge" && l.up)
        );
        (p1, p2)
    });
    // Bridged: one L2 segment, no hop in between.
    assert_eq!(
        ping(&g1, &["10.20.0.6"]),
        Some(64),
        "g1 → g2 over the bridge"
    );
    assert_eq!(
        ping(&g2, &["10.20.0.1"]),
        Some(64),
        "g2 → the host's bridge address"
    );

    // Restart: the ports are re-adopted, not recreated (same ifindex), and nothing changes.
    d.stop();
    d.spawn(&host);
    rt.block_on(async {
        let c = d.client().await;
        let ports: Vec<PortInfo> =
            serde_json::from_str(&c.list_ports().await.expect("ListPorts")).expect("json");
        let idx: BTreeSet<(String, u32)> =
            ports.iter().map(|p| (p.name.clone(), p.ifindex)).collect();
        assert_eq!(
            idx,
            BTreeSet::from([(p1.name.clone(), p1.ifindex), (p2.name.clone(), p2.ifindex)])
        );
        let (_, counts) = c.status().await.expect("Status");
        assert_eq!(counts.get("networks"), Some(&1));
        assert_eq!(counts.get("ports"), Some(&2));
        assert_eq!(counts.get("networks_failed"), None);
        let all: Vec<NetworkInfo> =
            serde_json::from_str(&c.list_networks().await.expect("ListNetworks")).expect("json");
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].name, "br-t");
    });
    let log = d.log();
    let last = log
        .lines()
        .rfind(|l| l.contains("networks reconciled"))
        .unwrap_or_default();
    assert!(
        last.contains("changes=0"),
        "restart changed the kernel: {last}\n{log}"
    );
    assert_eq!(ping(&g1, &["10.20.0.6"]), Some(64), "after the restart");

    rt.block_on(async {
        let c = d.client().await;
        match c.delete_network("br-t").await {
            Err(CairnError::Conflict(m)) => assert!(m.contains("still has ports"), "{m}"),
            other => panic!("delete with ports: {other:?}"),
        }
        c.detach_port(&p1.name).await.expect("DetachPort");
        c.detach_port(&p2.name).await.expect("DetachPort");
        c.delete_network("br-t").await.expect("DeleteNetwork");
    });
    let left = link_names(&host);
    assert!(
        !left.contains("br-t") && !left.contains(&p1.name),
        "{left:?}"
    );
    assert_eq!(link_names(&g1), BTreeSet::from(["lo".to_string()]));
    d.stop();
}

#[test]
fn routed_guests_go_through_host_routes_and_cannot_spoof() {
    let t = "routed_guests_go_through_host_routes_and_cannot_spoof";
    if !can_run(t, true) {
        return;
    }
    let host = Netns::new("netd-rh");
    let g1 = Netns::new("netd-rg1");
    let g2 = Netns::new("netd-rg2");
    let mut d = Daemon::start(&host, "net-routed");
    let rt = runtime();
    let (p1, p2) = rt.block_on(async {
        let c = d.client().await;
        c.create_network(
            r#"{"name":"rt","kind":"routed","subnet":"10.30.0.0/24","address":"10.30.0.1/24"}"#,
        )
        .await
        .expect("CreateNetwork");
        let p1 = port(
            &c.attach_port(&veth(
                "rt",
                "ct:a",
                &g1,
                &["10.30.0.5/24", "fd00:50::2/128"],
            ))
            .await
            .expect("AttachPort"),
        );
        let p2 = port(
            &c.attach_port(&veth(
                "rt",
                "ct:b",
                &g2,
                &["10.30.0.6/24", "fd00:50::3/128"],
            ))
            .await
            .expect("AttachPort"),
        );
        match c
            .attach_port(&veth("rt", "ct:c", &g2, &["10.30.0.6/24"]))
            .await
        {
            Err(CairnError::Conflict(m)) => assert!(
                m.starts_with("addresses[0] 10.30.0.6/24 is already routed"),
                "{m}"
            ),
            other => panic!("address routed twice: {other:?}"),
        }
        let info: NetworkInfo =
            serde_json::from_str(&c.network_info("rt").await.expect("NetworkInfo")).expect("json");
        let routes: BTreeSet<(String, String)> = info
            .routes
            .iter()
            .map(|r| (r.dst.clone(), r.dev.clone()))
            .collect();
        assert!(
            routes.contains(&("10.30.0.5/32".into(), p1.name.clone())),
            "{routes:?}"
        );
        assert!(
            routes.contains(&("10.30.0.6/32".into(), p2.name.clone())),
            "{routes:?}"
        );
        (p1, p2)
    });
    for (port, key, want) in [
        (&p1.name, "proxy_arp", "1"),
        (&p1.name, "rp_filter", "1"),
        (&p2.name, "forwarding", "1"),
    ] {
        let v = Command::new("ip")
            .args(["netns", "exec", &host.name, "cat"])
            .arg(format!("/proc/sys/net/ipv4/conf/{port}/{key}"))
            .output()
            .expect("read sysctl");
        assert_eq!(
            String::from_utf8_lossy(&v.stdout).trim(),
            want,
            "{port} {key}"
        );
    }
    // The network's host address answers on every port: not forwarded, so TTL 64.
    assert_eq!(ping(&g1, &["10.30.0.1"]), Some(64), "g1 → host address");
    assert_eq!(ping(&g2, &["10.30.0.1"]), Some(64), "g2 → host address");
    // Routed: the host forwards, so the TTL drops by one on the way.
    assert_eq!(
        ping(&g1, &["10.30.0.6"]),
        Some(63),
        "g1 → g2 through the host"
    );
    // A guest that takes an address it was not given cannot use it.
    g1.ip(&["addr", "add", "10.30.0.99/24", "dev", "eth0"]);
    assert_eq!(
        ping(&g1, &["-I", "10.30.0.99", "10.30.0.6"]),
        None,
        "spoofed source got through"
    );
    assert_eq!(ping(&g1, &["-I", "10.30.0.5", "10.30.0.6"]), Some(63));
    // IPv6: /128 host routes, fe80::1 on the host sides as the guests' gateway, and proxy
    // NDP entries for each guest on the other port.
    let proxies = host.ip(&["-6", "neigh", "show", "proxy"]);
    for want in [
        format!("fd00:50::2 dev {}", p2.name),
        format!("fd00:50::3 dev {}", p1.name),
    ] {
        assert!(proxies.contains(&want), "{want} not in {proxies:?}");
    }
    assert!(
        g1.ip(&["-6", "route"])
            .contains("default via fe80::1 dev eth0"),
        "{}",
        g1.ip(&["-6", "route"])
    );
    assert_eq!(ping6(&g1, &["fd00:50::3"]), Some(63), "g1 → g2 over IPv6");
    assert_eq!(ping6(&g2, &["fd00:50::2"]), Some(63), "g2 → g1 over IPv6");
    // A spoofed IPv6 source gets no reply (the reply has no route back to it).
    g1.ip(&["addr", "add", "fd00:50::99/128", "dev", "eth0", "nodad"]);
    assert_eq!(
        ping6(&g1, &["-I", "fd00:50::99", "fd00:50::3"]),
        None,
        "spoofed v6 source got a reply"
    );
    // Without the host's route, no way through: there is no L2 path between the guests.
    host.ip(&["route", "del", "10.30.0.6/32", "dev", &p2.name]);
    assert_eq!(
        ping(&g1, &["10.30.0.6"]),
        None,
        "reached g2 without the host route"
    );
    // Detaching a port takes its proxy entries on the other ports with it.
    rt.block_on(async {
        let c = d.client().await;
        c.detach_port(&p1.name).await.expect("DetachPort");
    });
    let proxies = host.ip(&["-6", "neigh", "show", "proxy"]);
    assert!(!proxies.contains("fd00:50::2"), "{proxies:?}");
    d.stop();
}

#[test]
fn bad_input_is_refused_and_leaves_nothing_behind() {
    let t = "bad_input_is_refused_and_leaves_nothing_behind";
    if !can_run(t, true) {
        return;
    }
    let host = Netns::new("netd-xh");
    let g = Netns::new("netd-xg");
    let mut d = Daemon::start(&host, "net-bad");
    let rt = runtime();
    rt.block_on(async {
        let c = d.client().await;
        c.create_network(r#"{"name":"lan","kind":"bridged","subnet":"10.50.0.0/16"}"#)
            .await
            .expect("CreateNetwork");
        let before = link_names(&host);
        let invalid = |r: Result<(), CairnError>, want: &str| match r {
            Err(CairnError::InvalidArgs(m)) => assert!(m.contains(want), "{m} ∌ {want}"),
            other => panic!("expected InvalidArgs with {want}: {other:?}"),
        };
        invalid(
            c.create_network(r#"{"name":"v0","kind":"vlan","uplink":"eth0","vlan":0}"#)
                .await,
            "vlan = 0 is out of range 1..=4094",
        );
        invalid(
            c.create_network(r#"{"name":"v1","kind":"vlan","uplink":"eth0","vlan":4095}"#)
                .await,
            "vlan = 4095 is out of range 1..=4094",
        );
        invalid(
            c.create_network(r#"{"name":"x","kind":"bridged","vlan_awar":true}"#)
                .await,
            "unknown field `vlan_awar`",
        );
        invalid(
            c.create_network(r#"{"name":"on-lan","kind":"bridged","uplink":"lan"}"#)
                .await,
            "uplink \"lan\" is a bridged network",
        );
        match c
            .create_network(r#"{"name":"lan2","kind":"bridged","subnet":"10.50.3.0/24"}"#)
            .await
        {
            Err(CairnError::Conflict(m)) => {
                assert_eq!(
                    m,
                    "subnet 10.50.3.0/24 overlaps subnet 10.50.0.0/16 of network lan"
                )
            }
            other => panic!("overlap: {other:?}"),
        }
        // Rollback: the bridge is created, then enslaving the missing uplink fails.
        match c
            .create_network(r#"{"name":"up","kind":"bridged","uplink":"nosuch0"}"#)
            .await
        {
            Err(CairnError::NotFound(m)) => assert!(
                m.starts_with("uplink nosuch0 of network up does not exist"),
                "{m}"
            ),
            other => panic!("missing uplink: {other:?}"),
        }
        match c
            .attach_port(&veth(
                "lan",
                "ct:a",
                &g,
                &["10.50.0.5/16", "10.50.0.300/16"],
            ))
            .await
        {
            Err(CairnError::InvalidArgs(m)) => assert!(
                m.starts_with("addresses[1] \"10.50.0.300/16\" is not a CIDR"),
                "{m}"
            ),
            other => panic!("bad address: {other:?}"),
        }
        match c.attach_port(&veth("nonet", "ct:a", &g, &[])).await {
            Err(CairnError::NotFound(m)) => assert_eq!(m, "network nonet does not exist"),
            other => panic!("unknown network: {other:?}"),
        }
        // A guest name that is taken inside the namespace: the kernel refuses, nothing stays.
        g.ip(&["link", "add", "eth0", "type", "bridge"]);
        match c.attach_port(&veth("lan", "ct:a", &g, &[])).await {
            Err(CairnError::Conflict(m)) => {
                assert!(m.contains("already has a link named eth0"), "{m}")
            }
            other => panic!("taken guest name: {other:?}"),
        }
        assert_eq!(
            link_names(&host),
            before,
            "a refused request left links behind"
        );
        let (_, counts) = c.status().await.expect("Status");
        assert_eq!(counts.get("networks"), Some(&1));
        assert_eq!(counts.get("ports"), Some(&0));
    });
    d.stop();
}

fn config_net(
    name: &str,
    kind: model::config::NetworkKind,
    subnet: Option<&str>,
    address: Option<&str>,
) -> model::config::Network {
    model::config::Network {
        name: name.into(),
        kind,
        uplink: None,
        vlan: None,
        bond: Vec::new(),
        bond_mode: None,
        subnet: subnet.and_then(|s| model::config::parse_cidr(s).ok()),
        address: address.and_then(|s| model::config::parse_cidr(s).ok()),
    }
}

#[test]
fn reconcile_reads_back_as_desired_is_idempotent_and_spares_foreign_links() {
    let t = "reconcile_reads_back_as_desired_is_idempotent_and_spares_foreign_links";
    if !can_run(t, false) {
        return;
    }
    let host = Netns::new("netd-rc");
    // Someone else's bridge, and a stale one of ours (a network no longer configured).
    host.ip(&["link", "add", "foreign0", "type", "bridge"]);
    host.ip(&["link", "add", "old", "type", "bridge"]);
    host.ip(&["link", "set", "old", "alias", "cairn:old"]);
    let dir = TempDir::new("netd-reconcile");
    let config = vec![
        config_net(
            "lan",
            model::config::NetworkKind::Bridged,
            Some("10.40.0.0/24"),
            Some("10.40.0.1/24"),
        ),
        config_net(
            "rtd",
            model::config::NetworkKind::Routed,
            Some("10.41.0.0/24"),
            None,
        ),
    ];
    let state = dir.0.join("state");
    host.run(async || {
        let k = Kernel::new(
            netd::link::connect().expect("rtnetlink"),
            Default::default(),
        );
        let mut r = Reconciler::new(k, Some(state.clone()), &config);
        let first = r.reconcile().await;
        assert!(first.failed.is_empty(), "{:?}", first.failed);
        assert!(first.changes > 0);
        assert_eq!(first.removed, ["old"]);
        // A tap with an access VLAN on the classic bridge: its own per-VLAN bridge.
        let tap: PortSpec = serde_json::from_str(
            r#"{"network":"lan","owner":"vm:db","kind":"tap","vlan":10,"mac":"02:00:00:00:00:10"}"#,
        )
        .expect("spec");
        let p = r.attach_port(tap).await.expect("AttachPort tap");
        assert_eq!(p.mac.as_deref(), Some("02:00:00:00:00:10"));
        let info = r.network_info("lan").await.expect("info");
        assert_eq!(info.addresses, ["10.40.0.1/24"]);
        let lan = info
            .links
            .iter()
            .find(|l| l.name == "lan")
            .expect("bridge lan");
        assert!(lan.up && lan.kind == "bridge" && lan.alias.as_deref() == Some("cairn:lan"));
        let vbr = info
            .links
            .iter()
            .find(|l| l.name == "lan.10")
            .expect("per-VLAN bridge");
        assert_eq!(vbr.alias.as_deref(), Some("cairn:lan:vlan10"));
        let tap = info.links.iter().find(|l| l.name == p.name).expect("tap");
        assert_eq!(
            (tap.kind.as_str(), tap.master.as_deref()),
            ("tun", Some("lan.10"))
        );

        let before = r.changes();
        let second = r.reconcile().await;
        assert!(second.failed.is_empty(), "{:?}", second.failed);
        assert_eq!(second.changes, 0, "second reconcile sent change requests");
        assert_eq!(r.changes(), before);
        // A new reconciler over the same state (a restart) adopts and changes nothing.
        let k = Kernel::new(
            netd::link::connect().expect("rtnetlink"),
            Default::default(),
        );
        let mut again = Reconciler::new(k, Some(state.clone()), &config);
        let third = again.reconcile().await;
        assert_eq!((third.changes, third.failed.len()), (0, 0));
        assert_eq!(again.port_count(), 1);
        assert_eq!(
            again.list_ports().await.expect("ports")[0].ifindex,
            p.ifindex
        );
        again.detach_port(&p.name).await.expect("DetachPort");
    });
    let names = link_names(&host);
    assert!(
        names.contains("foreign0"),
        "foreign link removed: {names:?}"
    );
    assert!(
        !names.contains("old") && !names.contains("lan.10"),
        "{names:?}"
    );
    assert!(names.contains("lan"), "{names:?}");
}

#[test]
fn failed_apply_rolls_back_what_it_created() {
    let t = "failed_apply_rolls_back_what_it_created";
    if !can_run(t, false) {
        return;
    }
    let host = Netns::new("netd-rb");
    let before = link_names(&host);
    host.run(async || {
        let k = Kernel::new(
            netd::link::connect().expect("rtnetlink"),
            Default::default(),
        );
        let mut r = Reconciler::new(k, None, &[]);
        let spec: NetworkSpec = serde_json::from_str(
            r#"{"name":"wan","kind":"bridged","uplink":"nosuch0","address":"10.60.0.1/24"}"#,
        )
        .expect("spec");
        let e = r.create_network(spec).await.expect_err("missing uplink");
        assert!(
            e.to_string()
                .starts_with("uplink nosuch0 of network wan does not exist"),
            "{e}"
        );
        // Create, alias+up, address, then the delete of the rollback.
        assert!(r.changes() >= 3, "{}", r.changes());
        assert_eq!(r.network_count(), 0);
        // A foreign link with the network's name is a conflict, never adopted or deleted.
        let spec: NetworkSpec =
            serde_json::from_str(r#"{"name":"lo","kind":"bridged"}"#).expect("spec");
        let e = r.create_network(spec).await.expect_err("name taken");
        assert!(
            e.to_string()
                .starts_with("link lo exists and is not Cairn's"),
            "{e}"
        );
        // Where the kernel has no bridge VLAN filtering, it refuses a vlan_aware network with
        // its reason, and turning filtering on later reaches br_changelink (RTM_NEWLINK on the
        // existing bridge) rather than being silently ignored as RTM_SETLINK would.
        let spec: NetworkSpec =
            serde_json::from_str(r#"{"name":"trunk","kind":"bridged","vlan_aware":true}"#)
                .expect("spec");
        match r.create_network(spec).await {
            Ok(()) => r.delete_network("trunk").await.expect("DeleteNetwork"),
            Err(e) => {
                assert_eq!(
                    e.to_string(),
                    "create VLAN-filtering bridge trunk: Operation not supported (os error 95)"
                );
                let plain: NetworkSpec =
                    serde_json::from_str(r#"{"name":"plain","kind":"bridged"}"#).expect("spec");
                r.create_network(plain).await.expect("plain bridge");
                let k = r.kernel().clone();
                let br = k
                    .link("plain")
                    .await
                    .expect("lookup")
                    .expect("plain exists");
                let e = k
                    .set_vlan_filtering(&br, true)
                    .await
                    .expect_err("no filtering here");
                assert!(
                    e.to_string()
                        .ends_with("Operation not supported (os error 95)"),
                    "{e}"
                );
                // Likewise a port VLAN (RTM_SETLINK AF_BRIDGE, IFLA_AF_SPEC): dispatched to the
                // bridge's br_setlink, which has no VLANs to give here (EINVAL would mean a
                // malformed message).
                let (conn, h, _) = rtnetlink::new_connection().expect("rtnetlink");
                tokio::spawn(conn);
                h.link()
                    .add(rtnetlink::LinkVeth::new("vp0", "vp0p").build())
                    .execute()
                    .await
                    .expect("veth");
                let vp = k.link("vp0").await.expect("lookup").expect("vp0");
                k.configure(&vp, None, Some(br.index), true)
                    .await
                    .expect("enslave");
                let e = k
                    .bridge_vlan(&vp, netd::net::bridge_vlan::PortVlan::access(10), false)
                    .await
                    .expect_err("no VLANs here");
                assert_eq!(
                    e.to_string(),
                    "add vlan 10 on bridge port vp0: Operation not supported (os error 95)"
                );
                k.delete(vp.index, "vp0").await.expect("delete vp0");
                r.delete_network("plain").await.expect("DeleteNetwork");
            }
        }
    });
    assert_eq!(link_names(&host), before);
}

/// Bridge VLAN filtering and 802.1Q links: appliance-only on this machine kind.
#[test]
fn vlan_aware_bridge_and_vlan_network() {
    let t = "vlan_aware_bridge_and_vlan_network";
    if !can_run(t, false) {
        return;
    }
    let probe = Netns::new("netd-vp");
    let filtering = Command::new("ip")
        .args([
            "-n",
            &probe.name,
            "link",
            "add",
            "vf0",
            "type",
            "bridge",
            "vlan_filtering",
            "1",
        ])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    probe.ip(&["link", "add", "up0", "type", "veth", "peer", "name", "up0p"]);
    let dot1q = Command::new("ip")
        .args([
            "-n",
            &probe.name,
            "link",
            "add",
            "link",
            "up0",
            "name",
            "up0.7",
            "type",
            "vlan",
            "id",
            "7",
        ])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    drop(probe);
    if !filtering || !dot1q {
        skip(
            t,
            "this kernel lacks bridge vlan_filtering or 8021q (appliance-only: ci/e2e/test_net.py checks it in QEMU)",
        );
        return;
    }
    let host = Netns::new("netd-vh");
    host.ip(&[
        "link", "add", "eno1", "type", "veth", "peer", "name", "eno1p",
    ]);
    host.run(async || {
        let k = Kernel::new(
            netd::link::connect().expect("rtnetlink"),
            Default::default(),
        );
        let mut r = Reconciler::new(k, None, &[]);
        let spec = |s: &str| -> NetworkSpec { serde_json::from_str(s).expect("spec") };
        r.create_network(spec(
            r#"{"name":"v100","kind":"vlan","uplink":"eno1","vlan":100}"#,
        ))
        .await
        .expect("vlan network");
        r.create_network(spec(
            r#"{"name":"trunk","kind":"bridged","uplink":"v100","vlan_aware":true}"#,
        ))
        .await
        .expect("vlan-aware bridge");
        let tap: PortSpec = serde_json::from_str(
            r#"{"network":"trunk","owner":"vm:a","kind":"tap","vlan":10,"tagged_vlans":[20]}"#,
        )
        .expect("spec");
        let p = r.attach_port(tap).await.expect("port");
        assert_eq!((p.vlan, p.tagged_vlans.clone()), (Some(10), vec![20]));
        let info = r.network_info("trunk").await.expect("info");
        assert!(
            info.vlans
                .iter()
                .any(|v| v.port == p.name && v.vid == 10 && v.pvid && v.untagged),
            "{:?}",
            info.vlans
        );
        let second = r.reconcile().await;
        assert_eq!((second.changes, second.failed.len()), (0, 0));
        r.detach_port(&p.name).await.expect("detach");
    });
    let _ = ip(&["-V"]);
}

#[test]
fn port_and_network_limits_go_through_tc_and_read_back() {
    let t = "port_and_network_limits_go_through_tc_and_read_back";
    if !can_run(t, false) {
        return;
    }
    let host = Netns::new("netd-lim");
    let g = Netns::new("netd-limg");
    let gpath = g.path().display().to_string();
    host.run(async || {
        let k = Kernel::new(
            netd::link::connect().expect("rtnetlink"),
            Default::default(),
        );
        let mut r = Reconciler::new(k, None, &[]);
        let net: NetworkSpec = serde_json::from_str(
            r#"{"name":"shaped","kind":"bridged","limits":{"ingress":{"rate_bps":200000000}}}"#,
        )
        .expect("spec");
        r.create_network(net)
            .await
            .expect("CreateNetwork with limits");
        let spec: PortSpec = serde_json::from_str(&format!(
            r#"{{"network":"shaped","owner":"ct:s","kind":"veth","netns":"{gpath}",
                "addresses":["10.70.0.5/24"],
                "limits":{{"ingress":{{"rate_bps":10000000}},"egress":{{"rate_bps":20000000}}}}}}"#
        ))
        .expect("spec");
        let p = r.attach_port(spec).await.expect("AttachPort with limits");
        let rates = |info: &NetworkInfo, dev: &str| -> Vec<u64> {
            info.qdiscs
                .iter()
                .filter(|q| q["dev"] == dev && q["object"] == "class")
                .filter_map(|q| q["rate_bps"].as_u64())
                .collect()
        };
        let info = r.network_info("shaped").await.expect("info");
        assert_eq!(rates(&info, &p.name), [10_000_000], "{:?}", info.qdiscs);
        assert_eq!(rates(&info, "shaped"), [200_000_000], "{:?}", info.qdiscs);
        // net.info answers the aggregate as limits too, not only as raw qdiscs.
        assert_eq!(
            info.limits.and_then(|l| l.ingress).map(|r| r.rate_bps),
            Some(200_000_000)
        );
        let idx = p.ifindex;
        let change = |json: &str| -> model::net::LimitsChange {
            serde_json::from_str(json).expect("limits change")
        };
        // Only what is named changes: the egress limit stays.
        r.set_limits(&p.name, change(r#"{"ingress":{"rate_bps":30000000}}"#))
            .await
            .expect("SetLimits");
        let info = r.network_info("shaped").await.expect("info");
        assert_eq!(rates(&info, &p.name), [30_000_000], "{:?}", info.qdiscs);
        let port = r.port_info(&p.name).await.expect("port");
        let egress = port.limits.and_then(|l| l.egress).map(|e| e.rate_bps);
        assert_eq!(egress, Some(20_000_000), "{port:?}");
        // Live: the port kept its link.
        assert_eq!(port.ifindex, idx);
        // rate_bps 0 lifts one direction; the other stays. The port's owner names it too.
        r.set_limits("ct:s", change(r#"{"ingress":{"rate_bps":0}}"#))
            .await
            .expect("SetLimits 0");
        let port = r.port_info(&p.name).await.expect("port");
        assert_eq!(port.limits.and_then(|l| l.ingress), None, "{port:?}");
        assert_eq!(
            port.limits.and_then(|l| l.egress).map(|e| e.rate_bps),
            Some(20_000_000)
        );
        let info = r.network_info("shaped").await.expect("info");
        assert!(rates(&info, &p.name).is_empty(), "{:?}", info.qdiscs);
        // Nothing named: refused, nothing changed.
        let e = r
            .set_limits(&p.name, change("{}"))
            .await
            .expect_err("empty");
        assert!(e.to_string().contains("no member given"), "{e}");
        let e = r
            .set_limits("nosuch", change(r#"{"police":false}"#))
            .await
            .expect_err("unknown");
        assert_eq!(
            e.to_string(),
            "nosuch is neither a port, the owner of one, nor a network"
        );
        // An owner of two ports (on two networks) does not pick one: the answer names both.
        let other: NetworkSpec =
            serde_json::from_str(r#"{"name":"other","kind":"bridged"}"#).expect("spec");
        r.create_network(other).await.expect("CreateNetwork other");
        let second: PortSpec = serde_json::from_str(
            r#"{"network":"other","owner":"ct:s","kind":"tap","mac":"52:54:00:00:00:42"}"#,
        )
        .expect("spec");
        let tap = r
            .attach_port(second)
            .await
            .expect("AttachPort of a second tap");
        let e = r
            .set_limits("ct:s", change(r#"{"police":false}"#))
            .await
            .expect_err("ambiguous owner");
        assert!(
            e.to_string().contains("ct:s owns 2 ports")
                && e.to_string().contains(&p.name)
                && e.to_string().contains(&tap.name),
            "{e}"
        );
        r.detach_port(&tap.name).await.expect("DetachPort by name");
        r.detach_port("ct:s").await.expect("DetachPort by owner");
        assert!(
            r.port_info(&p.name).await.is_err(),
            "the owner's port is gone"
        );
        r.delete_network("other")
            .await
            .expect("DeleteNetwork other");
    });
    let names = link_names(&host);
    assert!(
        names.iter().all(|n| !n.starts_with("ci")),
        "IFB left behind: {names:?}"
    );
}

/// A host.toml network that cannot be applied: netd still owns its name and says so in Status;
/// the network that can be applied is there.
#[test]
fn a_failing_config_network_does_not_keep_netd_down() {
    let t = "a_failing_config_network_does_not_keep_netd_down";
    if !can_run(t, true) {
        return;
    }
    let host = Netns::new("netd-fh");
    let mut d = Daemon::start_with(
        &host,
        "net-failing",
        "\n[[network]]\nname = \"wan\"\nkind = \"bridged\"\nuplink = \"nosuch0\"\n\n\
         [[network]]\nname = \"lan\"\nkind = \"bridged\"\nsubnet = \"10.80.0.0/24\"\n\
         address = \"10.80.0.1/24\"\n",
    );
    let rt = runtime();
    rt.block_on(async {
        let c = d.client().await;
        let (_, counts) = c.status().await.expect("Status");
        assert_eq!(counts.get("networks"), Some(&2));
        assert_eq!(counts.get("networks_failed"), Some(&1));
    });
    let names = link_names(&host);
    assert!(names.contains("lan") && !names.contains("wan"), "{names:?}");
    assert!(
        d.log()
            .contains("uplink nosuch0 of network wan does not exist"),
        "{}",
        d.log()
    );
    d.stop();
}

/// Ports whose guests died unseen (hostd killed, a VMM gone): a veth dies with its guest's
/// namespace and netd forgets its record when it next looks — the list never fails on it and
/// the owner's next attach is not refused; a tap stays until its owner's ports are detached by
/// owner, or hostd says which of its guests run (KeepOwners).
#[test]
fn ports_of_guests_that_died_unseen_are_forgotten_or_swept_by_owner() {
    let t = "ports_of_guests_that_died_unseen_are_forgotten_or_swept_by_owner";
    if !can_run(t, true) {
        return;
    }
    let host = Netns::new("netd-oh");
    let keep_ns = Netns::new("netd-ok");
    let b_ns = Netns::new("netd-ob");
    let mut d = Daemon::start(&host, "net-owners");
    let tap = |owner: &str| {
        format!(r#"{{"network":"br-o","owner":"{owner}","kind":"tap","mac":"02:00:00:00:00:11"}}"#)
    };
    // Waits until netns deletion has taken the veth's host end with it (the kernel tears a
    // namespace down in a work queue).
    let wait_gone = |name: &str| {
        let start = Instant::now();
        while link_names(&host).contains(name) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{name} outlived its guest"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let rt = runtime();
    rt.block_on(async {
        let c = d.client().await;
        c.create_network(r#"{"name":"br-o","kind":"bridged","subnet":"10.21.0.0/24"}"#)
            .await
            .expect("CreateNetwork");
        let keep = port(
            &c.attach_port(&veth("br-o", "ct:keep", &keep_ns, &[]))
                .await
                .expect("keep"),
        );
        let b = port(
            &c.attach_port(&veth("br-o", "ct:b", &b_ns, &[]))
                .await
                .expect("b"),
        );
        let foreign = port(&c.attach_port(&tap("api:x")).await.expect("api:x"));

        // A container dies while nobody detaches its port; it starts again.
        let a_ns = Netns::new("netd-oa");
        let a = port(
            &c.attach_port(&veth("br-o", "ct:a", &a_ns, &["10.21.0.5/24"]))
                .await
                .expect("a"),
        );
        drop(a_ns);
        wait_gone(&a.name);
        let a_ns = Netns::new("netd-oa");
        let again = port(
            &c.attach_port(&veth("br-o", "ct:a", &a_ns, &["10.21.0.5/24"]))
                .await
                .expect("the owner's next attach after its guest died"),
        );
        assert_eq!(again.name, a.name);
        // It dies again: the list forgets it instead of failing.
        drop(a_ns);
        wait_gone(&a.name);
        let listed: Vec<PortInfo> =
            serde_json::from_str(&c.list_ports().await.expect("ListPorts")).expect("json");
        let names: BTreeSet<&str> = listed.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            BTreeSet::from([keep.name.as_str(), b.name.as_str(), foreign.name.as_str()]),
            "{listed:?}"
        );
        assert!(
            listed.iter().all(|p| p.problem.is_none() && p.ifindex > 0),
            "{listed:?}"
        );

        // A VM's tap outlives its VMM: detached by owner, whatever hostd remembers.
        let v = port(&c.attach_port(&tap("vm:v")).await.expect("vm:v"));
        assert!(link_names(&host).contains(&v.name));
        assert_eq!(
            c.detach_owner("vm:v").await.expect("DetachOwner"),
            std::slice::from_ref(&v.name)
        );
        assert_eq!(
            c.detach_owner("vm:v").await.expect("DetachOwner again"),
            Vec::<String>::new()
        );
        assert!(!link_names(&host).contains(&v.name));

        // hostd's sweep at start: only ct:keep runs; other owners' ports are not its own.
        let w = port(&c.attach_port(&tap("vm:w")).await.expect("vm:w"));
        let mut gone = c
            .keep_owners(&["ct:", "vm:"], &["ct:keep", "vm:elsewhere"])
            .await
            .expect("KeepOwners");
        gone.sort();
        let mut want = vec![b.name.clone(), w.name.clone()];
        want.sort();
        assert_eq!(gone, want);
        let left: BTreeSet<String> =
            serde_json::from_str::<Vec<PortInfo>>(&c.list_ports().await.expect("ListPorts"))
                .expect("json")
                .into_iter()
                .map(|p| p.name)
                .collect();
        assert_eq!(
            left,
            BTreeSet::from([keep.name.clone(), foreign.name.clone()])
        );
        let links = link_names(&host);
        assert!(
            !links.contains(&b.name) && !links.contains(&w.name),
            "{links:?}"
        );
        match c.keep_owners(&[""], &[]).await {
            Err(CairnError::InvalidArgs(m)) => assert!(m.contains("prefix"), "{m}"),
            other => panic!("an empty prefix would select every port: {other:?}"),
        }
        assert_eq!(
            c.list_ports()
                .await
                .map(|j| j.matches("\"name\"").count())
                .ok(),
            Some(2)
        );
    });
    d.stop();
}

/// A guest's port is detached when it stops and attached anew when it starts: the limits
/// net.setLimits gave it are kept for its owner and come back on the new port (through a netd
/// restart too), until the owner is forgotten (its guest deleted). Before, a restarted
/// container's port came back unlimited.
#[test]
fn port_limits_outlive_the_port_until_the_owner_is_forgotten() {
    let t = "port_limits_outlive_the_port_until_the_owner_is_forgotten";
    if !can_run(t, true) {
        return;
    }
    let host = Netns::new("netd-klh");
    let mut d = Daemon::start(&host, "net-kept-limits");
    let rt = runtime();
    // The ingress class rates tc reads back on `port`'s link.
    let rates = async |c: &Network1Proxy<'static>, port: &str| -> Vec<u64> {
        let info: NetworkInfo =
            serde_json::from_str(&c.network_info("br-k").await.expect("NetworkInfo"))
                .expect("json");
        info.qdiscs
            .iter()
            .filter(|q| q["dev"] == port && q["object"] == "class")
            .filter_map(|q| q["rate_bps"].as_u64())
            .collect()
    };
    // One run of the guest: a fresh namespace and a port without limits, as hostd attaches it.
    let start = async |c: &Network1Proxy<'static>, ns: &Netns| -> PortInfo {
        port(
            &c.attach_port(&veth("br-k", "ct:k", ns, &[]))
                .await
                .expect("AttachPort"),
        )
    };
    let ns = Netns::new("netd-klg1");
    let first = rt.block_on(async {
        let c = d.client().await;
        c.create_network(r#"{"name":"br-k","kind":"bridged"}"#)
            .await
            .expect("CreateNetwork");
        let p = start(&c, &ns).await;
        assert_eq!(p.limits, None);
        c.set_limits("ct:k", r#"{"ingress":{"rate_bps":10000000}}"#)
            .await
            .expect("SetLimits by owner");
        c.set_limits("ct:k", r#"{"egress":{"rate_bps":20000000}}"#)
            .await
            .expect("SetLimits of the other direction");
        assert_eq!(rates(&c, &p.name).await, [10_000_000]);
        // The guest stops (hostd detaches by owner) and starts again.
        assert_eq!(
            c.detach_owner("ct:k").await.expect("DetachOwner"),
            std::slice::from_ref(&p.name)
        );
        p
    });
    drop(ns);
    let ns = Netns::new("netd-klg2");
    let want = |p: &PortInfo| {
        let l = p.limits.expect("the new port's limits");
        (l.ingress.map(|r| r.rate_bps), l.egress.map(|r| r.rate_bps))
    };
    rt.block_on(async {
        let c = d.client().await;
        let p = start(&c, &ns).await;
        assert_eq!(p.name, first.name);
        assert_eq!(want(&p), (Some(10_000_000), Some(20_000_000)), "{p:?}");
        assert_eq!(rates(&c, &p.name).await, [10_000_000], "shaped again");
        c.detach_owner("ct:k").await.expect("DetachOwner");
    });
    // netd restarts while the guest is stopped: the kept limits are on the state partition.
    d.stop();
    d.spawn(&host);
    drop(ns);
    let ns = Netns::new("netd-klg3");
    rt.block_on(async {
        let c = d.client().await;
        let p = start(&c, &ns).await;
        assert_eq!(want(&p), (Some(10_000_000), Some(20_000_000)), "{p:?}");
        assert_eq!(
            rates(&c, &p.name).await,
            [10_000_000],
            "shaped after a restart"
        );
        // Lifting both directions leaves nothing to keep.
        c.set_limits(
            "ct:k",
            r#"{"ingress":{"rate_bps":0},"egress":{"rate_bps":0}}"#,
        )
        .await
        .expect("SetLimits 0");
        c.detach_owner("ct:k").await.expect("DetachOwner");
        let p = start(&c, &ns).await;
        assert_eq!(p.limits, None, "{p:?}");
        // Limited again, then the guest is deleted: the owner is forgotten with its port.
        c.set_limits("ct:k", r#"{"ingress":{"rate_bps":10000000}}"#)
            .await
            .expect("SetLimits");
        assert_eq!(
            c.forget_owner("ct:k").await.expect("ForgetOwner"),
            std::slice::from_ref(&p.name)
        );
        assert!(!link_names(&host).contains(&p.name));
        let p = start(&c, &ns).await;
        assert_eq!(p.limits, None, "a new guest of the same name: {p:?}");
        assert!(rates(&c, &p.name).await.is_empty());
        c.forget_owner("ct:k").await.expect("ForgetOwner");
        c.delete_network("br-k").await.expect("DeleteNetwork");
    });
    d.stop();
}

/// Whether this kernel can make bonds (the bonding module); checked in a scratch namespace.
fn has_bonding() -> bool {
    let ns = Netns::new("netd-bondprobe");
    Command::new("ip")
        .args(["-n", &ns.name, "link", "add", "tb", "type", "bond"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn bonded_uplink_is_created_idempotent_and_released() {
    let t = "bonded_uplink_is_created_idempotent_and_released";
    if !can_run(t, false) {
        return;
    }
    if !has_bonding() {
        skip(
            t,
            "this kernel has no bonding module (ci/e2e/test_net.py covers it)",
        );
        return;
    }
    let host = Netns::new("netd-bond");
    host.ip(&["link", "add", "nic1", "type", "dummy"]);
    host.ip(&["link", "add", "nic2", "type", "dummy"]);
    host.ip(&["link", "set", "nic1", "up"]);
    let dir = TempDir::new("netd-bond");
    let state = dir.0.join("state");
    host.run(async || {
        let k = Kernel::new(
            netd::link::connect().expect("rtnetlink"),
            Default::default(),
        );
        let mut r = Reconciler::new(k, Some(state.clone()), &[]);
        let spec: NetworkSpec =
            serde_json::from_str(r#"{"name":"bnd","kind":"bridged","bond":["nic1","nic2"]}"#)
                .expect("spec");
        r.create_network(spec).await.expect("CreateNetwork");
        let info = r.network_info("bnd").await.expect("info");
        let bond = info.links.iter().find(|l| l.name == "bndb").expect("bond");
        assert_eq!(bond.kind, "bond");
        assert_eq!(bond.master.as_deref(), Some("bnd"));
        assert_eq!(bond.alias.as_deref(), Some("cairn:bnd:bond"));
        for nic in ["nic1", "nic2"] {
            let l = info.links.iter().find(|l| l.name == nic).expect(nic);
            assert_eq!(l.master.as_deref(), Some("bndb"), "{nic}");
        }
        let again = r.reconcile().await;
        assert!(again.failed.is_empty(), "{:?}", again.failed);
        assert_eq!(again.changes, 0, "second reconcile sent change requests");
        r.delete_network("bnd").await.expect("DeleteNetwork");
    });
    let d = host.ip(&["-d", "-o", "link", "show", "nic1"]);
    assert!(!d.contains("master"), "{d}");
    let names = link_names(&host);
    assert!(
        !names.contains("bndb") && !names.contains("bnd"),
        "{names:?}"
    );
}
