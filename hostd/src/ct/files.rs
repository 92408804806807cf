//! Files into and out of a container (`cairnctl ct push|pull`, apid's `PUT|GET /ct/NAME/files`).
//!
//! apid never resolves a container path: hostd opens the file here and hands apid the open
//! descriptor over D-Bus. Every path is resolved INSIDE the container's root with openat2
//! (`RESOLVE_IN_ROOT`: `..` and absolute symlinks stop at the container's `/`;
//! `RESOLVE_NO_MAGICLINKS`: no `/proc/PID/root`-style jumps; `RESOLVE_NO_XDEV`: no crossing
//! into mounts — the container's /proc, /sys, /dev or a tmpfs its init made), from a
//! directory descriptor of that root: a running container's `/proc/PID/root`, or for a
//! stopped one its overlay, mounted for the copy only in a mount namespace of its own that
//! vanishes with the last descriptor.
//!
//! A write goes to a hidden temporary name beside the target, created by hostd, owned by the
//! container's root as the host sees it (an unprivileged container's ids are shifted, see
//! `runtime::idmap`), and is renamed over the target only on [`commit`]: whole or nothing.
//! A write that is neither committed nor aborted (apid killed) is removed once its file has
//! not grown for [`IDLE`].

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::Mode;

use super::runtime::{idmap, rootfs};
use crate::error::HostError;

/// A write nobody committed nor aborted is dropped when its file has not grown for this long
/// (FileError::NoToken says so).
pub const IDLE: Duration = Duration::from_secs(600);
/// Writes open at once: each holds descriptors (and, stopped, a mount) in hostd.
pub const MAX_PENDING: usize = 16;
/// The longest path taken, as the kernel's PATH_MAX.
const MAX_PATH: usize = 4096;

/// Where a container's files are.
#[derive(Debug, Clone)]
pub enum Root {
    /// A running (or paused) container: its init's root.
    Running { pid: u32 },
    /// A stopped container: what its overlay is made of (as `runtime::Launch` names them).
    Stopped(Layers),
}

#[derive(Debug, Clone)]
pub struct Layers {
    pub lower: PathBuf,
    pub lower_mount: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub merged: PathBuf,
    /// Id-map slot; None for a privileged container (its ids are the host's).
    pub slot: Option<u32>,
}

/// A container's files: where they are and whose ids they carry.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub root: Root,
    /// The host id of the container's id 0 (None: privileged, the same ids as the host's).
    pub id_base: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error(
        "path {0:?}: expected an absolute path inside the container (/dir/file), without . or .. components"
    )]
    BadPath(String),
    #[error("no {path} in container {ct:?}")]
    Missing { ct: String, path: String },
    #[error("{path} in container {ct:?} is {what}, not a regular file")]
    NotFile {
        ct: String,
        path: String,
        what: &'static str,
    },
    #[error("a parent of {path} in container {ct:?} is not a directory")]
    NotDir { ct: String, path: String },
    #[error(
        "{path} in container {ct:?} crosses a mount point (/proc, /sys, /dev, or a mount the container made): files go only into and out of its root filesystem"
    )]
    CrossesMount { ct: String, path: String },
    #[error("{path} in container {ct:?}: too many symlinks, or a /proc magic link")]
    Loop { ct: String, path: String },
    #[error("mode {0:o}: expected permission bits only (0 to 07777)")]
    BadMode(u32),
    #[error("uid/gid {0}: an unprivileged container's ids are 0 to 65535")]
    BadId(u32),
    #[error("{0} file writes are open at once; retry when one has finished")]
    Busy(usize),
    #[error("no file write {0:?} is open (finished, aborted, or dropped after 600 s idle)")]
    NoToken(String),
    #[error("no room left in container {ct:?}'s filesystem for {path}")]
    NoSpace { ct: String, path: String },
    #[error("{what} {path} in container {ct:?}: {errno}")]
    Io {
        ct: String,
        path: String,
        what: &'static str,
        errno: Errno,
    },
}

