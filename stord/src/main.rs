//! stord: storage pools and volumes. This first slice owns `org.cairn.Storage1` and reports
//! the pools the config declares; thin volumes, NFS and iSCSI come with their own issue.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use model::config::HostConfig;
use model::dbus::{STORAGE_NAME, STORAGE_PATH, StatusTuple};

#[derive(Parser)]
#[command(about = "Cairn's storage daemon")]
struct Args {
    /// The host.toml init validated and started us with.
    #[arg(long)]
    config: PathBuf,
    /// The state directory (persistent across restarts).
    #[arg(long)]
    state: PathBuf,
}

struct Storage1 {
    config: HostConfig,
}

#[zbus::interface(name = "org.cairn.Storage1")]
impl Storage1 {
    /// Version and counts of the pools and volumes this daemon manages.
    async fn status(&self) -> StatusTuple {
        let counts = HashMap::from([
            ("pools".to_string(), count(self.config.pools.len())),
            ("volumes".to_string(), 0),
        ]);
        (model::VERSION.to_string(), counts)
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let args = Args::parse();
    let config = model::config::load(&args.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let _bus = model::dbus::bus_builder()?
        .name(STORAGE_NAME)
        .serve_at(STORAGE_PATH, Storage1 { config })
        .build()
        .await
        .context("cannot own org.cairn.Storage1 on the bus")?;
    tracing::info!(state = %args.state.display(), "stord ready");
    wait_for_sigterm().await
}

async fn wait_for_sigterm() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    term.recv().await;
    tracing::info!("stord stopping on SIGTERM");
    Ok(())
}
