//! `apid --config FILE --state DIR`: loads host.toml, binds the HTTPS listener, then takes its
//! bus name, which is what tells init the API is ready.

use std::net::SocketAddr;

use anyhow::{Context as _, bail};
use apid::bus::Bus;
use apid::http::{Limits, Server, Service};
use apid::methods::Api;
use apid::upload::Uploads;
use clap::Parser;
use model::daemon::{DaemonArgs, StopSignals};

/// An upload that sends nothing for this long is dropped.
const UPLOAD_STALL: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Parser)]
#[command(name = "apid", about = "Cairn's XML-RPC over HTTPS API daemon")]
struct Args {
    /// --config and --state (apid keeps its generated certificate in STATE/tls/).
    #[command(flatten)]
    common: DaemonArgs,
}

fn main() -> anyhow::Result<()> {
    apid::sys::tune_allocator();
    model::daemon::init_logging();
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let config = match model::config::load(&args.common.config) {
        Ok(c) => c,
        Err(errors) => {
            for d in &errors.0 {
                eprintln!("{d}");
            }
            bail!(
                "{} is not valid; nothing started",
                args.common.config.display()
            );
        }
    };
    let tokens = apid::token_digests(&config);
    if tokens.is_empty() {
        tracing::warn!("host.toml lists no API tokens: every request will be refused");
    }
    let tls = apid::tls::server_config(&config, &args.common.state).context("cannot set up TLS")?;
    let addr = SocketAddr::new(config.api.listen, config.api.port);
    let server = Server::bind(addr, tls)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!(%addr, "listening");
    // On the console for whoever stands at it: where the API is and the certificate to pin.
    println!("{}", apid::tls::banner(&config, &args.common.state));

    // Only now take the bus name: init reads "apid owns its name" as "the API answers".
    let conn = model::dbus::bus_builder()
        .context("cannot find the bus")?
        .name(model::dbus::API_NAME)
        .build()
        .await
        .with_context(|| format!("cannot connect to the bus as {}", model::dbus::API_NAME))?;
    // apid serves no interface, and zbus starts a connection's object server (which answers
    // org.freedesktop.DBus.Peer.Ping) only on demand: without it init's liveness Ping would go
    // unanswered and init would restart a healthy apid every second.
    let _ = conn.object_server();
    tracing::info!(name = model::dbus::API_NAME, "ready");

    // A second connection for following the daemons' pushed state (crate::state): a daemon
    // that hangs on one of its questions must not hold up the one that serves requests.
    let watcher = model::dbus::connect_bus()
        .await
        .context("cannot open the bus connection that follows the daemons' state")?;
    let api = Api::new(config.host.hostname.clone(), Bus::new(Some(conn)))
        .follow_state(Bus::new(Some(watcher)))
        .with_uploads(
            Uploads::new(&args.common.state.join("uploads"), UPLOAD_STALL)
                .context("cannot set up the uploads directory")?,
        );
    let service = Service::new(api, tokens, Limits::default());
    let mut stop = StopSignals::install().context("cannot watch SIGTERM/SIGINT")?;
    server
        .serve(service, async move {
            stop.wait().await;
        })
        .await;
    tracing::info!("stopping");
    Ok(())
}
