//! The VMM process: `hostd --vmm LAUNCH.json`, started by hostd with a socketpair on fd 3.
//! The first process forks a detached monitor (setsid: a killed hostd leaves its VMs running)
//! and exits. The monitor forks the VMM, moves it into the VM's cgroup, relays the start
//! handshake to hostd, then waits for it and records how it ended (`exit.json`), so a VMM
//! crash — a signal, a seccomp kill — is reported even when hostd was away.
//! The VMM enters its jail (mount namespace, pivot_root into the VM's root with only its
//! kernel, disks, console log and device nodes), builds the VM, binds its control socket,
//! drops every capability, installs its seccomp allow-list and only then starts its threads.
//!
//! Handshake on fd 3 (one line each, monitor → hostd): `pid N`, then `ok` | `err MESSAGE`.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork, setsid};

use crate::control::{Request, Response, SOCKET, respond};
use crate::exit::VmExit;
use crate::launch::{
    CONTROL_FD, EXIT_FILE, INPUT_ERROR, JAIL_SNAPSHOT_DIR, Launch, STATE_FILE, VmmExit, VmmState,
    start_time,
};
use crate::machine::{Vmm, open_snapshot};
use crate::{VmError, jail, seccomp};

/// The body of `hostd --vmm LAUNCH`: returns the first process's exit code (0 once the monitor
/// is detached). Must be called first thing in a fresh, single-threaded process.
pub fn run(launch_path: &Path) -> i32 {
    // SAFETY: hostd starts us as a fresh, single-threaded process.
    match unsafe { fork() } {
        Ok(ForkResult::Parent { .. }) => return 0,
        Ok(ForkResult::Child) => {}
        Err(e) => {
            eprintln!("cairn vmm: fork: {e}");
            return 1;
        }
    }
    let _ = setsid();
    // SAFETY: fd 3 is the handshake socket hostd passed us; we own it from here on.
    let mut ctl = unsafe { UnixStream::from_raw_fd(CONTROL_FD) };
    match monitor(launch_path, &mut ctl) {
        Ok(()) => 0,
        Err(msg) => {
            eprintln!("cairn vmm monitor: {msg}");
            let _ = writeln!(ctl, "err {}", msg.replace('\n', " "));
            1
        }
    }
}

fn pipe() -> Result<(File, File), String> {
    let (r, w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    Ok((File::from(r), File::from(w)))
}

fn monitor(launch_path: &Path, ctl: &mut UnixStream) -> Result<(), String> {
    let text = std::fs::read_to_string(launch_path)
        .map_err(|e| format!("reading {}: {e}", launch_path.display()))?;
    let launch: Launch =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", launch_path.display()))?;
    let (mut ready_r, ready_w) = pipe()?;
    let (mut reason_r, reason_w) = pipe()?;
    // SAFETY: the monitor is single-threaded; the child only runs the VMM.
    let child = match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            drop(ready_r);
            drop(reason_r);
            vmm_main(&launch, ready_w, reason_w)
        }
        Ok(ForkResult::Parent { child }) => child,
        Err(e) => return Err(format!("fork of the VMM: {e}")),
    };
    drop(ready_w);
    drop(reason_w);
    let pid = child.as_raw() as u32;
    if let Some(cg) = &launch.cgroup
        && let Err(e) = std::fs::write(cg.join("cgroup.procs"), pid.to_string())
    {
        let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
        let _ = waitpid(child, None);
        return Err(format!("moving the VMM into {}: {e}", cg.display()));
    }
    let _ = writeln!(ctl, "pid {pid}");
    let mut ready = String::new();
    let _ = ready_r.read_to_string(&mut ready);
    let ready = ready.trim();
    if ready != "ok" {
        let _ = waitpid(child, None);
        let why = if ready.is_empty() {
            "the VMM died while starting".to_string()
        } else {
            ready.trim_start_matches("err ").to_string()
        };
        return Err(why);
    }
    let state = VmmState {
        monitor_pid: std::process::id(),
        vmm_pid: pid,
        vmm_start: start_time(pid).unwrap_or(0),
    };
    let state_path = launch.run_dir.join(STATE_FILE);
    std::fs::write(
        &state_path,
        serde_json::to_vec(&state).map_err(|e| e.to_string())?,
    )
    .map_err(|e| format!("writing {}: {e}", state_path.display()))?;
    let _ = std::fs::remove_file(launch.run_dir.join(EXIT_FILE));
    let _ = writeln!(ctl, "ok");
    drop(std::mem::replace(
        ctl,
        UnixStream::pair().map_err(|e| e.to_string())?.0,
    ));

    let status = loop {
        match waitpid(child, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other,
        }
    };
    let mut reason_line = String::new();
    let _ = reason_r.read_to_string(&mut reason_line);
    let reason: Option<VmExit> = serde_json::from_str(reason_line.trim()).ok();
    let (status, crashed) = match status {
        Ok(WaitStatus::Exited(_, 0)) => ("exited with status 0".to_string(), reason.is_none()),
        Ok(WaitStatus::Exited(_, code)) => (format!("exited with status {code}"), true),
        Ok(WaitStatus::Signaled(_, sig, _)) => {
            (format!("killed by signal {} ({sig:?})", sig as i32), true)
        }
        Ok(other) => (format!("ended: {other:?}"), true),
        Err(e) => (format!("cannot be waited for: {e}"), true),
    };
    let crashed = crashed || matches!(reason, Some(VmExit::Crash(_)));
    let exit = VmmExit {
        reason,
        status,
        crashed,
    };
    // state.json goes first, and only if it is still ours: hostd may already have started
    // the next run of this VM, whose monitor wrote its own. exit.json appears whole (rename)
    // and last, so once hostd sees it this monitor has nothing left to do.
    let ours = std::fs::read(&state_path)
        .ok()
        .and_then(|b| serde_json::from_slice::<VmmState>(&b).ok())
        .is_some_and(|s| s.monitor_pid == state.monitor_pid);
    if ours {
        let _ = std::fs::remove_file(&state_path);
    }
    let exit_path = launch.run_dir.join(EXIT_FILE);
    let tmp = launch
        .run_dir
        .join(format!("{EXIT_FILE}.{}", state.monitor_pid));
    if std::fs::write(&tmp, serde_json::to_vec(&exit).unwrap_or_default()).is_ok() {
        let _ = std::fs::rename(&tmp, &exit_path);
    }
    Ok(())
}

