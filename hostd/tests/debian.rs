//! A Debian template built with debootstrap (ci/make-debian-template.sh) boots as an
//! unprivileged container with its own init (systemd), and powers off on stop. Skipped, with
//! the reason, when no such template tarball is at hand: set CAIRN_DEBIAN_TEMPLATE to it.

mod common;

use std::time::{Duration, Instant};

use common::{TempDir, containers_possible, skip};
use hostd::ct::manager::{self, Manager};
use model::ct::ContainerState;

const TEST: &str = "debian::a_debootstrap_template_boots_its_own_init";

#[tokio::test(flavor = "current_thread")]
async fn a_debootstrap_template_boots_its_own_init() {
    if !containers_possible(TEST) {
        return;
    }
    let Some(tarball) = std::env::var_os("CAIRN_DEBIAN_TEMPLATE") else {
        return skip(
            TEST,
            "CAIRN_DEBIAN_TEMPLATE is not set (build one with ci/make-debian-template.sh)",
        );
    };
    let tarball = std::path::PathBuf::from(tarball);
    if !tarball.exists() {
        return skip(TEST, &format!("{} does not exist", tarball.display()));
    }
    let dir = TempDir::new("hostd-debian");
    let run = dir.0.join("run");
    // SAFETY: the only test in this process; set before the manager reads it.
    unsafe { std::env::set_var(hostd::ct::paths::RUN_DIR_ENV, &run) };
    let mut m = Manager::new(&dir.0.join("state"), env!("CARGO_BIN_EXE_hostd").into());
    let digest = hostd::ct::template::sha256_file(&tarball).unwrap();
    let info = m
        .templates_handle()
        .import("debian", &tarball, &digest)
        .expect("import the Debian template");
    eprintln!("template: {info:?}");
    m.create(r#"{"name":"deb1","template":"debian"}"#)
        .await
        .expect("create");
    m.start("deb1").await.expect("start");
    let (pid, exe) = m.exec_target("deb1").await.unwrap();
    let t = Instant::now();
    let mut state = String::new();
    while t.elapsed() < Duration::from_secs(60) {
        let (_, out, _) = manager::exec(
            &exe,
            "deb1",
            pid,
            &["systemctl".into(), "is-system-running".into()],
            10,
        )
        .await
        .unwrap();
        state = out.trim().to_string();
        if state == "running" || state == "degraded" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, comm, _) = manager::exec(&exe, "deb1", pid, &["cat".into(), "/proc/1/comm".into()], 5)
        .await
        .unwrap();
    let (_, failed, _) = manager::exec(
        &exe,
        "deb1",
        pid,
        &["systemctl".into(), "--failed".into(), "--no-legend".into()],
        5,
    )
    .await
    .unwrap();
    eprintln!(
        "systemd state {state:?} after {:?}; failed units: {failed}",
        t.elapsed()
    );
    assert_eq!(comm.trim(), "systemd");
    assert!(
        state == "running" || state == "degraded",
        "systemd did not finish booting: {state:?}\n{}",
        m.console_log("deb1", 4000).unwrap_or_default()
    );
    let t = Instant::now();
    m.stop("deb1", 30).await.expect("stop");
    let info = m.info("deb1").await.unwrap();
    eprintln!("stopped in {:?}: {info:?}", t.elapsed());
    assert_eq!(info.state, ContainerState::Stopped);
    m.delete("deb1").await.expect("delete");
}
