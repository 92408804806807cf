//! `apid --config FILE --state DIR`: loads host.toml, binds the HTTPS listener, then takes its
//! bus name, which is what tells init the API is ready.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use apid::bus::Bus;
use apid::http::{Limits, Server, Service};
use apid::methods::Api;
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser)]
#[command(name = "apid", about = "Cairn's XML-RPC over HTTPS API daemon")]
struct Args {
    /// host.toml
    #[arg(long)]
    config: PathBuf,
    /// The state directory; the generated certificate lives in its tls/ subdirectory.
    #[arg(long)]
    state: PathBuf,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let config = match model::config::load(&args.config) {
        Ok(c) => c,
        Err(errors) => {
            for d in &errors.0 {
                eprintln!("{d}");
            }
            bail!("{} is not valid; nothing started", args.config.display());
        }
    };
    let tokens = apid::token_digests(&config);
    if tokens.is_empty() {
        tracing::warn!("host.toml lists no API tokens: every request will be refused");
    }
    let tls = apid::tls::server_config(&config, &args.state).context("cannot set up TLS")?;
    let addr = SocketAddr::new(config.api.listen, config.api.port);
    let server = Server::bind(addr, tls)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!(%addr, "listening");

    // Only now take the bus name: init reads "apid owns its name" as "the API answers".
    let conn = model::dbus::bus_builder()
        .context("cannot find the bus")?
        .name(model::dbus::API_NAME)
        .build()
        .await
        .with_context(|| format!("cannot connect to the bus as {}", model::dbus::API_NAME))?;
    tracing::info!(name = model::dbus::API_NAME, "ready");

    let api = Api::new(config.host.hostname.clone(), Bus::new(Some(conn)));
    let service = Service::new(api, tokens, Limits::default());
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    server
        .serve(service, async move {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
        })
        .await;
    tracing::info!("stopping");
    Ok(())
}
