//! The VMM process: `hostd --vmm LAUNCH.json`, the launcher's monitor
//! ([`crate::launcher::monitor`], the same one containers have) with the VMM as its guest: a
//! detached monitor clones the VMM into the VM's cgroup, relays the start handshake, reaps it
//! and records how it ended (`exit.json`), so a VMM crash — a signal, a seccomp kill — is
//! reported even when hostd was away.
//! The VMM enters its jail (mount namespace, pivot_root into the VM's root with only its
//! kernel, disks, console log and device nodes), builds the VM, binds its control socket,
//! drops every capability, installs its seccomp allow-list and only then starts its threads;
//! it reports ready (or a typed failure: the VM's input, or the host) and, at its end, the
//! VM's [`VmExit`].

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};

use crate::control::{Request, Response, SOCKET, respond};
use crate::exit::VmExit;
use crate::launch::{JAIL_SNAPSHOT_DIR, Launch, VmLaunch};
use crate::launcher::StartError;
use crate::launcher::console::Console;
use crate::launcher::monitor::{self, Guest, Reporter};
use crate::machine::{Vmm, open_console_log, open_snapshot};
use crate::{VmError, jail, seccomp};

/// The body of `hostd --vmm LAUNCH`: the launcher's monitor with the VMM as its guest.
/// Returns the first process's exit code (0 once the monitor is detached). Must be called
/// first thing in a fresh, single-threaded process.
pub fn run(launch_path: &Path) -> i32 {
    monitor::main(launch_path, |launch: Launch| VmmGuest::new(launch.guest))
}

/// The VMM as a launcher guest.
struct VmmGuest {
    launch: VmLaunch,
    /// The console the monitor keeps (taken before the clone).
    console: Option<Console>,
    /// The VMM's end of that console: where its serial port writes.
    serial_out: Option<File>,
}

impl VmmGuest {
    fn new(launch: VmLaunch) -> Result<VmmGuest, StartError> {
        let (console, serial_out) = match &launch.console {
            Some(log) => {
                let console = Console::open(log).map_err(|e| StartError::failure(e.to_string()))?;
                let out = console
                    .guest_end()
                    .try_clone()
                    .map_err(|e| StartError::failure(format!("console pty: {e}")))?;
                (Some(console), Some(File::from(out)))
            }
            None => (None, None),
        };
        Ok(VmmGuest {
            launch,
            console,
            serial_out,
        })
    }
}

impl Guest for VmmGuest {
    type Reason = VmExit;
    const READY_ON_EXEC: bool = false;

    fn take_console(&mut self) -> Option<Console> {
        self.console.take()
    }

    fn run(self, mut report: Reporter<VmExit>) -> ! {
        match build(&self.launch, self.serial_out) {
            Ok((vmm, listener)) => {
                report.ready();
                let code = serve(vmm, &listener, report);
                std::process::exit(code)
            }
            Err(e) => {
                report.failed(e);
                std::process::exit(1)
            }
        }
    }
}

/// A VM error as a start failure: the VM's own input (kernel, initrd, memory, snapshot files)
/// is invalid input, the rest the host's failure.
fn vm_err(e: VmError) -> StartError {
    if e.is_input() {
        StartError::invalid(e.to_string())
    } else {
        StartError::failure(e.to_string())
    }
}

fn build(launch: &VmLaunch, serial_out: Option<File>) -> Result<(Vmm, UnixListener), StartError> {
    let fail = |what: &str, e: &dyn std::fmt::Display| StartError::failure(format!("{what}: {e}"));
    jail::enter(&launch.root).map_err(|e| fail("entering the jail", &e))?;
    let console = match serial_out {
        Some(pty) => Some(pty),
        None => open_console_log(&launch.config).map_err(vm_err)?,
    };
    let prepared = if launch.restore {
        let (state, memory) = open_snapshot(Path::new(JAIL_SNAPSHOT_DIR)).map_err(vm_err)?;
        Vmm::prepare_restore(&launch.config, &state, memory, false, console).map_err(vm_err)?
    } else {
        Vmm::prepare_boot(&launch.config, console).map_err(vm_err)?
    };
    let sock = Path::new("/").join(SOCKET);
    let _ = std::fs::remove_file(&sock);
    let listener =
        UnixListener::bind(&sock).map_err(|e| fail(&format!("binding {}", sock.display()), &e))?;
    jail::drop_privileges().map_err(|e| fail("dropping privileges", &e))?;
    let filter = seccomp::vmm_filter().map_err(|e| fail("seccomp filter", &e))?;
    seccomp::install(&filter).map_err(|e| fail("installing the seccomp filter", &e))?;
    let vmm = prepared.start().map_err(vm_err)?;
    Ok((vmm, listener))
}

/// The longest request line: 64 KiB of console input, every byte escaped (`\u0001`).
const MAX_REQUEST: usize = 6 * 64 * 1024 + 1024;

/// How long console output without a line end waits for the log at most.
const CONSOLE_FLUSH_MS: i32 = 100;

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
fn serve(mut vmm: Vmm, listener: &UnixListener, mut reason: Reporter<VmExit>) -> i32 {
    use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
    let finish = |vmm: Vmm, reason: &mut Reporter<VmExit>| -> i32 {
        let exit = vmm.shutdown().unwrap_or(VmExit::Stopped);
        reason.ended(&exit);
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
        // Every 100 ms the console's open line (a prompt) reaches the log.
        vmm.flush_console_log();
        let n = match epoll.wait(CONSOLE_FLUSH_MS, &mut events) {
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
                        // One attached client: the one before is let go (its output side
                        // by `attach`, its input side here).
                        for (_, old) in std::mem::take(&mut clients) {
                            let _ = epoll.ctl(
                                ControlOperation::Delete,
                                old.as_raw_fd(),
                                EpollEvent::default(),
                            );
                        }
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
    // hostd sends each request in one sendmsg, but a stream socket may hand a long one (64 KiB
    // of console input, escaped) over in pieces: read on to the line's end (no read timeout
    // here: setsockopt is not on the seccomp allow-list; hostd, the only client, always sends
    // the whole line).
    buf.truncate(len);
    while !buf.ends_with(b"\n") && buf.len() < MAX_REQUEST && len > 0 {
        let mut more = [0u8; 64 * 1024];
        match nix::unistd::read(stream, &mut more) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&more[..n]),
        }
    }
    let line = &buf[..];
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
        Request::ConsoleInput { data } => {
            // A full input queue is answered at once, as busy: the guest has not read yet.
            let answer = match vmm.console_input(data.as_bytes()) {
                Ok(()) => Response::ok(),
                Err(e) => Response::busy(e),
            };
            respond(stream, &answer);
            return Handled::Done;
        }
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
