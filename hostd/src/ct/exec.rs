//! Exec: a command inside a running container. hostd starts itself as a helper
//! (`hostd --ct-exec NAME PID TIMEOUT_S -- ARGV…`) with its stdout/stderr piped back: a fresh
//! single-threaded process can join a user namespace (a threaded one cannot), and the helper
//! forks once more so that the command lands in the container's pid namespace too. The helper
//! exits with the command's code (128+signal when killed), or 125 with a `cairn-exec:` line
//! on stderr when it could not get in.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Uid, fork};

use super::runtime::namespaces::Namespaces;
use super::runtime::{caps, seccomp};
use crate::cgroup::{Cgroup, Kind};

/// The helper's own failure code (as with `env`, `nsenter`).
pub const HELPER_FAILED: i32 = 125;
pub const HELPER_PREFIX: &str = "cairn-exec:";
/// The code of a command killed at its deadline (as timeout(1)).
pub const TIMED_OUT: i32 = 124;
/// The code of a command killed by a cancel (`kill`): 128 + SIGKILL.
pub const CANCELLED: i32 = 137;
/// The most output (stdout and stderr together) an exec answers with. The answer is one D-Bus
/// message, and dbus-daemon drops the connection of a peer that sends one over its 32 MiB
/// limit (`max_message_size`): a command writing 40 MiB would cut hostd off the bus. Half of it
/// leaves room for the rest of the message and for invalid UTF-8 replaced by U+FFFD.
pub const OUTPUT_CAP: usize = 16 << 20;

/// Execs started with a tag (a caller's name for it, e.g. apid's task id), by tag, so that
/// `kill` can stop one before its deadline. The tag is taken before the helper starts: a
/// refused exec must not have started a command that nothing then stops.
static TAGGED: Mutex<BTreeMap<String, Entry>> = Mutex::new(BTreeMap::new());

/// A tagged exec: its helper's pid once started (0 before), and a kill that came before that.
#[derive(Debug, Default)]
struct Entry {
    pid: u32,
    kill_pending: bool,
}

fn tagged() -> std::sync::MutexGuard<'static, BTreeMap<String, Entry>> {
    TAGGED.lock().unwrap_or_else(|p| p.into_inner())
}

/// Asks helper `pid` to kill its command (SIGTERM: its handler kills the command's group).
fn stop_helper(pid: u32) -> bool {
    match i32::try_from(pid) {
        Ok(p) if p > 0 => nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p),
            nix::sys::signal::Signal::SIGTERM,
        )
        .is_ok(),
        _ => false,
    }
}

/// A tagged exec's entry in [`TAGGED`], removed when the exec ends.
pub struct Tagged(Option<String>);

impl Tagged {
    /// Takes `tag` (if any) before the helper starts; a tag in use is refused.
    pub fn reserve(tag: Option<&str>) -> Result<Tagged, String> {
        let Some(tag) = tag.filter(|t| !t.is_empty()) else {
            return Ok(Tagged(None));
        };
        let mut all = tagged();
        if all.contains_key(tag) {
            return Err(format!("an exec tagged {tag:?} is running"));
        }
        all.insert(tag.to_string(), Entry::default());
        Ok(Tagged(Some(tag.to_string())))
    }

    /// The helper `pid` started: a kill that came before is passed on now.
    pub fn started(&self, pid: u32) {
        let Some(tag) = &self.0 else { return };
        if let Some(e) = tagged().get_mut(tag) {
            e.pid = pid;
            if e.kill_pending {
                stop_helper(pid);
            }
        }
    }
}

impl Drop for Tagged {
    fn drop(&mut self) {
        if let Some(tag) = &self.0 {
            tagged().remove(tag);
        }
    }
}

/// Stops the exec tagged `tag`: its helper kills the command's whole process group and ends
/// with 137 (one not started yet is stopped as it starts). Whether one was running.
pub fn kill(tag: &str) -> bool {
    let mut all = tagged();
    let Some(e) = all.get_mut(tag) else {
        return false;
    };
    // The entry is removed only after the helper was reaped, so the pid is still the helper's.
    if e.pid == 0 {
        e.kill_pending = true;
        return true;
    }
    stop_helper(e.pid)
}

/// Set by SIGTERM in the helper: the command is to be killed now.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_term(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// What the helper wrote on its pipes, at most `cap` bytes of it kept.
#[derive(Debug, Default)]
pub struct Captured {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Every byte written, kept or not.
    pub written: u64,
}

impl Captured {
    pub fn truncated(&self) -> bool {
        self.written > (self.stdout.len() + self.stderr.len()) as u64
    }
}