impl From<FileError> for HostError {
    fn from(e: FileError) -> HostError {
        match e {
            FileError::Missing { .. } | FileError::NoToken(_) => HostError::NotFound(e.to_string()),
            FileError::Busy(_) => HostError::Busy(e.to_string()),
            FileError::Io { .. } | FileError::NoSpace { .. } => HostError::Failed(e.to_string()),
            _ => HostError::InvalidArgs(e.to_string()),
        }
    }
}

/// Splits an absolute container path into its parent (as given) and its last component.
/// `.` and `..` are refused outright: the kernel would keep them inside the root anyway, but a
/// path that says where it goes is what the user meant to give.
pub fn split_path(path: &str) -> Result<(&str, &str), FileError> {
    let bad = || FileError::BadPath(path.to_string());
    if !path.starts_with('/') || path.len() > MAX_PATH || path.contains('\0') {
        return Err(bad());
    }
    if path.split('/').any(|c| c == "." || c == "..") {
        return Err(bad());
    }
    let trimmed = path.trim_end_matches('/');
    let (parent, name) = trimmed.rsplit_once('/').ok_or_else(bad)?;
    if name.is_empty() || trimmed.len() != path.len() {
        return Err(bad());
    }
    Ok((if parent.is_empty() { "/" } else { parent }, name))
}

/// The host ids a new file of container ids `uid`/`gid` gets.
pub fn host_ids(id_base: Option<u32>, uid: u32, gid: u32) -> Result<(u32, u32), FileError> {
    match id_base {
        None => Ok((uid, gid)),
        Some(base) => {
            for id in [uid, gid] {
                if id >= idmap::ID_RANGE {
                    return Err(FileError::BadId(id));
                }
            }
            Ok((base + uid, base + gid))
        }
    }
}

fn resolve() -> ResolveFlag {
    ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS | ResolveFlag::RESOLVE_NO_XDEV
}

/// `path` under `root`, resolved inside it.
fn open_in(root: &impl AsFd, path: &str, flags: OFlag) -> Result<OwnedFd, Errno> {
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(resolve());
    // EAGAIN: a rename or mount elsewhere raced a `..` in the lookup; the kernel asks to try
    // again. A bounded number of times: a host busy renaming must not spin a thread forever.
    let mut tries = 0;
    loop {
        match openat2(root.as_fd(), path, how) {
            Err(Errno::EAGAIN) if tries < 100 => tries += 1,
            other => {
                if tries > 0 {
                    tracing::debug!(path, tries, "openat2 retried");
                }
                return other;
            }
        }
    }
}

fn errno_error(ct: &str, path: &str, what: &'static str, errno: Errno) -> FileError {
    let (ct, path) = (ct.to_string(), path.to_string());
    match errno {
        Errno::ENOENT => FileError::Missing { ct, path },
        Errno::ENOTDIR => FileError::NotDir { ct, path },
        Errno::EXDEV => FileError::CrossesMount { ct, path },
        Errno::ELOOP => FileError::Loop { ct, path },
        Errno::ENOSPC | Errno::EDQUOT => FileError::NoSpace { ct, path },
        Errno::EISDIR => FileError::NotFile {
            ct,
            path,
            what: "a directory",
        },
        errno => FileError::Io {
            ct,
            path,
            what,
            errno,
        },
    }
}

fn kind_of(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => "a directory",
        libc::S_IFLNK => "a symlink",
        libc::S_IFIFO => "a fifo",
        libc::S_IFSOCK => "a socket",
        libc::S_IFCHR | libc::S_IFBLK => "a device",
        _ => "not a regular file",
    }
}

/// An open file of a container, for reading: the file, its permission bits and its size.
pub struct ReadFile {
    pub file: std::fs::File,
    pub mode: u32,
    pub size: u64,
}

