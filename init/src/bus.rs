//! The system bus: a dbus-daemon started by init with a generated configuration.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::Mode;

pub struct Bus {
    pub pid: u32,
    pub address: String,
}

/// Starts dbus-daemon listening on `socket` (its config beside it) and waits until it accepts
/// connections.
pub fn start(dbus_daemon: &Path, socket: &Path) -> anyhow::Result<Bus> {
    let dir = socket
        .parent()
        .ok_or_else(|| anyhow::anyhow!("bus socket {} has no directory", socket.display()))?;
    std::fs::create_dir_all(dir)?;
    let _ = std::fs::remove_file(socket);
    let conf = dir.join("bus.conf");
    std::fs::write(&conf, model::dbus::bus_config(socket))?;
    let mut cmd = Command::new(dbus_daemon);
    cmd.arg(format!("--config-file={}", conf.display()))
        .arg("--nofork")
        .arg("--nopidfile")
        .stdin(Stdio::null());
    // SAFETY: prctl is async-signal-safe. The bus must not outlive a killed sandbox init (in
    // the appliance init is PID 1, whose death ends everything anyway).
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("start {}", dbus_daemon.display()))?;
    let pid = child.id();
    // Reaping belongs to the supervisor's waitpid(-1); the handle is not needed.
    drop(child);
    wait_for_socket(socket, Duration::from_secs(5))?;
    Ok(Bus {
        pid,
        address: format!("unix:path={}", socket.display()),
    })
}

fn wait_for_socket(socket: &Path, limit: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return Ok(());
        }
        if start.elapsed() > limit {
            anyhow::bail!("the bus did not open {} within {limit:?}", socket.display());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// dbus-daemon from the image, or from the dev machine in a sandbox.
pub fn find_daemon(bindir: &Path) -> PathBuf {
    let beside = bindir.join("dbus-daemon");
    if beside.exists() {
        beside
    } else {
        PathBuf::from("/usr/bin/dbus-daemon")
    }
}

/// The conventional system bus socket in the appliance (so `busctl --system` works there); in a
/// sandbox a socket below the state directory, reachable from the dev machine.
pub fn socket_path(mode: Mode, state: &Path) -> PathBuf {
    match mode {
        Mode::Appliance => PathBuf::from("/run/dbus/system_bus_socket"),
        Mode::Sandbox => state.join("bus/bus.sock"),
    }
}
