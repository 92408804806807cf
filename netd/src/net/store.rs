//! What netd keeps under its --state directory: the networks created at runtime (host.toml's
//! are re-derived on every start), the ports, and the limits their owners were given, so all
//! survive a restart (and an owner's limits its next port). Each file is
//! replaced atomically (write + rename), so a crash leaves the old or the new version.
//!
//! A runtime change is persisted in two halves around the kernel change, so that a call either
//! completes and is persisted or fails and changes nothing: `prepare_*` writes the new record
//! to a temporary file *before* the kernel is touched (a full or read-only state filesystem
//! fails here, with nothing changed), and `Pending::commit` renames it into place after the
//! kernel change succeeded. A rename within one directory needs no space; if it fails anyway
//! the caller undoes its kernel change. A `Pending` dropped without commit removes its file.

use std::path::{Path, PathBuf};

use model::net::{Limits, NetworkSpec, PortSpec};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::error::NetError;

/// A port as netd remembers it between restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortRecord {
    /// The host-side link's name.
    pub name: String,
    pub spec: PortSpec,
    /// The guest end's MAC and addresses as last read back inside its namespace (veth); the
    /// namespace may be gone by the time someone lists the port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_mac: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guest_addresses: Vec<String>,
}

/// The limits `net.setLimits` gave the port of `owner` on `network`. They outlive the port: a
/// guest's port is detached when it stops and attached anew when it starts, and the new port
/// gets them again, until the owner is forgotten (its guest deleted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnerLimits {
    pub network: String,
    pub owner: String,
    pub limits: Limits,
}

pub struct Store {
    dir: Option<PathBuf>,
}

const NETWORKS: &str = "networks.json";
const PORTS: &str = "ports.json";
const OWNER_LIMITS: &str = "owner_limits.json";

impl Store {
    /// `None`: keep nothing (unit tests, benchmarks).
    pub fn new(dir: Option<PathBuf>) -> Store {
        Store { dir }
    }

    pub fn networks(&self) -> Result<Vec<NetworkSpec>, NetError> {
        self.read(NETWORKS)
    }

    pub fn save_networks(&self, specs: &[&NetworkSpec]) -> Result<(), NetError> {
        self.write(NETWORKS, &specs)
    }

    /// The networks file's next version, written aside; `commit` puts it in place.
    pub fn prepare_networks(&self, specs: &[&NetworkSpec]) -> Result<Pending, NetError> {
        self.prepare(NETWORKS, &specs)
    }

    /// The ports file's next version, written aside; `commit` puts it in place.
    pub fn prepare_ports(&self, ports: &[&PortRecord]) -> Result<Pending, NetError> {
        self.prepare(PORTS, &ports)
    }

    pub fn ports(&self) -> Result<Vec<PortRecord>, NetError> {
        self.read(PORTS)
    }

    pub fn save_ports(&self, ports: &[&PortRecord]) -> Result<(), NetError> {
        self.write(PORTS, &ports)
    }

    pub fn owner_limits(&self) -> Result<Vec<OwnerLimits>, NetError> {
        self.read(OWNER_LIMITS)
    }

    /// The owner limits file's next version, written aside; `commit` puts it in place.
    pub fn prepare_owner_limits(&self, kept: &[OwnerLimits]) -> Result<Pending, NetError> {
        self.prepare(OWNER_LIMITS, &kept)
    }

    fn read<T: DeserializeOwned>(&self, file: &str) -> Result<Vec<T>, NetError> {
        let Some(dir) = &self.dir else {
            return Ok(Vec::new());
        };
        let path = dir.join(file);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                NetError::io(
                    format!("read {}", path.display()),
                    std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(NetError::io(format!("read {}", path.display()), e)),
        }
    }

    fn write<T: Serialize>(&self, file: &str, value: &T) -> Result<(), NetError> {
        self.prepare(file, value)?.commit()
    }

    fn prepare<T: Serialize>(&self, file: &str, value: &T) -> Result<Pending, NetError> {
        let Some(dir) = &self.dir else {
            return Ok(Pending { files: None });
        };
        let path = dir.join(file);
        let tmp = write_aside(&path, value)?;
        Ok(Pending {
            files: Some((tmp, path)),
        })
    }
}

/// A record written next to its file, not yet in place.
#[must_use = "a Pending record is discarded unless committed"]
pub struct Pending {
    /// (temporary file, final path); None when nothing is kept.
    files: Option<(PathBuf, PathBuf)>,
}

impl Pending {
    /// Renames the record into place.
    pub fn commit(mut self) -> Result<(), NetError> {
        let Some((tmp, path)) = self.files.take() else {
            return Ok(());
        };
        std::fs::rename(&tmp, &path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            NetError::io(format!("write {}", path.display()), e)
        })
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some((tmp, _)) = self.files.take() {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// Writes `value` as JSON to `path`'s temporary sibling (synced, so the rename that follows
/// never publishes a file whose data is not on disk); removes it again on failure.
fn write_aside<T: Serialize>(path: &Path, value: &T) -> Result<PathBuf, NetError> {
    use std::io::Write;
    let what = || format!("write {}", path.display());
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| NetError::io(what(), e))?;
    }
    let json = serde_json::to_vec_pretty(value)
        .map_err(|e| NetError::io(what(), std::io::Error::other(e)))?;
    let tmp = path.with_extension("json.tmp");
    let r = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(&json)?;
        f.sync_all()
    });
    match r {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(NetError::io(what(), e))
        }
    }
}
