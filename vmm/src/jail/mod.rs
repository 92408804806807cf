//! The jail of a VMM process, the way Firecracker's jailer builds it.
//!
//! hostd's side ([`root`]: [`prepare_root`], [`teardown_root`]): a per-VM root directory
//! (0700) holding only the VM's files (bind mounts of the kernel, initrd, disks onto empty
//! files, read-only where the VM must not write) and the two device nodes it needs
//! (`/dev/kvm`, `/dev/net/tun`).
//!
//! The VMM's side (`hostd --vmm`, started as root), in this order:
//! 1. [`enter`]: new mount/IPC/UTS namespaces, pivot_root into the prepared root, so that
//!    nothing outside it can be named any more; `no_new_privs`.
//! 2. open the jail paths (`/kernel`, `/disk0`, `/dev/kvm`, `/dev/net/tun` + TUNSETIFF, which
//!    still needs CAP_NET_ADMIN).
//! 3. [`drop_privileges`]: empty every capability set and lock the securebits. The process
//!    stays uid 0 but is an ordinary user for the kernel: file access follows the owner and
//!    mode bits only, which is why the root holds nothing but the VM's own files.
//! 4. [`crate::seccomp::install`] of [`crate::seccomp::vmm_filter`].
//!
//! What the jail deliberately does not do:
//! - no new PID, user or network namespace: the VMM has to attach to a tap device that netd
//!   created in the host's network namespace, and hostd watches it as an ordinary child.
//! - the process stays dumpable (no `PR_SET_DUMPABLE 0`): hostd reads `/proc/<pid>` of it
//!   (status, fds, stats), which a non-dumpable process denies to everyone but root with
//!   CAP_SYS_PTRACE.
//! - no closing of inherited fds: the caller decides what it passed (the launch file, the
//!   control socket, the log pipe) and must spawn with CLOEXEC everywhere else.

pub mod root;

use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use nix::sys::stat::Mode;

pub use root::{prepare_root, teardown_root};

/// `/dev/kvm` for [`prepare_root`]: (path in the jail, major, minor, mode).
pub const DEV_KVM: (&str, u32, u32, u32) = ("/dev/kvm", 10, 232, 0o600);
/// `/dev/net/tun` for [`prepare_root`]: (path in the jail, major, minor, mode).
pub const DEV_NET_TUN: (&str, u32, u32, u32) = ("/dev/net/tun", 10, 200, 0o600);

/// Why a jail could not be prepared, entered or torn down. Every variant names the syscall
/// (or step) and, where there is one, the path.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error("{op} {}: {source}", path.display())]
    Path {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{op}: {source}")]
    Syscall {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("jail name {name:?}: must be a plain path inside the jail (no `..`, not empty)")]
    BadName { name: String },
    #[error("{}: exists and is not {expected}", path.display())]
    WrongType {
        path: PathBuf,
        expected: &'static str,
    },
    #[error(
        "{}: on a nodev mount, device nodes in it cannot be opened; put jails elsewhere",
        path.display()
    )]
    Nodev { path: PathBuf },
    #[error(
        "jail::enter needs a single-threaded process (namespaces, root and capabilities are \
         per thread), this one has {threads} threads"
    )]
    NotSingleThreaded { threads: u32 },
    #[error("capabilities remain after dropping them: {what} = {value:#x}")]
    CapsRemain { what: &'static str, value: u64 },
}

pub(crate) fn path_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(Errno) -> JailError + 'a {
    move |e| JailError::Path {
        op,
        path: path.to_path_buf(),
        source: e.into(),
    }
}

pub(crate) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> JailError + 'a {
    move |source| JailError::Path {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn sys_err(op: &'static str) -> impl FnOnce(Errno) -> JailError {
    move |e| JailError::Syscall {
        op,
        source: e.into(),
    }
}

/// The number of threads of this process (from /proc/self/status).
fn thread_count() -> Result<u32, JailError> {
    let status = Path::new("/proc/self/status");
    let text = std::fs::read_to_string(status).map_err(io_err("read", status))?;
    text.lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| JailError::Path {
            op: "parsing Threads:",
            path: status.to_path_buf(),
            source: std::io::Error::from(std::io::ErrorKind::InvalidData),
        })
}

