//! The jail of a VMM process, the way Firecracker's jailer builds it.
//!
//! hostd's side ([`prepare_root`], [`teardown_root`]): a per-VM root directory (0700) holding
//! only the VM's files (bind mounts of the kernel, initrd, disks onto empty files, read-only
//! where the VM must not write) and the two device nodes it needs (`/dev/kvm`,
//! `/dev/net/tun`).
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

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use nix::sys::stat::{Mode, SFlag, makedev, mknod};
use nix::sys::statvfs::{FsFlags, statvfs};

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

fn path_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(Errno) -> JailError + 'a {
    move |e| JailError::Path {
        op,
        path: path.to_path_buf(),
        source: e.into(),
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> JailError + 'a {
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

/// `name` under `root`, refusing anything that could leave it (`..`, empty names). A leading
/// `/` is allowed: jail paths are written as the VMM will see them.
fn jail_path(root: &Path, name: &str) -> Result<PathBuf, JailError> {
    let rel = Path::new(name.trim_start_matches('/'));
    let plain = rel.components().all(|c| matches!(c, Component::Normal(_)));
    if !plain || rel.as_os_str().is_empty() {
        return Err(JailError::BadName { name: name.into() });
    }
    Ok(root.join(rel))
}

/// Creates the parent directories of `path` (0755: the root itself is 0700 and keeps
/// everyone else out).
fn make_parents(path: &Path) -> Result<(), JailError> {
    if let Some(parent) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(io_err("mkdir", parent))?;
    }
    Ok(())
}

/// hostd's side: makes `root` (mode 0700) hold exactly `files` and `devices`.
///
/// `files` are `(source, name in the jail, read_only)`: an empty file is created at the name
/// and the source is bind-mounted onto it (then remounted nosuid,noexec, and read-only when
/// asked — the read-only flag is per mount, so the source stays writable for hostd). A
/// source may be a regular file or a block device, not a directory.
/// `devices` are `(path in the jail, major, minor, mode)`: character device nodes, e.g.
/// [`DEV_KVM`] and [`DEV_NET_TUN`]. `root` must not be on a nodev mount then.
///
/// Idempotent: a file already bound to its source is only remounted, a device node that is
/// already right only gets its mode set again.
pub fn prepare_root(
    root: &Path,
    files: &[(&Path, &str, bool)],
    devices: &[(&str, u32, u32, u32)],
) -> Result<(), JailError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)
        .map_err(io_err("mkdir", root))?;
    // mkdir's mode goes through the umask, and the directory may be left from an earlier run.
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
        .map_err(io_err("chmod", root))?;

    if !devices.is_empty() {
        let vfs = statvfs(root).map_err(path_err("statvfs", root))?;
        if vfs.flags().contains(FsFlags::ST_NODEV) {
            return Err(JailError::Nodev {
                path: root.to_path_buf(),
            });
        }
    }

    for &(src, name, read_only) in files {
        bind_file(root, src, name, read_only)?;
    }
    for &(name, major, minor, mode) in devices {
        make_device(root, name, major, minor, mode)?;
    }
    Ok(())
}

