//! The few Linux and glibc knobs apid turns that the Rust libraries do not wrap.

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

/// `TCP_DEFER_ACCEPT`: the kernel hands a connection to `accept` only once the client has sent
/// something (for us, its TLS ClientHello) or `wait` has passed. Connections that are opened
/// and left idle then wait in the kernel instead of in the accept queue, where every client's
/// new connection would queue behind them.
pub fn defer_accept(listener: &impl AsRawFd, wait: Duration) -> io::Result<()> {
    let secs = libc::c_int::try_from(wait.as_secs().max(1)).unwrap_or(libc::c_int::MAX);
    // SAFETY: a valid socket descriptor, and a pointer to a c_int with its exact size.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&secs as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `SO_LINGER` with a zero timeout: closing the socket sends a reset instead of a FIN, at once
/// and without a TIME_WAIT entry.
pub fn reset_on_close(socket: &impl AsRawFd) -> io::Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket descriptor, and a pointer to a linger struct with its exact size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Makes glibc's malloc give large freed blocks back to the kernel. By default glibc raises its
/// mmap threshold to the size of the largest block freed so far (up to 32 MiB), after which
/// request bodies of up to 1 MiB come from the heap and their memory stays with the process
/// after they are freed. A fixed threshold keeps every block of 128 KiB or more in its own
/// mapping, returned on free.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tunable; called once, before any other thread runs.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Returns free heap memory to the kernel, also from the middle of the heap (glibc only; a
/// no-op elsewhere). Called every few seconds: cheap when little is free.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Bytes an unprivileged writer may still put on the filesystem holding `path` (`statvfs`).
pub fn free_bytes(path: &std::path::Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in the path"))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: a NUL-terminated path and a pointer to a statvfs the call fills on success.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled the struct.
    let st = unsafe { st.assume_init() };
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}
