//! The seccomp deny-list: syscalls that act on the whole host kernel, or that a container has
//! no business making, fail with EPERM; everything else is allowed (a system container runs a
//! whole distribution, so an allow-list would break it).

use std::collections::BTreeMap;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter};

/// Denied syscalls: kernel code and image loading, host keyrings, eBPF and perf (kernel attack
/// surface), handle-based opens (escape a bind mount), and clock/reboot/swap changes.
pub const DENIED: [(i64, &str); 17] = [
    (libc::SYS_kexec_load, "kexec_load"),
    (libc::SYS_kexec_file_load, "kexec_file_load"),
    (libc::SYS_init_module, "init_module"),
    (libc::SYS_finit_module, "finit_module"),
    (libc::SYS_delete_module, "delete_module"),
    (libc::SYS_open_by_handle_at, "open_by_handle_at"),
    (libc::SYS_bpf, "bpf"),
    (libc::SYS_perf_event_open, "perf_event_open"),
    (libc::SYS_keyctl, "keyctl"),
    (libc::SYS_add_key, "add_key"),
    (libc::SYS_request_key, "request_key"),
    (libc::SYS_reboot, "reboot_unused"),
    (libc::SYS_swapon, "swapon"),
    (libc::SYS_swapoff, "swapoff"),
    (libc::SYS_settimeofday, "settimeofday"),
    (libc::SYS_clock_settime, "clock_settime"),
    (libc::SYS_acct, "acct"),
];

/// Compiles the filter (before fork: the child only installs it).
pub fn program() -> Result<BpfProgram, seccompiler::BackendError> {
    // reboot(2) stays allowed: in a pid namespace it only ends the container (the kernel turns
    // it into a signal to the container's init), and busybox/sysvinit halt that way.
    let rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> = DENIED
        .iter()
        .filter(|(nr, _)| *nr != libc::SYS_reboot)
        .map(|(nr, _)| (*nr, Vec::new()))
        .collect();
    let arch = std::env::consts::ARCH
        .try_into()
        .map_err(|_| seccompiler::BackendError::InvalidTargetArch(std::env::consts::ARCH.into()))?;
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )?;
    filter.try_into()
}

/// Installs `prog` on this thread without setting no_new_privs (seccompiler's apply_filter
/// would): container root keeps setuid programs working, and installing needs CAP_SYS_ADMIN in
/// our user namespace, which container root has.
pub fn install(prog: &BpfProgram) -> Result<(), nix::errno::Errno> {
    let fprog = libc::sock_fprog {
        len: u16::try_from(prog.len()).map_err(|_| nix::errno::Errno::E2BIG)?,
        filter: prog.as_ptr().cast_mut().cast::<libc::sock_filter>(),
    };
    // SAFETY: fprog points at `prog`, alive for the call; the kernel copies the program.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &fprog as *const libc::sock_fprog,
        )
    };
    if rc != 0 {
        return Err(nix::errno::Errno::last());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_filter_compiles() {
        let p = super::program().unwrap();
        assert!(p.len() > super::DENIED.len());
    }
}
