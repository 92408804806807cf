//! The monitor: one small process per running guest, the same for containers and VMs. It
//! detaches from hostd (double fork + setsid: hostd never waits for it, and a killed hostd
//! leaves it and its guest running), clones the guest's first process straight into the
//! guest's cgroup (and, for a container, its namespaces), relays the start handshake, then
//! reaps the guest and records how it ended. It serves nothing else.

use std::io::{BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, setsid};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::console::Console;
use super::handshake::{Report, StartError, ToMonitor, ToParent, recv, send};
use super::{
    CONTROL_FD, EXIT_FILE, Ended, ExitRecord, LaunchRecord, MonitorState, STATE_FILE, now,
    read_state, start_time, write_atomic,
};

/// One kind of guest: what the monitor needs to know to start it.
pub trait Guest: Sized {
    /// The guest's own account of its end (a VM's `VmExit`), sent as [`Report::Ended`].
    type Reason: Serialize + DeserializeOwned;

    /// The guest execs (a container's init): its report pipe is O_CLOEXEC, so the pipe
    /// closing without a report means the exec succeeded. Otherwise it means the guest died.
    const READY_ON_EXEC: bool;

    /// The CLONE_NEW* namespaces the first process is cloned into.
    fn clone_flags(&self) -> u64 {
        0
    }

    /// The guest's console, which the monitor keeps from before the clone (so the guest's
    /// copy of the monitor's memory holds no master) and copies into its log while the guest
    /// runs. None: the guest writes its console itself (a VM's VMM).
    fn take_console(&mut self) -> Option<Console> {
        None
    }

    /// In the monitor, after the clone and before hostd hears the pid (id maps).
    fn prepare_child(&self, _pid: u32) -> Result<(), StartError> {
        Ok(())
    }

    /// In the guest's first process, while hostd does its part between the pid and go (a
    /// container's network port): the set-up that needs nothing from hostd (a container's
    /// mounts), so that the two run side by side.
    fn before_go(&mut self) -> Result<(), StartError> {
        Ok(())
    }

    /// The guest's first process, once hostd said go; never returns.
    fn run(self, report: Reporter<Self::Reason>) -> !;
}

/// The guest's side of its report pipe.
pub struct Reporter<R> {
    pipe: std::fs::File,
    _reason: std::marker::PhantomData<R>,
}

impl<R: Serialize> Reporter<R> {
    pub fn ready(&mut self) {
        let _ = send(&mut self.pipe, &Report::<R>::Ready);
    }

    pub fn failed(&mut self, e: StartError) {
        let _ = send(&mut self.pipe, &Report::<R>::Failed(e));
    }

    pub fn ended(&mut self, reason: &R) {
        let _ = send(&mut self.pipe, &Report::Ended(reason));
    }
}

/// The body of `hostd --monitor|--vmm LAUNCH`: `make` turns the launch record's guest part
/// into a [`Guest`]. Returns the first process's exit code (0 once the monitor is detached);
/// the detached monitor returns when its guest has been reaped. Must be called first thing
/// in a fresh, single-threaded process.
pub fn main<S, G>(
    launch_path: &Path,
    make: impl FnOnce(LaunchRecord<S>) -> Result<G, StartError>,
) -> i32
where
    S: DeserializeOwned,
    G: Guest,
{
    let first = nix::unistd::getpid();
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
    die_with_the_reaper(first);
    // SAFETY: fd 3 is the control socket hostd passed us; we own it from here on.
    let ctl = unsafe { UnixStream::from_raw_fd(CONTROL_FD) };
    let mut report = match ctl.try_clone() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cairn monitor: control socket: {e}");
            return 1;
        }
    };
    match monitor(launch_path, ctl, make) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("cairn monitor: {e}");
            let _ = send(&mut report, &ToParent::Failed(e));
            1
        }
    }
}

/// The guest's first process once cloned: what the monitor kills when its reaper dies.
static GUEST: AtomicI32 = AtomicI32::new(0);

/// SIGTERM — sent by init at shutdown, and as the parent-death signal when init dies — ends
/// the guest (its end is then recorded as usual), or the monitor itself while there is no
/// guest yet.
extern "C" fn on_sigterm(_: libc::c_int) {
    let pid = GUEST.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill(2) is async-signal-safe.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    } else {
        // SAFETY: _exit(2) is async-signal-safe.
        unsafe { libc::_exit(1) }
    }
}

