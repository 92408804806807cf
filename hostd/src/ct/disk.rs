//! A container's writable layer on a stord volume (`pool` and `disk` in its spec): the volume
//! `POOL/ct-NAME` of `disk` bytes, held by `ct:NAME`, formatted ext4 and mounted through a loop
//! device at `STATE/containers/NAME/disk`; the overlay's `upper` and `work` are symlinks into
//! it. Writes past `disk` fail with ENOSPC in the container: a real quota, as Proxmox's
//! rootfs size is.

use std::path::{Path, PathBuf};

use model::ct::ContainerSpec;

use super::loopdev;
use super::paths::CtDirs;
use crate::error::{HostError, HostResult};

/// mke2fs, where Debian and the appliance keep it.
const MKE2FS: &str = "/usr/sbin/mke2fs";

/// The volume a container's layer lives on, when its spec puts it on a pool.
pub fn volume_of(spec: &ContainerSpec) -> Option<String> {
    spec.pool.as_ref().map(|p| format!("{p}/ct-{}", spec.name))
}

fn holder(spec: &ContainerSpec) -> String {
    format!("ct:{}", spec.name)
}

fn mount_point(d: &CtDirs) -> PathBuf {
    d.dir.join("disk")
}

/// Makes, holds, formats and mounts the volume, and points `upper` and `work` into it
/// (owned by `root_uid`, container root). All or nothing: what a failed step made is undone.
pub async fn make(
    bus: Option<&zbus::Connection>,
    spec: &ContainerSpec,
    d: &CtDirs,
    root_uid: Option<u32>,
) -> HostResult<()> {
    let (Some(volume), Some(size)) = (volume_of(spec), spec.disk) else {
        return Ok(());
    };
    let info = crate::stord::create(bus, &volume, size).await?;
    let made = async {
        crate::stord::open(bus, &volume, &holder(spec)).await?;
        let (path, d) = (PathBuf::from(&info.path), d.clone());
        tokio::task::spawn_blocking(move || format_and_mount(&path, &d, root_uid))
            .await
            .map_err(|e| HostError::Failed(format!("volume task: {e}")))?
    }
    .await;
    if let Err(e) = made {
        let _ = loopdev::unmount(&mount_point(d));
        crate::stord::release(bus, &volume, &holder(spec)).await;
        let _ = crate::stord::delete(bus, &volume).await;
        return Err(e);
    }
    Ok(())
}

fn format_and_mount(image: &Path, d: &CtDirs, root_uid: Option<u32>) -> HostResult<()> {
    let out = std::process::Command::new(MKE2FS)
        .args(["-q", "-F", "-t", "ext4", "-m", "0"])
        .arg(image)
        // mke2fs's built-in profile (with ext4): a host's /etc/mke2fs.conf is not ours to
        // depend on, and the appliance has none.
        .env("MKE2FS_CONFIG", "/nonexistent/mke2fs.conf")
        .output()
        .map_err(|e| HostError::io(MKE2FS, e))?;
    if !out.status.success() {
        return Err(HostError::Failed(format!(
            "{MKE2FS} {}: {}",
            image.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let at = mount_point(d);
    std::fs::create_dir_all(&at).map_err(|e| HostError::io(at.display(), e))?;
    loopdev::mount_image(image, &at)
        .map_err(|e| HostError::io(format!("mounting {}", image.display()), e))?;
    for (inside, link) in [("upper", d.upper()), ("work", d.work())] {
        let dir = at.join(inside);
        std::fs::create_dir(&dir).map_err(|e| HostError::io(dir.display(), e))?;
        if let Some(uid) = root_uid {
            std::os::unix::fs::chown(&dir, Some(uid), Some(uid))
                .map_err(|e| HostError::io(dir.display(), e))?;
        }
        std::os::unix::fs::symlink(Path::new("disk").join(inside), &link)
            .map_err(|e| HostError::io(link.display(), e))?;
    }
    // ext4's lost+found is root's; nothing of the container's sees it (it is outside upper).
    Ok(())
}

/// Mounts the volume again when it is not (after a reboot), before the container starts.
pub async fn ensure_mounted(
    bus: Option<&zbus::Connection>,
    spec: &ContainerSpec,
    d: &CtDirs,
) -> HostResult<()> {
    let Some(volume) = volume_of(spec) else {
        return Ok(());
    };
    let at = mount_point(d);
    if loopdev::is_mounted(&at) {
        return Ok(());
    }
    let info = crate::stord::open(bus, &volume, &holder(spec)).await?;
    tokio::task::spawn_blocking(move || loopdev::mount_image(Path::new(&info.path), &at))
        .await
        .map_err(|e| HostError::Failed(format!("volume task: {e}")))?
        .map_err(|e| HostError::io(format!("mounting the volume {volume}"), e))
}

nix::ioctl_readwrite!(fifreeze, b'X', 119, libc::c_int);
nix::ioctl_readwrite!(fithaw, b'X', 120, libc::c_int);

/// Freezes (flushes, holds every write) or thaws the container's layer filesystem, when it
/// has one on a volume; freezing a frozen one or thawing a thawed one is fine.
pub fn fsfreeze(d: &CtDirs, freeze: bool) -> HostResult<()> {
    let at = mount_point(d);
    if !loopdev::is_mounted(&at) {
        return Ok(());
    }
    let dir = std::fs::File::open(&at).map_err(|e| HostError::io(at.display(), e))?;
    let mut unused: libc::c_int = 0;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&dir);
    // SAFETY: an open directory of the mounted filesystem; the argument is not used.
    let done = unsafe {
        if freeze {
            fifreeze(fd, &mut unused)
        } else {
            fithaw(fd, &mut unused)
        }
    };
    match done {
        Ok(_) => Ok(()),
        Err(nix::errno::Errno::EBUSY) if freeze => Ok(()),
        Err(nix::errno::Errno::EINVAL) if !freeze => Ok(()),
        Err(e) => Err(HostError::io(
            format!(
                "{} {}",
                if freeze { "freezing" } else { "thawing" },
                at.display()
            ),
            e,
        )),
    }
}

/// Unmounts, releases and deletes the volume of a container being deleted.
pub async fn remove(bus: Option<&zbus::Connection>, spec: &ContainerSpec, d: &CtDirs) {
    let Some(volume) = volume_of(spec) else {
        return;
    };
    if let Err(e) = loopdev::unmount(&mount_point(d)) {
        tracing::warn!(ct = %spec.name, error = %e, "cannot unmount the container's volume");
    }
    crate::stord::release(bus, &volume, &holder(spec)).await;
    if let Err(e) = crate::stord::delete(bus, &volume).await {
        tracing::warn!(ct = %spec.name, %volume, error = %e, "cannot delete the container's volume");
    }
}