/// The VMM's side: puts this process into `root` (prepared by [`prepare_root`]). Afterwards
/// only what is under `root` can be named, as `/…`; /proc, /sys and /dev are not mounted.
///
/// Must be called while the process has one thread: mount namespace, root directory and
/// capabilities belong to a thread, so a thread started earlier would stay outside the jail.
/// Checked (that is the last moment /proc can be read).
pub fn enter(root: &Path) -> Result<(), JailError> {
    let threads = thread_count()?;
    if threads != 1 {
        return Err(JailError::NotSingleThreaded { threads });
    }
    let root = root.canonicalize().map_err(io_err("realpath", root))?;

    // No NEWPID/NEWUSER/NEWNET: see the module comment.
    unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS)
        .map_err(sys_err("unshare(CLONE_NEWNS|CLONE_NEWIPC|CLONE_NEWUTS)"))?;
    // rslave, as Firecracker's jailer: nothing mounted here propagates back to the host (and
    // pivot_root refuses shared mounts), while the host's unmounts still reach us.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(path_err("mount --make-rslave", Path::new("/")))?;
    // pivot_root needs the new root to be a mount point; MS_REC brings the file binds along
    // (with their read-only flags).
    mount(
        Some(&root),
        &root,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(path_err("mount --rbind (onto itself)", &root))?;
    // After the bind, chdir lands on the new mount, not the directory under it.
    nix::unistd::chdir(&root).map_err(path_err("chdir", &root))?;

    let old = PathBuf::from(format!("old-root.{}", std::process::id()));
    nix::unistd::mkdir(&old, Mode::from_bits_truncate(0o700))
        .map_err(path_err("mkdir", &root.join(&old)))?;
    nix::unistd::pivot_root(".", &old).map_err(path_err("pivot_root", &root))?;
    nix::unistd::chdir("/").map_err(path_err("chdir", Path::new("/")))?;
    let old = Path::new("/").join(old);
    umount2(&old, MntFlags::MNT_DETACH).map_err(path_err("umount2(MNT_DETACH) old root", &old))?;
    std::fs::remove_dir(&old).map_err(io_err("rmdir", &old))?;

    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(sys_err("prctl(PR_SET_NO_NEW_PRIVS)")(Errno::last()));
    }
    Ok(())
}

/// The securebits [`drop_privileges`] sets and locks: uid 0 gets no capabilities from exec
/// (NOROOT), changing uids never touches capabilities (NO_SETUID_FIXUP), KEEP_CAPS stays off,
/// and no ambient capability can be raised.
pub const SECUREBITS: libc::c_int = libc::SECBIT_NOROOT
    | libc::SECBIT_NOROOT_LOCKED
    | libc::SECBIT_NO_SETUID_FIXUP
    | libc::SECBIT_NO_SETUID_FIXUP_LOCKED
    | libc::SECBIT_KEEP_CAPS_LOCKED
    | libc::SECBIT_NO_CAP_AMBIENT_RAISE
    | libc::SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;

/// linux/capability.h: 64-bit capability sets in two 32-bit words.
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// This thread's capability sets, as bit masks (bit n = capability n).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CapSets {
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub bounding: u64,
    pub ambient: u64,
}

/// Whether the kernel knows capability `cap` (PR_CAPBSET_READ says EINVAL past the last one;
/// /proc/sys/kernel/cap_last_cap is not mounted in the jail).
fn cap_known(cap: u32) -> bool {
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_CAPBSET_READ, libc::c_ulong::from(cap), 0, 0, 0) >= 0 }
}

