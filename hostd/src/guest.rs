//! hostd's async side of the launcher (`vmm::launcher`), shared by containers and VMs: waiting
//! for a guest's first process or its monitor to end. A pidfd (Linux 5.3+) becomes readable
//! when its process exits, child or not, so a stop learns of the end at once instead of at the
//! next poll.

use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use vmm::launcher::start_time;

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
