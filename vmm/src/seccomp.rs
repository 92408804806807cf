//! The seccomp allow-list of a jailed VMM process (see [`crate::jail`]): once it is installed
//! the VMM only runs vCPU threads, its epoll loop, its control socket and I/O on fds it
//! already holds. Every other syscall kills the whole process (SECCOMP_RET_KILL_PROCESS,
//! seen by hostd as death by SIGSYS): a VMM that makes an unexpected syscall is treated as
//! compromised, not asked to carry on.
//!
//! The list is one table, [`SYSCALLS`] (syscall → argument rule → why), plus [`IOCTLS`] for
//! the ioctl requests. It is meant to be tuned with strace: add a row with its reason, or
//! narrow one. x86_64 only (seccompiler checks the audit arch first; x32 numbers match no
//! row and are killed).
//!
//! Installed with TSYNC ([`seccompiler::apply_filter_all_threads`]): every thread of the
//! process gets the filter at once (and no_new_privs, which an unprivileged install needs),
//! so a thread started before [`install`] is not left unfiltered.

use std::collections::BTreeMap;

use kvm_bindings::{
    kvm_clock_data, kvm_cpuid2, kvm_debugregs, kvm_dirty_log, kvm_enable_cap, kvm_fpu,
    kvm_ioeventfd, kvm_irq_level, kvm_irq_routing, kvm_irqchip, kvm_irqfd, kvm_lapic_state,
    kvm_mp_state, kvm_msi, kvm_msr_list, kvm_msrs, kvm_pit_config, kvm_pit_state2, kvm_regs,
    kvm_sregs, kvm_userspace_memory_region, kvm_vcpu_events, kvm_xcrs, kvm_xsave,
};
use libc::{_IO, _IOR, _IOW, _IOWR};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch, sock_filter,
};

/// Why the filter could not be built or installed.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("building the VMM seccomp filter: {0}")]
    Build(#[from] seccompiler::BackendError),
    #[error(
        "installing the VMM seccomp filter on all threads \
         (seccomp(SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC)): {0}"
    )]
    Install(#[source] seccompiler::Error),
}

