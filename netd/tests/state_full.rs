//! A full state filesystem: every mutating call either completes and is persisted or fails and
//! changes nothing in the kernel; a restarted netd then finds the kernel as its records say.
//! netd's state dir is a small tmpfs mounted in a mount namespace of the test's own (held by
//! a `sleep` that ends with the test). Needs root; skips otherwise.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Netns, Proc, TempDir, root_or_skip, start_bus};
use model::dbus::Network1Proxy;
use model::net::PortSpec;

const CONFIG: &str = "[host]\nhostname = \"node1\"\n\n[host.management]\ninterface = \"lo\"\n\
    address = \"127.0.0.2/8\"\n\n[api]\nlisten = \"0.0.0.0\"\nport = 8443\n\
    tls = \"generate\"\n\n[[api.token]]\nname = \"admin\"\nsha256 = \
    \"sha256:cea49af368c525fcb6c735bfa051c110338cee9033df78dcd59da91c5294b3cd\"\n";

/// A mount namespace with a 16 KiB tmpfs on `state`, kept alive by its `sleep`.
struct StateFs {
    holder: Proc,
    state: PathBuf,
}

impl StateFs {
    fn new(state: PathBuf) -> StateFs {
        std::fs::create_dir_all(&state).expect("state dir");
        let mut child = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(format!(
                "mount -t tmpfs -o size=16k,mode=0700 cairn-state '{}' && echo mounted && \
                 exec sleep 600",
                state.display()
            ))
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the mount namespace holder");
        let out = child.stdout.take().expect("holder stdout");
        let holder = Proc(child);
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line).expect("holder");
        assert_eq!(line.trim(), "mounted", "tmpfs not mounted");
        StateFs { holder, state }
    }

    /// `path` under the state dir as the holder's mount namespace sees it.
    fn inside(&self, file: &str) -> PathBuf {
        let rel = self.state.strip_prefix("/").unwrap_or(&self.state);
        PathBuf::from(format!("/proc/{}/root", self.holder.0.id()))
            .join(rel)
            .join(file)
    }

    /// Writes a filler until the filesystem is full.
    fn fill(&self) {
        let mut f = std::fs::File::create(self.inside("filler")).expect("filler");
        let chunk = [0u8; 512];
        loop {
            match f.write_all(&chunk).and_then(|()| f.sync_all()) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => return,
                Err(e) => panic!("filling the state fs: {e}"),
            }
        }
    }

    fn free(&self) {
        std::fs::remove_file(self.inside("filler")).expect("remove filler");
    }

    fn files(&self) -> BTreeSet<String> {
        std::fs::read_dir(self.inside(""))
            .expect("read state dir")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }

    fn read(&self, file: &str) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.inside(file)).expect("read record"))
            .expect("record JSON")
    }

    /// netd in `host`'s network namespace and this mount namespace.
    fn netd(&self, host: &Netns, dir: &TempDir, bus: &str) -> Proc {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.0.join("netd.log"))
            .expect("netd log");
        Proc(
            Command::new("nsenter")
                .arg("-t")
                .arg(self.holder.0.id().to_string())
                .args(["-m", "ip", "netns", "exec", &host.name])
                .arg(env!("CARGO_BIN_EXE_netd"))
                .arg("--config")
                .arg(dir.0.join("host.toml"))
                .arg("--state")
                .arg(&self.state)
                .env("DBUS_SYSTEM_BUS_ADDRESS", bus)
                .env("CAIRN_RUN_DIR", dir.0.join("run"))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start netd"),
        )
    }
}

fn stop(p: &mut Proc) {
    // nsenter and `ip netns exec` exec in place: the child is netd.
    let pid = nix::unistd::Pid::from_raw(i32::try_from(p.0.id()).expect("pid"));
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let _ = p.0.wait();
}

