//! What only PID 1 in the appliance does: the console, the API filesystems, the hostname, and
//! the final sync/unmount/reboot(2).

use std::os::fd::AsRawFd;
use std::path::Path;

use anyhow::Context;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::reboot::{RebootMode, reboot};

use crate::supervisor::End;

/// Mounts in order; unmounted in reverse at shutdown.
const MOUNTS: &[(&str, &str, &str, &str)] = &[
    // (source, target, fstype, options)
    ("proc", "/proc", "proc", ""),
    ("sysfs", "/sys", "sysfs", ""),
    ("devtmpfs", "/dev", "devtmpfs", "mode=0755"),
    (
        "devpts",
        "/dev/pts",
        "devpts",
        "gid=5,mode=620,ptmxmode=0666",
    ),
    ("tmpfs", "/dev/shm", "tmpfs", "mode=1777"),
    ("tmpfs", "/run", "tmpfs", "mode=0755"),
    ("tmpfs", "/tmp", "tmpfs", "mode=1777"),
    ("cgroup2", "/sys/fs/cgroup", "cgroup2", "nsdelegate"),
];

/// Points stdin/stdout/stderr at /dev/console. The kernel opens it for PID 1 only when the
/// initramfs has the node; devtmpfs gives it to us in any case.
pub fn attach_console() {
    let _ = std::fs::create_dir_all("/dev");
    let _ = mount(
        Some("devtmpfs"),
        "/dev",
        Some("devtmpfs"),
        MsFlags::MS_NOSUID,
        Some("mode=0755"),
    );
    if let Ok(console) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
    {
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors of this process.
            unsafe { libc::dup2(console.as_raw_fd(), fd) };
        }
    }
}

/// Puts PID 1 on a bind mount of the initramfs instead of the initramfs itself, the way
/// switch_root does. The kernel's rootfs mount has no parent, so pivot_root(2) refuses it
/// (EINVAL) — and every container pivot_roots into its own root. The bind is moved over / and
/// entered through a path that crosses the mount point, so that it becomes both our root and
/// the top of the mount namespace's root: a plain chroot would count as "chrooted" and the
/// kernel would then refuse new user namespaces (EPERM).
pub fn leave_rootfs() -> anyhow::Result<()> {
    const STAGE: &str = "/.cairn-root";
    std::fs::create_dir_all(STAGE).with_context(|| format!("mkdir {STAGE}"))?;
    mount(
        Some("/"),
        STAGE,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .context("bind / on the stage")?;
    std::env::set_current_dir(STAGE).with_context(|| format!("chdir {STAGE}"))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .context("move the bind over /")?;
    nix::unistd::chroot(".").context("chroot onto the bind of /")?;
    std::env::set_current_dir("/").context("chdir /")?;
    let _ = std::fs::remove_dir(STAGE);
    Ok(())
}

pub fn mount_api_filesystems() -> anyhow::Result<()> {
    for (source, target, fstype, options) in MOUNTS {
        std::fs::create_dir_all(target).with_context(|| format!("mkdir {target}"))?;
        if is_mountpoint(target) {
            continue;
        }
        let data = (!options.is_empty()).then_some(*options);
        mount(
            Some(*source),
            *target,
            Some(*fstype),
            MsFlags::MS_NOSUID,
            data,
        )
        .with_context(|| format!("mount {fstype} on {target}"))?;
    }
    // Daemons write resolv.conf and runtime state below /run.
    std::fs::create_dir_all("/run/cairn")?;
    Ok(())
}

/// The label of the state partition (what install makes; `mkfs.ext4 -L CAIRN-STATE`).
pub const STATE_LABEL: &str = "CAIRN-STATE";

/// Makes the OS read-only: the state directory gets the state partition (an ext4 filesystem
/// labelled CAIRN-STATE), or a tmpfs when there is none — then the one writable place besides
/// the API filesystems, /run and /tmp, whose contents last until the next boot — and the root,
/// our bind of the initramfs, is remounted read-only, so nothing can change /usr, /etc or init
/// itself. Returns where the state lives, for the console.
pub fn read_only_root(state: &Path) -> anyhow::Result<String> {
    std::fs::create_dir_all(state).with_context(|| format!("mkdir {}", state.display()))?;
    let mut lives = String::from("in RAM (no CAIRN-STATE filesystem): lost at power-off");
    if !is_mountpoint(&state.to_string_lossy()) {
        match find_labelled(&[STATE_LABEL]).filter(|(_, fstype)| *fstype == "ext4") {
            Some((dev, _)) => {
                mount(
                    Some(dev.as_path()),
                    state,
                    Some("ext4"),
                    MsFlags::MS_NOATIME,
                    None::<&str>,
                )
                .with_context(|| format!("mount {} on {}", dev.display(), state.display()))?;
                lives = format!("on {} ({STATE_LABEL})", dev.display());
            }
            None => {
                mount(
                    Some("tmpfs"),
                    state,
                    Some("tmpfs"),
                    // Neither nosuid nor nodev: containers' root filesystems live here, with
                    // their setuid programs and device nodes.
                    MsFlags::empty(),
                    Some("mode=0755"),
                )
                .with_context(|| format!("mount tmpfs on {}", state.display()))?;
            }
        }
    }
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .context("remount / read-only")?;
    Ok(lives)
}

/// The first block device or partition (by name) whose filesystem is labelled one of `labels`,
/// with the filesystem's type (ext4, vfat, iso9660), read from its first sectors: there is no
/// udev here to make /dev/disk/by-label.
pub fn find_labelled(labels: &[&str]) -> Option<(std::path::PathBuf, &'static str)> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/block")
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("loop") && !n.starts_with("ram"))
        .collect();
    names.sort();
    names.into_iter().find_map(|n| {
        let dev = Path::new("/dev").join(n);
        let head =
            crate::install::probe::read_head(&dev, crate::install::probe::LABEL_HEAD).ok()?;
        let (fstype, label) = crate::install::probe::fs_label(&head)?;
        labels.contains(&label.as_str()).then_some((dev, fstype))
    })
}

fn is_mountpoint(target: &str) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|m| m.lines().any(|l| l.split(' ').nth(4) == Some(target)))
        .unwrap_or(false)
}

pub fn set_hostname(name: &str) -> anyhow::Result<()> {
    nix::unistd::sethostname(name).with_context(|| format!("sethostname {name}"))
}

/// Flushes, unmounts and powers off or reboots. Only returns on failure.
pub fn final_shutdown(end: End) -> anyhow::Result<()> {
    nix::unistd::sync();
    for (_, target, _, _) in MOUNTS.iter().rev() {
        // Lazy: a straggler holding /dev must not stop the power-off.
        if let Err(e) = umount2(Path::new(target), MntFlags::MNT_DETACH) {
            tracing::debug!(target, error = %e, "unmount");
        }
    }
    nix::unistd::sync();
    let mode = match end {
        End::Poweroff => {
            println!("cairn: power off");
            RebootMode::RB_POWER_OFF
        }
        End::Reboot => {
            println!("cairn: reboot");
            RebootMode::RB_AUTOBOOT
        }
    };
    reboot(mode).context("reboot(2)")?;
    Ok(())
}

/// PID 1 must never exit; after a fatal error it waits here, still reaping orphans.
pub fn halt_forever() -> ! {
    eprintln!("cairn: init stopped; the console above says why");
    loop {
        match nix::sys::wait::wait() {
            Ok(_) => {}
            Err(_) => std::thread::sleep(std::time::Duration::from_secs(60)),
        }
    }
}