/// Reads this thread's capability sets with capget and prctl (not /proc/self/status: /proc is
/// not mounted in the jail).
pub fn capabilities() -> Result<CapSets, JailError> {
    let mut hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: hdr and two data structs, as the v3 ABI wants; both outlive the call.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &raw mut hdr, data.as_mut_ptr()) };
    if rc != 0 {
        return Err(sys_err("capget")(Errno::last()));
    }
    let join = |f: fn(&CapData) -> u32| u64::from(f(&data[0])) | (u64::from(f(&data[1])) << 32);
    let mut sets = CapSets {
        effective: join(|d| d.effective),
        permitted: join(|d| d.permitted),
        inheritable: join(|d| d.inheritable),
        ..CapSets::default()
    };
    let mut cap = 0;
    while cap < 64 && cap_known(cap) {
        // SAFETY: prctl with integer arguments only.
        let (b, a) = unsafe {
            (
                libc::prctl(libc::PR_CAPBSET_READ, libc::c_ulong::from(cap), 0, 0, 0),
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_IS_SET as libc::c_ulong,
                    libc::c_ulong::from(cap),
                    0,
                    0,
                ),
            )
        };
        if b > 0 {
            sets.bounding |= 1 << cap;
        }
        if a > 0 {
            sets.ambient |= 1 << cap;
        }
        cap += 1;
    }
    Ok(sets)
}

/// The VMM's side, after it opened its files and devices: empties the ambient, bounding,
/// effective, permitted and inheritable sets and locks [`SECUREBITS`]. The process keeps
/// uid 0 (so it still owns the root-owned files of its jail) but has no capability left, and
/// no exec or setuid can give one back. Checked afterwards with [`capabilities`].
pub fn drop_privileges() -> Result<(), JailError> {
    // Order matters: securebits and the bounding set need CAP_SETPCAP, which capset removes.
    // SAFETY: PR_CAP_AMBIENT_CLEAR_ALL takes integer arguments only (no pointer the kernel
    // could write through), and every variadic argument is passed as the c_ulong it reads.
    let rc = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    if rc != 0 {
        return Err(sys_err("prctl(PR_CAP_AMBIENT_CLEAR_ALL)")(Errno::last()));
    }
    // Setting the same locked bits again would need CAP_SETPCAP: skip when already done.
    // SAFETY: PR_GET_SECUREBITS reads no argument and writes no memory; it returns the bits.
    let current = unsafe { libc::prctl(libc::PR_GET_SECUREBITS, 0, 0, 0, 0) };
    if current != SECUREBITS {
        // SAFETY: PR_SET_SECUREBITS takes the bits as an integer; no memory is passed.
        let rc = unsafe {
            libc::prctl(
                libc::PR_SET_SECUREBITS,
                SECUREBITS as libc::c_ulong,
                0,
                0,
                0,
            )
        };
        if rc != 0 {
            return Err(sys_err("prctl(PR_SET_SECUREBITS)")(Errno::last()));
        }
    }
    let mut cap = 0;
    while cap < 64 && cap_known(cap) {
        // SAFETY: PR_CAPBSET_DROP takes the capability number as an integer; no memory is
        // passed, and an unknown number is an error return, not undefined behaviour.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) };
        // EPERM without CAP_SETPCAP is fine if the cap is already gone (checked below).
        if rc != 0 && Errno::last() != Errno::EPERM {
            return Err(sys_err("prctl(PR_CAPBSET_DROP)")(Errno::last()));
        }
        cap += 1;
    }
    let mut hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [CapData::default(); 2];
    // SAFETY: hdr and two (empty) data structs, as the v3 ABI wants; both outlive the call.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &raw mut hdr, data.as_ptr()) };
    if rc != 0 {
        return Err(sys_err("capset(empty)")(Errno::last()));
    }

    let sets = capabilities()?;
    for (what, value) in [
        ("CapEff", sets.effective),
        ("CapPrm", sets.permitted),
        ("CapInh", sets.inheritable),
        ("CapBnd", sets.bounding),
        ("CapAmb", sets.ambient),
    ] {
        if value != 0 {
            return Err(JailError::CapsRemain { what, value });
        }
    }
    // SAFETY: PR_GET_SECUREBITS reads no argument and writes no memory; it returns the bits.
    let bits = unsafe { libc::prctl(libc::PR_GET_SECUREBITS, 0, 0, 0, 0) };
    if bits != SECUREBITS {
        return Err(JailError::CapsRemain {
            what: "securebits",
            value: bits as u64,
        });
    }
    Ok(())
}
