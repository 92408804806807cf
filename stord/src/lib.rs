//! stord: storage pools and volumes. Served: dir pools (sparse files, reflink snapshots and
//! clones, overcommit accounting). Not yet: thin (dm-thin), nfs and iscsi pools, exports,
//! backups, guests on volumes.

pub mod dbus;
pub mod export;
pub mod pool;
