//! `netd --config FILE --state DIR`: started by init, which has already validated the config and
//! waits for `org.cairn.Network1` on the bus as the sign that netd is ready.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use model::daemon::{DaemonArgs, StopSignals};
use model::dbus::{NETWORK_NAME, NETWORK_PATH};

/// Overrides where resolv.conf goes (tests; the image uses the default).
const RUN_DIR_ENV: &str = "CAIRN_RUN_DIR";
const DEFAULT_RUN_DIR: &str = "/run/cairn";

#[derive(Parser)]
#[command(about = "Cairn's network daemon")]
struct Args {
    #[command(flatten)]
    common: DaemonArgs,
    /// Where resolv.conf is written [default: $CAIRN_RUN_DIR or /run/cairn].
    #[arg(long)]
    run_dir: Option<PathBuf>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    model::daemon::init_logging();
    let args = Args::parse();
    let run_dir = args
        .run_dir
        .or_else(|| std::env::var_os(RUN_DIR_ENV).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_RUN_DIR));
    let mut stop = StopSignals::install().context("cannot handle SIGTERM/SIGINT")?;

    let config = model::config::load(&args.common.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let handle = netd::link::connect().context("cannot talk to the kernel over rtnetlink")?;
    // The management interface (and its DHCP client, which runs beside the reconciler) has a
    // netlink socket of its own: the kernel refuses a dump on a socket that has one in
    // progress (EBUSY), which failed the DHCP client's first address dump at every boot and
    // delayed the lease by a restart.
    let mgmt_handle = netd::link::connect().context("cannot talk to the kernel over rtnetlink")?;
    // A static address is in place before we own the name; DHCP continues in the background.
    let (mgmt, _dhcp) = netd::mgmt::start(&mgmt_handle, &config.host, run_dir).await;
    // Networks are in place before we own the name; a failure is logged and shows in
    // Status (networks_failed), but netd still comes up so the API can report it.
    let kernel = netd::net::kernel::Kernel::new(handle.clone(), Default::default());
    let mut nets =
        netd::net::Reconciler::new(kernel, Some(args.common.state.clone()), &config.networks);
    let report = nets.reconcile().await;
    tracing::info!(
        networks = nets.network_count(),
        ports = nets.port_count(),
        changes = report.changes,
        removed = report.removed.len(),
        failed = report.failed.len(),
        "networks reconciled"
    );
    let nets = std::sync::Arc::new(tokio::sync::Mutex::new(nets));
    let mut mgmt_changes = mgmt.clone();
    let bus = model::dbus::bus_builder()?
        .name(NETWORK_NAME)
        .serve_at(NETWORK_PATH, netd::dbus::Network1::new(mgmt, nets))
        .build()
        .await
        .context("cannot own org.cairn.Network1 on the bus")?;
    // A DHCP lease changes the management address outside any request: signal it.
    let server = bus.object_server().clone();
    tokio::spawn(async move {
        while mgmt_changes.changed().await.is_ok() {
            netd::dbus::management_changed(&server).await;
        }
    });
    tracing::info!(state = %args.common.state.display(), "netd ready");

    let signal = stop.wait().await;
    tracing::info!(signal, "netd stopping");
    // Deliberately no DHCPRELEASE and no address removal: the appliance keeps its address
    // across a netd restart, and the next netd asks for the same one.
    Ok(())
}
