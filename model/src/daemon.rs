//! Start-up and stop steps every Cairn daemon shares, so that they log and stop alike.

use std::io::IsTerminal;
use std::path::PathBuf;

use tokio::signal::unix::{Signal, SignalKind, signal};

/// The arguments init starts every daemon with (`NAME --config FILE --state DIR`); a daemon
/// flattens these into its own.
#[derive(clap::Args, Debug, Clone)]
pub struct DaemonArgs {
    /// The host.toml that init validated before starting us.
    #[arg(long)]
    pub config: PathBuf,
    /// This daemon's state directory (kept across restarts).
    #[arg(long)]
    pub state: PathBuf,
}

/// Logs to stderr (init passes it to the console or a log file); colour only for a person at a
/// terminal, so console logs and test logs stay plain text.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// SIGTERM (init's stop) and SIGINT (a developer's Ctrl-C). Installed early, so that a stop
/// during start-up is handled in order instead of killing the daemon mid-change.
pub struct StopSignals {
    term: Signal,
    int: Signal,
}

impl StopSignals {
    pub fn install() -> std::io::Result<StopSignals> {
        Ok(StopSignals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for either signal and names the one that came.
    pub async fn wait(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}
