//! The monitor: one small process per running container (`hostd --monitor LAUNCH.json`, with
//! its control socket on fd 3). It detaches from hostd (double fork + setsid, so hostd never
//! waits for it and a killed hostd leaves it running), clones the container's init, holds it
//! as its child, reaps it and records how it ended in RUN/ct/NAME/. It serves nothing else.
//!
//! The handshake with hostd on the control socket (one line each):
//!   monitor → `pid N`   (namespaces exist, id maps written, init moved into its cgroup)
//!   hostd   → `go`      (network port attached) — anything else, or EOF, aborts
//!   monitor → `ok` | `err MESSAGE`   (init exec'd, or the step that failed)

use std::ffi::CString;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, setsid};
use serde::{Deserialize, Serialize};

use super::cgroup::Cgroup;
use super::runtime::spawn::{ChildPlan, child_main};
use super::runtime::{Launch, idmap, namespaces, rootfs, seccomp};

/// The fd the control socket arrives on.
pub const CONTROL_FD: i32 = 3;
pub const STATE_FILE: &str = "state.json";
pub const EXIT_FILE: &str = "exit";
pub const LAUNCH_FILE: &str = "launch.json";

/// What the monitor records about a running container (RUN/ct/NAME/state.json).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MonitorState {
    pub monitor_pid: u32,
    pub init_pid: u32,
    /// The init's start time (/proc/PID/stat field 22): a recycled pid never matches.
    pub init_start: u64,
    /// Unix seconds.
    pub started: u64,
}

/// The start time of process `pid` in clock ticks since boot, None when it does not exist.
/// One helper for containers and VMs: the VMM's monitor records its VMM's the same way.
pub use vmm::launch::start_time;

impl MonitorState {
    /// The init still runs and is the one we started (not a recycled pid).
    pub fn alive(&self) -> bool {
        start_time(self.init_pid) == Some(self.init_start)
    }
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `hostd --monitor LAUNCH`: returns the exit code of the first process (0 once the monitor is
/// detached); the detached monitor itself exits when its container's init has been reaped.
pub fn main(launch_path: &Path) -> i32 {
    // SAFETY: hostd starts us as a fresh, single-threaded process; nothing runs beside us.
    match unsafe { fork() } {
        Ok(ForkResult::Parent { .. }) => return 0,
        Ok(ForkResult::Child) => {}
        Err(e) => {
            eprintln!("cairn monitor: fork: {e}");
            return 1;
        }
    }
    let _ = setsid();
    // SAFETY: fd 3 is the control socket hostd passed us; we own it from here on.
    let ctl = unsafe { UnixStream::from_raw_fd(CONTROL_FD) };
    let mut report = match ctl.try_clone() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cairn monitor: control socket: {e}");
            return 1;
        }
    };
    match run(launch_path, ctl) {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("cairn monitor: {msg}");
            let _ = writeln!(report, "err {}", msg.replace('\n', " "));
            1
        }
    }
}

fn run(launch_path: &Path, ctl: UnixStream) -> Result<i32, String> {
    let text = std::fs::read_to_string(launch_path)
        .map_err(|e| format!("reading {}: {e}", launch_path.display()))?;
    let launch: Launch =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", launch_path.display()))?;
    let plan = plan(launch)?;
    let (go_r, go_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let flags = namespaces::clone_flags(plan.launch.privileged);
    let cgroup = Cgroup::open(&plan.launch.name).map_err(|e| e.to_string())?;
    let (rc, in_cgroup) = clone_container(flags.bits() as u64, cgroup.path());
    if rc < 0 {
        return Err(format!(
            "clone of the container's namespaces: {}",
            nix::errno::Errno::last()
        ));
    }
    if rc == 0 {
        drop(go_w);
        drop(err_r);
        drop(ctl);
        child_main(&plan, go_r, err_w);
    }
    let pid = Pid::from_raw(rc as i32);
    let upid = rc as u32;
    drop(go_r);
    drop(err_w);
    let kill_child = |why: String| -> String {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = waitpid(pid, None);
        why
    };
    if !plan.launch.privileged
        && let Err(e) = idmap::write_maps(upid, plan.launch.slot)
    {
        return Err(kill_child(format!(
            "writing the id maps of pid {upid}: {e}"
        )));
    }
    if !in_cgroup && let Err(e) = cgroup.add_pid(upid) {
        return Err(kill_child(format!(
            "moving pid {upid} into its cgroup: {e}"
        )));
    }
    let mut ctl_w = ctl
        .try_clone()
        .map_err(|e| kill_child(format!("control socket: {e}")))?;
    writeln!(ctl_w, "pid {upid}").map_err(|e| kill_child(format!("control socket: {e}")))?;
    let mut line = String::new();
    let mut ctl_r = BufReader::new(ctl);
    let _ = ctl_r.read_line(&mut line);
    if line.trim() != "go" {
        return Err(kill_child("hostd aborted the start".into()));
    }
    let mut go = std::fs::File::from(go_w);
    go.write_all(b"g")
        .map_err(|e| kill_child(format!("releasing the container's init: {e}")))?;
    drop(go);
    let mut failure = String::new();
    let _ = std::fs::File::from(err_r).read_to_string(&mut failure);
    if !failure.trim().is_empty() {
        let _ = waitpid(pid, None);
        return Err(format!("starting the container: {}", failure.trim()));
    }
    let state = MonitorState {
        monitor_pid: std::process::id(),
        init_pid: upid,
        init_start: start_time(upid).unwrap_or(0),
        started: now(),
    };
    let state_path = plan.launch.run_dir.join(STATE_FILE);
    write_atomic(
        &state_path,
        &serde_json::to_vec(&state).map_err(|e| e.to_string())?,
    )
    .map_err(|e| kill_child(format!("writing {}: {e}", state_path.display())))?;
    let _ = writeln!(ctl_w, "ok");
    drop(ctl_w);
    drop(ctl_r);
    let code = loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, c)) => break c,
            Ok(WaitStatus::Signaled(_, sig, _)) => break 128 + sig as i32,
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                eprintln!("cairn monitor: waitpid {upid}: {e}");
                break 255;
            }
        }
    };
    let _ = write_atomic(
        &plan.launch.run_dir.join(EXIT_FILE),
        code.to_string().as_bytes(),
    );
    Ok(0)
}

