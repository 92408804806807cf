//! stord: storage pools and volumes. Pools: dir (sparse files, reflink snapshots and clones),
//! thin (dm-thin on a block device through the device-mapper ioctls, watched for space), nfs
//! and iscsi; overcommit accounting; live backups; volumes as guests' disks and container
//! layers; volumes exported as iSCSI LUNs through LIO.

pub mod dbus;
pub mod dm;
pub mod export;
pub mod pool;
pub mod watch;