async fn client(bus: &str, dir: &TempDir) -> Network1Proxy<'static> {
    let conn = zbus::connection::Builder::address(bus)
        .build()
        .await
        .expect("connect to the test bus");
    let proxy = Network1Proxy::new(&conn).await.expect("proxy");
    let start = Instant::now();
    while proxy.status().await.is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "netd not ready:\n{}",
            std::fs::read_to_string(dir.0.join("netd.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proxy
}

/// What the kernel has that a record could describe: links with their alias, and qdiscs.
fn kernel_state(host: &Netns) -> (BTreeSet<String>, String) {
    let links = host
        .ip(&["-d", "-o", "link"])
        .lines()
        .filter_map(|l| {
            let name = l.split(": ").nth(1)?.split('@').next()?.to_string();
            let alias = l.split(" alias ").nth(1).map(|a| a.trim().to_string());
            Some(format!("{name} {}", alias.unwrap_or_default()))
        })
        .collect();
    let qdiscs = Command::new("ip")
        .args(["netns", "exec", &host.name, "tc", "qdisc", "show"])
        .output()
        .expect("tc qdisc show");
    (links, String::from_utf8_lossy(&qdiscs.stdout).into_owned())
}

fn veth(owner: &str, ns: &Netns, addr: &str) -> String {
    serde_json::to_string(&PortSpec {
        network: "keep".into(),
        owner: owner.into(),
        kind: model::net::PortKind::Veth,
        netns: Some(ns.path().display().to_string()),
        guest_ifname: None,
        mac: None,
        vlan: None,
        tagged_vlans: Vec::new(),
        addresses: vec![addr.into()],
        limits: None,
        port_security: true,
    })
    .expect("port spec")
}

#[test]
fn a_full_state_filesystem_fails_calls_without_changing_the_kernel() {
    if !root_or_skip("a_full_state_filesystem_fails_calls_without_changing_the_kernel") {
        return;
    }
    let host = Netns::new("netd-full");
    let g1 = Netns::new("netd-fullg1");
    let g2 = Netns::new("netd-fullg2");
    let dir = TempDir::new("netd-full");
    std::fs::write(dir.0.join("host.toml"), CONFIG).expect("host.toml");
    let fs = StateFs::new(dir.0.join("state"));
    let (_bus, bus) = start_bus(&dir);
    let mut netd = fs.netd(&host, &dir, &bus);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let p1 = rt.block_on(async {
        let c = client(&bus, &dir).await;
        c.create_network(r#"{"name":"keep","kind":"bridged","subnet":"10.61.0.0/24"}"#)
            .await
            .expect("create keep");
        c.create_network(r#"{"name":"spare","kind":"bridged"}"#)
            .await
            .expect("create spare");
        let p: model::net::PortInfo = serde_json::from_str(
            &c.attach_port(&veth("ct:a", &g1, "10.61.0.5/24"))
                .await
                .expect("attach"),
        )
        .expect("PortInfo");
        p.name
    });
    let networks = fs.read("networks.json");
    let ports = fs.read("ports.json");
    fs.fill();
    let before = kernel_state(&host);
    rt.block_on(async {
        let c = client(&bus, &dir).await;
        c.create_network(r#"{"name":"full","kind":"bridged"}"#)
            .await
            .expect_err("net.create on a full state fs");
        assert_eq!(kernel_state(&host), before, "net.create changed the kernel");
        c.delete_network("spare")
            .await
            .expect_err("net.delete on a full state fs");
        assert_eq!(kernel_state(&host), before, "net.delete changed the kernel");
        c.set_limits("keep", r#"{"ingress":{"rate_bps":100000000}}"#)
            .await
            .expect_err("net.setLimits on a full state fs");
        assert_eq!(kernel_state(&host), before, "setLimits changed the kernel");
        c.set_limits(&p1, r#"{"ingress":{"rate_bps":100000000}}"#)
            .await
            .expect_err("port limits on a full state fs");
        assert_eq!(
            kernel_state(&host),
            before,
            "port limits changed the kernel"
        );
        c.attach_port(&veth("ct:b", &g2, "10.61.0.6/24"))
            .await
            .expect_err("port.attach on a full state fs");
        assert_eq!(
            kernel_state(&host),
            before,
            "port.attach changed the kernel"
        );
        c.detach_port(&p1)
            .await
            .expect_err("port.detach on a full state fs");
        assert_eq!(
            kernel_state(&host),
            before,
            "port.detach changed the kernel"
        );
    });
    // The records are as they were, with no temporary files left.
    assert_eq!(fs.read("networks.json"), networks);
    assert_eq!(fs.read("ports.json"), ports);
    assert_eq!(
        fs.files(),
        ["filler", "networks.json", "ports.json"]
            .map(String::from)
            .into(),
    );
    // A restart finds the kernel as the records say: nothing to change, nothing failed.
    stop(&mut netd);
    let mut netd = fs.netd(&host, &dir, &bus);
    let status = rt.block_on(async { client(&bus, &dir).await.status().await.expect("status") });
    assert_eq!(status.1.get("networks_failed"), None, "{status:?}");
    assert_eq!(status.1.get("networks").copied(), Some(2), "{status:?}");
    assert_eq!(status.1.get("ports").copied(), Some(1), "{status:?}");
    assert_eq!(
        kernel_state(&host),
        before,
        "the restart changed the kernel"
    );
    // With room again, the same calls go through and are persisted.
    fs.free();
    rt.block_on(async {
        let c = client(&bus, &dir).await;
        c.delete_network("spare").await.expect("net.delete");
        c.create_network(r#"{"name":"full","kind":"bridged"}"#)
            .await
            .expect("net.create");
    });
    let names: BTreeSet<String> = fs
        .read("networks.json")
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|n| n["name"].as_str().map(String::from))
        .collect();
    assert_eq!(names, ["full", "keep"].map(String::from).into());
    stop(&mut netd);
}
