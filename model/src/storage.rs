//! Storage pools and volumes as stord takes and reports them (`pool.*`, `volume.*`).
//!
//! A volume is named `POOL/NAME` everywhere (a VM's disk, the API, cairnctl), a snapshot of it
//! `POOL/NAME@SNAP`, as Proxmox names volumes `storage:volume` and ZFS snapshots `fs@snap`.

use serde::{Deserialize, Serialize};

use crate::config::{NAME_MAX, is_name};

/// The kinds of pool (host.toml's `[[pool]] kind`). Only `dir` is served yet; stord refuses
/// the others by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolKind {
    Dir,
    Thin,
    Nfs,
    Iscsi,
}

impl PoolKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PoolKind::Dir => "dir",
            PoolKind::Thin => "thin",
            PoolKind::Nfs => "nfs",
            PoolKind::Iscsi => "iscsi",
        }
    }
}

/// A pool to make (`pool.create`), with the members of a `[[pool]]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    pub name: String,
    pub kind: PoolKind,
    /// dir: the directory that holds the volumes (made when missing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The most provisioned bytes the pool may promise per byte it has ("10" → ten times its
    /// capacity); a volume that would take the pool past it is refused. None: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overcommit: Option<f64>,
    /// thin: make the pool on a device that holds data (a partition table, a filesystem)
    /// all the same, destroying it. Without it such a device is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
    /// nfs: the export, `server:/export` (a name or an address; `[v6]:/export`).
    /// iscsi: the target, `iscsi://[USER%SECRET@]PORTAL[,PORTAL…]/IQN[/LUN]` (libiscsi's URL,
    /// with CHAP's user and secret; a LUN number takes only that LUN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// nfs: mount options added to stord's, as mount(8)'s -o takes them ("vers=3,port=2049").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<String>,
}

/// A pool as stord finds it (sizes read from the filesystem, not remembered).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolInfo {
    pub name: String,
    pub kind: PoolKind,
    pub path: String,
    /// Declared in host.toml (deleted only by changing it) rather than made through the API.
    pub declared: bool,
    /// The filesystem's size, and what is in use on it (by anything) and still free.
    pub capacity_bytes: u64,
    pub used_bytes: u64,
    pub free_bytes: u64,
    /// What the pool's volumes may grow to, in all, and what they hold now.
    pub provisioned_bytes: u64,
    pub allocated_bytes: u64,
    pub volumes: u32,
    /// provisioned / capacity.
    pub overcommit_ratio: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overcommit_limit: Option<f64>,
    /// What needs a look: data use past 80 % (warning) or 95 % (critical), overcommit near
    /// its limit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// A volume to make (`volume.create`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeSpec {
    /// `POOL/NAME`.
    pub volume: String,
    /// "10G", "512M", … (host.toml's sizes).
    pub size: String,
    /// Every byte allocated now (no overcommit of this volume); default false: thin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotInfo {
    pub name: String,
    pub allocated_bytes: u64,
    /// Seconds since the epoch.
    pub created: u64,
}

/// A volume as stord finds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeInfo {
    /// `POOL/NAME`.
    pub volume: String,
    pub size_bytes: u64,
    /// Bytes the volume holds on the pool's storage now (a thin volume's grow as it is written).
    pub allocated_bytes: u64,
    /// The file or block device a guest uses.
    pub path: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<SnapshotInfo>,
    /// The guests that use it (`vm:NAME`); a volume in use cannot be deleted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub used_by: Vec<String>,
    /// A copy running from it now (a backup being written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy: Option<CopyProgress>,
}

/// How far a copy of a volume has come.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyProgress {
    /// `backup`.
    pub what: String,
    pub done_bytes: u64,
    pub total_bytes: u64,
}

/// A backup `volume.backup` made: a file in the target pool's `backups/` directory, with its
/// sha256 beside it (`FILE.sha256`, as `sha256sum` writes it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupInfo {
    /// The backup file, which `volume.restore` takes.
    pub backup: String,
    /// The volume it is of (`POOL/NAME`).
    pub volume: String,
    pub size_bytes: u64,
    /// What it holds on its pool's storage (holes stay holes).
    pub allocated_bytes: u64,
    /// Of every byte of the volume, holes as zeros.
    pub sha256: String,
    /// The guests that were frozen (containers) or paused (VMs) for the snapshot, and for how
    /// long, in milliseconds; the copy into the backup ran after they went on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quiesced: Vec<String>,
    pub quiesced_ms: u64,
}

/// `POOL/NAME[@SNAP]`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeRef {
    pub pool: String,
    pub name: String,
    pub snapshot: Option<String>,
}

impl VolumeRef {
    /// Parses `POOL/NAME` (and `POOL/NAME@SNAP` when `snapshot_ok`); each part a name
    /// (`[a-z0-9][a-z0-9-]*`, at most 63).
    pub fn parse(s: &str, snapshot_ok: bool) -> Result<VolumeRef, String> {
        let shape = if snapshot_ok {
            "POOL/VOLUME or POOL/VOLUME@SNAPSHOT"
        } else {
            "POOL/VOLUME"
        };
        let bad = |why: &str| format!("{s:?} is not {shape}: {why}");
        let (pool, rest) = s.split_once('/').ok_or_else(|| bad("no '/'"))?;
        let (name, snapshot) = match rest.split_once('@') {
            Some(_) if !snapshot_ok => return Err(bad("a snapshot is not taken here")),
            Some((n, snap)) => (n, Some(snap)),
            None => (rest, None),
        };
        for (what, part) in [
            ("pool", Some(pool)),
            ("volume", Some(name)),
            ("snapshot", snapshot),
        ] {
            if let Some(part) = part
                && !is_name(part, NAME_MAX)
            {
                return Err(bad(&format!(
                    "the {what} name {part:?} is not [a-z0-9][a-z0-9-]* of at most {NAME_MAX}"
                )));
            }
        }
        Ok(VolumeRef {
            pool: pool.to_string(),
            name: name.to_string(),
            snapshot: snapshot.map(str::to_string),
        })
    }
}

impl std::fmt::Display for VolumeRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.pool, self.name)?;
        if let Some(s) = &self.snapshot {
            write!(f, "@{s}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_names_parse_and_print_back() {
        let v = VolumeRef::parse("fast/db-1", false).unwrap();
        assert_eq!(
            (v.pool.as_str(), v.name.as_str(), v.snapshot),
            ("fast", "db-1", None)
        );
        let s = VolumeRef::parse("fast/db@before", true).unwrap();
        assert_eq!(s.snapshot.as_deref(), Some("before"));
        assert_eq!(s.to_string(), "fast/db@before");
        for (bad, why) in [
            ("fast", "no '/'"),
            ("fast/db@x", "a snapshot is not taken here"),
            ("Fast/db", "the pool name \"Fast\""),
            ("fast/../x", "the volume name \"../x\""),
            ("fast/", "the volume name \"\""),
        ] {
            let e = VolumeRef::parse(bad, false).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let e = VolumeRef::parse("fast/db@", true).unwrap_err();
        assert!(e.contains("the snapshot name \"\""), "{e}");
    }
}
