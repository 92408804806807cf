//! hostd: virtual machines and OS containers. Serves org.cairn.Host1; the same binary runs as
//! a container's monitor (`hostd --monitor LAUNCH`), as a VM's monitor and VMM (`hostd --vmm
//! LAUNCH`, the `vmm` crate's [`vmm::run`]) and as the exec helper (`hostd --ct-exec …`), so
//! there is one file to install and one version of the runtime.

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use hostd::ct::manager::Manager;
use hostd::dbus::{Container1, Host1};
use hostd::vm::manager::VmManager;
use model::daemon::{DaemonArgs, StopSignals};
use model::dbus::{HOST_NAME, HOST_PATH};

#[derive(Parser)]
#[command(about = "Cairn's VM and container daemon")]
struct Args {
    #[command(flatten)]
    common: DaemonArgs,
}

fn main() -> anyhow::Result<()> {
    // The monitor and the exec helper must stay single-threaded (fork, setns into a user
    // namespace): they branch off before any runtime or logging thread exists.
    let argv: Vec<String> = std::env::args().collect();
    match argv.get(1).map(String::as_str) {
        Some("--monitor") => {
            let Some(launch) = argv.get(2) else {
                anyhow::bail!("usage: hostd --monitor LAUNCH.json");
            };
            std::process::exit(hostd::ct::monitor::main(std::path::Path::new(launch)));
        }
        Some("--vmm") => {
            let Some(launch) = argv.get(2) else {
                anyhow::bail!("usage: hostd --vmm LAUNCH.json");
            };
            std::process::exit(vmm::run(std::path::Path::new(launch)));
        }
        Some("--ct-exec") => std::process::exit(hostd::ct::exec::helper_main(&argv[2..])),
        _ => {}
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot build the tokio runtime")?
        .block_on(daemon())
}

async fn daemon() -> anyhow::Result<()> {
    model::daemon::init_logging();
    let Args { common } = Args::parse();
    let mut stop = StopSignals::install().context("cannot handle SIGTERM/SIGINT")?;
    // The config was validated by init; hostd reads it to fail early on a broken install, and
    // applies its [[template]] and [[container]] sections once on the bus.
    let config = model::config::load(&common.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    std::fs::create_dir_all(&common.state)
        .with_context(|| format!("cannot create {}", common.state.display()))?;
    let exe = std::env::current_exe().context("cannot find hostd's own binary")?;
    let manager = Arc::new(tokio::sync::Mutex::new(Manager::new(
        &common.state,
        exe.clone(),
    )));
    let vms = Arc::new(tokio::sync::Mutex::new(VmManager::new(&common.state, exe)));
    let declared = hostd::declared::Declared::of(&config);
    manager.lock().await.set_declared(declared.clone());
    vms.lock().await.set_declared(declared);
    // The guests as they are now are no events of this run.
    hostd::events::prime(&manager, &vms).await;
    let mut builder = model::dbus::bus_builder()?.name(HOST_NAME).serve_at(
        HOST_PATH,
        Host1 {
            manager: manager.clone(),
            vms: vms.clone(),
        },
    );
    // The containers found on disk (running or not) have their objects before the name is
    // owned, so a client that sees org.cairn.Host1 finds them all.
    for name in manager.lock().await.names() {
        let obj = Container1 {
            name: name.clone(),
            manager: manager.clone(),
        };
        builder = builder.serve_at(model::dbus::container_path(&name), obj);
    }
    let bus = builder
        .build()
        .await
        .context("cannot own org.cairn.Host1 on the bus")?;
    manager.lock().await.set_bus(bus.clone());
    vms.lock().await.set_bus(bus.clone());
    hostd::events::set_bus(bus.clone());
    // A snapshot a killed hostd never let go of: the guests go on now.
    manager.lock().await.release_quiesced().await;
    vms.lock().await.release_quiesced().await;
    tracing::info!(state = %common.state.display(), "hostd ready");
    let (sweeping, sweeping_vms, sweep_bus) = (manager.clone(), vms.clone(), bus.clone());
    tokio::spawn(async move {
        hostd::reconcile::release_stale_ports(&sweeping, &sweeping_vms, &sweep_bus).await;
        hostd::reconcile::release_stale_volume_holds(&sweeping, &sweeping_vms, &sweep_bus).await;
    });
    let (applying, server) = (manager.clone(), bus.object_server().clone());
    let applying_vms = vms.clone();
    let state = common.state.clone();
    tokio::spawn(async move {
        hostd::reconcile::apply(&applying, &server, &config).await;
        hostd::reconcile::apply_vms(&applying_vms, &applying, &config).await;
        tracing::info!("host.toml's templates, containers and VMs applied");
        hostd::reconcile::autostart_at_boot(&applying, &applying_vms, &state).await;
    });
    let housekeeping = manager.clone();
    let housekeeping_vms = vms.clone();
    let server = bus.object_server().clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(hostd::ct::manager::TICK);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut counts = Default::default();
        loop {
            every.tick().await;
            housekeeping.lock().await.tick().await;
            housekeeping_vms.lock().await.tick().await;
            hostd::events::scan(&housekeeping, &housekeeping_vms).await;
            hostd::dbus::push_counts(&server, &mut counts).await;
        }
    });
    let signal = stop.wait().await;
    // Containers and VMs keep running: their monitors are not ours, and the next hostd
    // re-adopts them.
    tracing::info!(signal, "hostd stopping; containers keep running");
    Ok(())
}
