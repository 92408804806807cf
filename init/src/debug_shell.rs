//! A root shell on the second serial port, only in images built with `--debug-shell` (tests and
//! development): the appliance tests drive namespaces, VLANs and traffic inside the guest with it.
//!
//! The shell's stdin is the tty in raw mode (no echo, no line editing) and its output goes
//! through a pipe that a thread copies to the tty: with stdout not a terminal, busybox's sh runs
//! non-interactively (no prompt, no echo), so a test reads exactly the commands' output.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::Context;
use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};

/// Present only in debug images.
const MARKER: &str = "/etc/cairn/debug-shell";
const TTY: &str = "/dev/ttyS1";
const TOOLS: &str = "/usr/lib/cairn/debug/bin";

/// Starts the shell if this image has one; returns its pid. init's reaper collects it like any
/// other child when it exits (it is not restarted).
pub fn start() -> anyhow::Result<Option<u32>> {
    if !Path::new(MARKER).exists() {
        return Ok(None);
    }
    let tty = OpenOptions::new()
        .read(true)
        .write(true)
        .open(TTY)
        .with_context(|| format!("open {TTY}"))?;
    let mut mode = tcgetattr(&tty).context("tcgetattr")?;
    cfmakeraw(&mut mode);
    tcsetattr(&tty, SetArg::TCSANOW, &mode).context("tcsetattr")?;
    let (out_r, out_w) = nix::unistd::pipe().context("pipe")?;
    let out_w = File::from(out_w);
    let child = Command::new(format!("{TOOLS}/sh"))
        .env_clear()
        .env("PATH", format!("{TOOLS}:/usr/bin"))
        .env("HOME", "/")
        .env(
            model::dbus::BUS_ADDRESS_ENV,
            "unix:path=/run/dbus/system_bus_socket",
        )
        .current_dir("/")
        .stdin(tty.try_clone()?)
        .stdout(Stdio::from(out_w.try_clone()?))
        .stderr(Stdio::from(out_w))
        .spawn()
        .context("start the debug shell")?;
    let mut out = File::from(out_r);
    let mut tty_out = tty;
    std::thread::spawn(move || std::io::copy(&mut out, &mut tty_out));
    tracing::warn!(
        tty = TTY,
        pid = child.id(),
        "debug shell started (debug image)"
    );
    Ok(Some(child.id()))
}
