//! Sandbox checks: the real init supervising the real daemons on a private bus, in fresh
//! namespaces on this machine's kernel.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use model::dbus::{Host1Proxy, Init1Proxy, Network1Proxy, Storage1Proxy};
use testkit::TempDir;
use testkit::sandbox::{
    Sandbox, kill, minimal_config, sandbox_possible, service, wait_exit, wait_for,
};

/// init and the daemons; their absence after `cargo build --workspace --bins` is a failure
/// here, not a skip, since this crate's whole point is running them.
fn bin_dir() -> PathBuf {
    testkit::sandbox::bin_dir().unwrap_or_else(|why| panic!("{why}"))
}

const UP: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "current_thread")]
async fn all_daemons_come_up_on_a_private_bus() {
    if !sandbox_possible("sandbox::all_daemons_come_up_on_a_private_bus") {
        return;
    }
    let mut sb = Sandbox::start("up", &minimal_config(), &bin_dir());
    let conn = sb.connect(UP).await;
    let table = sb.wait_all(&conn, "running", UP).await;
    let names: Vec<&str> = table.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["netd", "stord", "hostd", "apid"]);
    for s in &table {
        assert!(s.pid > 0, "{s:?}");
        assert_eq!(s.restarts, 0, "{s:?}");
    }
    // Every daemon answers init's liveness Ping: after more than the silence that counts as
    // stuck (5 s), none has been restarted.
    tokio::time::sleep(Duration::from_millis(6000)).await;
    let table = wait_for(&conn, UP, |_| true).await.unwrap();
    for s in &table {
        assert_eq!(
            (s.state.as_str(), s.restarts, s.last_error.as_str()),
            ("running", 0, ""),
            "{s:?}\n{}",
            sb.log()
        );
    }

    let version = model::VERSION.to_string();
    let (v, counts) = Host1Proxy::new(&conn)
        .await
        .unwrap()
        .status()
        .await
        .unwrap();
    assert_eq!(v, version);
    assert!(counts.contains_key("containers"), "{counts:?}");
    let (v, _) = Network1Proxy::new(&conn)
        .await
        .unwrap()
        .status()
        .await
        .unwrap();
    assert_eq!(v, version);
    let (v, counts) = Storage1Proxy::new(&conn)
        .await
        .unwrap()
        .status()
        .await
        .unwrap();
    assert_eq!(v, version);
    assert!(counts.contains_key("pools"), "{counts:?}");

    let (_uptime, kernel) = Init1Proxy::new(&conn)
        .await
        .unwrap()
        .system_info()
        .await
        .unwrap();
    assert!(!kernel.is_empty());

    // The sandbox has its own UTS namespace: the daemons see the configured hostname, the dev
    // machine keeps its own.
    let init_pid = sb.child.id();
    let out = std::process::Command::new("nsenter")
        .arg(format!("--uts=/proc/{init_pid}/ns/uts"))
        .arg("hostname")
        .output()
        .expect("nsenter hostname");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "sandbox-host");

    assert!(sb.stop().is_some_and(|s| s.success()), "{}", sb.log());
}

