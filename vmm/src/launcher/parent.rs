//! hostd's side of the launcher: starts `EXE MODE LAUNCH` (`hostd --monitor|--vmm`) with the
//! control socket on fd 3 and walks the handshake. Blocking, with a deadline on every read:
//! async callers run each step in a blocking task (a container attaches its network port
//! between [`Spawned::wait_pid`] and [`Spawned::go`]).

use std::io::BufReader;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use super::CONTROL_FD;
use super::handshake::{ErrorKind, StartError, ToMonitor, ToParent, recv, send};

/// Why a start failed, from hostd's side.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The monitor or the guest said why; `kind` tells invalid input from failure.
    #[error("{0}")]
    Guest(StartError),
    #[error("cannot start the monitor {}: {source}", .exe.display())]
    Spawn {
        exe: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the monitor exited during start; see {}", .0.display())]
    MonitorGone(PathBuf),
    #[error("the monitor did not answer within {} s; see {}", .0.as_secs(), .1.display())]
    Timeout(Duration, PathBuf),
    #[error("control socket: {0}")]
    Io(#[source] std::io::Error),
}

impl LaunchError {
    /// Whether the guest's own input is at fault (hostd answers "invalid argument").
    pub fn is_invalid(&self) -> bool {
        matches!(self, LaunchError::Guest(e) if e.kind == ErrorKind::Invalid)
    }
}

/// A monitor being started.
pub struct Spawned {
    ctl: BufReader<UnixStream>,
    log: PathBuf,
    timeout: Duration,
}

/// Runs `exe mode launch` with stdout and stderr to `log`; returns once the monitor has
/// detached (the first process forks it and exits at once).
pub fn spawn(
    exe: &Path,
    mode: &str,
    launch: &Path,
    log: &Path,
    timeout: Duration,
) -> Result<Spawned, LaunchError> {
    let spawn_err = |source| LaunchError::Spawn {
        exe: exe.to_path_buf(),
        source,
    };
    let (ours, theirs) = UnixStream::pair().map_err(LaunchError::Io)?;
    let out = std::fs::File::create(log).map_err(spawn_err)?;
    let err = out.try_clone().map_err(spawn_err)?;
    let theirs_fd = theirs.as_raw_fd();
    let mut cmd = std::process::Command::new(exe);
    cmd.arg(mode)
        .arg(launch)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // SAFETY: only dup2 (async-signal-safe) between fork and exec. The monitor must not die
    // with hostd: PR_SET_PDEATHSIG is reset by fork, so there is nothing to undo.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(theirs_fd, CONTROL_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut first = cmd.spawn().map_err(spawn_err)?;
    drop(theirs);
    let _ = first.wait();
    ours.set_read_timeout(Some(timeout))
        .map_err(LaunchError::Io)?;
    Ok(Spawned {
        ctl: BufReader::new(ours),
        log: log.to_path_buf(),
        timeout,
    })
}

impl Spawned {
    fn next(&mut self) -> Result<ToParent, LaunchError> {
        match recv(&mut self.ctl) {
            Ok(Some(ToParent::Failed(e))) => Err(LaunchError::Guest(e)),
            Ok(Some(msg)) => Ok(msg),
            Ok(None) => Err(LaunchError::MonitorGone(self.log.clone())),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Err(LaunchError::Timeout(self.timeout, self.log.clone()))
            }
            Err(e) => Err(LaunchError::Io(e)),
        }
    }

    /// The guest's first process exists (in its cgroup, id-mapped) and waits for go.
    pub fn wait_pid(&mut self) -> Result<u32, LaunchError> {
        match self.next()? {
            ToParent::Pid { pid } => Ok(pid),
            other => Err(LaunchError::Guest(StartError::failure(format!(
                "the monitor said {other:?} before the guest's pid"
            )))),
        }
    }

    /// Releases the guest.
    pub fn go(&mut self) -> Result<(), LaunchError> {
        send(self.ctl.get_mut(), &ToMonitor::Go).map_err(LaunchError::Io)
    }

    /// Gives up: the monitor kills the guest and exits.
    pub fn abort(mut self) {
        let _ = send(self.ctl.get_mut(), &ToMonitor::Abort);
    }

    /// Waits until the guest runs (its monitor has written state.json).
    pub fn wait_ready(&mut self) -> Result<(), LaunchError> {
        match self.next()? {
            ToParent::Ready => Ok(()),
            other => Err(LaunchError::Guest(StartError::failure(format!(
                "the monitor said {other:?} instead of ready"
            )))),
        }
    }
}
