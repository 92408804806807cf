//! `pool.*` and `volume.*`: storage pools and their volumes, and `export.*`: volumes as
//! iSCSI LUNs; all served by stord.

use super::{actions, rpc_type};
use crate::export::{ExportInfo, ExportSpec};
use crate::storage::{BackupInfo, PoolInfo, PoolSpec, VolumeInfo, VolumeSpec};

rpc_type!("struct": PoolSpec, PoolInfo, VolumeSpec, VolumeInfo, BackupInfo, ExportSpec, ExportInfo);

actions! { ACTIONS;
    PoolCreate = "pool.create", Stord, (spec: PoolSpec) -> PoolInfo,
        "Creates a pool from {name, kind, path?, overcommit?, force?, source?, options?}, as a \
         [[pool]] table in host.toml plus overcommit: the most provisioned bytes per byte of capacity (none: no \
         limit). kind dir keeps volumes as sparse files in path (made when missing; a \
         directory that holds files stord did not make is refused). kind thin makes a dm-thin \
         pool on path, a block device (a disk, a partition, a LUN): its first MiB holds the \
         pool's records, then dm-thin's metadata (sized for four times the device), then the \
         data in 64 KiB blocks; a device that holds anything (a filesystem, a partition table, \
         any data in its first MiB) -> 105 unless force, and a device that grows later grows \
         the pool. When a thin pool fills, writes to it wait (nothing fails), the guests using \
         it are paused and pool.info says so, until the device grows. kind nfs mounts source, \
         SERVER:/EXPORT, with the kernel's NFS client (options: mount options such as \
         vers=3, port=, mountport=, hard; default vers=4.1, TCP, soft, timeo=30, retrans=2, \
         and nolock for v3) and keeps volumes as files in it, as dir; a server that does not \
         answer within 5 s -> 106, an export it does not have -> 104. kind iscsi logs in to \
         source, iscsi://[USER%SECRET@]PORTAL[,PORTAL...]/IQN[/LUN] (CHAP when USER%SECRET \
         is given; through each portal that answers; only LUN when given), and serves the \
         target's LUNs as its volumes lunN (volume.create, grow and delete of them -> 105: \
         the SAN makes LUNs); a portal that does not answer -> 106, a target it does not \
         offer -> 104, a refused login -> 102. \
         Returns the pool as pool.info shows it.";
    PoolDelete = "pool.delete", Stord, (name: String) -> bool,
        "Deletes a pool made through the API that holds no volumes (an iscsi pool: none in \
         use; its sessions are logged out; an nfs pool is unmounted); its directory stays \
         (empty of stord's files, so another pool may take it). A \
         pool host.toml declares, or one that keeps templates (template.import's pool; \
         template.delete them first) -> 105.";
    PoolList = "pool.list", Stord, () -> Vec<PoolInfo>,
        "Every pool, as pool.info describes it.";
    PoolInfoOf = "pool.info", Stord, (name: String) -> PoolInfo,
        "One pool: {name, kind, path, declared, capacity_bytes, used_bytes, free_bytes (of its \
         filesystem), provisioned_bytes (what its volumes may grow to), allocated_bytes (what \
         they hold), volumes, overcommit_ratio (provisioned / capacity), overcommit_limit?, \
         warnings (data or, thin, metadata use past 80 % or 95 %, overcommit past 90 % of its \
         limit, a thin pool out of space and the guests paused for it)}.";
    VolumeCreate = "volume.create", Stord, (spec: VolumeSpec) -> VolumeInfo,
        "Creates a volume from {volume: POOL/NAME, size (\"10G\"), full? (every byte \
         allocated now; default thin; a thin pool's volumes are always thin: full -> 102)}. \
         Refused (105) when it exists, or when it would take the pool past its overcommit \
         limit (or, full, past its free space). Returns it as volume.info shows it.";
    VolumeDelete = "volume.delete", Stord, (volume: String) -> bool,
        "Deletes a volume (POOL/NAME) and its snapshots. A volume a VM uses (see used_by) \
         -> 105.";
    VolumeList = "volume.list", Stord, (pool: Option<String>) -> Vec<VolumeInfo>,
        "Every volume, or those of one pool, as volume.info describes them.";
    VolumeInfoOf = "volume.info", Stord, (volume: String) -> VolumeInfo,
        "One volume: {volume, size_bytes, allocated_bytes, path (the file or, thin, the block \
         device a guest uses), snapshots: [{name, allocated_bytes (0 for a thin snapshot: \
         what it shares is counted in its volume), created}], used_by (the guests and \
         exports using it: vm:NAME, ct:NAME, export:NAME), copy? ({what: backup, \
         done_bytes, total_bytes} while a backup of it is being copied)}.";
    VolumeGrow = "volume.grow", Stord, (volume: String, size: String) -> VolumeInfo,
        "Grows a volume to size (never shrinks: a smaller size -> 102); the overcommit limit \
         applies as at volume.create.";
    VolumeSnapshot = "volume.snapshot", Stord, (volume: String, snapshot: String) -> VolumeInfo,
        "Takes a read-only snapshot of POOL/NAME named snapshot: a reflink where the \
         filesystem shares blocks (xfs, btrfs: instant, no space until either side changes), \
         else a sparse copy; in a thin pool a dm-thin snapshot (instant, blocks shared; the \
         volume's filesystem is flushed and frozen for it).";
    VolumeDeleteSnapshot = "volume.deleteSnapshot", Stord, (snapshot: String) -> VolumeInfo,
        "Deletes snapshot POOL/NAME@SNAP (the volume and its other snapshots stay; clones made \
         from it are volumes of their own and stay too). Returns the volume as volume.info \
         shows it. No such snapshot -> 104; POOL/NAME without @SNAP -> 102.";
    VolumeBackup = "volume.backup", Stord, (volume: String, pool: String) -> BackupInfo,
        "Backs a volume up into pool (its backups/ directory), live: the guests using it are \
         frozen (containers, their layer's filesystem too) or paused (VMs) only while a \
         snapshot is taken, then the snapshot is copied — holes stay holes, the sha256 of \
         every byte computed on the way and written beside it — and dropped. Returns \
         {backup (the file), volume, size_bytes, allocated_bytes, sha256, quiesced (the guests \
         held still), quiesced_ms}. While it copies, volume.info of the volume shows its \
         progress (copy) and the rest of the API answers; a request must finish within 28 s: \
         run a longer copy as a task (task.start), whose progress is the copy's.";
    VolumeDeleteBackup = "volume.deleteBackup", Stord, (backup: String) -> bool,
        "Deletes backup (a file volume.backup made, in a pool's backups/ directory) and the \
         sha256 beside it. Anything else -> 102, a file that is not there -> 104.";
    VolumeRestore = "volume.restore", Stord, (backup: String, volume: String) -> VolumeInfo,
        "Makes the new volume POOL/NAME from backup (a file volume.backup made, in a pool's \
         backups/ directory), after checking it against its sha256; a backup that does not \
         match -> 102 and nothing is made.";
    VolumeImport = "volume.import", Stord, (volume: String, source: String) -> VolumeInfo,
        "Makes the new volume POOL/NAME from a raw disk image: source is upload:NAME, a file \
         sent with PUT /uploads/NAME (consumed once imported; kept when the import fails, for \
         another try). The volume has the image's size (a whole number of 512-byte sectors), \
         holes stay holes; dir, nfs and thin pools (iscsi -> 105). A qcow2, VMDK, VHD(X) or VDI \
         image -> 102 (convert it to raw first: qemu-img convert -O raw), as is an empty one; \
         no such upload -> 104; a volume that exists or a pool past its overcommit -> 105. \
         Nothing is left when it fails. Run a large image as a task (task.start).";
    VolumeClone = "volume.clone", Stord, (source: String, volume: String) -> VolumeInfo,
        "Makes the new volume POOL/NAME (same pool) from source, a volume or a snapshot \
         (POOL/NAME@SNAP), as a reflink where the filesystem has them, else a sparse copy; in \
         a thin pool a dm-thin snapshot, writable (instant, blocks shared until written).";
    ExportCreate = "export.create", Stord, (spec: ExportSpec) -> ExportInfo,
        "Exports a volume as an iSCSI LUN through the kernel's LIO target, from {volume: \
         POOL/NAME, name? (default: the volume's name), initiators: [{iqn, chap_user?, \
         chap_secret? (12 to 16 characters)}], port? (default 3260)}. One target per export \
         (iqn.2026-12.org.cairn:HOST:NAME), LUN 0, a portal on every address; only the listed \
         initiators get in (with CHAP when given: all of them or none); thin provisioning is \
         advertised (UNMAP, WRITE SAME, LBPME) where the backstore frees blocks. The volume is \
         in use (export:NAME) until export.delete. A bad IQN or secret -> 102, an unknown \
         volume -> 104, a name or volume already exported -> 105; nothing is left half-made. \
         Returns it as export.info shows it.";
    ExportDelete = "export.delete", Stord, (name: String) -> bool,
        "Stops exporting: initiators' sessions end, the target and backstore go, the volume is \
         free again.";
    ExportList = "export.list", Stord, () -> Vec<ExportInfo>,
        "Every export, as export.info describes it.";
    ExportInfoOf = "export.info", Stord, (name: String) -> ExportInfo,
        "One export: {name, volume, iqn (the target's), portal, lun, initiators: [{iqn, \
         chap_user?}] (secrets are never answered), thin, backstore (fileio for a file \
         volume, iblock for a block device), active (false: recorded but not served now; \
         stord's log says why)}.";
}
