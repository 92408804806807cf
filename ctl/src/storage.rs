//! `cairnctl pool …` and `cairnctl volume …`: stord's pools and volumes.

use clap::Subcommand;
use model::api::storage::{
    PoolCreate, PoolDelete, PoolInfoOf, PoolList, VolumeBackup, VolumeClone, VolumeCreate,
    VolumeDelete, VolumeDeleteSnapshot, VolumeGrow, VolumeImport, VolumeInfoOf, VolumeList,
    VolumeRestore, VolumeSnapshot,
};
use model::storage::{PoolKind, PoolSpec, VolumeSpec};
use model::xmlrpc::{EncodeError, Value};

use crate::call::{Call, call};
use crate::output::{bytes_cell, member, table, text};

#[derive(Subcommand)]
pub enum PoolCommand {
    /// Every pool: capacity, provisioned and allocated bytes, overcommit.
    List,
    /// One pool, with its warnings.
    Info {
        /// The pool's name.
        name: String,
    },
    /// Makes a pool: dir (volumes as sparse files in a directory), thin (dm-thin on a block
    /// device), nfs (a NAS export, volumes as files) or iscsi (a SAN target's LUNs).
    Create {
        /// The new pool's name.
        name: String,
        /// dir, thin, nfs or iscsi.
        #[arg(long, default_value = "dir", value_parser = parse_kind)]
        kind: PoolKind,
        /// dir: the directory (made when missing; it must hold nothing else; default: in
        /// stord's state directory). thin: the block device (/dev/vdb, a partition).
        #[arg(long)]
        path: Option<String>,
        /// thin: take a device that holds data all the same, destroying it.
        #[arg(long)]
        force: bool,
        /// The most provisioned bytes per byte of capacity (e.g. 10); none: no limit.
        #[arg(long)]
        overcommit: Option<f64>,
        /// nfs: SERVER:/EXPORT. iscsi: iscsi://[USER%SECRET@]PORTAL[,PORTAL…]/IQN[/LUN].
        #[arg(long)]
        source: Option<String>,
        /// nfs: mount options, e.g. vers=3 or vers=4.2,port=2049.
        #[arg(long)]
        options: Option<String>,
    },
    /// Deletes an empty pool made through the API.
    Delete {
        /// The pool's name.
        name: String,
    },
}

#[derive(Subcommand)]
pub enum VolumeCommand {
    /// Every volume, or those of POOL.
    List {
        /// Only this pool's volumes.
        pool: Option<String>,
    },
    /// One volume (POOL/NAME) and its snapshots.
    Info {
        /// The volume, POOL/NAME.
        volume: String,
    },
    /// Makes a volume POOL/NAME of --size (thin unless --full).
    Create {
        /// The new volume, POOL/NAME.
        volume: String,
        /// Its size: 10G, 512M, … (1024-based).
        #[arg(long)]
        size: String,
        /// Allocate every byte now.
        #[arg(long)]
        full: bool,
    },
    /// Deletes a volume and its snapshots.
    Delete {
        /// The volume, POOL/NAME.
        volume: String,
    },
    /// Grows a volume to --size.
    Grow {
        /// The volume, POOL/NAME.
        volume: String,
        /// The new size, larger than the current one: 20G, …
        #[arg(long)]
        size: String,
    },
    /// Takes a read-only snapshot NAME of the volume.
    Snapshot {
        /// The volume, POOL/NAME.
        volume: String,
        /// The snapshot's name (then POOL/NAME@SNAPSHOT names it).
        name: String,
    },
    /// Deletes a snapshot (the volume and its other snapshots stay).
    DeleteSnapshot {
        /// The snapshot, POOL/NAME@SNAPSHOT.
        snapshot: String,
    },
    /// Makes the volume TARGET (same pool) from SOURCE, a volume or POOL/NAME@SNAPSHOT.
    Clone {
        /// A volume POOL/NAME or a snapshot POOL/NAME@SNAPSHOT.
        source: String,
        /// The new volume, POOL/NAME in the source's pool.
        target: String,
    },
    /// Backs the volume up into POOL's backups, live (its guests held still only for the
    /// snapshot); prints the backup file and its sha256.
    Backup {
        /// The volume, POOL/NAME.
        volume: String,
        /// The pool (dir or nfs) whose backups directory receives the file.
        pool: String,
    },
    /// Makes the volume TARGET from a backup file (checked against its sha256 first).
    Restore {
        /// The backup file, as `volume backup` printed it.
        backup: String,
        /// The new volume, POOL/NAME.
        target: String,
    },
    /// Makes the volume TARGET from a raw disk image: a local FILE (uploaded first, with its
    /// progress) or upload:NAME already on the host. Runs as a task; qcow2 and other formats
    /// are refused (convert with qemu-img convert -O raw).
    Import {
        /// The new volume, POOL/NAME.
        target: String,
        /// A local raw image file, or upload:NAME.
        image: String,
    },
}

