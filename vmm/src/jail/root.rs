//! hostd's side of the jail: the per-VM root directory a VMM process pivots into, holding only
//! bind mounts of the VM's own files and the device nodes it needs, and its teardown. Runs in
//! hostd (as root, in the host's mount namespace), never in the VMM.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::{Mode, SFlag, makedev, mknod};
use nix::sys::statvfs::{FsFlags, statvfs};

use super::{JailError, io_err, path_err};

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
/// [`DEV_KVM`](super::DEV_KVM) and [`DEV_NET_TUN`](super::DEV_NET_TUN). `root` must not be on a nodev mount then.
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

/// mountinfo writes space, tab, newline and backslash as `\ooo`. Also hostd's cgroup
/// hierarchy reader's.
pub fn unescape_mountinfo(field: &str) -> String {
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