#[tokio::test(flavor = "current_thread")]
async fn a_killed_daemon_is_back_on_the_bus_within_a_second() {
    if !sandbox_possible("sandbox::a_killed_daemon_is_back_on_the_bus_within_a_second") {
        return;
    }
    let mut sb = Sandbox::start("kill", &minimal_config(), &bin_dir());
    let conn = sb.connect(UP).await;
    let before = sb.wait_all(&conn, "running", UP).await;
    let old = service(&before, "hostd").clone();

    let dbus = zbus::fdo::DBusProxy::new(&conn).await.unwrap();
    kill(old.pid, 9);
    let killed = Instant::now();
    // Back on the bus: a new process owns org.cairn.Host1 and answers Status.
    let host = Host1Proxy::new(&conn).await.unwrap();
    let back = loop {
        let owned = dbus
            .name_has_owner(model::dbus::HOST_NAME.try_into().unwrap())
            .await
            .unwrap_or(false);
        if owned && host.status().await.is_ok() {
            let table = wait_for(&conn, UP, |_| true).await.unwrap();
            let now = service(&table, "hostd");
            if now.pid != old.pid && now.pid != 0 {
                break killed.elapsed();
            }
        }
        assert!(
            killed.elapsed() < UP,
            "hostd never came back:\n{}",
            sb.log()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    eprintln!("hostd back on the bus {back:?} after kill -9");
    // The issue's requirement: back within 1 s (back-off 100 ms + start + bus name).
    assert!(back < Duration::from_secs(1), "took {back:?}");

    let after = wait_for(&conn, UP, |t| service(t, "hostd").state == "running")
        .await
        .unwrap();
    assert_eq!(service(&after, "hostd").restarts, old.restarts + 1);
    for other in ["netd", "stord", "apid"] {
        assert_eq!(
            service(&after, other).restarts,
            0,
            "{other} was restarted too"
        );
    }
    sb.stop();
}

#[tokio::test(flavor = "current_thread")]
async fn restart_service_and_poweroff_over_init1() {
    if !sandbox_possible("sandbox::restart_service_and_poweroff_over_init1") {
        return;
    }
    let mut sb = Sandbox::start("ctl", &minimal_config(), &bin_dir());
    let conn = sb.connect(UP).await;
    let before = sb.wait_all(&conn, "running", UP).await;
    let init = Init1Proxy::new(&conn).await.unwrap();

    init.restart_service("netd").await.unwrap();
    let after = wait_for(&conn, UP, |t| {
        let n = service(t, "netd");
        n.state == "running" && n.restarts == 1
    })
    .await
    .unwrap_or_else(|t| panic!("netd not restarted: {t:?}\n{}", sb.log()));
    assert_ne!(service(&after, "netd").pid, service(&before, "netd").pid);

    let err = init.restart_service("nosuchd").await.unwrap_err();
    assert!(err.to_string().contains("nosuchd"), "{err}");

    let pids: Vec<u32> = after.iter().map(|s| s.pid).collect();
    init.poweroff().await.unwrap();
    let status = wait_exit(&mut sb.child, Duration::from_secs(20))
        .unwrap_or_else(|| panic!("init did not stop after Poweroff:\n{}", sb.log()));
    assert!(status.success(), "{status}\n{}", sb.log());
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "daemon {pid} outlived the poweroff"
        );
    }
    let log = sb.log();
    assert!(log.contains("stopping services"), "{log}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_daemon_that_keeps_crashing_is_marked_failed() {
    if !sandbox_possible("sandbox::a_daemon_that_keeps_crashing_is_marked_failed") {
        return;
    }
    // A bindir where hostd exits at once; the others are the real daemons.
    let bins = TempDir::new("init-crashbin");
    let real = bin_dir();
    for d in ["init", "netd", "stord", "apid"] {
        std::os::unix::fs::symlink(real.join(d), bins.0.join(d)).unwrap();
    }
    let crasher = bins.0.join("hostd");
    std::fs::write(
        &crasher,
        "#!/bin/sh\necho 'hostd: simulated crash' >&2\nexit 3\n",
    )
    .unwrap();
    std::fs::set_permissions(
        &crasher,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();

    let mut sb = Sandbox::start("crash", &minimal_config(), &bins.0);
    let conn = sb.connect(UP).await;
    let table = wait_for(&conn, UP, |t| {
        service(t, "hostd").state == "failed" && service(t, "apid").state == "running"
    })
    .await
    .unwrap_or_else(|t| panic!("hostd not failed: {t:?}\n{}", sb.log()));
    let hostd = service(&table, "hostd");
    assert_eq!(hostd.pid, 0);
    // The first start plus one restart per tolerated fast crash.
    assert_eq!(hostd.restarts, 5, "{hostd:?}");
    // Boot went on past the failed service.
    assert_eq!(service(&table, "apid").state, "running");
    sb.stop();
}

#[test]
fn a_bad_config_starts_nothing_and_reports_every_error() {
    if !sandbox_possible("sandbox::a_bad_config_starts_nothing_and_reports_every_error") {
        return;
    }
    let bad = r#"[host]
hostnam = "x"

[host.management]
interface = "eth0"
dhcp = true

[[network]]
name = "lan"
kind = "bridged"
vlan = 4095
"#;
    let mut sb = Sandbox::start("bad", bad, &bin_dir());
    let status = wait_exit(&mut sb.child, Duration::from_secs(10)).expect("init exits");
    assert!(!status.success());
    let log = sb.log();
    assert!(log.contains("host.toml:2:1: "), "{log}");
    assert!(log.contains("host.toml:11:8: "), "{log}");
    assert!(log.contains("nothing was started"), "{log}");
    // Nothing started: no bus, no daemon logs.
    assert!(!sb.state.join("bus").exists(), "the bus was started");
    assert!(!sb.state.join("log").exists(), "a daemon was started");
}

/// The whole path without QEMU: Python's xmlrpc.client → apid over HTTPS → D-Bus → init and
/// the daemons, from inside the sandbox's network namespace.
#[tokio::test(flavor = "current_thread")]
async fn python_xmlrpc_client_reads_host_info_through_apid() {
    if !sandbox_possible("sandbox::python_xmlrpc_client_reads_host_info_through_apid") {
        return;
    }
    let mut sb = Sandbox::start("api", &minimal_config(), &bin_dir());
    let conn = sb.connect(UP).await;
    sb.wait_all(&conn, "running", UP).await;

    // netd applied the static management address from [host.management].
    let (iface, addr, source) = Network1Proxy::new(&conn)
        .await
        .unwrap()
        .management_address()
        .await
        .unwrap();
    assert_eq!(
        (iface.as_str(), addr.as_str(), source.as_str()),
        ("lo", "192.0.2.10/24", "static")
    );

    let script = r#"
import ssl, sys, xmlrpc.client
ctx = ssl._create_unverified_context()
api = xmlrpc.client.ServerProxy("https://api:secret@127.0.0.1:8443/RPC2", context=ctx)
info = api.host.info()
assert info["hostname"] == "sandbox-host", info
states = {s["name"]: s["state"] for s in info["services"]}
assert states == {"netd": "running", "stord": "running", "hostd": "running", "apid": "running"}, states
assert info["daemons"]["netd"]["version"] == info["version"], info["daemons"]
bad = xmlrpc.client.ServerProxy("https://api:wrong@127.0.0.1:8443/RPC2", context=ctx)
try:
    bad.host.info()
    sys.exit("a wrong token was accepted")
except xmlrpc.client.ProtocolError as e:
    assert e.errcode == 401, e.errcode
print("ok", info["kernel"])
"#;
    sb.python(script, &[]);
    sb.stop();
}

/// Orphans of the daemons come to init (a child subreaper in a sandbox, PID 1 in the
/// appliance) and are reaped: none stays a zombie.
#[tokio::test(flavor = "current_thread")]
async fn orphans_of_a_daemon_are_reaped() {
    if !sandbox_possible("sandbox::orphans_of_a_daemon_are_reaped") {
        return;
    }
    // hostd starts three short-lived grandchildren whose parent exits at once (so they are
    // re-parented to init), then becomes the real hostd.
    let bins = TempDir::new("init-orphanbin");
    let real = bin_dir();
    for d in ["init", "netd", "stord", "apid"] {
        std::os::unix::fs::symlink(real.join(d), bins.0.join(d)).unwrap();
    }
    let wrapper = bins.0.join("hostd");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nfor i in 1 2 3; do (sleep 0.2 &) ; done\nexec {} \"$@\"\n",
            real.join("hostd").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();

    let mut sb = Sandbox::start("orphan", &minimal_config(), &bins.0);
    let conn = sb.connect(UP).await;
    sb.wait_all(&conn, "running", UP).await;
    let init_pid = sb.child.id();
    // The orphans are re-parented to init while they run...
    let mut seen = 0;
    for _ in 0..50 {
        seen = seen.max(children_of(init_pid, |comm, _| comm == "sleep").len());
        if seen > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(seen > 0, "no orphan was re-parented to init");
    // ...and once they exit, none is left as a zombie.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let zombies = children_of(init_pid, |_, state| state == "Z");
    assert!(zombies.is_empty(), "zombies under init: {zombies:?}");
    sb.stop();
}

/// Pids whose parent is `parent` and whose (comm, state) match.
fn children_of(parent: u32, pick: impl Fn(&str, &str) -> bool) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...; comm may hold spaces, so split at the last ')'.
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let comm = head.split_once('(').map(|(_, c)| c).unwrap_or("");
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(parent)
            && pick(comm, fields.first().copied().unwrap_or(""))
        {
            out.push(pid);
        }
    }
    out
}

// ---- liveness: a daemon alive but unreachable on the bus is restarted --------------------------

/// Waits for `name` to be restarted (a new pid) after `since`; returns how long that took and
/// the table, then waits for the new process to answer on the bus and reports that too.
async fn wait_restarted(
    sb: &Sandbox,
    conn: &zbus::Connection,
    name: &str,
    old_pid: u32,
    since: Instant,
) -> (Duration, Vec<model::dbus::ServiceInfo>) {
    let table = wait_for(conn, UP, |t| {
        let s = service(t, name);
        s.pid != old_pid && s.pid != 0
    })
    .await
    .unwrap_or_else(|t| panic!("{name} was not restarted: {t:?}\n{}", sb.log()));
    let restarted = since.elapsed();
    let running = wait_for(conn, UP, |t| service(t, name).state == "running")
        .await
        .unwrap_or_else(|t| panic!("{name} not running again: {t:?}\n{}", sb.log()));
    eprintln!(
        "{name}: restarted (new pid) {restarted:?} after it went off the bus; running (owns its \
         name) again {:?} after; last_error {:?}",
        since.elapsed(),
        service(&running, name).last_error
    );
    (restarted, table)
}

/// SIGSTOP: the process lives and keeps its bus name, but answers nothing — the "stuck daemon"
/// case that waitpid never reports.
#[tokio::test(flavor = "current_thread")]
async fn a_daemon_that_stops_answering_is_restarted_after_its_silence() {
    if !sandbox_possible("sandbox::a_daemon_that_stops_answering_is_restarted_after_its_silence") {
        return;
    }
    let mut sb = Sandbox::start("stuck", &minimal_config(), &bin_dir());
    let conn = sb.connect(UP).await;
    let before = sb.wait_all(&conn, "running", UP).await;
    let old = service(&before, "hostd").clone();
    assert_eq!(old.last_error, "", "{old:?}");

    kill(old.pid, libc::SIGSTOP);
    let stopped = Instant::now();
    let (restarted, _) = wait_restarted(&sb, &conn, "hostd", old.pid, stopped).await;
    let after = wait_for(&conn, UP, |t| service(t, "hostd").state == "running")
        .await
        .unwrap();
    let hostd = service(&after, "hostd");
    assert!(
        hostd
            .last_error
            .starts_with("answered no Ping on org.cairn.Host1 for "),
        "{hostd:?}"
    );
    assert_eq!(hostd.restarts, 1, "{hostd:?}");
    // The stopped process was killed (SIGTERM stays pending on a stopped one) and reaped.
    assert!(
        !std::path::Path::new(&format!("/proc/{}", old.pid)).exists(),
        "the stopped hostd {} is still there",
        old.pid
    );
    Host1Proxy::new(&conn)
        .await
        .unwrap()
        .status()
        .await
        .unwrap_or_else(|e| panic!("the new hostd does not answer: {e}\n{}", sb.log()));
    for other in ["netd", "stord", "apid"] {
        assert_eq!(
            service(&after, other).restarts,
            0,
            "{other}: {after:?}\n{}",
            sb.log()
        );
    }
    // Stuck is five seconds without an answer to init's Pings (SILENCE), then the restart.
    assert!(restarted < Duration::from_secs(7), "took {restarted:?}");
    sb.stop();
}

/// Cuts a daemon's bus connection from outside while its process lives on, as a D-Bus protocol
/// error or a dropped socket does: the daemon's socket to the bus is taken with pidfd_getfd(2)
/// and shut down. Returns how many sockets were cut.
fn cut_bus_connection(pid: u32, bus_socket: &std::path::Path) -> usize {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: pidfd_open(2) on a pid of ours; the fd is closed below.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    assert!(
        pidfd >= 0,
        "pidfd_open({pid}): {}",
        std::io::Error::last_os_error()
    );
    let want = bus_socket.as_os_str().as_bytes();
    let mut cut = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"));
        let Ok(target) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if !is_socket {
            continue;
        }
        // SAFETY: pidfd_getfd(2) duplicates the daemon's fd into this process; closed below.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd, target, 0) } as i32;
        if fd < 0 {
            continue;
        }
        // SAFETY: a zeroed sockaddr_un is valid; getpeername writes at most `len` bytes.
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
        // SAFETY: fd is ours, addr and len are valid for writes.
        let ok =
            unsafe { libc::getpeername(fd, (&raw mut addr).cast::<libc::sockaddr>(), &mut len) }
                == 0;
        let path: Vec<u8> = addr
            .sun_path
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        if ok && addr.sun_family == libc::AF_UNIX as libc::sa_family_t && path == want {
            // SAFETY: shutting down the shared socket is the point: the daemon's fd refers to
            // the same socket, so its bus connection ends while its process goes on.
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
            cut += 1;
        }
        // SAFETY: closing our duplicate only.
        unsafe { libc::close(fd) };
    }
    // SAFETY: our pidfd.
    unsafe { libc::close(pidfd) };
    cut
}