/// The VMM itself; never returns.
fn vmm_main(launch: &Launch, mut ready: File, reason: File) -> ! {
    match build(launch) {
        Ok((vmm, listener)) => {
            let _ = ready.write_all(b"ok\n");
            drop(ready);
            let code = serve(vmm, &listener, reason);
            std::process::exit(code)
        }
        Err(msg) => {
            let _ = writeln!(ready, "err {}", msg.replace('\n', " "));
            std::process::exit(1)
        }
    }
}

fn vm_err(e: VmError) -> String {
    if e.is_input() {
        format!("{INPUT_ERROR}{e}")
    } else {
        e.to_string()
    }
}

fn build(launch: &Launch) -> Result<(Vmm, UnixListener), String> {
    jail::enter(&launch.root).map_err(|e| format!("entering the jail: {e}"))?;
    let prepared = if launch.restore {
        let (state, memory) = open_snapshot(Path::new(JAIL_SNAPSHOT_DIR)).map_err(vm_err)?;
        Vmm::prepare_restore(&launch.config, &state, memory, false).map_err(vm_err)?
    } else {
        Vmm::prepare_boot(&launch.config).map_err(vm_err)?
    };
    let sock = Path::new("/").join(SOCKET);
    let _ = std::fs::remove_file(&sock);
    let listener =
        UnixListener::bind(&sock).map_err(|e| format!("binding {}: {e}", sock.display()))?;
    jail::drop_privileges().map_err(|e| format!("dropping privileges: {e}"))?;
    let filter = seccomp::vmm_filter().map_err(|e| format!("seccomp filter: {e}"))?;
    seccomp::install(&filter).map_err(|e| format!("installing the seccomp filter: {e}"))?;
    let vmm = prepared.start().map_err(vm_err)?;
    Ok((vmm, listener))
}

const TOKEN_LISTENER: u64 = 1;
const TOKEN_EXIT: u64 = 2;
const TOKEN_FIRST_CLIENT: u64 = 16;

/// What the serve loop does after a request.
enum Handled {
    Done,
    /// End the VM.
    Stop,
    /// Keep the connection as an attached console.
    Attach,
}