/// Opens `path` of the container whose root is `root` for reading. Only regular files: the
/// file is first opened as O_PATH and checked, so that no device or fifo is ever opened.
pub fn open_read(root: &RootDir, ct: &str, path: &str) -> Result<ReadFile, FileError> {
    split_path(path)?;
    let handle =
        open_in(root, path, OFlag::O_PATH).map_err(|e| errno_error(ct, path, "opening", e))?;
    let meta = nix::sys::stat::fstat(&handle).map_err(|e| errno_error(ct, path, "stat of", e))?;
    if meta.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(FileError::NotFile {
            ct: ct.to_string(),
            path: path.to_string(),
            what: kind_of(meta.st_mode),
        });
    }
    // Reopened through our own descriptor table: the very inode checked above.
    let file =
        std::fs::File::open(format!("/proc/self/fd/{}", handle.as_raw_fd())).map_err(|e| {
            errno_error(
                ct,
                path,
                "opening",
                Errno::from_raw(e.raw_os_error().unwrap_or(0)),
            )
        })?;
    let meta = file.metadata().map_err(|e| {
        errno_error(
            ct,
            path,
            "stat of",
            Errno::from_raw(e.raw_os_error().unwrap_or(0)),
        )
    })?;
    Ok(ReadFile {
        file,
        mode: meta.mode() & 0o7777,
        size: meta.len(),
    })
}

/// A file being written: a hidden temporary beside its target, renamed over it on commit and
/// removed otherwise.
pub struct Write {
    ct: String,
    path: String,
    parent: OwnedFd,
    /// The mount namespace a stopped container's overlay lives in, kept until the rename.
    _ns: Option<OwnedFd>,
    name: String,
    temp: String,
    /// The host ids names are made as (see [`as_owner`]).
    owner: (u32, u32),
    file: std::fs::File,
    done: bool,
}

impl Write {
    pub fn file(&self) -> &std::fs::File {
        &self.file
    }

    /// Syncs the file and renames it over its target (then syncs the directory).
    pub fn commit(mut self) -> Result<u64, FileError> {
        let io = |what, e: std::io::Error| {
            errno_error(
                &self.ct,
                &self.path,
                what,
                Errno::from_raw(e.raw_os_error().unwrap_or(0)),
            )
        };
        self.file.sync_all().map_err(|e| io("syncing", e))?;
        let size = self.file.metadata().map_err(|e| io("stat of", e))?.len();
        let (parent, temp, name) = (&self.parent, self.temp.as_str(), self.name.as_str());
        as_owner(self.owner.0, self.owner.1, || {
            nix::fcntl::renameat(parent, temp, parent, name)
        })
        .map_err(|e| errno_error(&self.ct, &self.path, "renaming into", e))?;
        self.done = true;
        let _ = nix::unistd::fsync(&self.parent);
        Ok(size)
    }
}

impl Drop for Write {
    fn drop(&mut self) {
        if !self.done {
            let (parent, temp) = (&self.parent, self.temp.as_str());
            let _ = as_owner(self.owner.0, self.owner.1, || {
                nix::unistd::unlinkat(parent, temp, nix::unistd::UnlinkatFlags::NoRemoveDir)
            });
        }
    }
}

/// Runs `f` as host ids `uid`/`gid`. A running container's overlay was mounted in its user
/// namespace, where host root is unmapped: the kernel refuses (EOVERFLOW) to create names
/// (files, renames onto new names) for an fsuid it cannot map. So they are made by a thread of
/// its own whose fsuid/fsgid are the owner's, keeping its capabilities
/// (SECBIT_NO_SETUID_FIXUP) so that directory permissions bind it no more than they bind
/// hostd; its credentials end with it.
fn as_owner<T: Send>(
    uid: u32,
    gid: u32,
    f: impl FnOnce() -> Result<T, Errno> + Send,
) -> Result<T, Errno> {
    if !nix::unistd::geteuid().is_root() {
        // Not hostd (a unit test as a user): files can only be its own anyway.
        return f();
    }
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                const SECBIT_NO_SETUID_FIXUP: libc::c_ulong = 1 << 2;
                // SAFETY: prctl with integer arguments; it changes this thread's credentials.
                let bits = unsafe { libc::prctl(libc::PR_GET_SECUREBITS) };
                let bits = Errno::result(bits)? as libc::c_ulong;
                // SAFETY: as above.
                let rc =
                    unsafe { libc::prctl(libc::PR_SET_SECUREBITS, bits | SECBIT_NO_SETUID_FIXUP) };
                Errno::result(rc)?;
                nix::unistd::setfsgid(nix::unistd::Gid::from_raw(gid));
                nix::unistd::setfsuid(nix::unistd::Uid::from_raw(uid));
                f()
            })
            .join()
            .unwrap_or(Err(Errno::EIO))
    })
}

