//! A tagged exec (Host1.ExecTagged, what apid's tasks use) under the real `init --sandbox` with
//! hostd on a private bus: KillExec stops it before its deadline — the command and what it
//! started (its process group), not only the helper — and it answers 137; a tag in use is
//! refused (105); an untagged exec still times out at its deadline with the same group kill.

mod common;

use std::time::{Duration, Instant};

use common::{TempDir, containers_possible, skip};
use model::dbus::{CairnError, Host1Proxy};
use testkit::sandbox::bin_dir;

const TEST: &str = "sandbox_exec_kill::a_killed_exec_leaves_no_process";

async fn sh(host: &Host1Proxy<'_>, ct: &str, script: &str) -> String {
    let (code, out, err) = host
        .exec(ct, vec!["/bin/sh".into(), "-c".into(), script.into()], 10)
        .await
        .unwrap_or_else(|e| panic!("exec {script}: {e}"));
    assert_eq!(code, 0, "{script}: {err}");
    out
}

/// The pids in the container's /fg and /bg (what the long exec wrote) that still run.
async fn alive(host: &Host1Proxy<'_>, ct: &str) -> String {
    sh(
        host,
        ct,
        "for p in $(cat /fg /bg); do \
         if read a b s rest < /proc/$p/stat 2>/dev/null && [ \"$s\" != Z ]; then echo $p; fi; \
         done",
    )
    .await
}

/// What [`alive`] still finds after a kill, once it is empty or 5 s passed. SIGKILL reaches
/// the whole group before the exec answers, but a member the scheduler has not run since may
/// take a moment to die (CI saw one still running once): bounded, not timed.
async fn left_running(host: &Host1Proxy<'_>, ct: &str) -> String {
    let mut left = alive(host, ct).await;
    for _ in 0..50 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = alive(host, ct).await;
    }
    left
}

#[tokio::test(flavor = "current_thread")]
async fn a_killed_exec_leaves_no_process() {
    if !containers_possible(TEST) {
        return;
    }
    let bins = match bin_dir() {
        Ok(b) => b,
        Err(why) => return skip(TEST, &why),
    };
    let scratch = TempDir::new("hostd-sbx-exec-kill");
    let (tarball, digest) = common::busybox_tarball(&scratch.0);

    let (sb, host) =
        common::sandbox_with_template("exec-kill", "10.63.0", &bins, "bb", &tarball, &digest).await;
    common::make_container(
        &sb,
        &host,
        r#"{"name":"k1","template":"bb","command":["/bin/sh","-c","sleep 600"]}"#,
        Some("k1"),
    )
    .await;

    let long = vec![
        "/bin/sh".to_string(),
        "-c".into(),
        "rm -f /fg /bg; sleep 1001 & echo $! > /bg; echo $$ > /fg; sleep 1002".into(),
    ];
    let started = Instant::now();
    let run = host.exec_tagged("k1", long.clone(), 600, "task-1");
    tokio::pin!(run);
    // Let it start, then check what a kill must reach is there, and the tag is taken.
    let mut pids = String::new();
    for _ in 0..100 {
        tokio::select! {
            r = &mut run => panic!("the exec ended early: {r:?}"),
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        pids = alive(&host, "k1").await;
        if pids.lines().count() == 2 {
            break;
        }
    }
    assert_eq!(
        pids.lines().count(),
        2,
        "the shell and its child run: {pids:?}"
    );
    match host.exec_tagged("k1", long.clone(), 5, "task-1").await {
        Err(CairnError::Conflict(m)) => assert!(m.contains("task-1"), "{m}"),
        other => panic!("a second exec with the tag: {other:?}"),
    }
    assert!(!host.kill_exec("no-such-tag").await.unwrap());
    assert!(host.kill_exec("task-1").await.unwrap());
    let (code, _, err) = tokio::time::timeout(Duration::from_secs(10), &mut run)
        .await
        .expect("a killed exec answers at once")
        .unwrap();
    assert_eq!(code, 137, "{err}");
    assert!(err.contains("cancelled"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(left_running(&host, "k1").await, "", "nothing of it runs");
    assert!(
        !host.kill_exec("task-1").await.unwrap(),
        "the tag is free again"
    );

    // The deadline kills the whole group too.
    let (code, _, _) = host.exec("k1", long, 2).await.unwrap();
    assert_eq!(code, 124);
    assert_eq!(
        left_running(&host, "k1").await,
        "",
        "a timed-out exec leaves nothing either"
    );
}
