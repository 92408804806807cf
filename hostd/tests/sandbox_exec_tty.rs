//! Exec with a terminal under the real `init --sandbox` with hostd on a private bus: Host1's
//! ExecTty hands over a pty master (SCM_RIGHTS through dbus-daemon) of a shell in a busybox
//! container. The size set at the start and by TIOCSWINSZ on the master is what `stty size`
//! reports inside; Ctrl-C (0x03) interrupts a foreground `sleep` through the line discipline;
//! `exit 7` comes back from ExecWait; closing the master hangs the command up (129), ExecSignal
//! reaches it (143); bad requests and stopped containers get clear errors.

mod common;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use common::{TempDir, busybox_tarball, containers_possible, skip};
use model::dbus::{CairnError, Host1Proxy};
use testkit::sandbox::bin_dir;

const TEST: &str = "sandbox_exec_tty::a_shell_on_a_pty_in_a_container";

fn nonblocking(fd: &OwnedFd) {
    let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL).unwrap();
    let flags = nix::fcntl::OFlag::from_bits_retain(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(flags)).unwrap();
}

/// Reads the master until `want` came (Ok) or it ended (Err with what was read).
fn read_until(master: &mut std::fs::File, want: &str, within: Duration) -> Result<String, String> {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if String::from_utf8_lossy(&got).contains(want) {
            return Ok(String::from_utf8_lossy(&got).into_owned());
        }
        assert!(
            start.elapsed() < within,
            "never got {want:?}; got {:?}",
            String::from_utf8_lossy(&got)
        );
        match master.read(&mut buf) {
            Ok(0) => return Err(String::from_utf8_lossy(&got).into_owned()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20))
            }
            // EIO: the slave side is all closed.
            Err(_) => return Err(String::from_utf8_lossy(&got).into_owned()),
        }
    }
}

