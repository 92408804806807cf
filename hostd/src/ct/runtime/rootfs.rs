//! The container's root: an overlay of the template (lower, read-only, shared) and the
//! container's own upper layer, mounted inside the container's mount namespace only — so it
//! vanishes with the container's last process and the host's mount table never sees it.

use std::ffi::CString;
use std::path::Path;

use nix::mount::{MntFlags, MsFlags, mount, umount2};

use super::{Step, StepError};

/// The overlay mount options. Paths with ',' ':' or '\\' would be split by the kernel's option
/// parser, so they are refused. `userxattr`: in a user namespace overlayfs cannot use
/// trusted.* xattrs and keeps its metadata in user.overlay.* instead.
pub fn overlay_options(
    lower: &Path,
    upper: &Path,
    work: &Path,
    userns: bool,
) -> Result<String, String> {
    let mut parts = Vec::new();
    for (key, p) in [("lowerdir", lower), ("upperdir", upper), ("workdir", work)] {
        let s = p
            .to_str()
            .ok_or_else(|| format!("{key} {} is not UTF-8", p.display()))?;
        if s.contains([',', ':', '\\']) || s.is_empty() {
            return Err(format!(
                "{key} {s:?} cannot be used by overlayfs (it contains ',', ':' or '\\\\')"
            ));
        }
        parts.push(format!("{key}={s}"));
    }
    if userns {
        parts.push("userxattr".into());
    }
    Ok(parts.join(","))
}

/// Makes every mount private: nothing we mount propagates back to the host.
pub fn make_private() -> Result<(), StepError> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .step("making / private")
}

/// Mounts the overlay on `merged`.
pub fn mount_overlay(options: &CString, merged: &Path) -> Result<(), StepError> {
    mount(
        Some("overlay"),
        merged,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_c_str()),
    )
    .step(format!("mounting the overlay on {}", merged.display()))
}

/// /proc and a read-only /sys: the container sees its own pid and net namespaces there.
pub fn mount_proc_sys(merged: &Path) -> Result<(), StepError> {
    let hard = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let proc = merged.join("proc");
    let _ = std::fs::create_dir_all(&proc);
    mount(Some("proc"), &proc, Some("proc"), hard, None::<&str>).step("mounting /proc")?;
    let sys = merged.join("sys");
    let _ = std::fs::create_dir_all(&sys);
    mount(
        Some("sysfs"),
        &sys,
        Some("sysfs"),
        hard | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .step("mounting /sys read-only")?;
    // The container's own cgroup (its cgroup namespace's root) for its init: systemd needs
    // it; hostd delegated the group to container root. Not fatal: a busybox init does not care,
    // and a host without a v2 hierarchy has nothing to offer here.
    let cg = sys.join("fs/cgroup");
    if let Err(e) = mount(Some("cgroup2"), &cg, Some("cgroup2"), hard, None::<&str>) {
        eprintln!("cairn: no cgroup2 in the container: {e}");
    }
    Ok(())
}

/// pivot_root into `merged` and detach the old root, so that no host path stays reachable.
pub fn pivot(merged: &Path) -> Result<(), StepError> {
    nix::unistd::chdir(merged).step("chdir to the new root")?;
    // pivot_root(".", "."): the old root ends up stacked on "." and is detached at once —
    // no directory for it is needed in the container's tree.
    nix::unistd::pivot_root(".", ".").step("pivot_root")?;
    umount2(".", MntFlags::MNT_DETACH).step("detaching the old root")?;
    nix::unistd::chdir("/").step("chdir /")
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// A detached, read-only copy of `lower` whose files appear owned through `userns` (an
/// idmapped mount): host root's template files become the container root's. Made by the
/// monitor (host root) before clone; the child attaches it with `attach_tree`.
pub fn idmapped_tree(
    lower: &Path,
    userns: &std::os::fd::OwnedFd,
) -> Result<std::os::fd::OwnedFd, StepError> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let path = CString::new(lower.as_os_str().as_encoded_bytes()).map_err(|_| StepError {
        step: format!("template path {}", lower.display()),
        errno: nix::errno::Errno::EINVAL,
    })?;
    // SAFETY: open_tree with a valid C path; the result is a new fd we own.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            path.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | AT_RECURSIVE,
        )
    };
    if fd < 0 {
        return Err(StepError {
            step: format!("open_tree {}", lower.display()),
            errno: nix::errno::Errno::last(),
        });
    }
    // SAFETY: fd was just returned by the kernel.
    let tree = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    let empty = c"";
    // SAFETY: mount_setattr on our fd with a properly sized struct.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint | AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc != 0 {
        return Err(StepError {
            step: format!("idmapping {}", lower.display()),
            errno: nix::errno::Errno::last(),
        });
    }
    Ok(tree)
}

/// Attaches a detached tree on `target` in the current mount namespace.
pub fn attach_tree(tree: &std::os::fd::OwnedFd, target: &Path) -> Result<(), StepError> {
    use std::os::fd::AsRawFd;
    let t = CString::new(target.as_os_str().as_encoded_bytes()).map_err(|_| StepError {
        step: format!("path {}", target.display()),
        errno: nix::errno::Errno::EINVAL,
    })?;
    let empty = c"";
    // SAFETY: move_mount with valid C strings and our fd.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc != 0 {
        return Err(StepError {
            step: format!("attaching the idmapped template on {}", target.display()),
            errno: nix::errno::Errno::last(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_options_are_exact_and_refuse_separators() {
        let o = overlay_options(
            Path::new("/s/templates/bb/rootfs"),
            Path::new("/s/containers/a/upper"),
            Path::new("/s/containers/a/work"),
            true,
        )
        .unwrap();
        assert_eq!(
            o,
            "lowerdir=/s/templates/bb/rootfs,upperdir=/s/containers/a/upper,\
             workdir=/s/containers/a/work,userxattr"
        );
        let o = overlay_options(Path::new("/l"), Path::new("/u"), Path::new("/w"), false).unwrap();
        assert_eq!(o, "lowerdir=/l,upperdir=/u,workdir=/w");
        let e = overlay_options(Path::new("/a,b"), Path::new("/u"), Path::new("/w"), false);
        assert!(e.unwrap_err().starts_with("lowerdir"));
        assert!(
            overlay_options(Path::new("/l"), Path::new("/u:x"), Path::new("/w"), true).is_err()
        );
    }
}
