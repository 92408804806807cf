//! A container as a launcher guest: `hostd --monitor LAUNCH.json` is the launcher's monitor
//! (`vmm::launcher::monitor`, the same one a VM's VMM runs under) with a container's init as
//! its guest. Here is only what is a container's own: the namespaces it is cloned into, what
//! the monitor prepares before the clone (overlay options, argv, seccomp program, idmapped
//! template, console), the id maps it writes after it, and the child's set-up up to exec
//! (`runtime::spawn`).

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::path::Path;

use vmm::launcher::console::{CONSOLE_SOCKET, Console};
use vmm::launcher::monitor::{self, Guest, Reporter};
use vmm::launcher::{LaunchRecord, StartError};

use super::runtime::spawn::{ChildPlan, child_main, prepare_root};
use super::runtime::{Launch, idmap, namespaces, rootfs, seccomp};

/// `hostd --monitor LAUNCH`: returns the exit code of the first process (0 once the monitor is
/// detached); the detached monitor itself exits when its container's init has been reaped.
pub fn main(launch_path: &Path) -> i32 {
    monitor::main(launch_path, |launch: LaunchRecord<Launch>| {
        plan(launch.guest, &launch.run_dir)
    })
}

struct CtGuest(ChildPlan, Option<Console>);

impl Guest for CtGuest {
    /// An init says nothing of its end beyond its exit status.
    type Reason = ();
    const READY_ON_EXEC: bool = true;

    fn clone_flags(&self) -> u64 {
        namespaces::clone_flags(self.0.launch.privileged).bits() as u64
    }

    fn take_console(&mut self) -> Option<Console> {
        self.1.take()
    }

    fn prepare_child(&self, pid: u32) -> Result<(), StartError> {
        if self.0.launch.privileged {
            return Ok(());
        }
        idmap::write_maps(pid, self.0.launch.slot)
            .map_err(|e| StartError::failure(format!("writing the id maps of pid {pid}: {e}")))
    }

    fn before_go(&mut self) -> Result<(), StartError> {
        prepare_root(&self.0)
            .map_err(|e| StartError::failure(format!("starting the container: {e}")))
    }

    fn run(self, report: Reporter<()>) -> ! {
        child_main(&self.0, report)
    }
}

fn plan(launch: Launch, run_dir: &Path) -> Result<CtGuest, StartError> {
    let fail = StartError::failure;
    // Unprivileged: the template's files must look owned by the container's root, not by an
    // unmapped host root (which container root could not write through the overlay): the
    // lower layer is an idmapped mount of the template. Without kernel support for that, the
    // container still runs, its template files owned by "nobody".
    let lower_tree = if launch.privileged {
        None
    } else {
        match idmap::mapping_userns(launch.slot)
            .map_err(|e| e.to_string())
            .and_then(|ns| rootfs::idmapped_tree(&launch.lower, &ns).map_err(|e| e.to_string()))
        {
            Ok(tree) => Some(tree),
            Err(e) => {
                eprintln!(
                    "cairn monitor: no idmapped template ({e}); template files appear as nobody"
                );
                None
            }
        }
    };
    let lower = if lower_tree.is_some() {
        &launch.lower_mount
    } else {
        &launch.lower
    };
    let overlay = rootfs::overlay_options(lower, &launch.upper, &launch.work, !launch.privileged)
        .map_err(fail)?;
    let overlay = CString::new(overlay).map_err(|e| fail(e.to_string()))?;
    let argv = launch
        .argv
        .iter()
        .map(|a| CString::new(a.as_str()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(format!("command: {e}")))?;
    let env = [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "container=cairn",
        "TERM=linux",
    ]
    .iter()
    .map(|s| CString::new(*s))
    .collect::<Result<Vec<_>, _>>()
    .map_err(|e| fail(e.to_string()))?;
    let filter = seccomp::program().map_err(|e| fail(format!("seccomp filter: {e}")))?;
    // The container writes to a pty, its monitor keeps the log (rotated: a guest that
    // floods its console leaves a bounded log, not a host file of any size).
    let mut console = Console::open(&launch.console).map_err(|e| fail(e.to_string()))?;
    // `cairnctl ct console` attaches here (through hostd): in the root-only run directory.
    let sock = run_dir.join(CONSOLE_SOCKET);
    console
        .listen(&sock)
        .map_err(|e| fail(format!("console socket {}: {e}", sock.display())))?;
    let guest_end = console
        .guest_end()
        .try_clone()
        .map_err(|e| fail(format!("console pty: {e}")))?;
    let console_path = std::fs::read_link(format!("/proc/self/fd/{}", guest_end.as_raw_fd()))
        .map_err(|e| fail(format!("console pty's path: {e}")))?;
    if !launch.privileged {
        // Container root opens its console through /dev/console (a bind of the pty).
        let root = idmap::host_base(launch.slot);
        std::os::unix::fs::fchown(&guest_end, Some(root), Some(root))
            .map_err(|e| fail(format!("chown of the console pty: {e}")))?;
    }
    Ok(ChildPlan {
        launch,
        overlay,
        argv,
        env,
        filter,
        lower_tree,
        console: guest_end,
        console_path,
    })
    .map(|plan| CtGuest(plan, Some(console)))
}
