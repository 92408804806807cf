//! `netd --config FILE --state DIR`: started by init, which has already validated the config and
//! waits for `org.cairn.Network1` on the bus as the sign that netd is ready.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use model::dbus::{NETWORK_NAME, NETWORK_PATH};
use tokio::signal::unix::{SignalKind, signal};

/// Overrides where resolv.conf goes (tests; the image uses the default).
const RUN_DIR_ENV: &str = "CAIRN_RUN_DIR";
const DEFAULT_RUN_DIR: &str = "/run/cairn";

#[derive(Parser)]
#[command(about = "Cairn's network daemon")]
struct Args {
    /// The host.toml init validated and started us with.
    #[arg(long)]
    config: PathBuf,
    /// The state directory (persistent across restarts).
    #[arg(long)]
    state: PathBuf,
    /// Where resolv.conf is written [default: $CAIRN_RUN_DIR or /run/cairn].
    #[arg(long)]
    run_dir: Option<PathBuf>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    // Colour only for a person at a terminal; init's console log and test logs get plain text.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let args = Args::parse();
    let run_dir = args
        .run_dir
        .or_else(|| std::env::var_os(RUN_DIR_ENV).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_RUN_DIR));
    // Install the handlers first so a SIGTERM during startup is not fatal-by-default mid-change.
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;

    let config = model::config::load(&args.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let handle = netd::link::connect().context("cannot talk to the kernel over rtnetlink")?;
    // A static address is in place before we own the name; DHCP continues in the background.
    let (mgmt, _dhcp) = netd::mgmt::start(&handle, &config.host, run_dir).await;
    let _bus = model::dbus::bus_builder()?
        .name(NETWORK_NAME)
        .serve_at(
            NETWORK_PATH,
            netd::dbus::Network1::new(config.networks.len(), mgmt),
        )
        .build()
        .await
        .context("cannot own org.cairn.Network1 on the bus")?;
    tracing::info!(state = %args.state.display(), "netd ready");

    tokio::select! {
        _ = term.recv() => tracing::info!("netd stopping on SIGTERM"),
        _ = int.recv() => tracing::info!("netd stopping on SIGINT"),
    }
    // Deliberately no DHCPRELEASE and no address removal: the appliance keeps its address
    // across a netd restart, and the next netd asks for the same one.
    Ok(())
}
