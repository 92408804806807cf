//! The issue's sandbox check: 50 busybox containers on a bridged netd network under the real
//! `init --sandbox`, driven over org.cairn.Host1; each pings another; exec output and exit
//! codes; `kill -9` hostd → all keep running and are re-adopted; stop + delete leaves no
//! mount, link, cgroup, process or file behind.

mod common;

use std::time::{Duration, Instant};

use common::{TempDir, busybox_tarball, containers_possible, skip};
use futures_util::future::join_all;
use model::ct::{ContainerInfo, ContainerState};
use model::dbus::{CairnError, Container1Proxy, Host1Proxy, Network1Proxy, Storage1Proxy};
use model::net::PortInfo;
use model::storage::{BackupInfo, VolumeInfo};
use testkit::sandbox::{Sandbox, bin_dir};

const TEST: &str = "sandbox::fifty_containers_ping_survive_hostd_and_leave_nothing";
const N: usize = 50;

fn config() -> String {
    testkit::sandbox_config("ct-sandbox", Some("10.50.0"))
}

fn ip_of(i: usize) -> String {
    format!("10.50.0.{}", 10 + i)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::test(flavor = "current_thread")]
async fn fifty_containers_ping_survive_hostd_and_leave_nothing() {
    if !containers_possible(TEST) {
        return;
    }
    let bins = match bin_dir() {
        Ok(b) => b,
        Err(why) => return skip(TEST, &why),
    };
    let scratch = TempDir::new("hostd-sbx-tpl");
    let (tarball, digest) = busybox_tarball(&scratch.0);
    let mut sb = Sandbox::start("ct-sbx", &config(), &bins);
    let (conn, table) = sb.ready().await;
    let hostd_pid = table
        .iter()
        .find(|s| s.name == "hostd")
        .map(|s| s.pid)
        .unwrap();
    let host = Host1Proxy::new(&conn).await.unwrap();
    host.import_template("busybox", tarball.to_str().unwrap(), &digest)
        .await
        .unwrap_or_else(|e| panic!("import: {e}\n{}", sb.log()));

    // Bad input over the bus: clear errors, nothing made.
    let e = host
        .create_container(r#"{"name":"bad","template":"nope"}"#)
        .await
        .unwrap_err();
    assert!(
        matches!(e, CairnError::NotFound(ref m) if m.contains("template")),
        "{e}"
    );
    let e = host
        .create_container(r#"{"name":"bad","template":"busybox","network":"nonet"}"#)
        .await
        .unwrap_err();
    assert!(
        matches!(e, CairnError::NotFound(ref m) if m.contains("nonet")),
        "{e}"
    );
    let e = host
        .create_container(r#"{"name":"bad","template":"busybox","resources":{"pids":0}}"#)
        .await
        .unwrap_err();
    assert!(
        matches!(e, CairnError::InvalidArgs(ref m) if m.contains("resources.pids")),
        "{e}"
    );

    let t0 = Instant::now();
    let mut starts = Vec::new();
    for i in 0..N {
        let spec = serde_json::json!({
            "name": format!("ct{i}"),
            "template": "busybox",
            "network": "lan",
            "addresses": [format!("{}/24", ip_of(i))],
            "gateway": "10.50.0.1",
        });
        host.create_container(&spec.to_string())
            .await
            .unwrap_or_else(|e| panic!("create ct{i}: {e}\n{}", sb.log()));
        let t = Instant::now();
        host.start_container(&format!("ct{i}"))
            .await
            .unwrap_or_else(|e| panic!("start ct{i}: {e}\n{}", sb.log()));
        starts.push(t.elapsed());
    }
    let created = t0.elapsed();
    starts.sort();
    eprintln!(
        "{N} containers created+started in {created:?}; start p50 {:?} p99 {:?}",
        percentile(&starts, 0.5),
        percentile(&starts, 0.99)
    );
    let e = host
        .create_container(r#"{"name":"ct0","template":"busybox"}"#)
        .await
        .unwrap_err();
    assert!(matches!(e, CairnError::Conflict(_)), "{e}");

    // Each pings the next one over the bridge.
    let t = Instant::now();
    let pings = join_all((0..N).map(|i| {
        let host = host.clone();
        async move {
            let argv = vec![
                "ping".into(),
                "-c1".into(),
                "-W2".into(),
                ip_of((i + 1) % N),
            ];
            (i, host.exec(&format!("ct{i}"), argv, 10).await)
        }
    }))
    .await;
    for (i, r) in pings {
        let (code, out, err) = r.unwrap_or_else(|e| panic!("exec ping in ct{i}: {e}"));
        assert_eq!(code, 0, "ct{i} ping {}: {out}{err}", ip_of((i + 1) % N));
    }
    eprintln!("{N} pings in {:?}", t.elapsed());
    let (code, out, err) = host
        .exec(
            "ct7",
            vec![
                "sh".into(),
                "-c".into(),
                "hostname; echo oops >&2; exit 7".into(),
            ],
            5,
        )
        .await
        .unwrap();
    assert_eq!((code, out.as_str(), err.as_str()), (7, "ct7\n", "oops\n"));
    let (_, out, _) = host
        .exec("ct7", vec!["ip".into(), "route".into()], 5)
        .await
        .unwrap();
    assert!(out.contains("default via 10.50.0.1"), "{out}");
    let (_, counts) = host.status().await.unwrap();
    assert_eq!(counts.get("containers"), Some(&(N as u32)), "{counts:?}");

    // kill -9 hostd: the containers keep running; the restarted hostd re-adopts them.
    let before: Vec<ContainerInfo> =
        serde_json::from_str(&host.list_containers().await.unwrap()).unwrap();
    assert!(
        before.iter().all(|c| c.state == ContainerState::Running),
        "{before:?}"
    );
    // SAFETY: kill(2) with the pid init reported.
    unsafe { libc::kill(hostd_pid as i32, libc::SIGKILL) };
    sb.wait_services(&conn, Duration::from_secs(20), |t| {
        t.iter()
            .any(|s| s.name == "hostd" && s.state == "running" && s.pid != hostd_pid)
    })
    .await;
    let host = Host1Proxy::new(&conn).await.unwrap();
    let after: Vec<ContainerInfo> = serde_json::from_str(&host.list_containers().await.unwrap())
        .unwrap_or_else(|e| panic!("list after restart: {e}\n{}", sb.log()));
    assert_eq!(after.len(), N);
    for (b, a) in before.iter().zip(&after) {
        assert_eq!((a.state, a.pid), (ContainerState::Running, b.pid), "{a:?}");
    }
    let (_, counts) = host.status().await.unwrap();
    assert_eq!(counts.get("running"), Some(&(N as u32)), "{counts:?}");
    let (code, _, _) = host
        .exec(
            "ct3",
            vec!["ping".into(), "-c1".into(), "-W2".into(), ip_of(4)],
            10,
        )
        .await
        .unwrap();
    assert_eq!(code, 0);

    // Stop (the first few gracefully, the rest with a 0 s deadline) and delete, in parallel.
    let t = Instant::now();
    let stops = join_all((0..N).map(|i| {
        let host = host.clone();
        async move {
            let timeout = if i < 5 { 10 } else { 0 };
            (i, host.stop_container(&format!("ct{i}"), timeout).await)
        }
    }))
    .await;
    for (i, r) in stops {
        r.unwrap_or_else(|e| panic!("stop ct{i}: {e}"));
    }
    eprintln!("{N} stopped in {:?}", t.elapsed());
    let e = host.exec("ct1", vec!["true".into()], 5).await.unwrap_err();
    assert!(matches!(e, CairnError::Conflict(_)), "{e}");
    let info: ContainerInfo =
        serde_json::from_str(&host.container_info("ct1").await.unwrap()).unwrap();
    assert_eq!(info.state, ContainerState::Stopped);
    for i in 0..N {
        host.delete_container(&format!("ct{i}"))
            .await
            .unwrap_or_else(|e| panic!("delete ct{i}: {e}"));
    }
    assert_eq!(host.list_containers().await.unwrap(), "[]");

    // Nothing left: mounts, links, cgroups, processes, files.
    let state = sb.state.join("hostd");
    let mounts = std::fs::read_to_string(format!("/proc/{}/mountinfo", sb.pid())).unwrap();
    assert!(
        !mounts.contains("overlay") && !mounts.contains(state.to_str().unwrap()),
        "{mounts}"
    );
    let links = sb.nsenter(&["ip", "-o", "link"]);
    assert!(
        !links.contains("veth") && links.lines().count() <= 3,
        "{links}"
    );
    let slice = std::path::Path::new("/sys/fs/cgroup/unified/cairn.slice");
    for i in 0..N {
        assert!(
            !slice.join(format!("ct-ct{i}")).exists(),
            "cgroup ct{i} left"
        );
    }
    let cmdlines: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains("--monitor") && c.contains(sb.dir.0.to_str().unwrap()))
        .collect();
    assert!(cmdlines.is_empty(), "{cmdlines:?}");
    // Delete answers once a container's directory is renamed away; its files go in the
    // background, so give that a moment before calling anything left.
    let left = || -> Vec<_> {
        std::fs::read_dir(state.join("containers"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !left().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(left().is_empty(), "{:?}", left());
    let run = sb.nsenter(&["ls", "-A", "/run/cairn/ct"]);
    assert!(run.trim().is_empty(), "{run}");
    eprintln!("whole test {:?}", t0.elapsed());
}

const APPLIED: &str = "host.toml's templates and containers applied";
const CONFIG_TEST: &str = "sandbox::host_toml_containers_are_applied_and_have_objects";

/// host.toml's `[[template]]` and `[[container]]` are applied by hostd at start: the template
/// is imported, the container created and started on `lan`; a restarted hostd changes nothing;
/// the container's org.cairn.Container1 object answers and goes with the container.
#[tokio::test(flavor = "current_thread")]
async fn host_toml_containers_are_applied_and_have_objects() {
    if !containers_possible(CONFIG_TEST) {
        return;
    }
    let bins = match bin_dir() {
        Ok(b) => b,
        Err(why) => return skip(CONFIG_TEST, &why),
    };
    let scratch = TempDir::new("hostd-sbx-cfg-tpl");
    let (tarball, digest) = busybox_tarball(&scratch.0);
    let config = testkit::sandbox_config("ct-cfg", Some("10.60.0"))
        + &format!(
            r#"
[[template]]
name = "busybox"
source = "{}"
sha256 = "{digest}"

[[template]]
name = "remote"
source = "https://images.example.net/remote.tar"
sha256 = "{digest}"

[[container]]
name = "cfg-web"
template = "busybox"
network = "lan"
addresses = ["10.60.0.5/24"]
gateway = "10.60.0.1"
hostname = "web"
"#,
            tarball.display()
        );
    let mut sb = Sandbox::start("ct-sbx-cfg", &config, &bins);
    let (conn, table) = sb.ready().await;
    let hostd_pid = table
        .iter()
        .find(|s| s.name == "hostd")
        .map(|s| s.pid)
        .unwrap();
    let host = Host1Proxy::new(&conn).await.unwrap();
    let running = wait_running(&sb, &host, "cfg-web").await;
    assert_eq!(running.addresses, vec!["10.60.0.5/24".to_string()]);
    assert_eq!(running.hostname, "web");
    let ping = vec![
        "ping".into(),
        "-c1".into(),
        "-W2".into(),
        "10.60.0.1".into(),
    ];
    let (code, out, err) = host.exec("cfg-web", ping.clone(), 10).await.unwrap();
    assert_eq!(code, 0, "ping the bridge: {out}{err}\n{}", sb.log());
    let (_, counts) = host.status().await.unwrap();
    assert_eq!(counts.get("containers"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("templates"), Some(&1), "{counts:?}");
    // The URL template is not supported yet: logged and counted, hostd serves on.
    assert_eq!(counts.get("config_failed"), Some(&1), "{counts:?}");
    assert!(sb.log().contains("not supported yet"), "{}", sb.log());

    // The container's own object.
    let path = model::dbus::container_path("cfg-web");
    assert_eq!(path, "/org/cairn/Host1/ct/cfg_web");
    let ct = Container1Proxy::builder(&conn)
        .path(path.as_str())
        .build()
        .await
        .unwrap();
    assert_eq!(ct.name().await.unwrap(), "cfg-web");
    assert_eq!(ct.state().await.unwrap(), "running");
    assert_eq!(Some(ct.pid().await.unwrap()), running.pid);
    let info: ContainerInfo = serde_json::from_str(&ct.info().await.unwrap()).unwrap();
    assert_eq!(
        (info.state, info.pid),
        (ContainerState::Running, running.pid)
    );
    // The ping went out of and came back into the container through its port: an ICMP echo
    // of 84 bytes in IP is at least that much on the link each way (ARP comes on top).
    let usage = info.usage.expect("a running container's usage");
    assert!(
        usage.net_tx_bytes >= 84 && usage.net_rx_bytes >= 84,
        "the container's traffic counters after a ping: {usage:?}"
    );

    // kill -9 hostd: the restarted one re-adopts the container, applies host.toml again and
    // changes nothing.
    // SAFETY: kill(2) with the pid init reported.
    unsafe { libc::kill(hostd_pid as i32, libc::SIGKILL) };
    sb.wait_services(&conn, Duration::from_secs(20), |t| {
        t.iter()
            .any(|s| s.name == "hostd" && s.state == "running" && s.pid != hostd_pid)
    })
    .await;
    let host = Host1Proxy::new(&conn).await.unwrap();
    // The config is applied in the background: give it time to (not) do anything.
    let deadline = Instant::now() + Duration::from_secs(5);
    while sb.log().matches(APPLIED).count() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after: Vec<ContainerInfo> =
        serde_json::from_str(&host.list_containers().await.unwrap()).unwrap();
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(
        (after[0].state, after[0].pid),
        (ContainerState::Running, running.pid),
        "{after:?}"
    );
    let (_, counts) = host.status().await.unwrap();
    assert_eq!(counts.get("templates"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("config_failed"), Some(&1), "{counts:?}");
    let (code, _, _) = host.exec("cfg-web", ping, 10).await.unwrap();
    assert_eq!(code, 0);
    // The object is back after the restart, and drives the same container.
    assert_eq!(ct.state().await.unwrap(), "running");
    assert_eq!(Some(ct.pid().await.unwrap()), running.pid);
    ct.stop(10)
        .await
        .unwrap_or_else(|e| panic!("stop: {e}\n{}", sb.log()));
    assert_eq!(ct.state().await.unwrap(), "stopped");
    assert_eq!(ct.pid().await.unwrap(), 0);

    // host.toml's container and template are not the API's to delete (netd says the same of
    // host.toml's networks): the answer says where to remove them, and nothing changes.
    let e = host.delete_container("cfg-web").await.unwrap_err();
    assert!(
        matches!(e, CairnError::Conflict(ref m) if m.contains("comes from host.toml")),
        "{e}"
    );
    let e = host.delete_template("busybox").await.unwrap_err();
    assert!(
        matches!(e, CairnError::Conflict(ref m) if m.contains("comes from host.toml")),
        "{e}"
    );
    assert_eq!(ct.state().await.unwrap(), "stopped");

    // Deleting a container the API created removes its object.
    let spec = r#"{"name":"api-web","template":"busybox"}"#;
    host.create_container(spec)
        .await
        .unwrap_or_else(|e| panic!("create: {e}\n{}", sb.log()));
    let api_path = model::dbus::container_path("api-web");
    let api_ct = Container1Proxy::builder(&conn)
        .path(api_path.as_str())
        .build()
        .await
        .unwrap();
    assert_eq!(api_ct.state().await.unwrap(), "created");
    host.delete_container("api-web").await.unwrap();
    assert!(api_ct.info().await.is_err());
    assert!(api_ct.state().await.is_err());
    let left: Vec<ContainerInfo> =
        serde_json::from_str(&host.list_containers().await.unwrap()).unwrap();
    assert_eq!(
        left.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["cfg-web"]
    );
}

/// Waits until container `name` runs (host.toml is applied in the background).
async fn wait_running(sb: &Sandbox, host: &Host1Proxy<'_>, name: &str) -> ContainerInfo {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(json) = host.container_info(name).await {
            let info: ContainerInfo = serde_json::from_str(&json).unwrap();
            if info.state == ContainerState::Running {
                return info;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{name} is not running:\n{}",
            sb.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A sandbox with one busybox container, `name`, running in it.
struct Running {
    sb: Sandbox,
    conn: zbus::Connection,
    host: Host1Proxy<'static>,
    hostd_pid: u32,
    /// Holds the template tarball until the test ends.
    _scratch: TempDir,
}

/// Starts a sandbox (tagged `tag`) and one busybox container `name` in it — on the
/// sandbox's network `lan` at `lan.10` when `lan` ("10.x.y") is given; None (with the reason
/// printed as a skip of `test`) where containers cannot run here.
async fn one_running_container(
    test: &str,
    tag: &str,
    name: &str,
    lan: Option<&str>,
) -> Option<Running> {
    if !containers_possible(test) {
        return None;
    }
    let bins = match bin_dir() {
        Ok(b) => b,
        Err(why) => {
            skip(test, &why);
            return None;
        }
    };
    let scratch = TempDir::new(&format!("hostd-sbx-{tag}-tpl"));
    let (tarball, digest) = busybox_tarball(&scratch.0);
    let mut sb = Sandbox::start(
        &format!("ct-sbx-{tag}"),
        &testkit::sandbox_config(&format!("ct-{tag}"), lan),
        &bins,
    );
    let (conn, table) = sb.ready().await;
    let hostd_pid = table
        .iter()
        .find(|s| s.name == "hostd")
        .map(|s| s.pid)
        .unwrap();
    let host = Host1Proxy::new(&conn).await.unwrap();
    host.import_template("busybox", tarball.to_str().unwrap(), &digest)
        .await
        .unwrap_or_else(|e| panic!("import: {e}\n{}", sb.log()));
    let mut spec = serde_json::json!({"name": name, "template": "busybox"});
    if let Some(lan) = lan {
        spec["network"] = "lan".into();
        spec["addresses"] = serde_json::json!([format!("{lan}.10/24")]);
    }
    host.create_container(&spec.to_string())
        .await
        .unwrap_or_else(|e| panic!("create: {e}\n{}", sb.log()));
    host.start_container(name)
        .await
        .unwrap_or_else(|e| panic!("start: {e}\n{}", sb.log()));
    Some(Running {
        sb,
        conn,
        host,
        hostd_pid,
        _scratch: scratch,
    })
}

const BIG_EXEC: &str =
    "sandbox::exec_output_over_the_cap_is_a_clear_error_and_hostd_stays_on_the_bus";

/// A command that writes 40 MiB: more than one D-Bus message may carry (32 MiB), which used to
/// cut hostd off the bus. Now it is a TooLarge error saying how much was written and what the
/// cap is, and hostd — same process, still on the bus — answers its next call.
#[tokio::test(flavor = "current_thread")]
async fn exec_output_over_the_cap_is_a_clear_error_and_hostd_stays_on_the_bus() {
    let Some(Running {
        sb,
        conn,
        host,
        hostd_pid,
        ..
    }) = one_running_container(BIG_EXEC, "big", "big", None).await
    else {
        return;
    };

    // 40 MiB on stdout, and a line on stderr once it is all written (so the command was not
    // blocked on a full pipe: it ran to its end).
    let argv = vec![
        "sh".into(),
        "-c".into(),
        "yes 0123456789abcdef | head -c 41943040; echo done >&2".into(),
    ];
    let t = Instant::now();
    let e = host.exec("big", argv, 20).await.unwrap_err();
    eprintln!("40 MiB exec answered in {:?}: {e}", t.elapsed());
    let CairnError::TooLarge(msg) = &e else {
        panic!("not TooLarge: {e}\n{}", sb.log());
    };
    assert!(msg.contains("wrote 41943045 bytes"), "{msg}");
    assert!(msg.contains("the cap is 16777216 bytes"), "{msg}");
    assert!(msg.contains("exited with 0"), "{msg}");

    // Still on the bus, the same process: its next calls answer.
    let (_, counts) = host.status().await.unwrap_or_else(|e| {
        panic!(
            "hostd does not answer after the big exec: {e}\n{}",
            sb.log()
        )
    });
    assert_eq!(counts.get("containers"), Some(&1), "{counts:?}");
    let (code, out, _) = host
        .exec("big", vec!["echo".into(), "still here".into()], 5)
        .await
        .unwrap();
    assert_eq!((code, out.as_str()), (0, "still here\n"));
    // A background child keeps the output pipes open after the command ended: the answer comes
    // when the command ends (it used to wait for the child, past the bus call's deadline).
    let bg = vec!["sh".into(), "-c".into(), "sleep 100 & echo started".into()];
    let (code, out, _) = host
        .exec("big", bg, 60)
        .await
        .unwrap_or_else(|e| panic!("exec leaving a background child: {e}\n{}", sb.log()));
    assert_eq!((code, out.as_str()), (0, "started\n"));
    // A NUL byte, which no D-Bus string may hold (a reply with one used to disconnect hostd
    // as well): it comes back as U+FFFD.
    let (code, out, _) = host
        .exec("big", vec!["printf".into(), "a\\000b".into()], 5)
        .await
        .unwrap_or_else(|e| panic!("exec printing NUL: {e}\n{}", sb.log()));
    assert_eq!((code, out.as_str()), (0, "a\u{FFFD}b"));
    // Just under the cap is answered whole.
    let (code, out, _) = host
        .exec(
            "big",
            vec!["sh".into(), "-c".into(), "yes | head -c 16777000".into()],
            20,
        )
        .await
        .unwrap_or_else(|e| panic!("16 MiB - 216 B: {e}\n{}", sb.log()));
    assert_eq!((code, out.len()), (0, 16_777_000));
    let table = sb.services(&conn).await;
    let hostd = table.iter().find(|s| s.name == "hostd").unwrap();
    assert_eq!(
        (hostd.pid, hostd.restarts, hostd.state.as_str()),
        (hostd_pid, 0, "running"),
        "{hostd:?}\n{}",
        sb.log()
    );

    // A restart waits out the init's grace period without holding hostd: an init that ignores
    // SIGTERM keeps the restart busy for its 3 s timeout, and `info` of another container
    // answers meanwhile (it used to wait for the whole restart).
    host.create_container(
        r#"{"name":"stubborn","template":"busybox",
            "command":["/bin/sh","-c","trap '' TERM; while :; do sleep 1; done"]}"#,
    )
    .await
    .unwrap_or_else(|e| panic!("create stubborn: {e}\n{}", sb.log()));
    host.start_container("stubborn").await.unwrap();
    let restart = host.restart_container("stubborn", 3);
    tokio::pin!(restart);
    let info = async {
        // Let the restart take the lock first.
        tokio::time::sleep(Duration::from_millis(300)).await;
        host.container_info("big").await
    };
    tokio::select! {
        r = &mut restart => panic!("the restart ended before info answered: {r:?}\n{}", sb.log()),
        i = info => { i.unwrap_or_else(|e| panic!("info during a restart: {e}")); }
    }
    restart
        .await
        .unwrap_or_else(|e| panic!("restart: {e}\n{}", sb.log()));
    let stubborn: serde_json::Value =
        serde_json::from_str(&host.container_info("stubborn").await.unwrap()).unwrap();
    assert_eq!(stubborn["state"], "running", "{stubborn}");
    host.stop_container("stubborn", 0).await.unwrap();
    host.delete_container("stubborn").await.unwrap();

    host.stop_container("big", 0).await.unwrap();
    host.delete_container("big").await.unwrap();
}

const FLOOD: &str = "sandbox::a_container_flooding_its_console_leaves_a_bounded_rotated_log";

/// A container writing 100 MB to its console leaves at most twice the rotation cap on the
/// host (console.log and console.log.1), never blocks on it, and ct.console's tail still ends
/// with the last line written.
#[tokio::test(flavor = "current_thread")]
async fn a_container_flooding_its_console_leaves_a_bounded_rotated_log() {
    use vmm::launcher::console::CONSOLE_LOG_CAP;
    let Some(Running {
        sb,
        conn,
        host,
        hostd_pid,
        ..
    }) = one_running_container(FLOOD, "flood", "flood", None).await
    else {
        return;
    };

    let last = "the last line of the flood";
    let argv = vec![
        "sh".into(),
        "-c".into(),
        format!("yes 0123456789 | head -c 104857600 > /dev/console; echo {last} > /dev/console"),
    ];
    let t = Instant::now();
    let (code, out, err) = host
        .exec("flood", argv, 300)
        .await
        .unwrap_or_else(|e| panic!("exec: {e}\n{}", sb.log()));
    eprintln!("100 MB to the console took {:?}", t.elapsed());
    assert_eq!(code, 0, "{out}{err}");

    // The monitor copies the pty asynchronously: the last line lands shortly after the write.
    // busybox init, whose stdin is the console, set the terminal's usual "\n" → "\r\n".
    let want = format!("{last}\r\n");
    let deadline = Instant::now() + Duration::from_secs(60);
    let tail = loop {
        let tail = host
            .console_log("flood", 1 << 20)
            .await
            .unwrap_or_else(|e| panic!("console: {e}\n{}", sb.log()));
        if tail.ends_with(&want) || Instant::now() > deadline {
            break tail;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        tail.ends_with(&want) && tail.contains("0123456789\r\n0123456789\r\n"),
        "tail ends with {:?}",
        &tail[tail.len().saturating_sub(200)..]
    );
    // The reader joins the rotated log to a short current one: a full MiB comes back.
    assert_eq!(tail.len(), 1 << 20);

    let dir = sb.state.join("hostd/containers/flood");
    let size = |name: &str| {
        std::fs::metadata(dir.join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .len()
    };
    let (current, rotated) = (size("console.log"), size("console.log.1"));
    eprintln!("console.log {current} B, console.log.1 {rotated} B");
    assert!(current <= CONSOLE_LOG_CAP && rotated <= CONSOLE_LOG_CAP);
    assert!(current + rotated <= 2 * CONSOLE_LOG_CAP);

    let (_, counts) = host
        .status()
        .await
        .unwrap_or_else(|e| panic!("hostd does not answer after the flood: {e}\n{}", sb.log()));
    assert_eq!(counts.get("containers"), Some(&1), "{counts:?}");
    let table = sb.services(&conn).await;
    let hostd = table.iter().find(|s| s.name == "hostd").unwrap();
    assert_eq!(
        (hostd.pid, hostd.restarts, hostd.state.as_str()),
        (hostd_pid, 0, "running"),
        "{hostd:?}\n{}",
        sb.log()
    );
    host.stop_container("flood", 0).await.unwrap();
    host.delete_container("flood").await.unwrap();
}

const UNSEEN: &str = "sandbox::a_container_that_died_while_hostd_was_down_leaves_no_port";

/// hostd killed, then the container (its monitor and init) killed while hostd is down: netd
/// still has its port record, though the veth died with the container's namespace. The list
/// of ports answers, the restarted hostd's sweep (or netd's look at the list) drops the port,
/// the container starts again, and its delete leaves nothing.
#[tokio::test(flavor = "current_thread")]
async fn a_container_that_died_while_hostd_was_down_leaves_no_port() {
    let Some(Running {
        sb,
        conn,
        host,
        hostd_pid,
        ..
    }) = one_running_container(UNSEEN, "unseen", "un", Some("10.62.0")).await
    else {
        return;
    };
    let ports = || async {
        testkit::sandbox::ports(&conn)
            .await
            .into_iter()
            .filter(|p| p.owner == "ct:un")
            .map(|p| p.name)
            .collect::<Vec<String>>()
    };
    let port = ports().await;
    assert_eq!(port.len(), 1, "{port:?}");
    let init = wait_running(&sb, &host, "un")
        .await
        .pid
        .expect("a running container has a pid");
    let monitor: u32 = std::fs::read_to_string(format!("/proc/{init}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("PPid:").map(|v| v.trim().parse().unwrap()))
        .expect("the init's parent");
    for pid in [hostd_pid, monitor, init] {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    }
    sb.wait_services(&conn, Duration::from_secs(15), |t| {
        t.iter()
            .any(|s| s.name == "hostd" && s.state == "running" && s.pid != hostd_pid)
    })
    .await;
    let start = Instant::now();
    while !ports().await.is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the dead container's port is still listed:\n{}",
            sb.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let host = Host1Proxy::new(&conn).await.unwrap();
    host.start_container("un")
        .await
        .unwrap_or_else(|e| panic!("start after the unseen death: {e}\n{}", sb.log()));
    wait_running(&sb, &host, "un").await;
    assert_eq!(ports().await.len(), 1);
    host.stop_container("un", 1).await.unwrap();
    host.delete_container("un")
        .await
        .unwrap_or_else(|e| panic!("delete: {e}\n{}", sb.log()));
    let start = Instant::now();
    while !ports().await.is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "delete left the port"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let links = sb.nsenter(&["ip", "-o", "link", "show"]);
    assert!(
        !links.contains(&port[0]),
        "the port's link was left behind: {links}"
    );
}

const KEPT_LIMITS: &str = "sandbox::a_restarted_container_keeps_its_port_limits_until_deleted";

/// net.setLimits on a container's port (by its owner, `ct:NAME`) outlives the port: hostd
/// detaches it at every stop and attaches a new one at start, which used to come back
/// unlimited. Deleting the container forgets them: a new one of that name is unlimited.
#[tokio::test(flavor = "current_thread")]
async fn a_restarted_container_keeps_its_port_limits_until_deleted() {
    let Some(Running { sb, conn, host, .. }) =
        one_running_container(KEPT_LIMITS, "kept", "kl", Some("10.63.0")).await
    else {
        return;
    };
    let net = Network1Proxy::new(&conn).await.unwrap();
    net.set_limits("ct:kl", r#"{"ingress":{"rate_bps":10000000}}"#)
        .await
        .unwrap_or_else(|e| panic!("SetLimits by owner: {e}\n{}", sb.log()));
    // The port and what tc has on its link: one htb class at the rate.
    let port = || async {
        let mine: Vec<PortInfo> = testkit::sandbox::ports(&conn)
            .await
            .into_iter()
            .filter(|p| p.owner == "ct:kl")
            .collect();
        assert_eq!(mine.len(), 1, "{mine:?}");
        let p = mine.into_iter().next().unwrap();
        let tc = sb.nsenter(&["tc", "class", "show", "dev", &p.name]);
        (p, tc)
    };
    let (before, tc) = port().await;
    assert!(tc.contains("rate 10Mbit"), "{tc}");
    host.stop_container("kl", 1).await.unwrap();
    host.start_container("kl")
        .await
        .unwrap_or_else(|e| panic!("start again: {e}\n{}", sb.log()));
    wait_running(&sb, &host, "kl").await;
    let (after, tc) = port().await;
    assert_ne!(after.ifindex, before.ifindex, "a new port for the new run");
    assert_eq!(
        after.limits.and_then(|l| l.ingress).map(|r| r.rate_bps),
        Some(10_000_000),
        "{after:?}"
    );
    assert!(tc.contains("rate 10Mbit"), "the new port is shaped: {tc}");

    host.stop_container("kl", 1).await.unwrap();
    host.delete_container("kl")
        .await
        .unwrap_or_else(|e| panic!("delete: {e}\n{}", sb.log()));
    let spec = serde_json::json!({
        "name": "kl", "template": "busybox", "network": "lan", "addresses": ["10.63.0.10/24"],
    });
    host.create_container(&spec.to_string())
        .await
        .unwrap_or_else(|e| panic!("create again: {e}\n{}", sb.log()));
    host.start_container("kl").await.unwrap();
    wait_running(&sb, &host, "kl").await;
    let (fresh, tc) = port().await;
    assert_eq!(
        fresh.limits, None,
        "a new container of the same name: {fresh:?}"
    );
    assert!(!tc.contains("rate"), "{tc}");
    host.stop_container("kl", 1).await.unwrap();
    host.delete_container("kl").await.unwrap();

    // Limits netd kept for an owner hostd does not know (as when a delete could not reach
    // netd) are dropped when a guest of that name is created.
    let tap = r#"{"network":"lan","owner":"ct:kl","kind":"tap","mac":"52:54:00:00:00:63"}"#;
    net.attach_port(tap).await.unwrap();
    net.set_limits("ct:kl", r#"{"ingress":{"rate_bps":10000000}}"#)
        .await
        .unwrap();
    net.detach_port("ct:kl").await.unwrap();
    host.create_container(&spec.to_string()).await.unwrap();
    host.start_container("kl").await.unwrap();
    wait_running(&sb, &host, "kl").await;
    let (fresh, _) = port().await;
    assert_eq!(fresh.limits, None, "stale limits were applied: {fresh:?}");
    host.stop_container("kl", 1).await.unwrap();
    host.delete_container("kl").await.unwrap();
}

const DISK: &str = "sandbox::a_container_on_a_pool_cannot_write_past_its_disk";

/// A container whose writable layer is a 64 MiB volume of a dir pool: a write of 100 MiB
/// inside fails with ENOSPC at the quota, the volume is held while the container exists, and
/// deleting the container deletes its volume and leaves no mount behind.
#[tokio::test(flavor = "current_thread")]
async fn a_container_on_a_pool_cannot_write_past_its_disk() {
    let Some(Running { sb, conn, host, .. }) =
        one_running_container(DISK, "disk", "plain", None).await
    else {
        return;
    };
    let storage = Storage1Proxy::new(&conn).await.unwrap();
    let scratch = TempDir::new("hostd-sbx-disk-pool");
    let pool = serde_json::json!({"name": "p", "kind": "dir", "path": scratch.0.join("pool")});
    storage.create_pool(&pool.to_string()).await.unwrap();
    let bad =
        serde_json::json!({"name": "q", "template": "busybox", "pool": "nopool", "disk": 64 << 20});
    let e = host.create_container(&bad.to_string()).await.unwrap_err();
    assert!(e.to_string().contains("no pool \"nopool\""), "{e}");
    let spec =
        serde_json::json!({"name": "q", "template": "busybox", "pool": "p", "disk": 64 << 20});
    host.create_container(&spec.to_string())
        .await
        .unwrap_or_else(|e| panic!("create: {e}\n{}", sb.log()));
    let volume: VolumeInfo =
        serde_json::from_str(&storage.volume_info("p/ct-q").await.unwrap()).unwrap();
    assert_eq!(
        (volume.size_bytes, volume.used_by.clone()),
        (64 << 20, vec!["ct:q".to_string()])
    );
    host.start_container("q")
        .await
        .unwrap_or_else(|e| panic!("start: {e}\n{}", sb.log()));
    wait_running(&sb, &host, "q").await;

    let fill = vec![
        "sh".into(),
        "-c".into(),
        "dd if=/dev/zero of=/fill bs=1M count=100 2>&1; wc -c < /fill".into(),
    ];
    let (_, out, _) = host.exec("q", fill, 60).await.unwrap();
    assert!(out.contains("No space left on device"), "{out}");
    let written: u64 = out
        .lines()
        .last()
        .unwrap_or("")
        .trim()
        .parse()
        .unwrap_or(u64::MAX);
    assert!(
        written < 64 << 20,
        "wrote {written} bytes into a 64 MiB layer:\n{out}"
    );
    // The host is not the one that filled up: the volume holds at most its size.
    let volume: VolumeInfo =
        serde_json::from_str(&storage.volume_info("p/ct-q").await.unwrap()).unwrap();
    assert!(volume.allocated_bytes <= 64 << 20, "{volume:?}");
    let e = storage.delete_volume("p/ct-q").await.unwrap_err();
    assert!(
        matches!(e, CairnError::Conflict(ref m) if m.contains("in use by ct:q")),
        "{e}"
    );

    host.stop_container("q", 5).await.unwrap();
    host.delete_container("q").await.unwrap();
    let e = storage.volume_info("p/ct-q").await.unwrap_err();
    assert!(matches!(e, CairnError::NotFound(_)), "{e}");
    let mounts =
        std::fs::read_to_string(format!("/proc/{}/mountinfo", sb.pid())).unwrap_or_default();
    assert!(
        !mounts.contains("/containers/q/"),
        "the layer's mount is left: {mounts}"
    );
}

const BACKUP: &str = "sandbox::a_live_backup_of_a_writing_container_restores_clean";

/// A live backup of a container's volume while the container keeps writing: it is frozen only
/// for the snapshot (its layer's filesystem too, so the copy is clean), the backup restores
/// into a new volume whose ext4 checks clean (`e2fsck -n`) and holds what was written before
/// the backup, and a damaged backup is refused.
#[tokio::test(flavor = "current_thread")]
async fn a_live_backup_of_a_writing_container_restores_clean() {
    let Some(Running {
        sb,
        conn,
        host,
        hostd_pid,
        ..
    }) = one_running_container(BACKUP, "backup", "plain", None).await
    else {
        return;
    };
    let storage = Storage1Proxy::new(&conn).await.unwrap();
    let scratch = TempDir::new("hostd-sbx-backup-pools");
    for (name, dir) in [("p", "pool"), ("b", "backups")] {
        let pool = serde_json::json!({"name": name, "kind": "dir", "path": scratch.0.join(dir)});
        storage.create_pool(&pool.to_string()).await.unwrap();
    }
    let spec =
        serde_json::json!({"name": "w", "template": "busybox", "pool": "p", "disk": 64 << 20});
    host.create_container(&spec.to_string())
        .await
        .unwrap_or_else(|e| panic!("create: {e}\n{}", sb.log()));
    host.start_container("w").await.unwrap();
    wait_running(&sb, &host, "w").await;
    let sh = |script: &str| vec!["sh".to_string(), "-c".to_string(), script.to_string()];
    let (code, _, err) = host
        .exec(
            "w",
            sh("echo written before the backup > /before && sync"),
            10,
        )
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    // A writer that does not stop: the backup happens under it.
    let (code, _, err) = host
        .exec(
            "w",
            sh("(while :; do dd if=/dev/urandom of=/churn bs=64k count=32 2>/dev/null; done) >/dev/null 2>&1 &"),
            10,
        )
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let backup: BackupInfo = serde_json::from_str(
        &storage
            .backup_volume("p/ct-w", "b")
            .await
            .unwrap_or_else(|e| panic!("backup: {e}\n{}", sb.log())),
    )
    .unwrap();
    eprintln!(
        "live backup of a 64 MiB layer: guests held still {:?} for {} ms; {} bytes stored of {}",
        backup.quiesced, backup.quiesced_ms, backup.allocated_bytes, backup.size_bytes
    );
    assert_eq!(backup.quiesced, ["ct:w"]);
    assert_eq!(backup.size_bytes, 64 << 20);
    assert!(
        backup
            .backup
            .starts_with(&scratch.0.join("backups/backups/").display().to_string())
    );
    // It goes on: not frozen any more.
    let (code, out, _) = host
        .exec("w", sh("echo after > /after && cat /after"), 10)
        .await
        .unwrap();
    assert_eq!((code, out.as_str()), (0, "after\n"));

    let restored: VolumeInfo = serde_json::from_str(
        &storage
            .restore_volume(&backup.backup, "b/restored")
            .await
            .unwrap_or_else(|e| panic!("restore: {e}\n{}", sb.log())),
    )
    .unwrap();
    let fsck = std::process::Command::new("e2fsck")
        .args(["-f", "-n", &restored.path])
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "the restored layer does not check clean:\n{}{}",
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
    let cat = std::process::Command::new("debugfs")
        .args(["-R", "cat /upper/before", &restored.path])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&cat.stdout),
        "written before the backup\n"
    );

    // One flipped byte in the backup: refused, nothing made.
    {
        use std::os::unix::fs::FileExt as _;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&backup.backup)
            .unwrap();
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, 1024).unwrap();
        f.write_all_at(&[b[0] ^ 1], 1024).unwrap();
    }
    let e = storage
        .restore_volume(&backup.backup, "b/again")
        .await
        .unwrap_err();
    assert!(
        matches!(e, CairnError::InvalidArgs(ref m) if m.contains("is damaged")),
        "{e}"
    );
    assert!(matches!(
        storage.volume_info("b/again").await,
        Err(CairnError::NotFound(_))
    ));
    // Only backups are restored, not any file of the host.
    let e = storage
        .restore_volume("/etc/passwd", "b/again")
        .await
        .unwrap_err();
    assert!(
        matches!(e, CairnError::InvalidArgs(ref m) if m.contains("is not a backup")),
        "{e}"
    );

    // A hostd killed while a snapshot holds the container still: the next hostd lets it go.
    assert!(host.quiesce("ct:w", true).await.unwrap());
    let info: ContainerInfo =
        serde_json::from_str(&host.container_info("w").await.unwrap()).unwrap();
    assert_eq!(info.state, ContainerState::Paused);
    // SAFETY: a pid from the sandbox's own table; kill(2) has no memory effects here.
    unsafe { libc::kill(hostd_pid as i32, libc::SIGKILL) };
    sb.wait_services(&conn, Duration::from_secs(20), |t| {
        t.iter()
            .any(|s| s.name == "hostd" && s.state == "running" && s.pid != hostd_pid)
    })
    .await;
    let host = Host1Proxy::new(&conn).await.unwrap();
    let info = wait_running(&sb, &host, "w").await;
    assert_eq!(info.state, ContainerState::Running);
    let (code, out, _) = host
        .exec("w", sh("echo again > /again && cat /again"), 10)
        .await
        .unwrap();
    assert_eq!(
        (code, out.as_str()),
        (0, "again\n"),
        "the layer is still frozen"
    );

    // Held while its pool is full (stord's watch): paused at once, let go after; a container
    // its user paused is neither held nor let go.
    let state = |host: Host1Proxy<'static>| async move {
        let info: ContainerInfo =
            serde_json::from_str(&host.container_info("w").await.unwrap()).unwrap();
        info.state
    };
    assert!(host.hold("ct:w", true).await.unwrap());
    assert_eq!(state(host.clone()).await, ContainerState::Paused);
    assert!(!host.hold("ct:w", true).await.unwrap(), "held twice");
    assert!(host.hold("ct:w", false).await.unwrap());
    assert_eq!(state(host.clone()).await, ContainerState::Running);
    host.pause_container("w").await.unwrap();
    assert!(!host.hold("ct:w", true).await.unwrap());
    assert!(!host.hold("ct:w", false).await.unwrap());
    assert_eq!(
        state(host.clone()).await,
        ContainerState::Paused,
        "the user's pause kept"
    );
    host.resume_container("w").await.unwrap();
    assert!(matches!(
        host.hold("w", true).await,
        Err(CairnError::InvalidArgs(_))
    ));

    host.stop_container("w", 5).await.unwrap();
    host.delete_container("w").await.unwrap();
}
