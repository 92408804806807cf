//! What hostd reports about a VM.

use serde::{Deserialize, Serialize};

use super::VmSpec;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VmState {
    /// Defined (spec stored, jail prepared on start) but not running.
    Created,
    Running,
    /// vCPUs stopped; memory and devices kept.
    Paused,
    /// The guest powered off or reset, or the VM was stopped.
    Stopped,
    /// The VMM process died without a clean exit (signal, seccomp kill, panic).
    Crashed,
}

impl VmState {
    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Created => "created",
            VmState::Running => "running",
            VmState::Paused => "paused",
            VmState::Stopped => "stopped",
            VmState::Crashed => "crashed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmInfo {
    pub name: String,
    pub state: VmState,
    /// The VMM process while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// How the last run ended: "guest reset", "stopped", "killed by signal 9 (SIGKILL)", ….
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<String>,
    /// The tap of each NIC, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taps: Vec<String>,
    /// The MAC of each NIC, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub macs: Vec<String>,
    pub spec: VmSpec,
}
