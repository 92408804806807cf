//! The container's first process, from clone to exec of its init.
//!
//! Order matters. Once the monitor wrote the id maps (the child is in its cgroup from its
//! clone), while hostd attaches the network port (`prepare_root`): become root of the user
//! namespace → unshare the cgroup namespace → mount the overlay, /proc, /sys, /dev →
//! pivot_root → hostname. After hostd's go (`child_main`): default route → drop capabilities
//! → seccomp → exec. A failure is reported to the monitor as a typed start error
//! and the child exits 127; a successful exec closes the report pipe (O_CLOEXEC), which is how
//! the monitor knows init runs.

use std::ffi::CString;
use std::os::fd::OwnedFd;

use nix::sched::{CloneFlags, unshare};
use nix::unistd::{Gid, Uid, dup2_stderr, dup2_stdin, dup2_stdout};

use vmm::launcher::StartError;
use vmm::launcher::monitor::Reporter;

use super::{Launch, Step, StepError, caps, dev, rootfs, seccomp};

/// Everything the child needs, built in the monitor before clone.
pub struct ChildPlan {
    pub launch: Launch,
    pub overlay: CString,
    pub argv: Vec<CString>,
    pub env: Vec<CString>,
    pub filter: seccompiler::BpfProgram,
    /// The idmapped template (unprivileged), attached on `launch.lower_mount` before the overlay.
    pub lower_tree: Option<OwnedFd>,
    /// The guest end of the console pty (the monitor reads the other end into the log): the
    /// container's /dev/console and its init's stdin, stdout and stderr.
    pub console: OwnedFd,
    /// Where `console` is in the host's devpts, for the bind onto /dev/console.
    pub console_path: std::path::PathBuf,
}

/// Runs in the cloned child once hostd said go; never returns.
pub fn child_main(plan: &ChildPlan, mut report: Reporter<()>) -> ! {
    let Err(e) = setup_and_exec(plan);
    // A failure, not invalid input, even for a command that does not exist: the spec was
    // valid, and what its template holds is only known here.
    report.failed(StartError::failure(format!("starting the container: {e}")));
    // SAFETY: _exit skips the atexit handlers and stdio flushes that belong to the monitor.
    unsafe { libc::_exit(127) }
}

/// The child's set-up that needs nothing from hostd: it runs while hostd attaches the port.
pub fn prepare_root(plan: &ChildPlan) -> Result<(), StepError> {
    let l = &plan.launch;
    if !l.privileged {
        // Our uid is the overflow id until the parent wrote the maps; now become root of the
        // namespace (capabilities are kept through a change to uid 0).
        nix::unistd::setgroups(&[]).step("setgroups")?;
        nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
            .step("setresgid 0")?;
        nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
            .step("setresuid 0")?;
    }
    unshare(CloneFlags::CLONE_NEWCGROUP).step("unsharing the cgroup namespace")?;
    rootfs::make_private()?;
    if let Some(tree) = &plan.lower_tree {
        rootfs::attach_tree(tree, &l.lower_mount)?;
    }
    rootfs::mount_overlay(&plan.overlay, &l.merged)?;
    rootfs::mount_proc_sys(&l.merged)?;
    dev::populate(&l.merged, &plan.console_path)?;
    rootfs::pivot(&l.merged)?;
    nix::unistd::sethostname(&l.hostname).step("sethostname")
}

fn setup_and_exec(plan: &ChildPlan) -> Result<std::convert::Infallible, StepError> {
    let l = &plan.launch;
    if let Some(gw) = &l.gateway {
        super::super::route::add_default(gw).step(format!("adding the default route via {gw}"))?;
    }
    caps::drop_bounding().step("dropping capabilities from the bounding set")?;
    dup2_stdin(&plan.console).step("stdin")?;
    dup2_stdout(&plan.console).step("stdout")?;
    dup2_stderr(&plan.console).step("stderr")?;
    seccomp::install(&plan.filter).step("installing the seccomp filter")?;
    let Some(prog) = plan.argv.first() else {
        return Err(StepError {
            step: "empty command".into(),
            errno: nix::errno::Errno::EINVAL,
        });
    };
    let e = nix::unistd::execve(prog, &plan.argv, &plan.env);
    Err(StepError {
        step: format!("exec {}", prog.to_string_lossy()),
        errno: e.err().unwrap_or(nix::errno::Errno::EINVAL),
    })
}
