//! Console attach under the real `init --sandbox` with hostd on a private bus: Host1's
//! ConsoleAttach hands over a connected socket (SCM_RIGHTS through dbus-daemon); for a
//! busybox container whose PID 1 is a shell on its console, and for the test guest's echoes mode
//! in a jailed VMM: typed input reaches the guest, its output comes back; a second attacher
//! takes over (the first is told, then closed); detaching leaves the guest running; bad input
//! and guests that do not run get clear errors.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::{TempDir, busybox_tarball, containers_possible, skip};
use model::ct::{ContainerInfo, ContainerState};
use model::dbus::{CairnError, Host1Proxy};
use model::vm::{VmInfo, VmState};
use testkit::guest::build_test_guest;
use testkit::sandbox::bin_dir;
use vmm::launcher::attach::TAKEN_OVER;
use vmm::machine::probe_kvm;

const TEST: &str = "sandbox_console::attach_type_detach_for_a_container_and_a_vm";

async fn attach(host: &Host1Proxy<'_>, kind: &str, name: &str) -> UnixStream {
    let fd = host
        .console_attach(kind, name)
        .await
        .unwrap_or_else(|e| panic!("console_attach({kind}, {name}): {e}"));
    let stream = UnixStream::from(std::os::fd::OwnedFd::from(fd));
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    stream
}

/// Reads until `want` has come (typing `retype` again every second meanwhile: a shell may not
/// be reading its terminal yet); returns all that was read.
fn read_until(s: &mut UnixStream, want: &[u8], retype: Option<&[u8]>, within: Duration) -> Vec<u8> {
    let start = Instant::now();
    let mut last_typed = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(want.len()).any(|w| w == want) {
        assert!(
            start.elapsed() < within,
            "never got {:?}; got {:?}",
            String::from_utf8_lossy(want),
            String::from_utf8_lossy(&got)
        );
        if let Some(line) = retype
            && last_typed.elapsed() > Duration::from_secs(1)
        {
            s.write_all(line).unwrap();
            last_typed = Instant::now();
        }
        match s.read(&mut buf) {
            Ok(0) => panic!(
                "the console closed; got {:?}",
                String::from_utf8_lossy(&got)
            ),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("reading the console: {e}"),
        }
    }
    got
}

/// Reads to the end of the stream (the other side closed it).
fn read_to_close(s: &mut UnixStream, within: Duration) -> Vec<u8> {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        assert!(start.elapsed() < within, "the console stayed open");
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("reading the console: {e}"),
        }
    }
}

async fn ct_state(host: &Host1Proxy<'_>, name: &str) -> ContainerState {
    let json = host.container_info(name).await.expect("container_info");
    serde_json::from_str::<ContainerInfo>(&json)
        .expect("ContainerInfo")
        .state
}

async fn vm_state(host: &Host1Proxy<'_>, name: &str) -> VmState {
    let json = host.vm_info(name).await.expect("vm_info");
    serde_json::from_str::<VmInfo>(&json).expect("VmInfo").state
}