/// Serves control requests until the VM ends; returns the process exit code.
fn serve(mut vmm: Vmm, listener: &UnixListener, mut reason: File) -> i32 {
    use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
    let finish = |vmm: Vmm, reason: &mut File| -> i32 {
        let exit = vmm.shutdown().unwrap_or(VmExit::Stopped);
        let _ = writeln!(
            reason,
            "{}",
            serde_json::to_string(&exit).unwrap_or_default()
        );
        if matches!(exit, VmExit::Crash(_)) {
            2
        } else {
            0
        }
    };
    let epoll = match Epoll::new() {
        Ok(e) => e,
        Err(_) => return finish(vmm, &mut reason),
    };
    let exit_fd = vmm.exit_signal().evt.as_raw_fd();
    for (fd, token) in [
        (listener.as_raw_fd(), TOKEN_LISTENER),
        (exit_fd, TOKEN_EXIT),
    ] {
        if epoll
            .ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, token),
            )
            .is_err()
        {
            return finish(vmm, &mut reason);
        }
    }
    let mut events = vec![EpollEvent::default(); 8];
    // Attached console clients, by epoll token (their input side).
    let mut clients: std::collections::BTreeMap<u64, UnixStream> = Default::default();
    let mut next_token = TOKEN_FIRST_CLIENT;
    loop {
        if vmm.exit_signal().is_set() {
            return finish(vmm, &mut reason);
        }
        let n = match epoll.wait(-1, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return finish(vmm, &mut reason),
        };
        for ev in &events[..n] {
            let token = ev.data();
            if token == TOKEN_LISTENER
                && let Ok((stream, _)) = listener.accept()
            {
                match handle(&mut vmm, &stream) {
                    Handled::Done => {}
                    Handled::Stop => return finish(vmm, &mut reason),
                    Handled::Attach => {
                        let attached = stream.try_clone().and_then(|out| {
                            vmm.console()
                                .lock()
                                .map_err(|_| std::io::Error::other("console lock"))?
                                .attach(out)
                        });
                        if attached.is_ok()
                            && epoll
                                .ctl(
                                    ControlOperation::Add,
                                    stream.as_raw_fd(),
                                    EpollEvent::new(EventSet::IN, next_token),
                                )
                                .is_ok()
                        {
                            clients.insert(next_token, stream);
                            next_token += 1;
                        }
                    }
                }
            } else if let Some(client) = clients.get_mut(&token) {
                let mut buf = [0u8; 1024];
                match client.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = epoll.ctl(
                            ControlOperation::Delete,
                            client.as_raw_fd(),
                            EpollEvent::default(),
                        );
                        clients.remove(&token);
                    }
                    Ok(n) => {
                        let _ = vmm.console_input(&buf[..n]);
                    }
                }
            }
        }
    }
}

/// Reads one request (and any fd with it), acts, answers.
fn handle(vmm: &mut Vmm, stream: &UnixStream) -> Handled {
    let mut buf = vec![0u8; 64 * 1024];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let (len, fd) = {
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        match recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => {
                let fd = msg.cmsgs().ok().and_then(|mut c| {
                    c.find_map(|m| match m {
                        ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
                        _ => None,
                    })
                });
                (msg.bytes, fd)
            }
            Err(e) => {
                respond(stream, &Response::err(format!("recvmsg: {e}")));
                return Handled::Done;
            }
        }
    };
    // SAFETY: the kernel just installed this fd for us; nothing else owns it.
    let fd = fd.map(|f| unsafe { OwnedFd::from_raw_fd(f) });
    // hostd sends each request in one sendmsg, so one recvmsg holds the whole line (no read
    // timeout here: setsockopt is not on the seccomp allow-list).
    let line = &buf[..len];
    let req: Request = match serde_json::from_slice(line) {
        Ok(r) => r,
        Err(e) => {
            respond(stream, &Response::err(format!("bad request: {e}")));
            return Handled::Done;
        }
    };
    let result: Result<Response, String> = match req {
        Request::Info => Ok(Response {
            ok: true,
            paused: vmm.is_paused(),
            first_line_ms: vmm
                .console()
                .lock()
                .ok()
                .and_then(|c| c.first_line_at)
                .map(|t| t.duration_since(vmm.created).as_secs_f64() * 1e3),
            ..Default::default()
        }),
        Request::Pause => vmm
            .pause()
            .map(|_| Response::ok())
            .map_err(|e| e.to_string()),
        Request::Resume => vmm
            .resume()
            .map(|_| Response::ok())
            .map_err(|e| e.to_string()),
        Request::Snapshot => match &fd {
            Some(dir) => vmm
                .snapshot(dir.as_fd())
                .map(|_| Response::ok())
                .map_err(|e| e.to_string()),
            None => Err("a snapshot request needs the directory's fd".into()),
        },
        Request::CtrlAltDel => vmm
            .ctrl_alt_del()
            .map(|_| Response::ok())
            .map_err(|e| e.to_string()),
        Request::ConsoleInput { data } => vmm
            .console_input(data.as_bytes())
            .map(|_| Response::ok())
            .map_err(|e| e.to_string()),
        Request::Stop => {
            respond(stream, &Response::ok());
            return Handled::Stop;
        }
        Request::Attach => {
            respond(stream, &Response::ok());
            return Handled::Attach;
        }
    };
    respond(
        stream,
        &match result {
            Ok(r) => r,
            Err(e) => Response::err(e),
        },
    );
    Handled::Done
}
