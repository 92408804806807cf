//! stord: storage pools and volumes. This first slice owns `org.cairn.Storage1` and reports the
//! pools the config declares; thin volumes, NFS and iSCSI come with their own issue.

use std::collections::HashMap;

use anyhow::Context;
use clap::Parser;
use model::daemon::{DaemonArgs, StopSignals};
use model::dbus::{STORAGE_NAME, STORAGE_PATH, StatusTuple};

#[derive(Parser)]
#[command(about = "Cairn's storage daemon")]
struct Args {
    #[command(flatten)]
    common: DaemonArgs,
}

struct Storage1 {
    pools: u32,
}

#[zbus::interface(name = "org.cairn.Storage1")]
impl Storage1 {
    /// Version and counts of the pools and volumes this daemon manages.
    async fn status(&self) -> StatusTuple {
        (model::VERSION.to_string(), self.counts().await)
    }

    /// The counts of `Status` as a property, as every daemon has it (they do not change yet).
    #[zbus(property)]
    async fn counts(&self) -> HashMap<String, u32> {
        HashMap::from([
            ("pools".to_string(), self.pools),
            ("volumes".to_string(), 0),
        ])
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    model::daemon::init_logging();
    let Args { common } = Args::parse();
    let mut stop = StopSignals::install().context("cannot handle SIGTERM/SIGINT")?;
    let config = model::config::load(&common.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let pools = u32::try_from(config.pools.len()).unwrap_or(u32::MAX);
    let _bus = model::dbus::bus_builder()?
        .name(STORAGE_NAME)
        .serve_at(STORAGE_PATH, Storage1 { pools })
        .build()
        .await
        .context("cannot own org.cairn.Storage1 on the bus")?;
    tracing::info!(state = %common.state.display(), "stord ready");
    let signal = stop.wait().await;
    tracing::info!(signal, "stord stopping");
    Ok(())
}