fn parse_kind(s: &str) -> Result<PoolKind, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| format!("{s:?} is not a pool kind (dir, thin, nfs, iscsi)"))
}

pub fn pool_call(command: &PoolCommand) -> Result<Call, EncodeError> {
    match command {
        PoolCommand::List => call(PoolList {}),
        PoolCommand::Info { name } => call(PoolInfoOf { name: name.clone() }),
        PoolCommand::Create {
            name,
            kind,
            path,
            force,
            overcommit,
            source,
            options,
        } => call(PoolCreate {
            spec: PoolSpec {
                name: name.clone(),
                kind: *kind,
                path: path.clone(),
                overcommit: *overcommit,
                force: force.then_some(true),
                source: source.clone(),
                options: options.clone(),
            },
        }),
        PoolCommand::Delete { name } => call(PoolDelete { name: name.clone() }),
    }
}

pub fn volume_call(command: &VolumeCommand) -> Result<Call, EncodeError> {
    match command {
        VolumeCommand::List { pool } => call(VolumeList { pool: pool.clone() }),
        VolumeCommand::Info { volume } => call(VolumeInfoOf {
            volume: volume.clone(),
        }),
        VolumeCommand::Create { volume, size, full } => call(VolumeCreate {
            spec: VolumeSpec {
                volume: volume.clone(),
                size: size.clone(),
                full: Some(*full),
            },
        }),
        VolumeCommand::Delete { volume } => call(VolumeDelete {
            volume: volume.clone(),
        }),
        VolumeCommand::Grow { volume, size } => call(VolumeGrow {
            volume: volume.clone(),
            size: size.clone(),
        }),
        VolumeCommand::Snapshot { volume, name } => call(VolumeSnapshot {
            volume: volume.clone(),
            snapshot: name.clone(),
        }),
        VolumeCommand::DeleteSnapshot { snapshot } => call(VolumeDeleteSnapshot {
            snapshot: snapshot.clone(),
        }),
        VolumeCommand::Clone { source, target } => call(VolumeClone {
            source: source.clone(),
            volume: target.clone(),
        }),
        VolumeCommand::Backup { volume, pool } => call(VolumeBackup {
            volume: volume.clone(),
            pool: pool.clone(),
        }),
        VolumeCommand::Restore { backup, target } => call(VolumeRestore {
            backup: backup.clone(),
            volume: target.clone(),
        }),
        VolumeCommand::Import { target, image } => call(VolumeImport {
            volume: target.clone(),
            source: image.clone(),
        }),
    }
}

fn ratio(v: Option<&Value>) -> String {
    match v {
        Some(Value::Double(d)) => format!("{d:.1}x"),
        Some(Value::Int(i)) => format!("{i}x"),
        _ => "-".into(),
    }
}

pub fn pools_table(list: &Value) -> String {
    let rows: Vec<Vec<String>> = list
        .as_array()
        .unwrap_or_default()
        .iter()
        .map(|p| {
            let p = p.as_struct();
            vec![
                text(member(p, "name")),
                text(member(p, "kind")),
                bytes_cell(member(p, "capacity_bytes")),
                bytes_cell(member(p, "used_bytes")),
                bytes_cell(member(p, "provisioned_bytes")),
                text(member(p, "volumes")),
                format!(
                    "{} (limit {})",
                    ratio(member(p, "overcommit_ratio")),
                    ratio(member(p, "overcommit_limit"))
                ),
                text(member(p, "path")),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "KIND",
            "CAPACITY",
            "USED",
            "PROVISIONED",
            "VOLUMES",
            "OVERCOMMIT",
            "PATH",
        ],
        &rows,
    )
}

pub fn volumes_table(list: &Value) -> String {
    let rows: Vec<Vec<String>> = list
        .as_array()
        .unwrap_or_default()
        .iter()
        .map(|v| {
            let v = v.as_struct();
            let snapshots = member(v, "snapshots")
                .and_then(Value::as_array)
                .unwrap_or_default()
                .iter()
                .map(|s| text(member(s.as_struct(), "name")))
                .collect::<Vec<_>>();
            vec![
                text(member(v, "volume")),
                bytes_cell(member(v, "size_bytes")),
                bytes_cell(member(v, "allocated_bytes")),
                if snapshots.is_empty() {
                    "-".into()
                } else {
                    snapshots.join(",")
                },
            ]
        })
        .collect();
    table(&["VOLUME", "SIZE", "ALLOCATED", "SNAPSHOTS"], &rows)
}