fn bind_file(root: &Path, src: &Path, name: &str, read_only: bool) -> Result<(), JailError> {
    let target = jail_path(root, name)?;
    let src_meta = std::fs::metadata(src).map_err(io_err("stat", src))?;
    if src_meta.is_dir() {
        return Err(JailError::WrongType {
            path: src.to_path_buf(),
            expected: "a file or block device (only files are bound into a jail)",
        });
    }
    make_parents(&target)?;

    let bound = match std::fs::symlink_metadata(&target) {
        Ok(m) if m.dev() == src_meta.dev() && m.ino() == src_meta.ino() => true,
        Ok(m) if m.file_type().is_file() => false,
        Ok(_) => {
            return Err(JailError::WrongType {
                path: target,
                expected: "a regular file (the mount point of a bound file)",
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&target)
                .map_err(io_err("creating the mount point", &target))?;
            false
        }
        Err(e) => return Err(io_err("stat", &target)(e)),
    };
    if !bound {
        mount(
            Some(src),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(path_err("mount --bind", &target))?;
    }
    // A bind mount takes the flags of the source's mount; the remount sets ours. Not nodev:
    // a disk may be a block device.
    let mut flags =
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    if read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    mount(None::<&str>, &target, None::<&str>, flags, None::<&str>)
        .map_err(path_err("mount -o remount,bind", &target))?;
    Ok(())
}

fn make_device(
    root: &Path,
    name: &str,
    major: u32,
    minor: u32,
    mode: u32,
) -> Result<(), JailError> {
    let path = jail_path(root, name)?;
    make_parents(&path)?;
    let dev = makedev(u64::from(major), u64::from(minor));
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_char_device() && m.rdev() == dev => {}
        Ok(_) => {
            // Something else sits there (an older node with other numbers): replace it.
            std::fs::remove_file(&path).map_err(io_err("unlink", &path))?;
            mknod_char(&path, dev)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => mknod_char(&path, dev)?,
        Err(e) => return Err(io_err("stat", &path)(e)),
    }
    // mknod's mode goes through the umask: set it exactly.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o7777))
        .map_err(io_err("chmod", &path))?;
    Ok(())
}

fn mknod_char(path: &Path, dev: libc::dev_t) -> Result<(), JailError> {
    mknod(path, SFlag::S_IFCHR, Mode::from_bits_truncate(0o600), dev)
        .map_err(path_err("mknod", path))
}

/// The mount points at or under `root` in this mount namespace, in /proc/self/mountinfo
/// order (parents and lower mounts of a stack first).
fn mounts_under(root: &Path) -> Result<Vec<PathBuf>, JailError> {
    let info = Path::new("/proc/self/mountinfo");
    let f = std::fs::File::open(info).map_err(io_err("open", info))?;
    let mut out = Vec::new();
    for line in BufReader::new(f).lines() {
        let line = line.map_err(io_err("read", info))?;
        // id parent major:minor root mount-point options ...
        let Some(field) = line.split(' ').nth(4) else {
            continue;
        };
        let mp = PathBuf::from(unescape_mountinfo(field));
        if mp.starts_with(root) {
            out.push(mp);
        }
    }
    Ok(out)
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// hostd's side: detaches every mount at or under `root` (lazily: a running VMM keeps its
/// own copies in its namespace) and removes the tree. Sources of bound files are untouched.
/// Idempotent: a missing root is fine.
pub fn teardown_root(root: &Path) -> Result<(), JailError> {
    let root = match root.canonicalize() {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("realpath", root)(e)),
    };
    // Reverse order: mounts stacked on one point, and children before their parents.
    for mp in mounts_under(&root)?.iter().rev() {
        match umount2(mp, MntFlags::MNT_DETACH) {
            // EINVAL: no longer a mount point (a parent's detach took it along).
            Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(path_err("umount2(MNT_DETACH)", mp)(e)),
        }
    }
    // A bind still in place would make remove_dir_all fail on it (EBUSY) rather than reach
    // through it: only files are ever bound, never directories.
    match std::fs::remove_dir_all(&root) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("rm -r", &root)(e)),
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
    // SAFETY (all prctl calls below): integer arguments only.
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
    let current = unsafe { libc::prctl(libc::PR_GET_SECUREBITS, 0, 0, 0, 0) };
    if current != SECUREBITS {
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
    let bits = unsafe { libc::prctl(libc::PR_GET_SECUREBITS, 0, 0, 0, 0) };
    if bits != SECUREBITS {
        return Err(JailError::CapsRemain {
            what: "securebits",
            value: bits as u64,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jail_names_stay_inside() {
        let root = Path::new("/j");
        assert_eq!(jail_path(root, "/kernel").unwrap(), Path::new("/j/kernel"));
        assert_eq!(
            jail_path(root, "dev/net/tun").unwrap(),
            Path::new("/j/dev/net/tun")
        );
        for bad in ["", "/", "../x", "a/../../x", "./x"] {
            assert!(jail_path(root, bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(r"/a\040b\011c\134d"), "/a b\tc\\d");
        assert_eq!(unescape_mountinfo(r"/x\04"), r"/x\04");
    }
}
