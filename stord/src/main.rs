//! `stord --config FILE --state DIR`: serves `org.cairn.Storage1` over the pools host.toml
//! declares and those made through the API.

use anyhow::Context;
use clap::Parser;
use model::daemon::{DaemonArgs, StopSignals};
use model::dbus::{STORAGE_NAME, STORAGE_PATH};
use std::sync::{Arc, Mutex};

use stord::dbus::Storage1;
use stord::export::Exports;
use stord::export::configfs::Configfs;
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
    let host = config.host.hostname.clone();
    stord::pool::kernel::load_modules_for(&config, &state).await;
    let pools = tokio::task::spawn_blocking(move || Pools::load(&config, &state)).await?;
    let exports = Exports::load(&common.state, &host, Configfs::kernel());
    let needs_kernel = exports.needs_kernel();
    let (pools, exports) = (Arc::new(Mutex::new(pools)), Arc::new(Mutex::new(exports)));
    let bus = model::dbus::bus_builder()?
        .name(STORAGE_NAME)
        .serve_at(STORAGE_PATH, Storage1::new(pools.clone(), exports.clone()))
        .build()
        .await
        .context("cannot own org.cairn.Storage1 on the bus")?;
    tokio::spawn(stord::watch::run(bus.clone(), pools.clone()));
    reconcile_exports(&bus, pools, exports, needs_kernel).await;
    tracing::info!(state = %common.state.display(), "stord ready");
    let signal = stop.wait().await;
    tracing::info!(signal, "stord stopping");
    Ok(())
}

/// Makes the kernel's iSCSI target agree with the recorded exports (after a reboot: all made
/// again). Init's modules are asked for only when an export is recorded, or when the target
/// is there anyway (leftovers of a crash to clear).
async fn reconcile_exports(
    bus: &zbus::Connection,
    pools: Arc<Mutex<Pools>>,
    exports: Arc<Mutex<Exports>>,
    needs_kernel: bool,
) {
    let root = exports
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .configfs_root();
    if !needs_kernel && !root.is_dir() {
        return;
    }
    if let Err(e) = stord::export::prepare_kernel(bus, &root).await {
        tracing::error!(error = %e, "recorded exports not served");
        return;
    }
    let done = tokio::task::spawn_blocking(move || {
        let mut exports = exports.lock().unwrap_or_else(|e| e.into_inner());
        let mut pools = pools.lock().unwrap_or_else(|e| e.into_inner());
        exports.reconcile(&mut pools);
    })
    .await;
    if let Err(e) = done {
        tracing::error!(error = %e, "reconciling the exports failed");
    }
}
