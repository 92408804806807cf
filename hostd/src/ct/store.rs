//! Persisted container records: STATE/containers/NAME/spec.json, so that a hostd restart (or a
//! reboot) knows every container it made, with its id-map slot and history.

use std::collections::BTreeMap;

use model::ct::ContainerSpec;
use serde::{Deserialize, Serialize};

use super::paths::{CtDirs, Paths};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub spec: ContainerSpec,
    /// Id-map slot (`runtime::idmap`); kept for the container's life so its files' owners
    /// in the upper layer stay right across restarts.
    pub slot: u32,
    pub created: u64,
    #[serde(default)]
    pub started: Option<u64>,
    #[serde(default)]
    pub last_exit: Option<i32>,
}

pub fn dirs(paths: &Paths, name: &str) -> CtDirs {
    CtDirs {
        dir: paths.ct_dir(name),
    }
}

pub fn save(paths: &Paths, r: &Record) -> std::io::Result<()> {
    let d = dirs(paths, &r.spec.name);
    let json = serde_json::to_vec_pretty(r).map_err(std::io::Error::other)?;
    vmm::launcher::write_atomic(&d.spec(), &json)
}

/// Every record under STATE/containers; unreadable ones are logged and skipped (one damaged
/// file must not hide the other containers). Dot names are not containers (a container being
/// deleted is renamed to one first).
pub fn load_all(paths: &Paths) -> BTreeMap<String, Record> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(paths.containers())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
    {
        let path = e.path().join("spec.json");
        match std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str::<Record>(&t).map_err(|e| e.to_string()))
        {
            Ok(r) => {
                out.insert(r.spec.name.clone(), r);
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "skipping a container record")
            }
        }
    }
    out
}
