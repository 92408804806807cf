//! The container runtime: what happens between "start" and the container's init running. The
//! launcher's monitor (`vmm::launcher::monitor`, a fresh single-threaded process) clones the
//! container's first process into new namespaces (`super::monitor` says which and prepares
//! it); that child prepares its world (`spawn::child_main`) and execs init. Because the monitor is single-threaded, the child may allocate after clone: no other
//! thread can hold the allocator's lock. Everything that can be computed earlier still is.

pub mod caps;
pub mod dev;
pub mod idmap;
pub mod namespaces;
pub mod rootfs;
pub mod seccomp;
pub mod spawn;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A container's part of its launch record (`vmm::launcher::LaunchRecord`, written by hostd to
/// RUN/ct/NAME/launch.json): what the monitor needs to start it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Launch {
    pub lower: PathBuf,
    /// Where the idmapped view of `lower` is attached inside the container's mount namespace
    /// (unprivileged containers).
    pub lower_mount: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub merged: PathBuf,
    pub console: PathBuf,
    pub hostname: String,
    pub argv: Vec<String>,
    pub privileged: bool,
    /// Id-map slot (unprivileged only): container 0..65536 → host `idmap::host_base(slot)`.
    pub slot: u32,
    pub gateway: Option<String>,
}

/// A step of the child's set-up that failed, with the kernel's reason.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {errno}")]
pub struct StepError {
    pub step: String,
    pub errno: nix::errno::Errno,
}

pub(crate) trait Step<T> {
    fn step(self, what: impl Into<String>) -> Result<T, StepError>;
}

impl<T> Step<T> for nix::Result<T> {
    fn step(self, what: impl Into<String>) -> Result<T, StepError> {
        self.map_err(|errno| StepError {
            step: what.into(),
            errno,
        })
    }
}

impl<T> Step<T> for std::io::Result<T> {
    fn step(self, what: impl Into<String>) -> Result<T, StepError> {
        self.map_err(|e| StepError {
            step: format!("{}: {e}", what.into()),
            errno: nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0)),
        })
    }
}