/// Creates `name` as `uid`/`gid`: one component, O_EXCL|O_NOFOLLOW beside an O_PATH
/// directory, so nothing is resolved.
fn create_as(parent: &OwnedFd, name: &str, uid: u32, gid: u32) -> Result<OwnedFd, Errno> {
    as_owner(uid, gid, || {
        nix::fcntl::openat(
            parent,
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
    })
}

/// Starts writing `path` of the container whose root is `root`: `mode` its permission bits,
/// `uid`/`gid` its owner as host ids. A directory there is refused before anything is made.
pub fn open_write(
    root: &RootDir,
    ct: &str,
    path: &str,
    mode: u32,
    uid: u32,
    gid: u32,
) -> Result<Write, FileError> {
    if mode > 0o7777 {
        return Err(FileError::BadMode(mode));
    }
    let (parent_path, name) = split_path(path)?;
    let parent = open_in(root, parent_path, OFlag::O_PATH | OFlag::O_DIRECTORY)
        .map_err(|e| errno_error(ct, parent_path, "opening the directory", e))?;
    match nix::sys::stat::fstatat(&parent, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {
            return Err(FileError::NotFile {
                ct: ct.to_string(),
                path: path.to_string(),
                what: "a directory",
            });
        }
        Ok(_) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(errno_error(ct, path, "stat of", e)),
    }
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    // The name part is cut so that the temporary stays within NAME_MAX.
    let short: String = name.chars().take(160).collect();
    let temp = format!(".{short}.cairn-{}-{stamp:x}", std::process::id());
    let fd = create_as(&parent, &temp, uid, gid)
        .map_err(|e| errno_error(ct, path, "creating a temporary beside", e))?;
    let write = Write {
        ct: ct.to_string(),
        path: path.to_string(),
        parent,
        _ns: root.ns.as_ref().and_then(|ns| ns.try_clone().ok()),
        name: name.to_string(),
        temp,
        owner: (uid, gid),
        file: std::fs::File::from(fd),
        done: false,
    };
    // Owner first, then the mode: chown clears set-id bits.
    nix::unistd::fchown(
        &write.file,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
    )
    .map_err(|e| errno_error(ct, path, "chown of", e))?;
    nix::sys::stat::fchmod(&write.file, Mode::from_bits_truncate(mode))
        .map_err(|e| errno_error(ct, path, "chmod of", e))?;
    Ok(write)
}

/// A directory descriptor of a container's root, with the mount namespace that holds it when
/// hostd mounted it (a stopped container's overlay). The namespace is kept open, not left to
/// die with the thread that made it: a lookup through `..` on a mount that is in no namespace
/// any more fails with EAGAIN for ever (each step's mntput of a detached mount bumps the very
/// mount_lock sequence that RESOLVE_IN_ROOT checks).
pub struct RootDir {
    pub fd: OwnedFd,
    ns: Option<OwnedFd>,
}

impl RootDir {
    /// A directory that is already in a namespace (tests, a running container's root).
    pub fn plain(fd: OwnedFd) -> RootDir {
        RootDir { fd, ns: None }
    }
}

impl AsFd for RootDir {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A directory descriptor of the container's root. Blocking (a stopped container's overlay
/// is mounted): call it off the async threads.
pub fn open_root(target: &Target) -> Result<RootDir, HostError> {
    match &target.root {
        Root::Running { pid } => {
            let proc_root = format!("/proc/{pid}/root");
            nix::fcntl::open(
                proc_root.as_str(),
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map(RootDir::plain)
            .map_err(|e| {
                HostError::io(
                    format!("container {:?}: opening {proc_root}", target.name),
                    e,
                )
            })
        }
        Root::Stopped(layers) => {
            let layers = layers.clone();
            // A thread of its own: unshare moves only the calling thread into the new mount
            // namespace; the namespace's descriptor keeps it (and the overlay) after the thread.
            std::thread::spawn(move || mount_stopped(&layers))
                .join()
                .map_err(|_| HostError::Failed("the overlay mounting thread panicked".into()))?
                .map_err(|e| HostError::Failed(format!("container {:?}: {e}", target.name)))
        }
    }
}

/// Mounts a stopped container's overlay as its start does (the template idmapped for an
/// unprivileged one, `userxattr`), nodev and nosuid, in a private mount namespace of this
/// thread, and opens its root and the namespace.
fn mount_stopped(l: &Layers) -> Result<RootDir, String> {
    use nix::mount::{MsFlags, mount};
    use nix::sched::{CloneFlags, unshare};
    unshare(CloneFlags::CLONE_FS | CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("a mount namespace for the copy: {e}"))?;
    rootfs::make_private().map_err(|e| e.to_string())?;
    let mut lower: &Path = &l.lower;
    if let Some(slot) = l.slot {
        let tree = idmap::mapping_userns(slot)
            .map_err(|e| e.to_string())
            .and_then(|ns| rootfs::idmapped_tree(&l.lower, &ns).map_err(|e| e.to_string()));
        match tree {
            Ok(tree) => {
                rootfs::attach_tree(&tree, &l.lower_mount).map_err(|e| e.to_string())?;
                lower = &l.lower_mount;
            }
            // As the container's own start does without idmapped mounts.
            Err(e) => tracing::warn!(error = %e, "no idmapped template for a file copy"),
        }
    }
    let options = rootfs::overlay_options(lower, &l.upper, &l.work, l.slot.is_some())?;
    mount(
        Some("overlay"),
        &l.merged,
        Some("overlay"),
        MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
        Some(options.as_str()),
    )
    .map_err(|e| format!("mounting the overlay on {}: {e}", l.merged.display()))?;
    let fd = nix::fcntl::open(
        &l.merged,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("opening {}: {e}", l.merged.display()))?;
    let ns = nix::fcntl::open(
        "/proc/thread-self/ns/mnt",
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("opening the copy's mount namespace: {e}"))?;
    Ok(RootDir { fd, ns: Some(ns) })
}

/// Writes handed out and not yet committed or aborted, by token.
struct Pending {
    write: Write,
    seen: (u64, Instant),
}

fn pending() -> &'static Mutex<HashMap<String, Pending>> {
    static PENDING: std::sync::OnceLock<Mutex<HashMap<String, Pending>>> =
        std::sync::OnceLock::new();
    PENDING.get_or_init(Default::default)
}

fn lock() -> std::sync::MutexGuard<'static, HashMap<String, Pending>> {
    pending().lock().unwrap_or_else(|e| e.into_inner())
}

/// Drops the writes whose file has not grown for [`IDLE`].
fn sweep(map: &mut HashMap<String, Pending>, now: Instant) {
    map.retain(|token, p| {
        let size = p.write.file.metadata().map(|m| m.len()).unwrap_or(0);
        if size != p.seen.0 {
            p.seen = (size, now);
        }
        let keep = now.duration_since(p.seen.1) < IDLE;
        if !keep {
            tracing::info!(token, ct = %p.write.ct, path = %p.write.path, "an idle file write dropped");
        }
        keep
    });
}

/// Keeps `write` until [`commit`] or [`abort`]; returns its token and a descriptor of its file.
pub fn hold(write: Write) -> Result<(String, OwnedFd), FileError> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let fd = write.file.try_clone().map(OwnedFd::from).map_err(|e| {
        errno_error(
            &write.ct,
            &write.path,
            "duplicating",
            Errno::from_raw(e.raw_os_error().unwrap_or(0)),
        )
    })?;
    let mut map = lock();
    let now = Instant::now();
    sweep(&mut map, now);
    if map.len() >= MAX_PENDING {
        return Err(FileError::Busy(map.len()));
    }
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let token = format!("{}-{n}", std::process::id());
    map.insert(
        token.clone(),
        Pending {
            write,
            seen: (0, now),
        },
    );
    Ok((token, fd))
}