/// Once the first process (`first`) has exited and the monitor belongs to the reaper (init:
/// PID 1 in the appliance, the sandbox's subreaper on a dev machine), the monitor asks for
/// SIGTERM when that reaper dies: a killed sandbox init then ends its guests instead of
/// leaving them to a new init that cannot see them. Not before: the first process's exit
/// would count as the parent's death.
fn die_with_the_reaper(first: Pid) {
    let handler = nix::sys::signal::SigAction::new(
        nix::sys::signal::SigHandler::Handler(on_sigterm),
        nix::sys::signal::SaFlags::SA_RESTART,
        nix::sys::signal::SigSet::empty(),
    );
    // SAFETY: the handler only calls async-signal-safe functions.
    if let Err(e) = unsafe { nix::sys::signal::sigaction(Signal::SIGTERM, &handler) } {
        eprintln!("cairn monitor: SIGTERM handler: {e}");
        return;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while nix::unistd::getppid() == first {
        if std::time::Instant::now() > deadline {
            eprintln!("cairn monitor: still a child of the first process; no parent-death signal");
            return;
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    let reaper = nix::unistd::getppid();
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0) } != 0 {
        eprintln!(
            "cairn monitor: PR_SET_PDEATHSIG: {}",
            std::io::Error::last_os_error()
        );
        return;
    }
    // The reaper may have died between the look and the prctl: then no signal would come.
    if nix::unistd::getppid() != reaper {
        let _ = nix::sys::signal::raise(Signal::SIGTERM);
    }
}

fn pipe() -> Result<(std::fs::File, std::fs::File), StartError> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| StartError::failure(format!("pipe: {e}")))?;
    Ok((std::fs::File::from(r), std::fs::File::from(w)))
}

fn monitor<S, G>(
    launch_path: &Path,
    ctl: UnixStream,
    make: impl FnOnce(LaunchRecord<S>) -> Result<G, StartError>,
) -> Result<(), StartError>
where
    S: DeserializeOwned,
    G: Guest,
{
    let launch: LaunchRecord<S> = LaunchRecord::read(launch_path)?;
    let run_dir = launch.run_dir.clone();
    let cgroup = launch.cgroup.clone();
    let mut guest = make(launch)?;
    let console = guest.take_console();
    let (go_r, go_w) = pipe()?;
    let (report_r, report_w) = pipe()?;
    let (rc, in_cgroup) = clone_guest(guest.clone_flags(), cgroup.as_deref());
    if rc < 0 {
        return Err(StartError::failure(format!(
            "clone of the guest's first process: {}",
            nix::errno::Errno::last()
        )));
    }
    if rc == 0 {
        drop(go_w);
        drop(report_r);
        drop(ctl);
        drop(console);
        child(guest, go_r, report_w);
    }
    let pid = Pid::from_raw(rc as i32);
    let upid = rc as u32;
    GUEST.store(pid.as_raw(), Ordering::SeqCst);
    drop(go_r);
    drop(report_w);
    let kill_child = |e: StartError| -> StartError {
        let _ = kill(pid, Signal::SIGKILL);
        let _ = waitpid(pid, None);
        e
    };
    // From here on the monitor may have threads: the clone is done.
    let pump = console
        .map(|c| c.pump())
        .transpose()
        .map_err(|e| kill_child(StartError::failure(format!("console: {e}"))))?;
    guest.prepare_child(upid).map_err(kill_child)?;
    if !in_cgroup && let Some(cg) = &cgroup {
        std::fs::write(cg.join("cgroup.procs"), upid.to_string()).map_err(|e| {
            kill_child(StartError::failure(format!(
                "moving pid {upid} into {}: {e}",
                cg.display()
            )))
        })?;
    }
    let io = |e: std::io::Error| kill_child(StartError::failure(format!("control socket: {e}")));
    let mut ctl_w = ctl.try_clone().map_err(io)?;
    send(&mut ctl_w, &ToParent::Pid { pid: upid }).map_err(io)?;
    // Then "prepared": the guest sets itself up while hostd does its part. Not before the
    // pid is out: the woken guest would compete with this send for the CPU.
    let mut go = go_w;
    go.write_all(b"p")
        .map_err(|e| kill_child(StartError::failure(format!("releasing the guest: {e}"))))?;
    let mut ctl_r = BufReader::new(ctl);
    if !matches!(recv(&mut ctl_r), Ok(Some(ToMonitor::Go))) {
        return Err(kill_child(StartError::failure("hostd aborted the start")));
    }
    // A guest whose own set-up failed is gone already: the write fails, and its report says
    // why (read below).
    let _ = go.write_all(b"g");
    drop(go);
    let mut reports = BufReader::new(report_r);
    match recv::<Report<G::Reason>>(&mut reports) {
        Ok(Some(Report::Ready)) => {}
        Ok(None) if G::READY_ON_EXEC => {}
        Ok(Some(Report::Failed(e))) => {
            let _ = waitpid(pid, None);
            return Err(e);
        }
        Ok(Some(Report::Ended(_))) | Ok(None) | Err(_) => {
            let ended = reap(pid);
            return Err(StartError::failure(format!(
                "the guest {} while starting",
                ended.describe()
            )));
        }
    }
    let state = MonitorState {
        monitor_pid: std::process::id(),
        monitor_start: start_time(std::process::id()).unwrap_or(0),
        guest_pid: upid,
        guest_start: start_time(upid).unwrap_or(0),
        started: now(),
    };
    let state_path = run_dir.join(STATE_FILE);
    let json = serde_json::to_vec(&state).map_err(|e| StartError::failure(e.to_string()))?;
    write_atomic(&state_path, &json).map_err(|e| {
        kill_child(StartError::failure(format!(
            "writing {}: {e}",
            state_path.display()
        )))
    })?;
    let _ = send(&mut ctl_w, &ToParent::Ready);
    drop(ctl_w);
    drop(ctl_r);

    let ended = reap(pid);
    // Its pid namespace is gone with it: nothing writes to the console any more. What it
    // wrote last is in the log before hostd can see the exit record.
    if let Some(pump) = pump {
        pump.finish();
    }
    // What the guest said of its end, if anything: it is in the pipe already (the writer is
    // gone with the process).
    let mut rest = String::new();
    let _ = reports.read_to_string(&mut rest);
    let reason = rest
        .lines()
        .filter_map(|l| serde_json::from_str::<Report<G::Reason>>(l).ok())
        .find_map(|r| match r {
            Report::Ended(r) => Some(r),
            _ => None,
        });
    let exit = ExitRecord {
        monitor_pid: state.monitor_pid,
        ended,
        reason,
    };
    // Only while the run dir is still this run's: hostd may already have cleaned up after us
    // and started the next run, whose monitor wrote its own state.
    if read_state(&run_dir).is_some_and(|s| s.monitor_pid == state.monitor_pid) {
        match serde_json::to_vec(&exit) {
            Ok(json) => {
                if let Err(e) = write_atomic(&run_dir.join(EXIT_FILE), &json) {
                    eprintln!("cairn monitor: writing {EXIT_FILE}: {e}");
                }
            }
            Err(e) => eprintln!("cairn monitor: {EXIT_FILE}: {e}"),
        }
    }
    Ok(())
}

