//! The one progress bar of cairnctl's long work — uploads, pulls, installs and updates, tasks
//! (backups, snapshots, downloads) — drawn on stderr when it is a terminal, so that stdout
//! stays what a script reads.

use std::io::{IsTerminal as _, Write as _};
use std::time::Instant;

use crate::size;

/// One line of progress: `[#####.....]  50% step`.
pub fn bar(done: u64, total: u64, step: &str) -> String {
    const WIDTH: u64 = 30;
    let pct = percent(done, total);
    let filled = (pct * WIDTH / 100) as usize;
    format!(
        "[{}{}] {pct:>3}% {step}",
        "#".repeat(filled),
        ".".repeat(WIDTH as usize - filled)
    )
}

fn percent(done: u64, total: u64) -> u64 {
    let pct = (u128::from(done) * 100)
        .checked_div(u128::from(total))
        .unwrap_or(0)
        .min(100);
    pct as u64
}

/// A bar redrawn in place as work goes on: at most once per percent (or new label), with
/// the bytes done and the rate when it counts bytes.
pub struct Progress {
    tty: bool,
    bytes: bool,
    started: Instant,
    /// What was drawn last: percent and label.
    shown: Option<(u64, String)>,
}

impl Progress {
    /// A bar of units that are not bytes (or whose count means nothing to the user).
    pub fn new() -> Progress {
        Progress {
            tty: std::io::stderr().is_terminal(),
            bytes: false,
            started: Instant::now(),
            shown: None,
        }
    }

    /// A bar of bytes: `12.0M/24.0M 3.1M/s` after it.
    pub fn of_bytes() -> Progress {
        let mut p = Progress::new();
        p.bytes = true;
        p
    }

    /// Whether anything is drawn at all (stderr is a terminal).
    pub fn visible(&self) -> bool {
        self.tty
    }

    /// The line for `done` of `total` under `label`, as [`Progress::update`] draws it.
    pub fn line(&self, done: u64, total: u64, label: &str) -> String {
        let mut line = bar(done, total, label);
        if self.bytes && total > 0 {
            let secs = self.started.elapsed().as_secs_f64();
            line.push_str(&format!(" {}/{}", size::human(done), size::human(total)));
            if secs >= 1.0 {
                line.push_str(&format!(" {}/s", size::human((done as f64 / secs) as u64)));
            }
        }
        line
    }

    pub fn update(&mut self, done: u64, total: u64, label: &str) {
        if !self.tty {
            return;
        }
        let pct = percent(done, total);
        if self
            .shown
            .as_ref()
            .is_some_and(|(p, l)| *p == pct && l == label)
        {
            return;
        }
        self.shown = Some((pct, label.to_string()));
        let mut err = std::io::stderr();
        let _ = write!(err, "\r\x1b[K{}", self.line(done, total, label));
        let _ = err.flush();
    }

    /// Ends the line drawn, if any, so what follows starts on a line of its own.
    pub fn finish(&mut self) {
        if self.tty && self.shown.take().is_some() {
            eprintln!();
        }
    }
}

impl Default for Progress {
    fn default() -> Progress {
        Progress::new()
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_fills_with_the_work() {
        assert_eq!(
            bar(0, 0, "wiping"),
            format!("[{}]   0% wiping", ".".repeat(30))
        );
        assert_eq!(
            bar(50, 100, "slot A"),
            format!("[{}{}]  50% slot A", "#".repeat(15), ".".repeat(15))
        );
        assert_eq!(bar(200, 100, "x"), format!("[{}] 100% x", "#".repeat(30)));
        assert_eq!(
            bar(u64::MAX, u64::MAX, "x"),
            format!("[{}] 100% x", "#".repeat(30))
        );
    }

    #[test]
    fn byte_bars_say_how_much() {
        let p = Progress::of_bytes();
        assert_eq!(
            p.line(3 << 20, 12 << 20, "uploading"),
            format!(
                "[{}{}]  25% uploading 3.0M/12.0M",
                "#".repeat(7),
                ".".repeat(23)
            )
        );
        assert!(!Progress::new().line(3, 12, "task").contains('/'));
    }
}
