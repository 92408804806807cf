//! OS containers: templates, the runtime that starts them, their monitors, and the lifecycle
//! behind org.cairn.Host1's container methods.

pub mod bundled;
pub mod console;
pub mod disk;
pub mod exec;
pub mod exec_tty;
pub mod files;
mod loopdev;
pub mod manager;
pub mod monitor;
pub mod paths;
pub mod ports;
pub mod route;
pub mod runtime;
pub mod store;
pub mod template;
