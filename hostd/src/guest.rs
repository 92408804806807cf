//! hostd's async side of the launcher (`vmm::launcher`), shared by containers and VMs: starting
//! a guest (the launcher's blocking handshake, run in blocking tasks) and waiting for a guest's
//! first process or its monitor to end. A pidfd (Linux 5.3+) becomes readable when its process
//! exits, child or not, so a stop learns of the end at once instead of at the next poll.

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use vmm::launcher::parent::{self, LaunchError, Spawned};
use vmm::launcher::start_time;

use crate::error::{HostError, HostResult};

/// A guest being started: its monitor runs and its first process exists (in its cgroup and
/// namespaces) and waits for [`Starting::release`]. Between the two a kind does what needs the
/// pid (a container's network port). Dropping it closes the control socket: the monitor then
/// kills the waiting guest.
pub struct Starting {
    spawned: Spawned,
    /// The guest's first process.
    pub pid: u32,
    /// "container \"web\"", "VM \"db\"": how errors name the guest.
    what: String,
    log: PathBuf,
}

impl Starting {
    /// Runs `exe mode launch` (`hostd --monitor|--vmm LAUNCH`, output to `log`) and waits up to
    /// `timeout` for the guest's pid.
    pub async fn spawn(
        what: String,
        exe: PathBuf,
        mode: &'static str,
        launch: PathBuf,
        log: PathBuf,
        timeout: Duration,
    ) -> HostResult<Starting> {
        let log2 = log.clone();
        let started = tokio::task::spawn_blocking(move || {
            let mut spawned = parent::spawn(&exe, mode, &launch, &log2, timeout)?;
            let pid = spawned.wait_pid()?;
            Ok((spawned, pid))
        })
        .await;
        match started {
            Ok(Ok((spawned, pid))) => Ok(Starting {
                spawned,
                pid,
                what,
                log,
            }),
            Ok(Err(e)) => Err(start_failed(&what, &log, e)),
            Err(e) => Err(HostError::Failed(format!("{what}: start task: {e}"))),
        }
    }

    /// Lets the guest go and waits until it runs (its monitor has recorded it).
    pub async fn release(self) -> HostResult<()> {
        let Starting {
            mut spawned,
            what,
            log,
            ..
        } = self;
        let released = tokio::task::spawn_blocking(move || {
            spawned.go()?;
            spawned.wait_ready()
        })
        .await;
        match released {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(start_failed(&what, &log, e)),
            Err(e) => Err(HostError::Failed(format!("{what}: start task: {e}"))),
        }
    }
}

/// A failed start in hostd's words: the guest's own input is invalid arguments, the rest a
/// failure that points at the monitor's log.
fn start_failed(what: &str, log: &Path, e: LaunchError) -> HostError {
    match e {
        _ if e.is_invalid() => HostError::InvalidArgs(format!("{what}: {e}")),
        LaunchError::Guest(g) => {
            HostError::Failed(format!("{what} did not start: {g} (see {})", log.display()))
        }
        other => HostError::Failed(format!("{what} did not start: {other}")),
    }
}

/// How often the fallback (no pidfd) looks again.
const POLL: Duration = Duration::from_millis(10);

/// Waits up to `timeout` for process `pid`, started at `start` (see `start_time`), to end.
/// True when it has ended (or never was that process).
pub async fn wait_gone(pid: u32, start: u64, timeout: Duration) -> bool {
    let alive = || start_time(pid) == Some(start);
    match pidfd(pid) {
        // Opened after the pid was checked? Then it could name a recycled pid: check again
        // now that the fd pins it.
        // SAFETY: the AsyncFd owns the OwnedFd, which stays open and the same fd until the
        // AsyncFd is dropped.
        Some(fd) if alive() => match unsafe { AsyncFd::register(fd) } {
            Ok(fd) => tokio::time::timeout(timeout, fd.readable())
                .await
                .is_ok_and(|r| r.is_ok()),
            Err(_) => poll_gone(alive, timeout).await,
        },
        Some(_) => true,
        None => poll_gone(alive, timeout).await,
    }
}

async fn poll_gone(alive: impl Fn() -> bool, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while alive() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
    true
}

/// A pidfd for `pid`; None when the process is gone or the kernel has no pidfd_open.
fn pidfd(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel just returned this fd; nothing else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
