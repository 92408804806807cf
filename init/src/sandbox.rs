//! `init --sandbox`: fresh mount, network and UTS namespaces on a dev machine, so the daemons
//! configure links, mounts and a hostname without touching the machine's own.

use std::path::Path;

use anyhow::Context;
use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};

/// Enters the namespaces and makes this process the reaper of its descendants.
/// Must run before any thread is started (unshare of a mount namespace requires it).
pub fn enter(state: &Path, hostname: &str) -> anyhow::Result<()> {
    unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWUTS)
        .context("unshare mount/net/uts namespaces (a sandbox needs root)")?;
    // Our mounts must not leak back into the dev machine.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("make / private")?;
    // A private /run: daemons write there as they would in the appliance.
    mount(
        Some("tmpfs"),
        "/run",
        Some("tmpfs"),
        MsFlags::MS_NOSUID,
        Some("mode=0755"),
    )
    .context("mount tmpfs on /run")?;
    std::fs::create_dir_all("/run/cairn")?;
    nix::unistd::sethostname(hostname).context("sethostname")?;
    // Orphans of our daemons come to us, not to the machine's init.
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error()).context("PR_SET_CHILD_SUBREAPER");
    }
    publish_netns(state)
}

/// Writes STATE/init.pid so that tests and developers can enter the sandbox's network
/// namespace (`nsenter --net=/proc/PID/ns/net`) to reach its daemons; apid listens in there.
fn publish_netns(state: &Path) -> anyhow::Result<()> {
    let target = state.join("init.pid");
    std::fs::write(&target, std::process::id().to_string())
        .with_context(|| format!("write {}", target.display()))
}
