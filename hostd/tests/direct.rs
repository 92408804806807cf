//! The container runtime driven directly (no bus, no network): one busybox container through
//! its whole life, and bad input. Real kernel, root.

mod common;

use std::time::Duration;

use common::{TempDir, busybox_tarball, containers_possible};
use hostd::ct::manager::{self, Manager};
use hostd::error::HostError;
use model::ct::ContainerState;

static RUN_DIR: std::sync::Once = std::sync::Once::new();

/// A manager on `dir`'s state; the run dir is one per test process (the environment is
/// process-wide), under /tmp so the machine's /run/cairn is never touched.
fn manager(dir: &TempDir) -> Manager {
    RUN_DIR.call_once(|| {
        let run = std::env::temp_dir().join(format!("cairn-hostd-run-{}", std::process::id()));
        // SAFETY: set once, before any manager reads it; the tests only read it afterwards.
        unsafe { std::env::set_var(hostd::ct::paths::RUN_DIR_ENV, run) };
    });
    Manager::new(&dir.0.join("state"), env!("CARGO_BIN_EXE_hostd").into())
}

async fn sh(m: &mut Manager, name: &str, script: &str) -> (i32, String, String) {
    let (pid, exe) = m.exec_target(name).await.expect("exec target");
    manager::exec(
        &exe,
        name,
        pid,
        &["sh".into(), "-c".into(), script.into()],
        10,
    )
    .await
    .expect("exec")
}

