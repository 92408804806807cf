//! The records hostd and a VMM process share: the launch description hostd writes
//! (`launch.json`), what the monitor records while the VMM runs (`state.json`) and how it ended
//! (`exit.json`), and the handshake constants. hostd reads and writes these; the VMM process
//! ([`crate::process`]) is their other side.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::VmConfig;
use crate::exit::VmExit;

/// The fd the handshake socket arrives on.
pub const CONTROL_FD: i32 = 3;
pub const LAUNCH_FILE: &str = "launch.json";
pub const STATE_FILE: &str = "state.json";
pub const EXIT_FILE: &str = "exit.json";
/// Where a restore finds its snapshot inside the jail.
pub const JAIL_SNAPSHOT_DIR: &str = "/snapshot";

/// What hostd tells a VMM process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Launch {
    pub name: String,
    /// RUN/vm/NAME: the monitor's records.
    pub run_dir: PathBuf,
    /// The jail root (prepared by hostd).
    pub root: PathBuf,
    /// The VM, with paths as seen inside the jail.
    pub config: VmConfig,
    /// Resume from /snapshot instead of booting.
    #[serde(default)]
    pub restore: bool,
    /// The cgroup directory the VMM joins (its vCPU threads' CPU limits).
    #[serde(default)]
    pub cgroup: Option<PathBuf>,
}

/// What the monitor records while the VMM runs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VmmState {
    pub monitor_pid: u32,
    pub vmm_pid: u32,
    /// /proc/PID/stat start time: a recycled pid never matches.
    pub vmm_start: u64,
}

impl VmmState {
    pub fn alive(&self) -> bool {
        start_time(self.vmm_pid) == Some(self.vmm_start)
    }
}

/// How the VMM ended, as the monitor saw it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VmmExit {
    /// The VMM's own account (guest reset, stopped, …) when it could give one.
    pub reason: Option<VmExit>,
    /// "exited with status 0", "killed by signal 9 (SIGKILL)".
    pub status: String,
    /// Died without a clean exit.
    pub crashed: bool,
}

impl VmmExit {
    pub fn describe(&self) -> String {
        match (&self.reason, self.crashed) {
            (Some(r), false) => r.to_string(),
            (Some(r), true) => format!("{r}; VMM {}", self.status),
            (None, _) => format!("VMM {}", self.status),
        }
    }
}

/// Marks a start failure caused by the VM's input (kernel, initrd, memory, snapshot files)
/// rather than by the host, so hostd answers "invalid argument" instead of "failed".
pub const INPUT_ERROR: &str = "input: ";

/// A process's start time (field 22 of /proc/PID/stat, in clock ticks since boot): with the
/// pid it names one process, so a recycled pid never passes for the one recorded.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}
