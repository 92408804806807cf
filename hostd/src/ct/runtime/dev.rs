//! A minimal /dev: a small tmpfs with the harmless character devices bind-mounted from the host
//! (a user namespace may not mknod), a private devpts instance, and /dev/console bound to the
//! guest end of the console pty, which the monitor copies into the container's console log.

use std::path::Path;

use nix::mount::{MsFlags, mount};

use super::{Step, StepError};

/// The devices every system expects; all are safe to share (no state, no host access).
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// `console`: the pty's path in the host's devpts (a bind needs a source in our own mount
/// namespace: our fd to the pty is the monitor's mount's, which the kernel refuses).
pub fn populate(merged: &Path, console: &Path) -> Result<(), StepError> {
    let dev = merged.join("dev");
    let _ = std::fs::create_dir_all(&dev);
    mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=755,size=65536k"),
    )
    .step("mounting a tmpfs on /dev")?;
    for name in DEVICES {
        let target = dev.join(name);
        std::fs::write(&target, b"").step(format!("creating /dev/{name}"))?;
        mount(
            Some(Path::new("/dev").join(name).as_path()),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .step(format!("binding /dev/{name}"))?;
    }
    let console_target = dev.join("console");
    std::fs::write(&console_target, b"").step("creating /dev/console")?;
    mount(
        Some(console),
        &console_target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .step("binding the console pty on /dev/console")?;
    let pts = dev.join("pts");
    std::fs::create_dir_all(&pts).step("creating /dev/pts")?;
    mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )
    .step("mounting devpts")?;
    let shm = dev.join("shm");
    std::fs::create_dir_all(&shm).step("creating /dev/shm")?;
    mount(
        Some("shm"),
        &shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777,size=65536k"),
    )
    .step("mounting /dev/shm")?;
    for (link, to) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(to, dev.join(link)).step(format!("linking /dev/{link}"))?;
    }
    Ok(())
}
