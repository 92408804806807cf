//! hostd: virtual machines and OS containers behind org.cairn.Host1. The binary (`main.rs`)
//! is also the per-container monitor (`--monitor`), the VMM process (`--vmm`, the `vmm` crate)
//! and the exec helper (`--ct-exec`).

pub mod addresses;
pub mod cgroup;
pub mod ct;
pub mod dbus;
pub mod declared;
pub mod error;
pub mod events;
pub mod guest;
pub mod netd;
pub mod reconcile;
pub mod stord;
pub mod vm;
