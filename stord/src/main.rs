//! `stord --config FILE --state DIR`: serves `org.cairn.Storage1` over the pools host.toml
//! declares and those made through the API.

use anyhow::Context;
use clap::Parser;
use model::daemon::{DaemonArgs, StopSignals};
use model::dbus::{STORAGE_NAME, STORAGE_PATH};
use stord::dbus::Storage1;
use stord::pool::Pools;

#[derive(Parser)]
#[command(about = "Cairn's storage daemon")]
struct Args {
    #[command(flatten)]
    common: DaemonArgs,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    model::daemon::init_logging();
    let Args { common } = Args::parse();
    let mut stop = StopSignals::install().context("cannot handle SIGTERM/SIGINT")?;
    let config = model::config::load(&common.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    std::fs::create_dir_all(&common.state)
        .with_context(|| format!("cannot make {}", common.state.display()))?;
    let state = common.state.clone();
    let pools = tokio::task::spawn_blocking(move || Pools::load(&config, &state)).await?;
    let _bus = model::dbus::bus_builder()?
        .name(STORAGE_NAME)
        .serve_at(STORAGE_PATH, Storage1::new(pools))
        .build()
        .await
        .context("cannot own org.cairn.Storage1 on the bus")?;
    tracing::info!(state = %common.state.display(), "stord ready");
    let signal = stop.wait().await;
    tracing::info!(signal, "stord stopping");
    Ok(())
}
