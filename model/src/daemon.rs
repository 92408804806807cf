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
        .with_ansi(colours_on_stderr())
        .init();
}

/// Whether log lines on stderr get ANSI colours: only on a terminal a person reads. The
/// appliance's console is a terminal too (a serial port, or the VGA console), but what it shows
/// is kept as the serial log, where escape codes are noise: the kernel starts PID 1 with
/// TERM=linux, and a serial getty's TERM is vt100/vt102 or unset. NO_COLOR turns them off.
pub fn colours_on_stderr() -> bool {
    colours(
        std::io::stderr().is_terminal(),
        std::env::var("TERM").ok().as_deref(),
        std::env::var_os("NO_COLOR").is_some(),
    )
}

fn colours(terminal: bool, term: Option<&str>, no_color: bool) -> bool {
    terminal
        && !no_color
        && !matches!(term, None | Some("" | "dumb" | "linux"))
        && !term.is_some_and(|t| t.starts_with("vt"))
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

#[cfg(test)]
mod tests {
    #[test]
    fn colours_only_for_a_terminal_emulator() {
        use super::colours;
        assert!(colours(true, Some("xterm-256color"), false));
        assert!(!colours(true, Some("xterm-256color"), true), "NO_COLOR");
        assert!(!colours(false, Some("xterm"), false), "not a terminal");
        assert!(
            !colours(true, Some("linux"), false),
            "the appliance's console (PID 1)"
        );
        assert!(!colours(true, Some("vt102"), false), "a serial getty");
        assert!(!colours(true, None, false));
        assert!(!colours(true, Some("dumb"), false));
    }
}
