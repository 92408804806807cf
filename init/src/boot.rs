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

/// Makes the OS read-only: the state directory gets a tmpfs of its own (the one writable
/// place besides the API filesystems, /run and /tmp; until an install gives it a disk
/// partition its contents last until the next boot), then the root — our bind of the
/// initramfs — is remounted read-only, so nothing can change /usr, /etc or init itself.
pub fn read_only_root(state: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(state).with_context(|| format!("mkdir {}", state.display()))?;
    if !is_mountpoint(&state.to_string_lossy()) {
        mount(
            Some("tmpfs"),
            state,
            Some("tmpfs"),
            // Neither nosuid nor nodev: containers' root filesystems live here, with their
            // setuid programs and device nodes.
            MsFlags::empty(),
            Some("mode=0755"),
        )
        .with_context(|| format!("mount tmpfs on {}", state.display()))?;
    }
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .context("remount / read-only")
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