#[tokio::test(flavor = "current_thread")]
async fn a_daemon_that_loses_its_bus_connection_is_restarted_within_two_seconds() {
    if !sandbox_possible(
        "sandbox::a_daemon_that_loses_its_bus_connection_is_restarted_within_two_seconds",
    ) {
        return;
    }
    let mut sb = Sandbox::start("offbus", &minimal_config(), &bin_dir());
    let conn = sb.connect(UP).await;
    let before = sb.wait_all(&conn, "running", UP).await;
    let old = service(&before, "apid").clone();

    let cut = cut_bus_connection(old.pid, &sb.state.join("bus/bus.sock"));
    let off = Instant::now();
    // apid has two: the one that serves requests and the one that follows the daemons.
    assert_eq!(cut, 2, "apid's bus connections not found\n{}", sb.log());
    let (restarted, _) = wait_restarted(&sb, &conn, "apid", old.pid, off).await;
    let after = wait_for(&conn, UP, |t| service(t, "apid").state == "running")
        .await
        .unwrap();
    let apid = service(&after, "apid");
    assert_eq!(
        apid.last_error, "lost its bus name org.cairn.Api1",
        "{apid:?}"
    );
    assert_eq!(apid.restarts, 1, "{apid:?}");
    for other in ["netd", "stord", "hostd"] {
        assert_eq!(
            service(&after, other).restarts,
            0,
            "{other}: {after:?}\n{}",
            sb.log()
        );
    }
    assert!(restarted < Duration::from_secs(2), "took {restarted:?}");
    sb.stop();
}

