//! Id-mapped user namespaces: each unprivileged container gets its own 65536 host ids, so that
//! container root is an ordinary, unique host uid and two containers never share an id.

use std::path::Path;

/// The first host id given to containers (below it: the host's own users, as in /etc/subuid).
pub const ID_BASE: u32 = 100_000;
/// Ids per container: 0..65536 covers every uid a Linux distribution uses (nobody = 65534).
pub const ID_RANGE: u32 = 65_536;
/// Slots that fit below u32::MAX (ids beyond 2^32-1 do not exist).
pub const MAX_SLOTS: u32 = (u32::MAX - ID_BASE) / ID_RANGE;

/// The first host id of `slot`.
pub fn host_base(slot: u32) -> u32 {
    ID_BASE + slot * ID_RANGE
}

/// The lowest slot not in `used`; None when all are taken.
pub fn allocate(used: impl IntoIterator<Item = u32>) -> Option<u32> {
    let mut used: Vec<u32> = used.into_iter().collect();
    used.sort_unstable();
    used.dedup();
    let mut want = 0;
    for u in used {
        if u == want {
            want += 1;
        } else if u > want {
            break;
        }
    }
    (want < MAX_SLOTS).then_some(want)
}

/// The uid_map/gid_map line of `slot`.
pub fn map_line(slot: u32) -> String {
    format!("0 {} {}\n", host_base(slot), ID_RANGE)
}

/// Writes the maps of process `pid`'s user namespace from the parent namespace (as root: no
/// setgroups "deny" needed, so the container may use setgroups(2) like any system).
pub fn write_maps(pid: u32, slot: u32) -> std::io::Result<()> {
    let proc = Path::new("/proc").join(pid.to_string());
    let line = map_line(slot);
    std::fs::write(proc.join("uid_map"), &line)?;
    std::fs::write(proc.join("gid_map"), &line)
}

/// A user namespace with `slot`'s mapping, as an fd, for idmapped mounts: the template's
/// files (owned by host root) appear owned by the container's root through it. A throwaway
/// child holds the namespace while we write its maps and open it; the fd keeps it alive.
pub fn mapping_userns(slot: u32) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::io::Read;
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
    // SAFETY: a fork-like clone into a new user namespace; called from the single-threaded
    // monitor. The child only blocks on a pipe and _exits.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::c_long::from(libc::CLONE_NEWUSER) | libc::c_long::from(libc::SIGCHLD),
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if rc == 0 {
        drop(w);
        let mut b = [0u8; 1];
        let _ = std::fs::File::from(r).read(&mut b);
        // SAFETY: leave without running the monitor's destructors.
        unsafe { libc::_exit(0) };
    }
    drop(r);
    let pid = rc as u32;
    let result = write_maps(pid, slot).and_then(|()| {
        std::fs::File::open(format!("/proc/{pid}/ns/user")).map(std::os::fd::OwnedFd::from)
    });
    drop(w);
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_fill_gaps_and_map_to_disjoint_ranges() {
        assert_eq!(allocate([]), Some(0));
        assert_eq!(allocate([0, 1, 2]), Some(3));
        assert_eq!(allocate([2, 0, 0]), Some(1));
        assert_eq!(allocate([1, 5]), Some(0));
        assert_eq!(host_base(0), 100_000);
        assert_eq!(host_base(3), 100_000 + 3 * 65_536);
        assert_eq!(map_line(1), "0 165536 65536\n");
        let last = MAX_SLOTS - 1;
        assert!(u64::from(host_base(last)) + u64::from(ID_RANGE) <= u64::from(u32::MAX) + 1);
        assert_eq!(allocate(0..MAX_SLOTS), None);
    }
}
