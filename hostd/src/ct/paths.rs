//! Where container and template things live on the host. STATE (persistent, hostd's `--state`)
//! keeps what must survive a reboot; RUN (tmpfs, `$CAIRN_RUN_DIR` or /run/cairn) what describes
//! running processes, so that a stale pid never survives a reboot.

use std::path::{Path, PathBuf};

/// Overrides /run/cairn, so that tests can isolate their monitors' records.
pub const RUN_DIR_ENV: &str = "CAIRN_RUN_DIR";

#[derive(Debug, Clone)]
pub struct Paths {
    pub state: PathBuf,
    pub run: PathBuf,
}

impl Paths {
    pub fn new(state: &Path) -> Paths {
        let run = std::env::var_os(RUN_DIR_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/run/cairn"));
        Paths {
            state: state.to_path_buf(),
            run,
        }
    }

    pub fn templates(&self) -> PathBuf {
        self.state.join("templates")
    }
    pub fn containers(&self) -> PathBuf {
        self.state.join("containers")
    }
    pub fn ct_dir(&self, name: &str) -> PathBuf {
        self.containers().join(name)
    }
    pub fn run_ct(&self) -> PathBuf {
        self.run.join("ct")
    }
    pub fn run_dir(&self, name: &str) -> PathBuf {
        self.run_ct().join(name)
    }
}

/// The per-container directories under STATE/containers/NAME.
#[derive(Debug, Clone)]
pub struct CtDirs {
    pub dir: PathBuf,
}

impl CtDirs {
    pub fn spec(&self) -> PathBuf {
        self.dir.join("spec.json")
    }
    pub fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }
    /// Mount point of the idmapped template inside the container's mount namespace.
    pub fn lower(&self) -> PathBuf {
        self.dir.join("lower")
    }
    pub fn work(&self) -> PathBuf {
        self.dir.join("work")
    }
    /// The overlay's mount point (mounted only inside the container's mount namespace).
    pub fn merged(&self) -> PathBuf {
        self.dir.join("rootfs")
    }
    pub fn console(&self) -> PathBuf {
        self.dir.join("console.log")
    }
}