/// Renames the write `token` into place; its size.
pub fn commit(token: &str) -> Result<u64, FileError> {
    let p = lock()
        .remove(token)
        .ok_or_else(|| FileError::NoToken(token.to_string()))?;
    p.write.commit()
}

/// Drops the write `token` (its temporary goes); whether there was one.
pub fn abort(token: &str) -> bool {
    lock().remove(token).is_some()
}

/// Whether `token` names an open write (for tests).
pub fn is_pending(token: &str) -> bool {
    lock().contains_key(token)
}

/// What org.cairn.Host1's file methods do (hostd/src/dbus.rs delegates here): find the
/// container under the manager's lock, then open off the async threads without it.
pub mod bus {
    use std::os::fd::OwnedFd;

    use model::dbus::CairnError;
    use tokio::sync::Mutex;

    use super::super::manager::Manager;
    use crate::error::HostError;

    async fn blocking<T: Send + 'static>(
        f: impl FnOnce() -> Result<T, HostError> + Send + 'static,
    ) -> Result<T, CairnError> {
        Ok(tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| HostError::Failed(format!("file task: {e}")))??)
    }

    /// `FileOpenRead`: the open file, its permission bits and size.
    pub async fn open_read(
        manager: &Mutex<Manager>,
        name: &str,
        path: &str,
    ) -> Result<(zbus::OwnedFd, u32, u64), CairnError> {
        super::split_path(path).map_err(HostError::from)?;
        let target = manager.lock().await.file_target(name).await?;
        let path = path.to_string();
        let read = blocking(move || {
            let root = super::open_root(&target)?;
            Ok(super::open_read(&root, &target.name, &path)?)
        })
        .await?;
        Ok((OwnedFd::from(read.file).into(), read.mode, read.size))
    }

    /// `FileOpenWrite`: a descriptor of the hidden temporary and the token that commits it.
    pub async fn open_write(
        manager: &Mutex<Manager>,
        name: &str,
        path: &str,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<(zbus::OwnedFd, String), CairnError> {
        super::split_path(path).map_err(HostError::from)?;
        let target = manager.lock().await.file_target(name).await?;
        let (uid, gid) = super::host_ids(target.id_base, uid, gid).map_err(HostError::from)?;
        let path = path.to_string();
        let (token, fd) = blocking(move || {
            let root = super::open_root(&target)?;
            let write = super::open_write(&root, &target.name, &path, mode, uid, gid)?;
            tracing::info!(ct = %target.name, %path, mode, "file write opened");
            Ok(super::hold(write)?)
        })
        .await?;
        Ok((fd.into(), token))
    }

    /// `FileCommit`: the file renamed into place; its size.
    pub async fn commit(token: &str) -> Result<u64, CairnError> {
        let token = token.to_string();
        blocking(move || Ok(super::commit(&token)?)).await
    }

    /// `FileAbort`: whether there was such a write.
    pub async fn abort(token: &str) -> Result<bool, CairnError> {
        let token = token.to_string();
        blocking(move || Ok(super::abort(&token))).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_absolute_and_say_where_they_go() {
        assert_eq!(split_path("/etc/hostname").unwrap(), ("/etc", "hostname"));
        assert_eq!(split_path("/x").unwrap(), ("/", "x"));
        assert_eq!(split_path("//a//b").unwrap(), ("//a/", "b"));
        for bad in [
            "", "rel/x", "/", "/etc/", "/a/../b", "/a/./b", "/..", "/a/..", "a\0b", "/x\0",
        ] {
            assert!(split_path(bad).is_err(), "{bad:?}");
        }
        assert!(split_path(&format!("/{}", "a".repeat(MAX_PATH))).is_err());
    }

    #[test]
    fn ids_are_shifted_for_unprivileged_containers_only() {
        assert_eq!(host_ids(None, 0, 5).unwrap(), (0, 5));
        assert_eq!(host_ids(Some(165_536), 0, 0).unwrap(), (165_536, 165_536));
        assert_eq!(
            host_ids(Some(100_000), 1000, 100).unwrap(),
            (101_000, 100_100)
        );
        assert!(matches!(
            host_ids(Some(100_000), 65_536, 0),
            Err(FileError::BadId(_))
        ));
    }

    /// A directory tree with the links a crafted template would carry, resolved as a root.
    #[test]
    fn reads_and_writes_stay_inside_the_root() {
        let base = std::env::temp_dir().join(format!("cairn-files-{}", std::process::id()));
        let root = base.join("root");
        let outside = base.join("outside");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret"), b"host").unwrap();
        std::fs::write(root.join("secret"), b"guest").unwrap();
        std::os::unix::fs::symlink("/", root.join("up")).unwrap();
        std::os::unix::fs::symlink("../../../../..", root.join("etc/dots")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("abs")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("linkdir")).unwrap();
        let fd = RootDir::plain(
            nix::fcntl::open(
                &root,
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .unwrap(),
        );
        let read = |p: &str| {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut open_read(&fd, "t", p)?.file, &mut s).unwrap();
            Ok::<_, FileError>(s)
        };
        assert_eq!(read("/up/secret").unwrap(), "guest");
        assert_eq!(read("/etc/dots/secret").unwrap(), "guest");
        // The host's absolute path means nothing inside: it is looked up in the root.
        assert!(matches!(
            read("/abs/secret"),
            Err(FileError::Missing { .. })
        ));
        assert!(matches!(read("/etc"), Err(FileError::NotFile { .. })));
        assert!(matches!(
            read("/../outside/secret"),
            Err(FileError::BadPath(_))
        ));

        let (uid, gid) = (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        );
        for p in ["/up/new", "/etc/dots/new2", "/linkdir/new3"] {
            let w = open_write(&fd, "t", p, 0o751, uid, gid).unwrap();
            std::io::Write::write_all(&mut w.file(), b"data").unwrap();
            assert_eq!(w.commit().unwrap(), 4);
        }
        assert_eq!(std::fs::read(root.join("new")).unwrap(), b"data");
        assert_eq!(std::fs::read(root.join("new2")).unwrap(), b"data");
        assert_eq!(std::fs::read(root.join("etc/new3")).unwrap(), b"data");
        let mode = std::fs::metadata(root.join("new")).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o751);
        assert!(!outside.join("new").exists() && !Path::new("/new").exists());

        // Whole or nothing: a write dropped before its commit leaves the old file and no temporary.
        let w = open_write(&fd, "t", "/secret", 0o644, uid, gid).unwrap();
        std::io::Write::write_all(&mut w.file(), b"half").unwrap();
        drop(w);
        assert_eq!(std::fs::read(root.join("secret")).unwrap(), b"guest");
        let names: Vec<_> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!names.iter().any(|n| n.contains(".cairn-")), "{names:?}");
        assert!(matches!(
            open_write(&fd, "t", "/etc", 0o644, uid, gid),
            Err(FileError::NotFile { .. })
        ));
        assert!(matches!(
            open_write(&fd, "t", "/nodir/x", 0o644, uid, gid),
            Err(FileError::Missing { .. })
        ));
        assert!(matches!(
            open_write(&fd, "t", "/x", 0o17777, uid, gid),
            Err(FileError::BadMode(_))
        ));

        // Tokens: a held write commits once; an aborted one leaves nothing.
        let (token, _fd) = hold(open_write(&fd, "t", "/held", 0o600, uid, gid).unwrap()).unwrap();
        assert!(is_pending(&token));
        assert_eq!(commit(&token).unwrap(), 0);
        assert!(matches!(commit(&token), Err(FileError::NoToken(_))));
        let (token, _fd) = hold(open_write(&fd, "t", "/gone", 0o600, uid, gid).unwrap()).unwrap();
        assert!(abort(&token));
        assert!(!root.join("gone").exists());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
