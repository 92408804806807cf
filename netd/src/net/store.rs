//! What netd keeps under its --state directory: the networks created at runtime (host.toml's
//! are re-derived on every start) and the ports, so both survive a restart. Each file is
//! replaced atomically (write + rename), so a crash leaves the old or the new version.

use std::path::{Path, PathBuf};

use model::net::{NetworkSpec, PortSpec};
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

pub struct Store {
    dir: Option<PathBuf>,
}

const NETWORKS: &str = "networks.json";
const PORTS: &str = "ports.json";

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

    pub fn ports(&self) -> Result<Vec<PortRecord>, NetError> {
        self.read(PORTS)
    }

    pub fn save_ports(&self, ports: &[&PortRecord]) -> Result<(), NetError> {
        self.write(PORTS, &ports)
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
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        write_atomic(&dir.join(file), value)
    }
}

fn write_atomic<T: Serialize>(path: &Path, value: &T) -> Result<(), NetError> {
    let what = || format!("write {}", path.display());
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| NetError::io(what(), e))?;
    }
    let json = serde_json::to_vec_pretty(value)
        .map_err(|e| NetError::io(what(), std::io::Error::other(e)))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, json).map_err(|e| NetError::io(what(), e))?;
    std::fs::rename(&tmp, path).map_err(|e| NetError::io(what(), e))
}