#[tokio::test(flavor = "current_thread")]
async fn attach_type_detach_for_a_container_and_a_vm() {
    if !containers_possible(TEST) {
        return;
    }
    let bins = match bin_dir() {
        Ok(b) => b,
        Err(why) => return skip(TEST, &why),
    };
    let scratch = TempDir::new("hostd-sbx-console");
    let (tarball, digest) = busybox_tarball(&scratch.0);
    let (mut sb, host) =
        common::sandbox_with_template("console", "10.61.0", &bins, "busybox", &tarball, &digest)
            .await;

    // Bad input and guests that do not run: clear errors.
    match host.console_attach("pod", "x").await {
        Err(CairnError::InvalidArgs(m)) => assert!(m.contains("\"pod\""), "{m}"),
        other => panic!("kind pod: {other:?}"),
    }
    assert!(matches!(
        host.console_attach("ct", "nosuch").await,
        Err(CairnError::NotFound(_))
    ));
    assert!(matches!(
        host.console_attach("vm", "nosuch").await,
        Err(CairnError::NotFound(_))
    ));
    assert!(matches!(
        host.console_attach("ct", "Bad/Name").await,
        Err(CairnError::InvalidArgs(_))
    ));
    host.create_container(r#"{"name":"con1","template":"busybox","command":["/bin/sh"]}"#)
        .await
        .unwrap_or_else(|e| panic!("create: {e}\n{}", sb.log()));
    match host.console_attach("ct", "con1").await {
        Err(CairnError::Conflict(m)) => assert!(m.contains("not running"), "{m}"),
        other => panic!("attach to a stopped container: {other:?}"),
    }

    // A container: a shell is PID 1 on its console; what is typed runs, its output comes back.
    host.start_container("con1")
        .await
        .unwrap_or_else(|e| panic!("start: {e}\n{}", sb.log()));
    let mut first = attach(&host, "ct", "con1").await;
    let line = b"echo typed-$((6*7))\n";
    first.write_all(line).unwrap();
    read_until(&mut first, b"typed-42", Some(line), Duration::from_secs(20));

    // A second attacher takes over: the first reads why, then its stream ends.
    let mut second = attach(&host, "ct", "con1").await;
    let told = read_to_close(&mut first, Duration::from_secs(10));
    assert!(
        told.windows(TAKEN_OVER.len()).any(|w| w == TAKEN_OVER),
        "{:?}",
        String::from_utf8_lossy(&told)
    );
    let line = b"echo second-$((7*7))\n";
    second.write_all(line).unwrap();
    read_until(
        &mut second,
        b"second-49",
        Some(line),
        Duration::from_secs(20),
    );

    // Detached: the container runs on, its console goes on to the log, and attaching again works.
    // ash asks the terminal where its cursor is (ESC[6n) at each prompt and takes what is
    // typed meanwhile for the answer: the line goes again until the shell has echoed it. The
    // sleep makes its output come after the detach.
    let line = b"sleep 1; echo after-detach-$((8*8))\n";
    second.write_all(line).unwrap();
    read_until(
        &mut second,
        b"sleep 1; echo after-detach-$((8*8))",
        Some(line),
        Duration::from_secs(20),
    );
    drop(second);
    assert_eq!(ct_state(&host, "con1").await, ContainerState::Running);
    let start = Instant::now();
    while !host
        .console_log("con1", 1 << 16)
        .await
        .unwrap()
        .contains("after-detach-64")
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the log lacks what ran after the detach:\n{}",
            host.console_log("con1", 4096).await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut again = attach(&host, "ct", "con1").await;
    let line = b"echo again-$((9*9))\n";
    again.write_all(line).unwrap();
    read_until(&mut again, b"again-81", Some(line), Duration::from_secs(20));
    drop(again);
    host.stop_container("con1", 0).await.unwrap();
    host.delete_container("con1").await.unwrap();

    // A VM: the test guest's echoes mode reads console lines and prints each back.
    if let Err(why) = probe_kvm() {
        return skip(TEST, &format!("the VM half: {why}"));
    }
    let kernel = match build_test_guest(&scratch.0) {
        Ok(k) => k,
        Err(why) => return skip(TEST, &format!("the VM half: {why}")),
    };
    let echo = serde_json::json!({
        "name": "echo", "memory_mib": 32, "kernel": kernel, "cmdline": "cairn.test=echoes",
    });
    host.create_vm(&echo.to_string()).await.unwrap();
    match host.console_attach("vm", "echo").await {
        Err(CairnError::Conflict(m)) => assert!(m.contains("not running"), "{m}"),
        other => panic!("attach to a stopped VM: {other:?}"),
    }
    host.start_vm("echo")
        .await
        .unwrap_or_else(|e| panic!("start_vm: {e}\n{}", sb.log()));
    let mut vm1 = attach(&host, "vm", "echo").await;
    vm1.write_all(b"hello over the socket\n").unwrap();
    read_until(
        &mut vm1,
        b"echo: hello over the socket (21 bytes)",
        None,
        Duration::from_secs(30),
    );
    let mut vm2 = attach(&host, "vm", "echo").await;
    let told = read_to_close(&mut vm1, Duration::from_secs(10));
    assert!(
        told.windows(TAKEN_OVER.len()).any(|w| w == TAKEN_OVER),
        "{:?}",
        String::from_utf8_lossy(&told)
    );
    vm2.write_all(b"second\n").unwrap();
    read_until(
        &mut vm2,
        b"echo: second (6 bytes)",
        None,
        Duration::from_secs(30),
    );
    drop(vm2);
    assert_eq!(vm_state(&host, "echo").await, VmState::Running);
    let mut vm3 = attach(&host, "vm", "echo").await;
    vm3.write_all(b"third\n").unwrap();
    read_until(
        &mut vm3,
        b"echo: third (5 bytes)",
        None,
        Duration::from_secs(30),
    );
    drop(vm3);
    host.stop_vm("echo", 1).await.unwrap();
    host.delete_vm("echo").await.unwrap();
    sb.stop();
}
