//! A VM's part of the launcher's records ([`crate::launcher`]): what hostd tells a VMM process
//! (`launch.json`'s `guest`), and how its exit record reads.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::VmConfig;
use crate::exit::VmExit;
use crate::launcher::{Ended, ExitRecord, LaunchRecord};

pub use crate::launcher::{CONTROL_FD, EXIT_FILE, LAUNCH_FILE, STATE_FILE, start_time};

/// Where a restore finds its snapshot inside the jail.
pub const JAIL_SNAPSHOT_DIR: &str = "/snapshot";

/// What a VMM process builds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmLaunch {
    /// The jail root (prepared by hostd).
    pub root: PathBuf,
    /// The VM, with paths as seen inside the jail.
    pub config: VmConfig,
    /// Resume from /snapshot instead of booting.
    #[serde(default)]
    pub restore: bool,
    /// The console log on the host, which the monitor keeps (rotated at
    /// [`crate::launcher::console::CONSOLE_LOG_CAP`]) from the pty the VMM's serial port
    /// writes to; None: the config's `console_log` inside the jail, unbounded.
    #[serde(default)]
    pub console: Option<PathBuf>,
}

/// launch.json of a VM.
pub type Launch = LaunchRecord<VmLaunch>;

/// exit.json of a VM: how the VMM ended, with its own account of the guest's end.
pub type VmmExit = ExitRecord<VmExit>;

/// The VMM died without a clean exit: a signal, a non-zero status, no account of the VM's
/// end, or its account says the VM crashed.
pub fn crashed(exit: &VmmExit) -> bool {
    exit.ended != (Ended::Exited { code: 0 })
        || exit.reason.is_none()
        || matches!(exit.reason, Some(VmExit::Crash(_)))
}

/// "guest reset (…)", or "…; VMM killed by signal 9 (SIGKILL)" for a crash.
pub fn describe(exit: &VmmExit) -> String {
    match (&exit.reason, crashed(exit)) {
        (Some(r), false) => r.to_string(),
        (Some(r), true) => format!("{r}; VMM {}", exit.ended.describe()),
        (None, _) => format!("VMM {}", exit.ended.describe()),
    }
}