/// A `failed` service (crashed on every start) comes back through the API once its cause is
/// gone: host.restartService through apid (Python's xmlrpc.client) → Init1.RestartService.
#[tokio::test(flavor = "current_thread")]
async fn a_failed_service_is_revived_with_host_restart_service() {
    if !sandbox_possible("sandbox::a_failed_service_is_revived_with_host_restart_service") {
        return;
    }
    // hostd crashes at once while the flag file exists, and is the real hostd after that.
    let bins = TempDir::new("init-revivebin");
    let real = bin_dir();
    for d in ["init", "netd", "stord", "apid"] {
        std::os::unix::fs::symlink(real.join(d), bins.0.join(d)).unwrap();
    }
    let flag = bins.0.join("crash");
    std::fs::write(&flag, "").unwrap();
    let wrapper = bins.0.join("hostd");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n[ -e {} ] && {{ echo 'hostd: simulated crash' >&2; exit 3; }}\nexec {} \"$@\"\n",
            flag.display(),
            real.join("hostd").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();

    let mut sb = Sandbox::start("revive", &minimal_config(), &bins.0);
    let conn = sb.connect(UP).await;
    let failed = wait_for(&conn, UP, |t| {
        service(t, "hostd").state == "failed" && service(t, "apid").state == "running"
    })
    .await
    .unwrap_or_else(|t| panic!("hostd not failed: {t:?}\n{}", sb.log()));
    let hostd = service(&failed, "hostd");
    assert_eq!(hostd.last_error, "exited with status 3", "{hostd:?}");
    assert_eq!(hostd.restarts, 5, "{hostd:?}");

    std::fs::remove_file(&flag).unwrap();
    let script = r#"
import ssl, sys, time, xmlrpc.client
ctx = ssl._create_unverified_context()
api = xmlrpc.client.ServerProxy("https://api:secret@127.0.0.1:8443/RPC2", context=ctx)
hostd = {s["name"]: s for s in api.host.services()}["hostd"]
assert hostd["state"] == "failed" and hostd["last_error"] == "exited with status 3", hostd
try:
    api.host.restartService("nosuchd")
    sys.exit("an unknown service was accepted")
except xmlrpc.client.Fault as f:
    assert f.faultCode == 104 and "nosuchd" in f.faultString, (f.faultCode, f.faultString)
assert api.host.restartService("hostd") is True
deadline = time.time() + 30
while True:
    hostd = {s["name"]: s for s in api.host.services()}["hostd"]
    if hostd["state"] == "running":
        break
    assert time.time() < deadline, hostd
    time.sleep(0.05)
assert api.host.info()["daemons"]["hostd"].get("version"), "hostd does not answer"
print("ok", hostd)
"#;
    sb.python(script, &[]);
    let table = wait_for(&conn, UP, |t| service(t, "hostd").state == "running")
        .await
        .unwrap();
    let hostd = service(&table, "hostd");
    assert_eq!(hostd.restarts, 6, "{hostd:?}");
    assert!(hostd.pid > 0);
    // Revived does not mean forgotten: why it had failed stays readable.
    assert_eq!(hostd.last_error, "exited with status 3", "{hostd:?}");
    sb.stop();
}