/// What a syscall's arguments must be for it to be allowed. Argument indexes count from 0;
/// all compared arguments are 32-bit ints for the kernel, so only the low half is compared.
#[derive(Debug, Clone, Copy)]
pub enum Args {
    /// Any arguments.
    Any,
    /// Argument `.0` is one of `.1`.
    OneOf(u8, &'static [u64]),
    /// Argument `.0` is not `.1`.
    Not(u8, u64),
    /// Argument `.0` has all the bits of `.1` set.
    HasBits(u8, u64),
    /// Argument 1 (the request) is one of [`IOCTLS`].
    Ioctls,
    /// Argument `.0` is this process's pid (filled in by [`vmm_filter`]).
    OwnPid(u8),
}

/// One row of the allow-list.
#[derive(Debug, Clone, Copy)]
pub struct Allowed {
    pub name: &'static str,
    pub nr: i64,
    pub args: Args,
    pub why: &'static str,
}

const fn allow(name: &'static str, nr: i64, args: Args, why: &'static str) -> Allowed {
    Allowed {
        name,
        nr,
        args,
        why,
    }
}

use Args::{Any, HasBits, Ioctls, Not, OneOf, OwnPid};

/// The allow-list. Not here on purpose: execve/fork-like process creation, kill (the VMM
/// runs as uid 0, so it could signal hostd), socket/connect/bind, open by path from the
/// cwd, mount and friends, ptrace, process_vm_*, rt_sigaction for our own signals (handlers
/// are installed before the filter), tkill (cannot be pinned to this process; glibc uses tgkill).
///
/// Notes on rows with rules: clone3 takes its flags in memory, which seccomp cannot read, so
/// it is allowed whole — a process forked that way keeps this filter and cannot exec either.
/// rt_sigaction is limited to signals 32 and 33, which glibc >= 2.34 sets up at the first
/// pthread_create (possibly after the filter). openat must name a directory fd (snapshots);
/// even an absolute path would only reach the jail.
#[rustfmt::skip]
pub const SYSCALLS: &[Allowed] = &[
    // --- vCPUs and devices
    allow("ioctl", libc::SYS_ioctl, Ioctls, "KVM, tap and fd ioctls, by request number"),
    // --- I/O on fds the VMM already holds (disks, tap, eventfds, serial, stderr)
    allow("read", libc::SYS_read, Any, "tap, eventfd, pipe, socket reads"),
    allow("write", libc::SYS_write, Any, "tap, eventfd, serial output, stderr (tracing)"),
    allow("readv", libc::SYS_readv, Any, "tap rx into virtio descriptor chains"),
    allow("writev", libc::SYS_writev, Any, "tap tx from virtio descriptor chains"),
    allow("pread64", libc::SYS_pread64, Any, "block device reads"),
    allow("pwrite64", libc::SYS_pwrite64, Any, "block device writes"),
    allow("preadv", libc::SYS_preadv, Any, "block device scatter reads"),
    allow("pwritev", libc::SYS_pwritev, Any, "block device gather writes"),
    allow("lseek", libc::SYS_lseek, Any, "disk size, file offsets"),
    allow("fsync", libc::SYS_fsync, Any, "virtio-blk flush"),
    allow("fdatasync", libc::SYS_fdatasync, Any, "virtio-blk flush"),
    allow("fstat", libc::SYS_fstat, Any, "disk size, std's File metadata"),
    allow("newfstatat", libc::SYS_newfstatat, Any, "glibc's fstat (fstatat with AT_EMPTY_PATH)"),
    allow("statx", libc::SYS_statx, Any, "std's File::metadata"),
    allow("ftruncate", libc::SYS_ftruncate, Any, "snapshot files"),
    allow("openat", libc::SYS_openat, Not(0, libc::AT_FDCWD as u32 as u64), "snapshot files, relative to a dir fd hostd sent; not from the cwd"),
    allow("close", libc::SYS_close, Any, "fds"),
    allow("dup", libc::SYS_dup, Any, "fds"),
    allow("dup3", libc::SYS_dup3, Any, "fds"),
    allow("fcntl", libc::SYS_fcntl, Any, "O_NONBLOCK, FD_CLOEXEC, F_DUPFD_CLOEXEC"),
    allow("pipe2", libc::SYS_pipe2, Any, "internal wakeups"),
    allow("eventfd2", libc::SYS_eventfd2, Any, "ioeventfd/irqfd, event loop wakeups"),
    // --- event loop
    allow("epoll_create1", libc::SYS_epoll_create1, Any, "event loop"),
    allow("epoll_ctl", libc::SYS_epoll_ctl, Any, "event loop"),
    allow("epoll_wait", libc::SYS_epoll_wait, Any, "event loop"),
    allow("epoll_pwait", libc::SYS_epoll_pwait, Any, "event loop (newer libcs use it for epoll_wait)"),
    allow("epoll_pwait2", libc::SYS_epoll_pwait2, Any, "event loop (timeouts in ns)"),
    allow("poll", libc::SYS_poll, Any, "single-fd waits"),
    allow("ppoll", libc::SYS_ppoll, Any, "single-fd waits"),
    // --- control socket (already connected/listening; no socket() or connect())
    allow("accept4", libc::SYS_accept4, Any, "control socket connections from hostd"),
    allow("recvmsg", libc::SYS_recvmsg, Any, "control messages, SCM_RIGHTS fds"),
    allow("sendmsg", libc::SYS_sendmsg, Any, "control replies, SCM_RIGHTS fds"),
    allow("recvfrom", libc::SYS_recvfrom, Any, "control socket reads"),
    allow("sendto", libc::SYS_sendto, Any, "control socket writes"),
    // --- memory
    allow("mmap", libc::SYS_mmap, Any, "guest memory, thread stacks, allocator"),
    allow("munmap", libc::SYS_munmap, Any, "allocator, thread exit"),
    allow("mprotect", libc::SYS_mprotect, Any, "thread stack guard pages, allocator"),
    allow("madvise", libc::SYS_madvise, Any, "allocator, glibc frees exited thread stacks"),
    allow("mremap", libc::SYS_mremap, Any, "allocator (realloc of big buffers)"),
    allow("brk", libc::SYS_brk, Any, "allocator"),
    // --- threads
    allow("futex", libc::SYS_futex, Any, "locks, channels, join"),
    allow("clone", libc::SYS_clone, HasBits(0, libc::CLONE_THREAD as u64), "threads only (pthread_create on libcs without clone3)"),
    allow("clone3", libc::SYS_clone3, Any, "pthread_create (glibc >= 2.34); flags unreadable (see below)"),
    allow("set_robust_list", libc::SYS_set_robust_list, Any, "glibc, every new thread"),
    allow("rseq", libc::SYS_rseq, Any, "glibc, every new thread"),
    allow("sched_yield", libc::SYS_sched_yield, Any, "spin loops"),
    allow("sched_getaffinity", libc::SYS_sched_getaffinity, Any, "available_parallelism"),
    allow("rt_sigprocmask", libc::SYS_rt_sigprocmask, Any, "thread creation, signal masks"),
    allow("rt_sigaction", libc::SYS_rt_sigaction, OneOf(0, &[32, 33]), "glibc's SIGCANCEL/SIGSETXID, set at the first pthread_create"),
    allow("sigaltstack", libc::SYS_sigaltstack, Any, "std's stack overflow handler per thread"),
    allow("rt_sigreturn", libc::SYS_rt_sigreturn, Any, "return from the vCPU kick handler"),
    allow("restart_syscall", libc::SYS_restart_syscall, Any, "resuming a sleep interrupted by the vCPU kick signal"),
    allow("tgkill", libc::SYS_tgkill, OwnPid(0), "kick vCPU threads out of KVM_RUN (own process only)"),
    allow("getpid", libc::SYS_getpid, Any, "tgkill"),
    allow("gettid", libc::SYS_gettid, Any, "tgkill, tracing"),
    allow("prctl", libc::SYS_prctl, OneOf(0, &[libc::PR_SET_NAME as u64, libc::PR_SET_VMA as u64]), "thread names; glibc >= 2.39 names stacks (PR_SET_VMA)"),
    allow("exit", libc::SYS_exit, Any, "thread exit"),
    allow("exit_group", libc::SYS_exit_group, Any, "process exit"),
    // --- time and randomness
    allow("clock_gettime", libc::SYS_clock_gettime, Any, "timestamps when the vDSO cannot"),
    allow("clock_nanosleep", libc::SYS_clock_nanosleep, Any, "sleeps"),
    allow("nanosleep", libc::SYS_nanosleep, Any, "sleeps"),
    allow("getrandom", libc::SYS_getrandom, Any, "HashMap seeds"),
];

const KVMIO: u32 = 0xAE;
const TUN: u32 = b'T' as u32;

/// The ioctl requests allowed (argument 1 of ioctl), with the same direction and size as
/// kvm-ioctls 0.25 encodes them (its constants are private). Only what an x86_64 VMM with
/// in-kernel irqchip/PIT, virtio-mmio and snapshots uses; not KVM_CREATE_VM (the VM exists
/// before the filter), SEV/TDX, guest_memfd, nested state or guest debugging.
#[rustfmt::skip]
pub const IOCTLS: &[(libc::Ioctl, &str)] = &[
    // /dev/kvm (system fd)
    (_IO(KVMIO, 0x03), "KVM_CHECK_EXTENSION"),
    (_IO(KVMIO, 0x04), "KVM_GET_VCPU_MMAP_SIZE"),
    (_IOWR::<kvm_msr_list>(KVMIO, 0x02), "KVM_GET_MSR_INDEX_LIST"),
    (_IOWR::<kvm_cpuid2>(KVMIO, 0x05), "KVM_GET_SUPPORTED_CPUID"),
    (_IOWR::<kvm_msr_list>(KVMIO, 0x0a), "KVM_GET_MSR_FEATURE_INDEX_LIST"),
    // VM fd
    (_IO(KVMIO, 0x41), "KVM_CREATE_VCPU"),
    (_IOW::<kvm_dirty_log>(KVMIO, 0x42), "KVM_GET_DIRTY_LOG"),
    (_IOW::<kvm_userspace_memory_region>(KVMIO, 0x46), "KVM_SET_USER_MEMORY_REGION"),
    (_IO(KVMIO, 0x47), "KVM_SET_TSS_ADDR"),
    (_IOW::<u64>(KVMIO, 0x48), "KVM_SET_IDENTITY_MAP_ADDR"),
    (_IO(KVMIO, 0x60), "KVM_CREATE_IRQCHIP"),
    (_IOW::<kvm_irq_level>(KVMIO, 0x61), "KVM_IRQ_LINE"),
    (_IOWR::<kvm_irqchip>(KVMIO, 0x62), "KVM_GET_IRQCHIP"),
    (_IOR::<kvm_irqchip>(KVMIO, 0x63), "KVM_SET_IRQCHIP"),
    (_IOW::<kvm_irq_routing>(KVMIO, 0x6a), "KVM_SET_GSI_ROUTING"),
    (_IOW::<kvm_irqfd>(KVMIO, 0x76), "KVM_IRQFD"),
    (_IOW::<kvm_pit_config>(KVMIO, 0x77), "KVM_CREATE_PIT2"),
    (_IOW::<kvm_ioeventfd>(KVMIO, 0x79), "KVM_IOEVENTFD"),
    (_IOW::<kvm_clock_data>(KVMIO, 0x7b), "KVM_SET_CLOCK"),
    (_IOR::<kvm_clock_data>(KVMIO, 0x7c), "KVM_GET_CLOCK"),
    (_IOR::<kvm_pit_state2>(KVMIO, 0x9f), "KVM_GET_PIT2"),
    (_IOW::<kvm_pit_state2>(KVMIO, 0xa0), "KVM_SET_PIT2"),
    (_IOW::<kvm_msi>(KVMIO, 0xa5), "KVM_SIGNAL_MSI"),
    (_IOW::<kvm_enable_cap>(KVMIO, 0xa3), "KVM_ENABLE_CAP"),
    // vCPU fd
    (_IO(KVMIO, 0x80), "KVM_RUN"),
    (_IOR::<kvm_regs>(KVMIO, 0x81), "KVM_GET_REGS"),
    (_IOW::<kvm_regs>(KVMIO, 0x82), "KVM_SET_REGS"),
    (_IOR::<kvm_sregs>(KVMIO, 0x83), "KVM_GET_SREGS"),
    (_IOW::<kvm_sregs>(KVMIO, 0x84), "KVM_SET_SREGS"),
    (_IOWR::<kvm_msrs>(KVMIO, 0x88), "KVM_GET_MSRS"),
    (_IOW::<kvm_msrs>(KVMIO, 0x89), "KVM_SET_MSRS"),
    (_IOR::<kvm_fpu>(KVMIO, 0x8c), "KVM_GET_FPU"),
    (_IOW::<kvm_fpu>(KVMIO, 0x8d), "KVM_SET_FPU"),
    (_IOR::<kvm_lapic_state>(KVMIO, 0x8e), "KVM_GET_LAPIC"),
    (_IOW::<kvm_lapic_state>(KVMIO, 0x8f), "KVM_SET_LAPIC"),
    (_IOW::<kvm_cpuid2>(KVMIO, 0x90), "KVM_SET_CPUID2"),
    (_IOWR::<kvm_cpuid2>(KVMIO, 0x91), "KVM_GET_CPUID2"),
    (_IOR::<kvm_mp_state>(KVMIO, 0x98), "KVM_GET_MP_STATE"),
    (_IOW::<kvm_mp_state>(KVMIO, 0x99), "KVM_SET_MP_STATE"),
    (_IO(KVMIO, 0x9a), "KVM_NMI"),
    (_IOR::<kvm_vcpu_events>(KVMIO, 0x9f), "KVM_GET_VCPU_EVENTS"),
    (_IOW::<kvm_vcpu_events>(KVMIO, 0xa0), "KVM_SET_VCPU_EVENTS"),
    (_IOR::<kvm_debugregs>(KVMIO, 0xa1), "KVM_GET_DEBUGREGS"),
    (_IOW::<kvm_debugregs>(KVMIO, 0xa2), "KVM_SET_DEBUGREGS"),
    (_IO(KVMIO, 0xa2), "KVM_SET_TSC_KHZ"),
    (_IO(KVMIO, 0xa3), "KVM_GET_TSC_KHZ"),
    (_IOR::<kvm_xsave>(KVMIO, 0xa4), "KVM_GET_XSAVE"),
    (_IOW::<kvm_xsave>(KVMIO, 0xa5), "KVM_SET_XSAVE"),
    (_IOR::<kvm_xsave>(KVMIO, 0xcf), "KVM_GET_XSAVE2"),
    (_IOR::<kvm_xcrs>(KVMIO, 0xa6), "KVM_GET_XCRS"),
    (_IOW::<kvm_xcrs>(KVMIO, 0xa7), "KVM_SET_XCRS"),
    (_IO(KVMIO, 0xad), "KVM_KVMCLOCK_CTRL"),
    // tap fd (TUNSETIFF itself happens before the filter, but re-attaching after a snapshot
    // restore would need it; it still needs CAP_NET_ADMIN unless the tap is owned by us)
    (_IOW::<libc::c_int>(TUN, 202), "TUNSETIFF"),
    (_IOR::<libc::c_int>(TUN, 210), "TUNGETIFF"),
    (_IOW::<libc::c_uint>(TUN, 208), "TUNSETOFFLOAD"),
    (_IOW::<libc::c_int>(TUN, 216), "TUNSETVNETHDRSZ"),
    // any fd
    (libc::FIONBIO, "FIONBIO (std's set_nonblocking)"),
    (libc::FIOCLEX, "FIOCLEX (std's set_cloexec)"),
    (libc::TCGETS, "TCGETS (isatty: is stderr a terminal, for log colours)"),
];

/// An ioctl request as seccomp sees it: the kernel takes it as a 32-bit `unsigned int`
/// (`libc::Ioctl` is `c_ulong` on glibc, `c_int` on musl).
fn request(req: libc::Ioctl) -> u64 {
    u64::from(req as u32)
}

fn arg(index: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, SeccompError> {
    Ok(SeccompCondition::new(
        index,
        SeccompCmpArgLen::Dword,
        op,
        value,
    )?)
}

fn one(cond: SeccompCondition) -> Result<SeccompRule, SeccompError> {
    Ok(SeccompRule::new(vec![cond])?)
}

/// The seccompiler rules of one row: empty means "any arguments", several are alternatives.
fn rules(args: Args) -> Result<Vec<SeccompRule>, SeccompError> {
    Ok(match args {
        Any => Vec::new(),
        OneOf(i, values) => values
            .iter()
            .map(|v| one(arg(i, SeccompCmpOp::Eq, *v)?))
            .collect::<Result<_, _>>()?,
        Not(i, v) => vec![one(arg(i, SeccompCmpOp::Ne, v)?)?],
        HasBits(i, bits) => vec![one(arg(i, SeccompCmpOp::MaskedEq(bits), bits)?)?],
        Ioctls => IOCTLS
            .iter()
            .map(|(req, _)| one(arg(1, SeccompCmpOp::Eq, request(*req))?))
            .collect::<Result<_, _>>()?,
        OwnPid(i) => vec![one(arg(
            i,
            SeccompCmpOp::Eq,
            u64::from(std::process::id()),
        )?)?],
    })
}

/// Builds the VMM's filter from [`SYSCALLS`]: listed syscalls whose arguments match are
/// allowed, anything else kills the process. Build it in the VMM process itself (tgkill is
/// pinned to its pid), once, before [`install`].
pub fn vmm_filter() -> Result<BpfProgram, SeccompError> {
    let mut map: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for row in SYSCALLS {
        map.insert(row.nr, rules(row.args)?);
    }
    let filter = SeccompFilter::new(
        map,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )?;
    Ok(filter.try_into()?)
}

/// Installs `prog` on every thread of this process (TSYNC), setting no_new_privs first as an
/// unprivileged install requires. Irreversible.
pub fn install(prog: impl AsRef<[sock_filter]>) -> Result<(), SeccompError> {
    seccompiler::apply_filter_all_threads(prog.as_ref()).map_err(SeccompError::Install)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_kernel_headers() {
        let find = |name: &str| {
            IOCTLS
                .iter()
                .find(|(_, n)| n.starts_with(name))
                .map(|(r, _)| request(*r))
                .unwrap()
        };
        // Values from linux/kvm.h and linux/if_tun.h on x86_64.
        assert_eq!(find("KVM_RUN"), 0xAE80);
        assert_eq!(find("KVM_CREATE_VCPU"), 0xAE41);
        assert_eq!(find("KVM_GET_REGS"), 0x8090_AE81);
        assert_eq!(find("KVM_SET_SREGS"), 0x4138_AE84);
        assert_eq!(find("KVM_SET_USER_MEMORY_REGION"), 0x4020_AE46);
        assert_eq!(find("KVM_SET_CPUID2"), 0x4008_AE90);
        assert_eq!(find("KVM_IRQFD"), 0x4020_AE76);
        assert_eq!(find("KVM_GET_XSAVE2"), 0x9000_AECF);
        assert_eq!(find("TUNSETIFF"), 0x4004_54CA);
        assert_eq!(find("TUNSETOFFLOAD"), 0x4004_54D0);
    }

    #[test]
    fn rows_are_unique_and_the_filter_builds() {
        let mut seen = std::collections::BTreeSet::new();
        for row in SYSCALLS {
            assert!(seen.insert(row.nr), "{} listed twice", row.name);
            assert!(!row.why.is_empty(), "{} has no reason", row.name);
        }
        let mut reqs = std::collections::BTreeSet::new();
        for (req, name) in IOCTLS {
            assert!(reqs.insert(*req), "{name} listed twice");
        }
        let prog = vmm_filter().unwrap();
        assert!(prog.len() > SYSCALLS.len() + IOCTLS.len());
    }
}
