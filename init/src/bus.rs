//! The system bus: a dbus-daemon started by init with a generated configuration.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

pub struct Bus {
    pub pid: u32,
    pub address: String,
}

/// Only root may connect: apid is the network boundary, everything on the bus is trusted.
fn config_text(socket: &Path) -> String {
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <deny user="*"/>
    <allow user="root"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"#,
        socket.display()
    )
}

/// Starts dbus-daemon with its socket in `dir` and waits until it accepts connections.
pub fn start(dbus_daemon: &Path, dir: &Path) -> anyhow::Result<Bus> {
    std::fs::create_dir_all(dir)?;
    let socket = dir.join("bus.sock");
    let _ = std::fs::remove_file(&socket);
    let conf = dir.join("bus.conf");
    std::fs::write(&conf, config_text(&socket))?;
    let child = Command::new(dbus_daemon)
        .arg(format!("--config-file={}", conf.display()))
        .arg("--nofork")
        .arg("--nopidfile")
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("start {}", dbus_daemon.display()))?;
    let pid = child.id();
    // Reaping belongs to the supervisor's waitpid(-1); the handle is not needed.
    drop(child);
    wait_for_socket(&socket, Duration::from_secs(5))?;
    Ok(Bus {
        pid,
        address: format!("unix:path={}", socket.display()),
    })
}

fn wait_for_socket(socket: &PathBuf, limit: Duration) -> anyhow::Result<()> {
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