/// host.info answers from what init and the daemons push, not from D-Bus calls per request:
/// 200 requests cost (almost) no calls to the daemons — a bus monitor counts them — and a
/// change (a new network) still shows up at once, carried by netd's signal.
#[tokio::test(flavor = "current_thread")]
async fn host_info_answers_from_pushed_state() {
    if !sandbox_possible("sandbox::host_info_answers_from_pushed_state") {
        return;
    }
    let mut sb = Sandbox::start("push", &minimal_config(), &bin_dir());
    let conn = sb.connect(UP).await;
    sb.wait_all(&conn, "running", UP).await;
    let api = |script: &str| {
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net=/proc/{}/ns/net", sb.child.id()))
            .args(["python3", "-c"])
            .arg(format!(
                "import ssl, time, xmlrpc.client\n\
                 api = xmlrpc.client.ServerProxy('https://api:secret@127.0.0.1:8443/RPC2', \
                 context=ssl._create_unverified_context())\n{script}"
            ))
            .output()
            .expect("run python3 in the sandbox's network namespace");
        assert!(
            out.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    // Once, so that every source has answered once.
    api("api.host.info()");

    let monitor = std::process::Command::new("dbus-monitor")
        .arg(format!("--address={}", sb.bus_address()))
        .arg("type='method_call'")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("dbus-monitor (package dbus)");
    // dbus-monitor needs a moment to register as a monitor.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let took = api("t = time.monotonic()\n\
         for _ in range(200):\n    info = api.host.info()\n\
         assert info['daemons']['netd']['version'] == info['version'], info\n\
         print(round((time.monotonic() - t) * 1000))");
    tokio::time::sleep(Duration::from_millis(200)).await;
    testkit::sandbox::kill(monitor.id(), testkit::sandbox::libc_signal::SIGTERM);
    let out = monitor.wait_with_output().expect("dbus-monitor's output");
    let text = String::from_utf8_lossy(&out.stdout);
    let asked: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("method call"))
        .filter(|l| l.contains("destination=org.cairn."))
        .collect();
    println!(
        "200 host.info in {took} ms; calls to the daemons meanwhile: {}",
        asked.len()
    );
    // Asking per request would be 200 × 6 calls; what is left is the 10 s safety net (at most
    // one round of 6 calls in this window, two if it straddles a tick).
    assert!(asked.len() <= 12, "{asked:#?}");

    // A change is pushed: netd signals its new counts and host.info shows them.
    let seen = api("before = api.host.info()['daemons']['netd']['networks']\n\
         api.net.create({'name': 'pushed', 'kind': 'bridged'})\n\
         t = time.monotonic()\n\
         while api.host.info()['daemons']['netd']['networks'] != before + 1:\n\
         \x20   assert time.monotonic() - t < 5, 'the new network never showed in host.info'\n\
         \x20   time.sleep(0.01)\n\
         print(round((time.monotonic() - t) * 1000))");
    println!("a new network showed in host.info after {seen} ms");
    sb.stop();
}

// ---- host.applyConfig: a whole new host.toml, validated, saved and applied without a reboot ----

#[tokio::test(flavor = "current_thread")]
async fn an_applied_config_is_validated_saved_and_applied_by_restarted_daemons() {
    if !sandbox_possible(
        "sandbox::an_applied_config_is_validated_saved_and_applied_by_restarted_daemons",
    ) {
        return;
    }
    let mut sb = Sandbox::start("apply", &minimal_config(), &bin_dir());
    let conn = sb.connect(UP).await;
    let before = sb.wait_all(&conn, "running", UP).await;
    let init = Init1Proxy::new(&conn).await.unwrap();
    let net = Network1Proxy::new(&conn).await.unwrap();
    let networks = |json: String| -> Vec<String> {
        let list: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
        list.iter()
            .filter_map(|n| n["name"].as_str().map(str::to_string))
            .collect()
    };
    let saved = sb.state.join("config/host.toml");

    // Every error at its line and column; nothing saved, nothing restarted.
    let bad = minimal_config() + "\n[[network]]\nname = \"lan2\"\nkind = \"bridged\"\nuplink = 5\n";
    let e = init.apply_config(&bad, false).await.unwrap_err();
    assert!(
        matches!(e, model::dbus::CairnError::InvalidArgs(ref m) if m.contains("host.toml:")),
        "{e}"
    );
    assert!(!saved.exists());

    let good = testkit::sandbox_config("applied-host", Some("10.61.0"));
    let dry = init.apply_config(&good, true).await.unwrap();
    assert_eq!(
        dry,
        [
            "hostname: \"sandbox-host\" -> \"applied-host\"",
            "network \"lan\": added"
        ]
    );
    assert!(!saved.exists(), "a dry run saved the config");
    assert!(!networks(net.list_networks().await.unwrap()).contains(&"lan".to_string()));

    let changes = init.apply_config(&good, false).await.unwrap();
    assert_eq!(changes, dry);
    assert_eq!(std::fs::read_to_string(&saved).unwrap(), good);
    let (mode, source, problem) = init.boot_info().await.unwrap();
    assert_eq!(
        (mode.as_str(), source.as_str(), problem.as_str()),
        ("running", "state", "")
    );
    // Every daemon restarts with it; netd then has the new network.
    let after = wait_for(&conn, UP, |t| {
        before.iter().all(|old| {
            service(t, &old.name).pid != old.pid && service(t, &old.name).state == "running"
        })
    })
    .await
    .unwrap_or_else(|t| panic!("the services did not restart: {t:?}\n{}", sb.log()));
    assert_eq!(after.len(), 4);
    let net = Network1Proxy::new(&conn).await.unwrap();
    let deadline = Instant::now() + UP;
    loop {
        if let Ok(json) = net.list_networks().await
            && networks(json).contains(&"lan".to_string())
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "netd never had the new network\n{}",
            sb.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Nothing left to change.
    assert!(init.apply_config(&good, true).await.unwrap().is_empty());
    sb.stop();
}
