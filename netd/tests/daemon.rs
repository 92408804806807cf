//! The netd binary as init runs it: inside a fresh network namespace, with a private bus, a
//! host.toml, and SIGTERM to stop it. Needs root (namespaces); skips otherwise.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    Netns, Proc, TempDir, have_udhcpd, root_or_skip, start_bus, start_udhcpd, udhcpd_log,
    veth_between,
};
use model::dbus::{NETWORK_NAME, NETWORK_PATH};

/// After testkit::DEV_API_TOML in each host.toml here.
const LAN: &str = r#"
[[network]]
name = "lan"
kind = "bridged"
subnet = "10.10.0.0/24"
address = "10.10.0.1/24"
"#;

/// Starts netd in `ns` on the bus at `bus`, with `config` as host.toml.
fn start_netd(ns: &Netns, dir: &TempDir, bus: &str, config: &str) -> Proc {
    let cfg = dir.0.join("host.toml");
    std::fs::write(&cfg, config).expect("cannot write host.toml");
    let state = dir.0.join("state");
    std::fs::create_dir_all(&state).expect("cannot create the state dir");
    let log = std::fs::File::create(dir.0.join("netd.log")).expect("cannot create the netd log");
    Proc(
        Command::new("ip")
            .args(["netns", "exec", &ns.name, env!("CARGO_BIN_EXE_netd")])
            .arg("--config")
            .arg(&cfg)
            .arg("--state")
            .arg(&state)
            .env("DBUS_SYSTEM_BUS_ADDRESS", bus)
            .env("CAIRN_RUN_DIR", dir.0.join("run"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cannot start netd"),
    )
}

fn netd_log(dir: &TempDir) -> String {
    std::fs::read_to_string(dir.0.join("netd.log")).unwrap_or_default()
}

type Mgmt = (String, String, String);

struct Client {
    conn: zbus::Connection,
}

impl Client {
    async fn connect(bus: &str) -> Client {
        let conn = zbus::connection::Builder::address(bus)
            .build()
            .await
            .expect("cannot connect to the test bus");
        Client { conn }
    }

    async fn status(&self) -> zbus::Result<(String, HashMap<String, u32>)> {
        model::dbus::Network1Proxy::new(&self.conn)
            .await?
            .status()
            .await
    }

    async fn management_address(&self) -> zbus::Result<Mgmt> {
        let reply = self
            .conn
            .call_method(
                Some(NETWORK_NAME),
                NETWORK_PATH,
                Some(NETWORK_NAME),
                "ManagementAddress",
                &(),
            )
            .await?;
        reply.body().deserialize::<Mgmt>()
    }

    /// Polls until netd owns its name, as init does; returns how long that took.
    async fn wait_ready(&self, within: Duration, dir: &TempDir) -> Duration {
        let start = Instant::now();
        loop {
            if self.status().await.is_ok() {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < within,
                "netd not ready within {within:?}:\n{}",
                netd_log(dir)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Sends SIGTERM and asserts a clean exit within `within`.
fn stop(netd: &mut Proc, within: Duration, dir: &TempDir) {
    // `ip netns exec` execs netd in place, so the child's pid is netd's.
    let pid = nix::unistd::Pid::from_raw(i32::try_from(netd.0.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("cannot signal netd");
    let start = Instant::now();
    loop {
        if let Some(status) = netd.0.try_wait().expect("wait") {
            assert!(
                status.success(),
                "netd exited with {status}:\n{}",
                netd_log(dir)
            );
            return;
        }
        assert!(
            start.elapsed() < within,
            "netd still running {within:?} after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn resolv(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("run/resolv.conf")).unwrap_or_default()
}

#[test]
fn static_management_is_configured_before_the_name_is_owned() {
    if !root_or_skip("static_management_is_configured_before_the_name_is_owned") {
        return;
    }
    let ns = Netns::new("netd-ds");
    ns.ip(&[
        "link", "add", "eno1", "type", "veth", "peer", "name", "eno1p",
    ]);
    ns.ip(&["link", "set", "eno1p", "up"]);
    let dir = TempDir::new("netd-daemon-static");
    let (_bus_proc, bus) = start_bus(&dir);
    let config = format!(
        "[host]\nhostname = \"node1\"\ndns = [\"192.0.2.53\"]\n\n[host.management]\n\
         interface = \"eno1\"\naddress = \"10.66.0.10/24\"\ngateway = \"10.66.0.1\"\n{}{LAN}",
        testkit::DEV_API_TOML
    );
    let mut netd = start_netd(&ns, &dir, &bus, &config);

    let rt = runtime();
    rt.block_on(async {
        let client = Client::connect(&bus).await;
        let took = client.wait_ready(Duration::from_secs(10), &dir).await;
        eprintln!("netd owned its name after {took:?}");
        // Readiness means the address is already there.
        let addrs = ns.ip(&["-4", "addr", "show", "dev", "eno1"]);
        assert!(addrs.contains("inet 10.66.0.10/24"), "{addrs}");
        let routes = ns.ip(&["-4", "route", "show", "default"]);
        assert!(routes.contains("via 10.66.0.1 dev eno1"), "{routes}");

        let (version, counts) = client.status().await.expect("Status");
        assert_eq!(version, model::VERSION);
        let want: HashMap<String, u32> = [("networks", 1), ("ports", 0), ("mgmt_configured", 1)]
            .map(|(k, v)| (k.to_string(), v))
            .into();
        assert_eq!(counts, want);
        let mgmt = client
            .management_address()
            .await
            .expect("ManagementAddress");
        assert_eq!(
            mgmt,
            ("eno1".into(), "10.66.0.10/24".into(), "static".into())
        );
    });
    assert_eq!(
        resolv(&dir.0)
            .lines()
            .filter(|l| l.starts_with("nameserver"))
            .collect::<Vec<_>>(),
        ["nameserver 192.0.2.53"]
    );
    stop(&mut netd, Duration::from_secs(2), &dir);
    // No release on shutdown: the address stays for the next netd.
    let addrs = ns.ip(&["-4", "addr", "show", "dev", "eno1"]);
    assert!(
        addrs.contains("inet 10.66.0.10/24"),
        "address removed on SIGTERM: {addrs}"
    );

    // A restarted netd finds everything in place and changes nothing.
    let mut again = start_netd(&ns, &dir, &bus, &config);
    rt.block_on(async {
        Client::connect(&bus)
            .await
            .wait_ready(Duration::from_secs(10), &dir)
            .await;
    });
    stop(&mut again, Duration::from_secs(2), &dir);
    assert!(
        netd_log(&dir).contains("changed=false"),
        "{}",
        netd_log(&dir)
    );
    assert_eq!(ns.ip(&["-4", "addr", "show", "dev", "eno1"]), addrs);
}

/// With DHCP netd is ready at once (no server is even running yet) and picks up the lease in
/// the background once one appears.
#[test]
fn dhcp_does_not_delay_readiness() {
    if !root_or_skip("dhcp_does_not_delay_readiness") {
        return;
    }
    if !have_udhcpd() {
        eprintln!("skipping: busybox (udhcpd) is not installed");
        return;
    }
    let server_ns = Netns::new("netd-dds");
    let client_ns = Netns::new("netd-ddc");
    veth_between(&client_ns, "eth0", &server_ns, "srv0", "10.55.0.1/24");
    let dir = TempDir::new("netd-daemon-dhcp");
    let (_bus_proc, bus) = start_bus(&dir);
    let config = format!(
        "[host]\nhostname = \"cairn-dev\"\n\n[host.management]\ninterface = \"eth0\"\ndhcp = true\n{}{LAN}",
        testkit::DEV_API_TOML
    );
    let mut netd = start_netd(&client_ns, &dir, &bus, &config);

    let rt = runtime();
    let mut server = None;
    rt.block_on(async {
        let client = Client::connect(&bus).await;
        let took = client.wait_ready(Duration::from_secs(5), &dir).await;
        eprintln!("netd owned its name after {took:?}");
        let mgmt = client
            .management_address()
            .await
            .expect("ManagementAddress");
        assert_eq!(mgmt, ("eth0".into(), String::new(), "none".into()));
        let (_, counts) = client.status().await.expect("Status");
        assert_eq!(counts.get("mgmt_configured"), Some(&0));

        server = Some(start_udhcpd(&server_ns, "srv0", "10.55.0", 60, &dir));
        // The client retransmits DISCOVER after 4 s, then 8 s (±1 s): within 15 s it has asked
        // again since the server came up.
        let start = Instant::now();
        let mgmt = loop {
            let m = client
                .management_address()
                .await
                .expect("ManagementAddress");
            if m.2 == "dhcp" {
                break m;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no lease after 20 s: {m:?}\nnetd:\n{}\nudhcpd:\n{}",
                netd_log(&dir),
                udhcpd_log(&dir)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(
            mgmt.1.starts_with("10.55.0.1") && mgmt.1.ends_with("/24"),
            "{mgmt:?}"
        );
        let (_, counts) = client.status().await.expect("Status");
        assert_eq!(counts.get("mgmt_configured"), Some(&1));
        let addrs = client_ns.ip(&["-4", "addr", "show", "dev", "eth0"]);
        assert!(addrs.contains(&format!("inet {}", mgmt.1)), "{addrs}");
    });
    // No DNS in host.toml: the lease's servers are used.
    assert!(
        resolv(&dir.0).contains("nameserver 10.55.0.53\nnameserver 10.55.0.54\n"),
        "{}",
        resolv(&dir.0)
    );
    stop(&mut netd, Duration::from_secs(2), &dir);
    drop(server);
}