/// How long output is still taken after the command exited: what it wrote before is in the
/// pipes already; a background child it left behind may hold them open for good.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(50);

/// Reads both pipes until they end or, once `exited` resolves (the command is gone), until
/// they stay quiet for [`DRAIN_AFTER_EXIT`]: `sh -c 'sleep 100 & echo started'` answers at once
/// instead of when the sleep ends, as with `docker exec`. Keeps the first `cap` bytes of the
/// two together and counts, but drops, the rest: the command is never blocked on a full pipe,
/// and memory stays bounded whatever it writes.
pub async fn read_capped<T>(
    mut stdout: impl tokio::io::AsyncRead + Unpin,
    mut stderr: impl tokio::io::AsyncRead + Unpin,
    cap: usize,
    exited: impl std::future::Future<Output = std::io::Result<T>>,
) -> std::io::Result<(Captured, T)> {
    use tokio::io::AsyncReadExt;

    fn keep(into: &mut Vec<u8>, data: &[u8], room: usize) {
        into.extend_from_slice(&data[..data.len().min(room)]);
    }
    let mut got = Captured::default();
    let (mut out_buf, mut err_buf) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    let (mut out_open, mut err_open) = (true, true);
    let mut exited = std::pin::pin!(exited);
    let mut status = None;
    let quiet = tokio::time::sleep(Duration::MAX / 4);
    let mut quiet = std::pin::pin!(quiet);
    while out_open || err_open {
        let room = cap.saturating_sub(got.stdout.len() + got.stderr.len());
        // `read` is cancel-safe: the branch not taken has read nothing.
        tokio::select! {
            n = stdout.read(&mut out_buf), if out_open => {
                let n = n?;
                out_open = n > 0;
                got.written += n as u64;
                keep(&mut got.stdout, &out_buf[..n], room);
            }
            n = stderr.read(&mut err_buf), if err_open => {
                let n = n?;
                err_open = n > 0;
                got.written += n as u64;
                keep(&mut got.stderr, &err_buf[..n], room);
            }
            s = &mut exited, if status.is_none() => status = Some(s?),
            () = &mut quiet, if status.is_some() => break,
        }
        if status.is_some() {
            quiet
                .as_mut()
                .reset(tokio::time::Instant::now() + DRAIN_AFTER_EXIT);
        }
    }
    let status = match status {
        Some(s) => s,
        None => exited.await?,
    };
    Ok((got, status))
}

/// The helper's entry point: `args` = [NAME, PID, TIMEOUT_S, "--", ARGV…].
pub fn helper_main(args: &[String]) -> i32 {
    match helper(args) {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("{HELPER_PREFIX} {msg}");
            HELPER_FAILED
        }
    }
}

