//! The capability bounding set: what even container root can never get back. The kept set is
//! LXC's default for system containers; the dropped ones reach the host kernel as a whole
//! (modules, clock, MAC policy, raw I/O, kernel audit config).

use nix::errno::Errno;

/// Capabilities removed from the bounding set (linux/capability.h numbers).
/// SYS_BOOT is kept: in a pid namespace reboot(2) only ends the container (the kernel signals
/// its init), which is how busybox and sysvinit halt.
pub const DROPPED: [(u32, &str); 9] = [
    (16, "SYS_MODULE"),
    (17, "SYS_RAWIO"),
    (25, "SYS_TIME"),
    (30, "AUDIT_CONTROL"),
    (32, "MAC_OVERRIDE"),
    (33, "MAC_ADMIN"),
    (34, "SYSLOG"),
    (35, "WAKE_ALARM"),
    (36, "BLOCK_SUSPEND"),
];

/// Drops `DROPPED` from this process's bounding set (inherited by everything it execs).
/// Capabilities this kernel does not know (EINVAL) are skipped.
pub fn drop_bounding() -> Result<(), Errno> {
    for (cap, _) in DROPPED {
        // SAFETY: prctl with integer arguments only.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) };
        if rc != 0 {
            let e = Errno::last();
            if e != Errno::EINVAL {
                return Err(e);
            }
        }
    }
    Ok(())
}
