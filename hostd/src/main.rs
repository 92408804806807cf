//! hostd: virtual machines and OS containers. This first slice owns `org.cairn.Host1` and reports
//! what the config declares; the VMM and container runtimes come with their own issues.

use std::collections::HashMap;

use anyhow::Context;
use clap::Parser;
use model::config::HostConfig;
use model::daemon::{DaemonArgs, StopSignals};
use model::dbus::{HOST_NAME, HOST_PATH, StatusTuple};

#[derive(Parser)]
#[command(about = "Cairn's VM and container daemon")]
struct Args {
    #[command(flatten)]
    common: DaemonArgs,
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
    model::daemon::init_logging();
    let Args { common } = Args::parse();
    let mut stop = StopSignals::install().context("cannot handle SIGTERM/SIGINT")?;
    let config = model::config::load(&common.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let _bus = model::dbus::bus_builder()?
        .name(HOST_NAME)
        .serve_at(HOST_PATH, Host1 { config })
        .build()
        .await
        .context("cannot own org.cairn.Host1 on the bus")?;
    tracing::info!(state = %common.state.display(), "hostd ready");
    let signal = stop.wait().await;
    tracing::info!(signal, "hostd stopping");
    Ok(())
}