async fn exec_tty(
    host: &Host1Proxy<'_>,
    argv: &[&str],
    rows: u16,
    cols: u16,
) -> (u64, std::fs::File) {
    let argv = argv.iter().map(|a| a.to_string()).collect();
    let (id, fd) = host
        .exec_tty("tty1", argv, r#"{"PS1":"$ "}"#, rows, cols)
        .await
        .unwrap_or_else(|e| panic!("exec_tty: {e}"));
    let fd = OwnedFd::from(fd);
    nonblocking(&fd);
    (id, std::fs::File::from(fd))
}

#[tokio::test(flavor = "current_thread")]
async fn a_shell_on_a_pty_in_a_container() {
    if !containers_possible(TEST) {
        return;
    }
    let bins = match bin_dir() {
        Ok(b) => b,
        Err(why) => return skip(TEST, &why),
    };
    let scratch = TempDir::new("hostd-sbx-exectty");
    let (tarball, digest) = busybox_tarball(&scratch.0);
    let (mut sb, host) =
        common::sandbox_with_template("exectty", "10.62.0", &bins, "busybox", &tarball, &digest)
            .await;
    common::make_container(
        &sb,
        &host,
        r#"{"name":"tty1","template":"busybox","command":["/bin/sleep","100000"]}"#,
        None,
    )
    .await;

    // Bad requests and a container that does not run: clear errors, nothing started.
    let sh = || vec!["/bin/sh".to_string()];
    match host.exec_tty("tty1", sh(), "{}", 0, 80).await {
        Err(CairnError::InvalidArgs(m)) => assert!(m.contains("window size"), "{m}"),
        other => panic!("rows 0: {other:?}"),
    }
    assert!(matches!(
        host.exec_tty("tty1", vec![], "{}", 24, 80).await,
        Err(CairnError::InvalidArgs(_))
    ));
    assert!(matches!(
        host.exec_tty("tty1", sh(), "[1]", 24, 80).await,
        Err(CairnError::InvalidArgs(_))
    ));
    assert!(matches!(
        host.exec_tty("nosuch", sh(), "{}", 24, 80).await,
        Err(CairnError::NotFound(_))
    ));
    match host.exec_tty("tty1", sh(), "{}", 24, 80).await {
        Err(CairnError::Conflict(m)) => assert!(m.contains("not running"), "{m}"),
        other => panic!("a stopped container: {other:?}"),
    }
    assert!(matches!(
        host.exec_wait(999_999).await,
        Err(CairnError::NotFound(_))
    ));
    host.start_container("tty1")
        .await
        .unwrap_or_else(|e| panic!("start: {e}\n{}", sb.log()));

    // The size given at the start, then a resize by the master's holder.
    let (id, mut master) = exec_tty(&host, &["/bin/sh"], 31, 101).await;
    master.write_all(b"stty size\n").unwrap();
    read_until(&mut master, "31 101", Duration::from_secs(20))
        .unwrap_or_else(|got| panic!("ended early: {got}\n{}", sb.log()));
    let size = libc::winsize {
        ws_row: 42,
        ws_col: 123,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from a pointer that lives across the call.
    let set = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    assert_eq!(set, 0);
    master.write_all(b"stty size\n").unwrap();
    read_until(&mut master, "42 123", Duration::from_secs(20)).unwrap();
    master.write_all(b"tty; echo term=$TERM\n").unwrap();
    read_until(&mut master, "term=xterm", Duration::from_secs(20)).unwrap();

    // Ctrl-C reaches the foreground sleep through the line discipline; the shell goes on.
    master.write_all(b"sleep 100\n").unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = Instant::now();
    master.write_all(b"\x03").unwrap();
    master.write_all(b"echo back-$((6*7))\n").unwrap();
    read_until(&mut master, "back-42", Duration::from_secs(20)).unwrap();
    assert!(t.elapsed() < Duration::from_secs(20));

    // The exit code comes back, and the master then reads its end.
    master.write_all(b"exit 7\n").unwrap();
    let code = tokio::time::timeout(Duration::from_secs(20), host.exec_wait(id))
        .await
        .expect("exec_wait hung")
        .unwrap();
    assert_eq!(code, 7);
    assert!(read_until(&mut master, "never", Duration::from_secs(10)).is_err());
    // Asked again (a caller whose first wait was cut off): the same code.
    assert_eq!(host.exec_wait(id).await.unwrap(), 7);

    // The master's holder going away hangs the command up: SIGHUP, 128+1.
    let (id, master) = exec_tty(&host, &["/bin/sleep", "1000"], 24, 80).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(master);
    let code = tokio::time::timeout(Duration::from_secs(20), host.exec_wait(id))
        .await
        .expect("a hung-up exec did not end")
        .unwrap();
    assert_eq!(code, 129);

    // ExecSignal: SIGTERM to the command, 128+15.
    let (id, _master) = exec_tty(&host, &["/bin/sleep", "1000"], 24, 80).await;
    let start = Instant::now();
    loop {
        match host.exec_signal(id, 15).await {
            Ok(()) => break,
            // Between the helper's start and its fork there is no command yet.
            Err(CairnError::Conflict(_)) if start.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("exec_signal: {e}"),
        }
    }
    let code = tokio::time::timeout(Duration::from_secs(20), host.exec_wait(id))
        .await
        .expect("a signalled exec did not end")
        .unwrap();
    assert_eq!(code, 143);
    assert!(matches!(
        host.exec_signal(id, 15).await,
        Err(CairnError::Conflict(_))
    ));

    // A program that is not there: the helper says so on the terminal, 127.
    let (id, mut master) = exec_tty(&host, &["/no/such"], 24, 80).await;
    let said = read_until(&mut master, "never", Duration::from_secs(20)).unwrap_err();
    assert!(said.contains("/no/such"), "{said}");
    assert_eq!(host.exec_wait(id).await.unwrap(), 127);

    host.stop_container("tty1", 5).await.unwrap();
    sb.stop();
}