/// struct clone_args (linux/sched.h), up to `cgroup` (CLONE_ARGS_SIZE_VER2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// A fork-like clone (no new stack: the child continues here with a copy of our memory) into
/// new namespaces. clone3 with CLONE_INTO_CGROUP starts the child inside its cgroup: moving a
/// process there afterwards costs 10-20 ms here (the kernel's cgroup_threadgroup_rwsem waits
/// for an RCU grace period), which was most of a container's start. Kernels before 5.7 (no
/// clone3) or a cgroup that refuses get plain clone; the caller then moves the child.
/// Returns (clone's result, whether the child is already in the cgroup).
fn clone_container(ns_flags: u64, cgroup: &Path) -> (libc::c_long, bool) {
    if let Ok(dir) = std::fs::File::open(cgroup) {
        use std::os::fd::AsRawFd;
        let args = CloneArgs {
            flags: ns_flags | CLONE_INTO_CGROUP,
            exit_signal: libc::SIGCHLD as u64,
            cgroup: dir.as_raw_fd() as u64,
            ..CloneArgs::default()
        };
        // SAFETY: clone3 without CLONE_VM and without a stack behaves as fork(2); we are
        // single-threaded, so the child may go on running Rust code.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &args as *const CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        if rc >= 0 {
            return (rc, true);
        }
        eprintln!(
            "cairn monitor: clone3 into the cgroup: {}; falling back to clone",
            nix::errno::Errno::last()
        );
    }
    // SAFETY: raw clone without CLONE_VM behaves as fork(2).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone,
            ns_flags as libc::c_long | libc::c_long::from(libc::SIGCHLD),
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    (rc, false)
}

fn plan(launch: Launch) -> Result<ChildPlan, String> {
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
    let overlay = rootfs::overlay_options(lower, &launch.upper, &launch.work, !launch.privileged)?;
    let overlay = CString::new(overlay).map_err(|e| e.to_string())?;
    let argv = launch
        .argv
        .iter()
        .map(|a| CString::new(a.as_str()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("command: {e}"))?;
    let env = [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "container=cairn",
        "TERM=linux",
    ]
    .iter()
    .map(|s| CString::new(*s))
    .collect::<Result<Vec<_>, _>>()
    .map_err(|e| e.to_string())?;
    let filter = seccomp::program().map_err(|e| format!("seccomp filter: {e}"))?;
    let console = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(&launch.console)
        .map_err(|e| format!("opening {}: {e}", launch.console.display()))?;
    if !launch.privileged {
        // Container root writes its console through /dev/console (a bind of this file).
        let root = idmap::host_base(launch.slot);
        std::os::unix::fs::fchown(&console, Some(root), Some(root))
            .map_err(|e| format!("chown {}: {e}", launch.console.display()))?;
    }
    let devnull = std::fs::File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
    Ok(ChildPlan {
        launch,
        overlay,
        argv,
        env,
        filter,
        lower_tree,
        console: OwnedFd::from(console),
        devnull: OwnedFd::from(devnull),
    })
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))
}

/// Write to a temporary name and rename: a reader never sees half a file.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
}

/// Reads the monitor's record of a container, if it has one.
pub fn read_state(run_dir: &Path) -> Option<MonitorState> {
    let text = std::fs::read_to_string(run_dir.join(STATE_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

/// The exit code the monitor recorded, if the container's init has ended.
pub fn read_exit(run_dir: &Path) -> Option<i32> {
    std::fs::read_to_string(run_dir.join(EXIT_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}
