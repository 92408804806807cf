//! `cairn.install=<disk>` on the kernel command line: a PXE-booted host installs itself onto
//! the disk with the config it runs (a `cairn.config=` URL's once fetched and applied, else the
//! medium's; none: the installed host boots into maintenance mode) and reboots into it. The
//! disk must be blank: a host that PXE-boots again after the install finds its disk holding
//! Cairn, says so and keeps running live, instead of installing in a loop.

use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;

use super::{End, Request, SharedBoot};
use crate::install::{Installer, Payload};

/// The parameter, `cairn.install=vda`.
const PARAM: &str = "cairn.install=";

pub fn from_cmdline(cmdline: &str) -> Option<String> {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix(PARAM))
        .filter(|d| !d.is_empty())
        .map(str::to_string)
}

pub(super) async fn install(
    disk: String,
    installer: Installer,
    config: std::path::PathBuf,
    saved: std::path::PathBuf,
    waits_for_url: bool,
    boot: SharedBoot,
    requests: UnboundedSender<Request>,
) {
    let running = || boot.lock().map(|b| b.mode == "running").unwrap_or(false);
    if waits_for_url {
        // The fetched config is applied (and saved) first: that is the one to install.
        while !running() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    let path = if waits_for_url { saved } else { config };
    let text = match running() {
        true => match std::fs::read_to_string(&path) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!(
                    "cairn: cairn.install={disk}: cannot read the config {}: {e}",
                    path.display()
                );
                return;
            }
        },
        false => None,
    };
    println!("cairn: cairn.install={disk}: installing");
    let starting = installer.clone();
    let started = tokio::task::spawn_blocking(move || {
        starting
            .start(&disk, text, false, Payload::running)
            .map(|()| disk)
    })
    .await;
    let disk = match started {
        Ok(Ok(disk)) => disk,
        Ok(Err(e)) => {
            eprintln!("cairn: cairn.install: not installed: {e}; running live");
            return;
        }
        Err(e) => {
            eprintln!("cairn: cairn.install: {e}");
            return;
        }
    };
    loop {
        let report = installer.report();
        match report.state.as_str() {
            "running" => tokio::time::sleep(Duration::from_secs(1)).await,
            "done" => {
                println!("cairn: installed onto {disk}; rebooting into it");
                let _ = requests.send(Request::Shutdown(End::Reboot));
                return;
            }
            _ => {
                eprintln!(
                    "cairn: the install onto {disk} failed: {}; running live",
                    report.error
                );
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_disk_comes_from_the_command_line() {
        assert_eq!(
            from_cmdline("quiet cairn.install=vda x").as_deref(),
            Some("vda")
        );
        assert_eq!(from_cmdline("quiet cairn.install= x"), None);
        assert_eq!(from_cmdline("quiet"), None);
    }
}
