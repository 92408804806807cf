//! apid: Cairn's XML-RPC over HTTPS API, a gateway onto the daemons' D-Bus interfaces. It is the
//! only network-facing daemon, so everything it reads from the network is bounded and checked.

pub mod admission;
pub mod bus;
pub mod events;
pub mod fetch;
pub mod files;
pub mod http;
pub mod methods;
pub mod state;
pub mod stream;
pub mod sys;
pub mod task;
pub mod tls;
pub mod upload;

/// The raw token digests from host.toml, as the HTTP layer checks them.
pub fn token_digests(config: &model::config::HostConfig) -> Vec<[u8; 32]> {
    config.api.tokens.iter().map(|t| t.sha256).collect()
}