#[tokio::test(flavor = "current_thread")]
async fn one_container_lifecycle_and_bad_input() {
    if !containers_possible("direct::one_container_lifecycle_and_bad_input") {
        return;
    }
    let dir = TempDir::new("hostd-direct");
    let (tarball, digest) = busybox_tarball(&dir.0);
    let mut m = manager(&dir);
    m.templates_handle()
        .import("busybox", &tarball, &digest)
        .expect("import");

    // Bad input: nothing is left half-made.
    let e = m
        .create(r#"{"name":"x1","template":"nope"}"#)
        .await
        .unwrap_err();
    assert!(
        matches!(e, HostError::NotFound(ref s) if s.contains("template")),
        "{e}"
    );
    let e = m
        .create(r#"{"name":"x1","template":"busybox","resources":{"cpu_weight":0}}"#)
        .await
        .unwrap_err();
    assert!(
        matches!(e, HostError::InvalidArgs(ref s) if s.contains("resources.cpu_weight")),
        "{e}"
    );
    assert!(!dir.0.join("state/containers/x1").exists());

    let info = m
        .create(r#"{"name":"c1","template":"busybox","hostname":"box-one"}"#)
        .await
        .expect("create");
    assert_eq!(info.state, ContainerState::Created);
    let e = m
        .create(r#"{"name":"c1","template":"busybox"}"#)
        .await
        .unwrap_err();
    assert!(matches!(e, HostError::Conflict(_)), "{e}");

    let e = m.exec_target("c1").await.unwrap_err();
    assert!(
        matches!(e, HostError::Conflict(_)),
        "exec in a created container: {e}"
    );

    m.start("c1").await.expect("start");
    let info = m.info("c1").await.unwrap();
    assert_eq!(info.state, ContainerState::Running, "{info:?}");
    let (pid, exe) = m.exec_target("c1").await.expect("exec target");
    let (code, out, err) = manager::exec(&exe, "c1", pid, &["hostname".into()], 5)
        .await
        .expect("exec hostname");
    assert_eq!((code, out.trim()), (0, "box-one"), "stderr: {err}");
    let (code, out, _) = manager::exec(
        &exe,
        "c1",
        pid,
        &[
            "sh".into(),
            "-c".into(),
            "echo out; echo err >&2; exit 3".into(),
        ],
        5,
    )
    .await
    .expect("exec sh");
    assert_eq!((code, out.as_str()), (3, "out\n"));
    // Container root is host uid 100000+, yet sees the template's files as its own (idmapped
    // lower layer) and can change them (copied up into its upper layer).
    let (code, out, err) = sh(
        &mut m,
        "c1",
        "id -u; cat /proc/self/uid_map; stat -c %u /etc/passwd; echo x >> /etc/passwd && echo wrote",
    )
    .await;
    let uid_map: Vec<&str> = out
        .lines()
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(uid_map[0], "0", "{out}");
    assert_ne!(uid_map[1], "0", "{out}");
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with("0\n") && out.ends_with("0\nwrote\n"),
        "{out}"
    );
    let (_, out, _) = sh(
        &mut m,
        "c1",
        "ps -o pid,comm | head -3; ls /dev; cat /proc/1/status | grep CapBnd",
    )
    .await;
    assert!(out.contains("1 init"), "{out}");
    assert!(
        out.contains("null") && out.contains("ptmx") && out.contains("console"),
        "{out}"
    );
    let (code, _, _) = manager::exec(&exe, "c1", pid, &["sleep".into(), "5".into()], 1)
        .await
        .expect("exec sleep");
    assert_eq!(code, 124);

    m.pause("c1").await.expect("pause");
    assert_eq!(m.info("c1").await.unwrap().state, ContainerState::Paused);
    m.resume("c1").await.expect("resume");

    let t = std::time::Instant::now();
    m.stop("c1", 5).await.expect("stop");
    eprintln!("stop took {:?}", t.elapsed());
    let info = m.info("c1").await.unwrap();
    assert_eq!(info.state, ContainerState::Stopped, "{info:?}");
    eprintln!(
        "exit code {:?}; console: {}",
        info.exit_code,
        m.console_log("c1", 4096).unwrap()
    );
    let e = m.exec_target("c1").await.unwrap_err();
    assert!(matches!(e, HostError::Conflict(_)), "{e}");
    assert!(!dir.0.join("run/ct/c1").exists());

    m.start("c1").await.expect("second start");
    // The upper layer kept what the first run wrote; the template did not change.
    let (_, out, _) = sh(&mut m, "c1", "tail -1 /etc/passwd").await;
    assert_eq!(out, "x\n");
    let tpl = dir.0.join("state/templates/busybox/rootfs/etc/passwd");
    assert!(!std::fs::read_to_string(tpl).unwrap().contains("\nx\n"));
    assert!(m.is_up("c1").await.unwrap());
    m.stop("c1", 0).await.expect("stop");
    m.start("c1").await.expect("start again");
    let before = m.info("c1").await.unwrap();
    assert_eq!(before.state, ContainerState::Running);
    // A reboot from inside: the init ends by SIGHUP, and housekeeping starts it again.
    let (pid, exe) = m.exec_target("c1").await.unwrap();
    let _ = manager::exec(&exe, "c1", pid, &["reboot".into(), "-f".into()], 5).await;
    let t = std::time::Instant::now();
    loop {
        m.tick().await;
        let now = m.info("c1").await.unwrap();
        if now.state == ContainerState::Running && now.pid != before.pid {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "not restarted: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let e = m.delete("c1").await.unwrap_err();
    assert!(matches!(e, HostError::Conflict(_)), "{e}");
    m.stop("c1", 0).await.expect("kill");
    m.delete("c1").await.expect("delete");
    assert!(!dir.0.join("state/containers/c1").exists());
    // Its files go in the background: the same name may come and go again meanwhile.
    m.create(r#"{"name":"c1","template":"busybox"}"#)
        .await
        .expect("create again");
    m.delete("c1").await.expect("delete again");

    // A deletion a crash cut short (renamed, not yet removed) is no container at the next
    // start, and its files go then.
    m.create(r#"{"name":"c2","template":"busybox"}"#)
        .await
        .expect("create c2");
    drop(m);
    let containers = dir.0.join("state/containers");
    std::fs::rename(containers.join("c2"), containers.join(".c2.deleting.1.0")).unwrap();
    let mut m = manager(&dir);
    assert!(matches!(m.info("c2").await, Err(HostError::NotFound(_))));
    let t = std::time::Instant::now();
    while std::fs::read_dir(&containers).unwrap().next().is_some() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "left behind: {:?}",
            std::fs::read_dir(&containers).unwrap().collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn privileged_failed_start_rollback_and_live_limits() {
    if !containers_possible("direct::privileged_failed_start_rollback_and_live_limits") {
        return;
    }
    let dir = TempDir::new("hostd-direct2");
    let (tarball, digest) = busybox_tarball(&dir.0);
    let mut m = manager(&dir);
    m.templates_handle()
        .import("busybox", &tarball, &digest)
        .expect("import");

    // A command that does not exist: start fails naming it, and nothing of the run is left.
    m.create(r#"{"name":"d-bad","template":"busybox","command":["/nope"]}"#)
        .await
        .expect("create");
    let e = m.start("d-bad").await.unwrap_err();
    assert!(
        matches!(e, HostError::Failed(ref s) if s.contains("/nope")),
        "{e}"
    );
    assert!(!m.paths().run_dir("d-bad").exists());
    assert!(!std::path::Path::new("/sys/fs/cgroup/unified/cairn.slice/ct-d-bad").exists());
    assert_eq!(
        m.info("d-bad").await.unwrap().state,
        ContainerState::Created
    );
    m.delete("d-bad").await.expect("delete");

    // Privileged: no user namespace, a given command as PID 1 (stopped with SIGTERM).
    m.create(r#"{"name":"d-priv","template":"busybox","privileged":true,"command":["/bin/sh","-c","echo started; trap 'echo bye; exit 0' TERM; while :; do sleep 1; done"]}"#)
        .await
        .expect("create privileged");
    m.start("d-priv").await.expect("start privileged");
    let (code, out, _) = sh(&mut m, "d-priv", "cat /proc/self/uid_map; hostname").await;
    assert_eq!(code, 0);
    let map: Vec<&str> = out
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(map, ["0", "0", "4294967295"], "{out}");
    assert!(out.ends_with("d-priv\n"), "{out}");
    // The seccomp deny-list and the bounding set hold even for privileged root (exec gets
    // them as init did).
    for pid in ["1", "self"] {
        let (_, out, _) = sh(
            &mut m,
            "d-priv",
            &format!("grep -E '^(Seccomp|CapBnd):' /proc/{pid}/status"),
        )
        .await;
        assert!(out.contains("Seccomp:\t2"), "{out}");
        let bnd = out
            .lines()
            .find_map(|l| l.strip_prefix("CapBnd:\t"))
            .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
            .unwrap_or(u64::MAX);
        assert_eq!(bnd & (1 << 16), 0, "SYS_MODULE still bounded in: {out}");
        assert_ne!(bnd & (1 << 21), 0, "SYS_ADMIN dropped: {out}");
    }

    // A denied syscall fails with EPERM (without the filter, swapoff of a non-swap file by
    // real root is EINVAL).
    let (_, out, _) = sh(&mut m, "d-priv", "swapoff /dev/null 2>&1").await;
    assert!(out.contains("Operation not permitted"), "{out}");

    // Limits: validated, and where the v2 hierarchy lacks the controller a clear error.
    let e = m.set("d-priv", r#"{"cpu_weight":0}"#).await.unwrap_err();
    assert!(
        matches!(e, HostError::InvalidArgs(ref s) if s.contains("resources.cpu_weight")),
        "{e}"
    );
    let e = m.set("d-priv", r#"{"cpu_wieght":5}"#).await.unwrap_err();
    assert!(
        matches!(e, HostError::InvalidArgs(ref s) if s.contains("cpu_wieght")),
        "{e}"
    );
    match m.set("d-priv", r#"{"cpu_limit":50}"#).await {
        Ok(()) => assert_eq!(
            m.info("d-priv").await.unwrap().resources.cpu_limit,
            Some(50)
        ),
        // A controller this kernel lacks is the request's fault (as the API reports it).
        Err(e) => match model::dbus::CairnError::from(e) {
            model::dbus::CairnError::InvalidArgs(s) => assert!(s.contains("cpu"), "{s}"),
            other => panic!("set cpu_limit: {other}"),
        },
    }
    let info = m.info("d-priv").await.unwrap();
    assert!(info.usage.as_ref().is_some_and(|u| u.pids >= 1), "{info:?}");

    m.stop("d-priv", 5).await.expect("stop");
    let info = m.info("d-priv").await.unwrap();
    assert_eq!(info.exit_code, Some(0), "{info:?}");
    let log = m.console_log("d-priv", 100).unwrap();
    assert!(log.contains("started") && log.contains("bye"), "{log}");
    assert_eq!(m.console_log("d-priv", 4).unwrap(), "bye\n");
    m.delete("d-priv").await.expect("delete");
    assert!(!dir.0.join("state/containers/d-priv").exists());
}
