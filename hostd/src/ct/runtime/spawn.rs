//! The container's first process, from clone to exec of its init.
//!
//! Order matters: wait for the parent (id maps written, moved into the cgroup, network port
//! attached) → become root of the user namespace → unshare the cgroup namespace → mount the
//! overlay, /proc, /sys, /dev → pivot_root → hostname → default route → drop capabilities →
//! seccomp → exec. A failure is written to the error pipe as one line and the child exits 127;
//! a successful exec closes the pipe (O_CLOEXEC), which is how the monitor knows init runs.

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;

use nix::sched::{CloneFlags, unshare};
use nix::unistd::{Gid, Uid, dup2_stderr, dup2_stdin, dup2_stdout};

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
    pub console: OwnedFd,
    pub devnull: OwnedFd,
}

/// Runs in the cloned child; never returns.
pub fn child_main(plan: &ChildPlan, go: OwnedFd, err: OwnedFd) -> ! {
    let mut err_file = std::fs::File::from(err);
    let code = match setup_and_exec(plan, go) {
        Ok(never) => match never {},
        Err(e) => {
            let _ = writeln!(err_file, "{e}");
            127
        }
    };
    // SAFETY: _exit skips the atexit handlers and stdio flushes that belong to the monitor.
    unsafe { libc::_exit(code) }
}

fn setup_and_exec(plan: &ChildPlan, go: OwnedFd) -> Result<std::convert::Infallible, StepError> {
    let l = &plan.launch;
    let mut byte = [0u8; 1];
    let mut go = std::fs::File::from(go);
    match go.read(&mut byte) {
        Ok(1) if byte[0] == b'g' => {}
        _ => {
            return Err(StepError {
                step: "the parent aborted the start".into(),
                errno: nix::errno::Errno::ECANCELED,
            });
        }
    }
    drop(go);
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
    dev::populate(&l.merged, &l.console)?;
    rootfs::pivot(&l.merged)?;
    nix::unistd::sethostname(&l.hostname).step("sethostname")?;
    if let Some(gw) = &l.gateway {
        super::super::route::add_default(gw).step(format!("adding the default route via {gw}"))?;
    }
    caps::drop_bounding().step("dropping capabilities from the bounding set")?;
    dup2_stdin(&plan.devnull).step("stdin")?;
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