/// Waits for the guest's first process and says how it ended.
fn reap(pid: Pid) -> Ended {
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ended::Exited { code },
            Ok(WaitStatus::Signaled(_, sig, _)) => {
                return Ended::Signaled { signal: sig as i32 };
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Ended::Unknown { why: e.to_string() },
        }
    }
}

/// The guest's first process: waits until the monitor prepared it, sets itself up, waits for
/// go (the monitor kills it on abort), then runs.
fn child<G: Guest>(mut guest: G, go: std::fs::File, report: std::fs::File) -> ! {
    // The monitor's SIGTERM handler is not the guest's (a VMM runs on without an exec).
    // SAFETY: restoring the default disposition.
    let _ =
        unsafe { nix::sys::signal::signal(Signal::SIGTERM, nix::sys::signal::SigHandler::SigDfl) };
    let mut go = go;
    let mut report = Reporter {
        pipe: report,
        _reason: std::marker::PhantomData,
    };
    let mut wait_for = |want: u8| {
        let mut byte = [0u8; 1];
        if !matches!(go.read(&mut byte), Ok(1) if byte[0] == want) {
            // SAFETY: _exit skips the atexit handlers and stdio flushes that belong to the
            // monitor.
            unsafe { libc::_exit(127) }
        }
    };
    wait_for(b'p');
    if let Err(e) = guest.before_go() {
        report.failed(e);
        // SAFETY: as above.
        unsafe { libc::_exit(127) }
    }
    wait_for(b'g');
    guest.run(report)
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
/// `ns_flags`' new namespaces. clone3 with CLONE_INTO_CGROUP starts the child inside its
/// cgroup: moving a process there afterwards costs 10-20 ms here (the kernel's
/// cgroup_threadgroup_rwsem waits for an RCU grace period). Kernels before 5.7 (no clone3) or a
/// cgroup that refuses get plain clone; the caller then moves the child.
/// Returns (clone's result, whether the child is already in the cgroup).
fn clone_guest(ns_flags: u64, cgroup: Option<&Path>) -> (libc::c_long, bool) {
    if let Some(dir) = cgroup.and_then(|cg| std::fs::File::open(cg).ok()) {
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
