//! The contract every Cairn daemon shares: the `host.toml` schema and its validation, the D-Bus
//! interface names and proxies, and the XML-RPC fault codes. No I/O beyond reading a config file.

pub mod api;
pub mod config;
pub mod ct;
pub mod daemon;
pub mod dbus;
pub mod export;
pub mod fault;
pub mod files;
pub mod install;
pub mod logline;
pub mod net;
pub mod rules;
pub mod signature;
pub mod storage;
pub mod stream;
pub mod token;
pub mod units;
pub mod update;
pub mod url;
pub mod vm;
pub mod xmlrpc;

/// The Cairn release every daemon reports in `Status()` and `host.info`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Lower-case hex of `bytes` (digests as sha256sum prints them).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
