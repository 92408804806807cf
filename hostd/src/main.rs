//! hostd: virtual machines and OS containers. This first slice owns `org.cairn.Host1` and reports
//! what the config declares; the VMM and container runtimes come with their own issues.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use model::config::HostConfig;
use model::dbus::{HOST_NAME, HOST_PATH, StatusTuple};

#[derive(Parser)]
#[command(about = "Cairn's VM and container daemon")]
struct Args {
    /// The host.toml init validated and started us with.
    #[arg(long)]
    config: PathBuf,
    /// The state directory (persistent across restarts).
    #[arg(long)]
    state: PathBuf,
}

struct Host1 {
    config: HostConfig,
}

#[zbus::interface(name = "org.cairn.Host1")]
impl Host1 {
    /// Version and counts of the guests this daemon manages (declared ones, until they run).
    async fn status(&self) -> StatusTuple {
        let counts = HashMap::from([
            (
                "containers".to_string(),
                count(self.config.containers.len()),
            ),
            ("vms".to_string(), count(self.config.vms.len())),
            ("templates".to_string(), count(self.config.templates.len())),
            ("running".to_string(), 0),
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
        .name(HOST_NAME)
        .serve_at(HOST_PATH, Host1 { config })
        .build()
        .await
        .context("cannot own org.cairn.Host1 on the bus")?;
    tracing::info!(state = %args.state.display(), "hostd ready");
    wait_for_sigterm().await
}

async fn wait_for_sigterm() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    term.recv().await;
    tracing::info!("hostd stopping on SIGTERM");
    Ok(())
}
