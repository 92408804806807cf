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
    let mut rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> = DENIED
        .iter()
        .filter(|(nr, _)| *nr != libc::SYS_reboot)
        .map(|(nr, _)| (*nr, Vec::new()))
        .collect();
    // No user namespace inside a container's own: a nested one would give its processes a
    // fresh set of capabilities over new namespaces, kernel attack surface a system container
    // does not need (LXC and Proxmox make nesting an opt-in feature). clone3 passes its flags
    // in memory a filter cannot read: it is refused below with ENOSYS, so libc falls back to
    // clone, whose flags are checked here.
    let new_user = u64::try_from(libc::CLONE_NEWUSER).unwrap_or(0x1000_0000);
    for nr in [libc::SYS_unshare, libc::SYS_clone] {
        rules.insert(
            nr,
            vec![seccompiler::SeccompRule::new(vec![
                seccompiler::SeccompCondition::new(
                    0,
                    seccompiler::SeccompCmpArgLen::Qword,
                    seccompiler::SeccompCmpOp::MaskedEq(new_user),
                    new_user,
                )?,
            ])?],
        );
    }
    let arch = std::env::consts::ARCH
        .try_into()
        .map_err(|_| seccompiler::BackendError::InvalidTargetArch(std::env::consts::ARCH.into()))?;
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )?;
    let compiled: BpfProgram = filter.try_into()?;
    Ok([prefix(), compiled].concat())
}

/// Checks that come before the deny-list, which seccompiler's rules cannot express: x32 system
/// calls (the x86-64 ABI's syscall numbers with bit 30 set: a second table in which the
/// deny-list's numbers mean nothing) are refused as a whole, and clone3 answers ENOSYS.
#[cfg(target_arch = "x86_64")]
fn prefix() -> BpfProgram {
    use seccompiler::sock_filter;
    const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    let stmt = |code: u32, k: u32| sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |code: u32, k: u32, jt: u8, jf: u8| sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    let (ld, jeq, jset, ret) = (
        libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
        libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
        libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K,
        libc::BPF_RET | libc::BPF_K,
    );
    let clone3 = u32::try_from(libc::SYS_clone3).unwrap_or(435);
    vec![
        // seccomp_data.arch is at offset 4, .nr at 0. Another architecture: skip to the list.
        stmt(ld, 4),
        jump(jeq, AUDIT_ARCH_X86_64, 0, 5),
        stmt(ld, 0),
        jump(jset, X32_SYSCALL_BIT, 0, 1),
        stmt(ret, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
        jump(jeq, clone3, 0, 1),
        stmt(ret, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
    ]
}

#[cfg(not(target_arch = "x86_64"))]
fn prefix() -> BpfProgram {
    Vec::new()
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

    /// A forked child installs the filter and tries what it refuses; its exit code carries
    /// which errno each attempt got.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn nested_user_namespaces_clone3_and_x32_are_refused() {
        if !nix::unistd::geteuid().is_root() {
            return testkit::skip(
                "seccomp::nested_user_namespaces",
                "needs root (CAP_SYS_ADMIN)",
            );
        }
        let prog = super::program().unwrap();
        // SAFETY: the child only makes raw system calls and exits; no allocation, no locks.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let errno = || std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
                if super::install(&prog).is_err() {
                    // SAFETY: ends the forked child at once.
                    unsafe { libc::_exit(100) };
                }
                // SAFETY: plain system calls with integer arguments.
                let unshare = unsafe { libc::unshare(libc::CLONE_NEWUSER) };
                let e1 = errno();
                // SAFETY: clone3 with a null argument: refused before the kernel reads it.
                let clone3 = unsafe { libc::syscall(libc::SYS_clone3, 0usize, 0usize) };
                let e2 = errno();
                // SAFETY: getpid's x32 number; no arguments.
                let x32 = unsafe { libc::syscall(0x4000_0000 | libc::SYS_getpid) };
                let e3 = errno();
                // SAFETY: an ordinary call the filter allows.
                let pid = unsafe { libc::syscall(libc::SYS_getpid) };
                let ok = unshare == -1
                    && e1 == libc::EPERM
                    && clone3 == -1
                    && e2 == libc::ENOSYS
                    && x32 == -1
                    && e3 == libc::EPERM
                    && pid > 0;
                // SAFETY: ends the forked child at once.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) };
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
    }
}
