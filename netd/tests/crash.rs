//! netd stopped at any point: a link it created is recognisable as its own from the request
//! that created it, and a netd killed mid-reconcile, again and again, converges once it is
//! let run. Needs root (namespaces); skips otherwise.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Netns, Proc, TempDir, root_or_skip, start_bus};
use netd::net::Reconciler;
use netd::net::kernel::Kernel;
use netd::net::mark;

fn bridged(name: &str) -> model::config::Network {
    model::config::Network {
        name: name.into(),
        kind: model::config::NetworkKind::Bridged,
        uplink: None,
        vlan: None,
        bond: Vec::new(),
        bond_mode: None,
        subnet: None,
        address: None,
    }
}

#[test]
fn a_created_link_is_ours_from_its_creating_request() {
    if !root_or_skip("a_created_link_is_ours_from_its_creating_request") {
        return;
    }
    let host = Netns::new("netd-mk");
    // Someone else's unmarked bridge with a network's name stays someone else's.
    host.ip(&["link", "add", "other", "type", "bridge"]);
    host.run(async || {
        let k = Kernel::new(
            netd::link::connect().expect("rtnetlink"),
            Default::default(),
        );
        // Only the creating request: what a netd killed right after it leaves behind.
        for name in ["lan", "gone"] {
            let l = k
                .create_bridge(name, &mark::network(name), false)
                .await
                .expect("create bridge");
            let back = k.link(name).await.expect("read").expect("bridge exists");
            assert_eq!(back.index, l.index);
            assert_eq!(back.group, mark::GROUP, "{name} not in netd's group");
            assert!(
                back.alias.as_deref() == Some(mark::network(name).as_str())
                    || mark::unfinished(back.alias.as_deref(), back.group),
                "{name} is not recognisable as netd's: {back:?}"
            );
        }
        let config = [bridged("lan"), bridged("other")];
        let mut r = Reconciler::new(k.clone(), None, &config);
        let report = r.reconcile().await;
        // lan is finished, gone (wanted by nothing) removed, other refused as foreign.
        assert_eq!(report.removed, ["gone"], "{report:?}");
        assert_eq!(report.failed.len(), 1, "{report:?}");
        assert_eq!(report.failed[0].0, "other", "{report:?}");
        let lan = k.link("lan").await.expect("read").expect("lan");
        assert_eq!(lan.alias.as_deref(), Some("cairn:lan"));
        assert!(lan.up);
        let second = r.reconcile().await;
        assert_eq!(second.changes, 0, "{second:?}");
    });
    let other = host.ip(&["-d", "link", "show", "other"]);
    assert!(
        !other.contains("alias"),
        "foreign bridge was marked: {other}"
    );
}

/// host.toml with `n` bridged networks n0…n{n-1}.
fn config(n: usize) -> String {
    let mut s = String::from(
        "[host]\nhostname = \"node1\"\n\n[host.management]\ninterface = \"lo\"\n\
         address = \"127.0.0.2/8\"\n\n[api]\nlisten = \"0.0.0.0\"\nport = 8443\n\
         tls = \"generate\"\n\n[[api.token]]\nname = \"admin\"\nsha256 = \
         \"sha256:cea49af368c525fcb6c735bfa051c110338cee9033df78dcd59da91c5294b3cd\"\n",
    );
    for i in 0..n {
        s.push_str(&format!(
            "\n[[network]]\nname = \"n{i}\"\nkind = \"bridged\"\n"
        ));
    }
    s
}

fn spawn_netd(host: &Netns, dir: &TempDir, bus: &str) -> Proc {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.0.join("netd.log"))
        .expect("netd log");
    Proc(
        Command::new("ip")
            .args(["netns", "exec", &host.name, env!("CARGO_BIN_EXE_netd")])
            .arg("--config")
            .arg(dir.0.join("host.toml"))
            .arg("--state")
            .arg(dir.0.join("state"))
            .env("DBUS_SYSTEM_BUS_ADDRESS", bus)
            .env("CAIRN_RUN_DIR", dir.0.join("run"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start netd"),
    )
}

/// (name, alias) of every bridge in `ns`.
fn bridges(ns: &Netns) -> Vec<(String, Option<String>)> {
    let out = ns.ip(&["-d", "-o", "link", "show", "type", "bridge"]);
    out.lines()
        .filter_map(|l| {
            let name = l.split(": ").nth(1)?.to_string();
            let alias = l
                .split(" alias ")
                .nth(1)
                .and_then(|a| a.split_whitespace().next())
                .map(str::to_string);
            Some((name, alias))
        })
        .collect()
}

#[test]
fn netd_killed_at_every_step_of_a_reconcile_converges() {
    if !root_or_skip("netd_killed_at_every_step_of_a_reconcile_converges") {
        return;
    }
    const NETWORKS: usize = 100;
    let host = Netns::new("netd-kill");
    let dir = TempDir::new("netd-kill");
    std::fs::write(dir.0.join("host.toml"), config(NETWORKS)).expect("host.toml");
    std::fs::create_dir_all(dir.0.join("state")).expect("state dir");
    let (_bus, bus) = start_bus(&dir);
    // Kill at increasing delays after the start until a run gets through its reconcile
    // untouched (every bridge marked), bounded either way.
    let mut delay = Duration::ZERO;
    let mut kills = 0;
    for _ in 0..60 {
        let mut p = spawn_netd(&host, &dir, &bus);
        std::thread::sleep(delay);
        let _ = p.0.kill();
        let _ = p.0.wait();
        kills += 1;
        let b = bridges(&host);
        if b.len() == NETWORKS && b.iter().all(|(_, a)| a.is_some()) {
            break;
        }
        delay += Duration::from_millis(4);
    }
    // Then a netd that is left to finish.
    let mut p = spawn_netd(&host, &dir, &bus);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let status = rt.block_on(async {
        let conn = zbus::connection::Builder::address(bus.as_str())
            .build()
            .await
            .expect("connect to the test bus");
        let proxy = model::dbus::Network1Proxy::new(&conn).await.expect("proxy");
        let start = Instant::now();
        loop {
            if let Ok(s) = proxy.status().await {
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "netd not ready after {kills} kills:\n{}",
                std::fs::read_to_string(dir.0.join("netd.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let _ = p.0.kill();
    let _ = p.0.wait();
    let log = std::fs::read_to_string(dir.0.join("netd.log")).unwrap_or_default();
    assert_eq!(
        status.1.get("networks_failed").copied().unwrap_or(0),
        0,
        "networks failed after {kills} kills: {status:?}\n{log}"
    );
    let b = bridges(&host);
    assert_eq!(b.len(), NETWORKS, "{b:?}");
    for (name, alias) in &b {
        assert_eq!(
            alias.as_deref(),
            Some(format!("cairn:{name}").as_str()),
            "bridge {name} after {kills} kills"
        );
    }
}
