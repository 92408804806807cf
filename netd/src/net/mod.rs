//! Networks: desired state (host.toml's `[[network]]` plus networks created over D-Bus and
//! persisted under --state) reconciled against the kernel. Everything netd creates carries a
//! mark in its alias (`mark`), and reconcile only ever removes marked links.

pub mod bridge_vlan;
mod error;
pub mod kernel;
mod manage;
pub mod mark;
pub mod naming;
mod readback;
mod reconcile;
pub mod store;
pub mod sysctl;

pub use error::NetError;
pub use reconcile::{Network, Origin, ReconcileReport, Reconciler, Snapshot, Tx};
