//! The one guest launcher: how hostd starts a guest (a container's init, a VM's VMM) so that
//! it outlives hostd, and how hostd learns that it runs and, later, how it ended.
//!
//! Both kinds go through the same four pieces:
//! - [`LaunchRecord`]: what hostd writes to RUN/{ct,vm}/NAME/launch.json — name, run dir,
//!   cgroup, and the kind's own description (`guest`);
//! - [`monitor`]: `hostd --monitor|--vmm LAUNCH` — a detached (double fork + setsid) monitor
//!   that clones the guest's first process straight into its cgroup and namespaces, relays the
//!   start [`handshake`], records [`MonitorState`] and, when it reaps the guest, an
//!   [`ExitRecord`] (exit code or signal, plus the guest's own account);
//! - [`handshake`]: the typed messages on the control socket and the guest's report pipe —
//!   "ready" or a [`StartError`] whose [`ErrorKind`] says invalid input or failure;
//! - [`parent`]: hostd's side of the handshake.
//!
//! It lives in `vmm`, the process-management crate hostd already depends on: the VMM process
//! is a launcher guest, and hostd's container runtime is another (`hostd/src/ct/monitor.rs`),
//! so neither crate needs the other's internals.

pub mod attach;
pub mod console;
pub mod handshake;
pub mod monitor;
pub mod parent;

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use handshake::{ErrorKind, StartError};

/// The fd the control socket arrives on in `hostd --monitor|--vmm`.
pub const CONTROL_FD: i32 = 3;
pub const LAUNCH_FILE: &str = "launch.json";
pub const STATE_FILE: &str = "state.json";
pub const EXIT_FILE: &str = "exit.json";

/// What hostd tells a monitor: the same for every kind of guest, with the kind's own part in
/// `guest` (a container's rootfs and command, a VM's jail and config).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LaunchRecord<G> {
    pub name: String,
    /// RUN/{ct,vm}/NAME: where the monitor writes its records.
    pub run_dir: PathBuf,
    /// The cgroup directory the guest's first process is cloned into.
    #[serde(default)]
    pub cgroup: Option<PathBuf>,
    pub guest: G,
}

impl<G: Serialize> LaunchRecord<G> {
    /// Writes RUN_DIR/launch.json; returns its path.
    pub fn write(&self) -> std::io::Result<PathBuf> {
        let path = self.run_dir.join(LAUNCH_FILE);
        let json = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        write_atomic(&path, &json)?;
        Ok(path)
    }
}

impl<G: DeserializeOwned> LaunchRecord<G> {
    pub fn read(path: &Path) -> Result<LaunchRecord<G>, StartError> {
        let text = std::fs::read(path)
            .map_err(|e| StartError::failure(format!("reading {}: {e}", path.display())))?;
        serde_json::from_slice(&text)
            .map_err(|e| StartError::failure(format!("{}: {e}", path.display())))
    }
}

/// What the monitor records while its guest runs (RUN_DIR/state.json).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MonitorState {
    pub monitor_pid: u32,
    /// The monitor's start time: with the pid it names one process (see [`start_time`]).
    pub monitor_start: u64,
    /// The guest's first process: a container's init, a VM's VMM.
    pub guest_pid: u32,
    pub guest_start: u64,
    /// Unix seconds.
    pub started: u64,
}

impl MonitorState {
    /// The guest still runs and is the one started (not a recycled pid).
    pub fn alive(&self) -> bool {
        start_time(self.guest_pid) == Some(self.guest_start)
    }

    /// The monitor still runs: it has not written its exit record yet.
    pub fn monitor_alive(&self) -> bool {
        start_time(self.monitor_pid) == Some(self.monitor_start)
    }
}

/// How the guest's first process ended, as waitpid said.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Ended {
    Exited {
        code: i32,
    },
    Signaled {
        signal: i32,
    },
    /// waitpid failed: the monitor cannot say.
    Unknown {
        why: String,
    },
}

impl Ended {
    /// A shell-style code: the exit code, or 128 + the signal.
    pub fn code(&self) -> i32 {
        match self {
            Ended::Exited { code } => *code,
            Ended::Signaled { signal } => 128 + signal,
            Ended::Unknown { .. } => 255,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Ended::Exited { code } => format!("exited with status {code}"),
            Ended::Signaled { signal } => match nix::sys::signal::Signal::try_from(*signal) {
                Ok(s) => format!("killed by signal {signal} ({s:?})"),
                Err(_) => format!("killed by signal {signal}"),
            },
            Ended::Unknown { why } => format!("cannot be waited for: {why}"),
        }
    }
}

/// How a guest ended (RUN_DIR/exit.json), written whole (rename) by its monitor, and only
/// while the run dir is still its run's: a slow monitor of an earlier run never speaks for
/// the next one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExitRecord<R> {
    pub monitor_pid: u32,
    pub ended: Ended,
    /// The guest's own account, when it gave one (a VM's [`crate::VmExit`]).
    pub reason: Option<R>,
}

/// A process's start time (field 22 of /proc/PID/stat, in clock ticks since boot): with the
/// pid it names one process, so a recycled pid never passes for the one recorded.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

/// Unix seconds now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub use model::files::write_atomic;

/// The monitor's record of a running guest, if there is one.
pub fn read_state(run_dir: &Path) -> Option<MonitorState> {
    let bytes = std::fs::read(run_dir.join(STATE_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The exit record in `run_dir`: None when there is none; an error when it cannot be read.
pub fn read_exit<R: DeserializeOwned>(run_dir: &Path) -> Result<Option<ExitRecord<R>>, String> {
    match std::fs::read(run_dir.join(EXIT_FILE)) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| format!("{EXIT_FILE} {:?}: {e}", String::from_utf8_lossy(&b))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("reading {EXIT_FILE}: {e}")),
    }
}

/// The exit record of the run `state` describes: one a slow monitor of an earlier run left
/// does not count.
pub fn exit_of<R: DeserializeOwned>(
    run_dir: &Path,
    state: &MonitorState,
) -> Result<Option<ExitRecord<R>>, String> {
    Ok(read_exit::<R>(run_dir)?.filter(|e| e.monitor_pid == state.monitor_pid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ended_codes_and_words() {
        assert_eq!(Ended::Exited { code: 3 }.code(), 3);
        let killed = Ended::Signaled { signal: 9 };
        assert_eq!(killed.code(), 137);
        assert_eq!(killed.describe(), "killed by signal 9 (SIGKILL)");
        assert_eq!(Ended::Exited { code: 0 }.describe(), "exited with status 0");
    }

    #[test]
    fn exit_records_of_another_run_do_not_count() {
        let dir = std::env::temp_dir().join(format!("cairn-launcher-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let rec = ExitRecord::<()> {
            monitor_pid: 7,
            ended: Ended::Signaled { signal: 9 },
            reason: None,
        };
        write_atomic(&dir.join(EXIT_FILE), &serde_json::to_vec(&rec).unwrap()).unwrap();
        let mut state = MonitorState {
            monitor_pid: 7,
            monitor_start: 1,
            guest_pid: 8,
            guest_start: 2,
            started: 0,
        };
        assert_eq!(exit_of::<()>(&dir, &state).unwrap(), Some(rec));
        state.monitor_pid = 9;
        assert_eq!(exit_of::<()>(&dir, &state).unwrap(), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