fn helper(args: &[String]) -> Result<i32, String> {
    let [name, pid, timeout, dashes, argv @ ..] = args else {
        return Err("usage: hostd --ct-exec NAME PID TIMEOUT_S -- ARGV...".into());
    };
    if dashes != "--" || argv.is_empty() {
        return Err("usage: hostd --ct-exec NAME PID TIMEOUT_S -- ARGV...".into());
    }
    let pid: u32 = pid.parse().map_err(|_| format!("bad pid {pid:?}"))?;
    let timeout = Duration::from_secs(
        timeout
            .parse()
            .map_err(|_| format!("bad timeout {timeout:?}"))?,
    );
    let argv: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_str()))
        .collect::<Result<_, _>>()
        .map_err(|_| "argv has a NUL byte".to_string())?;
    let env: Vec<CString> = [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "container=cairn",
    ]
    .iter()
    .filter_map(|s| CString::new(*s).ok())
    .collect();
    // Started by exec_tty: stdin is a pty the command takes as its terminal.
    let tty = super::exec_tty::helper_has_tty();
    let env = if tty {
        super::exec_tty::helper_env(env)
    } else {
        env
    };
    let filter = seccomp::program().map_err(|e| format!("seccomp filter: {e}"))?;
    // Everything from the host is opened before the first setns.
    let ns = Namespaces::open(pid).map_err(|e| e.to_string())?;
    // SAFETY: a handler that only stores to an atomic; the command's exec resets it.
    unsafe { libc::signal(libc::SIGTERM, on_term as *const () as libc::sighandler_t) };
    Cgroup::open(Kind::Container, name)
        .and_then(|cg| cg.add_pid(std::process::id()))
        .map_err(|e| format!("joining the container's cgroup: {e}"))?;
    ns.join().map_err(|e| e.to_string())?;
    nix::unistd::setgroups(&[]).map_err(|e| format!("setgroups: {e}"))?;
    nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
        .map_err(|e| format!("setresgid: {e}"))?;
    nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
        .map_err(|e| format!("setresuid: {e}"))?;
    // SAFETY: the helper is single-threaded.
    let child = match unsafe { fork() } {
        Err(e) => return Err(format!("fork: {e}")),
        Ok(ForkResult::Child) => {
            // Rust's runtime ignores SIGPIPE and an ignored signal stays ignored across exec:
            // without this, `yes | head` in a container spins on EPIPE instead of ending.
            // SAFETY: signal(2) with SIG_DFL in the single-threaded child, before exec.
            unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
            // A process group of its own: a kill reaches what the command started too.
            if tty {
                // A session of its own instead (a group too), with the pty as its terminal.
                if let Err(e) = super::exec_tty::take_terminal() {
                    eprintln!("{HELPER_PREFIX} {e}");
                    // SAFETY: leaving the forked child without running the helper's destructors.
                    unsafe { libc::_exit(HELPER_FAILED) };
                }
            } else {
                // SAFETY: setpgid(2) in the single-threaded child.
                unsafe { libc::setpgid(0, 0) };
            }
            let _ = nix::unistd::chdir("/");
            if let Err(e) = caps::drop_bounding() {
                eprintln!("{HELPER_PREFIX} dropping capabilities: {e}");
                // SAFETY: leaving the forked child without running the helper's destructors.
                unsafe { libc::_exit(HELPER_FAILED) };
            }
            if let Err(e) = seccomp::install(&filter) {
                eprintln!("{HELPER_PREFIX} seccomp: {e}");
                // SAFETY: as above.
                unsafe { libc::_exit(HELPER_FAILED) };
            }
            let e = match nix::unistd::execvpe(&argv[0], &argv, &env) {
                Err(e) => e,
                Ok(never) => match never {},
            };
            eprintln!("{HELPER_PREFIX} exec {}: {e}", argv[0].to_string_lossy());
            // SAFETY: as above; 127 is the shell's "command not found".
            unsafe { libc::_exit(127) };
        }
        Ok(ForkResult::Parent { child }) => {
            // Also here, so that a kill right after the fork finds the group.
            // Not for a tty: a group leader could no longer make itself a session (setsid).
            if !tty {
                // SAFETY: setpgid(2) on our own child.
                unsafe { libc::setpgid(child.as_raw(), child.as_raw()) };
            }
            child
        }
    };
    let kill_group = || {
        let _ = nix::sys::signal::killpg(child, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
        // A signal to the helper meanwhile (a second cancel) must not end the wait early.
        while let Err(nix::errno::Errno::EINTR) = waitpid(child, None) {}
    };
    let deadline = Instant::now() + timeout;
    loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, c)) => return Ok(c),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(format!("waitpid: {e}")),
        }
        if STOP.load(Ordering::SeqCst) {
            kill_group();
            eprintln!("{HELPER_PREFIX} cancelled");
            return Ok(CANCELLED);
        }
        if Instant::now() >= deadline {
            kill_group();
            eprintln!("{HELPER_PREFIX} timed out after {} s", timeout.as_secs());
            return Ok(TIMED_OUT);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn output_beyond_the_cap_is_counted_and_dropped() {
        let out = vec![b'o'; 300_000];
        let err = vec![b'e'; 100_000];
        let done = async { Ok(()) };
        let (got, ()) = read_capped(&out[..], &err[..], 250_000, done)
            .await
            .unwrap();
        assert_eq!(got.written, 400_000);
        assert_eq!(got.stdout.len() + got.stderr.len(), 250_000);
        assert!(got.stdout.iter().all(|&b| b == b'o'));
        assert!(got.truncated());

        let done = async { Ok(()) };
        let (got, ()) = read_capped(&out[..10], &err[..5], 250_000, done)
            .await
            .unwrap();
        assert_eq!(
            (got.stdout.len(), got.stderr.len(), got.written),
            (10, 5, 15)
        );
        assert!(!got.truncated());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_pipe_held_open_after_the_command_ended_does_not_hold_the_answer() {
        // The writer ends of these pipes stay open, as a background child's would.
        let (mut out_w, out_r) = tokio::io::duplex(1024);
        let (_err_w, err_r) = tokio::io::duplex(1024);
        tokio::io::AsyncWriteExt::write_all(&mut out_w, b"started\n")
            .await
            .unwrap();
        let done = async { Ok(7) };
        let read = read_capped(out_r, err_r, 1024, done);
        let (got, code) = tokio::time::timeout(Duration::from_secs(30), read)
            .await
            .expect("the answer waited for the pipes to close")
            .unwrap();
        assert_eq!((got.stdout.as_slice(), code), (&b"started\n"[..], 7));
        drop(out_w);
    }
}
