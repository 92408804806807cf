//! What the VMM builds: the launch description hostd writes for a VMM process (paths as the
//! VMM sees them, i.e. inside its jail), also used directly by in-process tests.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A virtio block device over a raw file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskConfig {
    pub path: PathBuf,
    #[serde(default)]
    pub read_only: bool,
}

/// A virtio net device over an existing (persistent) tap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetConfig {
    pub tap: String,
    pub mac: [u8; 6],
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmConfig {
    #[serde(default = "one")]
    pub vcpus: u8,
    pub mem_mib: u32,
    /// ELF vmlinux or bzImage.
    pub kernel: PathBuf,
    #[serde(default)]
    pub initrd: Option<PathBuf>,
    /// The guest's command line as given; the VMM appends the console and device entries.
    #[serde(default)]
    pub cmdline: String,
    #[serde(default)]
    pub disks: Vec<DiskConfig>,
    #[serde(default)]
    pub nets: Vec<NetConfig>,
    /// Where the serial console is also written (appended).
    #[serde(default)]
    pub console_log: Option<PathBuf>,
}

fn one() -> u8 {
    1
}

impl VmConfig {
    /// A one-vCPU VM of `mem_mib` MiB booting `kernel` with `cmdline`.
    pub fn new(kernel: impl Into<PathBuf>, cmdline: &str, mem_mib: u32) -> Self {
        VmConfig {
            vcpus: 1,
            mem_mib,
            kernel: kernel.into(),
            initrd: None,
            cmdline: cmdline.to_string(),
            disks: Vec::new(),
            nets: Vec::new(),
            console_log: None,
        }
    }
}
