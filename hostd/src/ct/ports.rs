//! Letting a stopped container's netd port go without the stop waiting on netd. The port's
//! veth dies with the container's network namespace anyway; what remains is netd's record of
//! it, which one DetachPort round trip removes. So teardown hands the port over here: its name
//! moves from the run dir to RUN/ct-detach/NAME (on the same tmpfs, so it survives a hostd
//! restart), a background task detaches it, retrying, and removes the marker; what the task
//! could not finish, `retry` (hostd's housekeeping tick) tries again, so no port is left stale.
//! A new run of the same container waits for its predecessor's port first: netd names ports
//! after network and owner, so the new port has the same name.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::{HostError, HostResult};

/// Tries of the background task before it leaves the port to `retry`.
const TRIES: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// How long a new run waits for its predecessor's detach in flight.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

/// The owner (at netd) of container `name`'s port.
pub fn owner(name: &str) -> String {
    format!("ct:{name}")
}

/// Bytes (received, sent) by the container on its network links (loopback left out), as
/// its own network namespace counts them: /proc/PID/net/dev of a process inside it. None
/// when the process is gone.
pub fn traffic(guest_pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{guest_pid}/net/dev")).ok()?;
    Some(sum_net_dev(&text))
}

/// `/proc/net/dev`: two header lines, then `name: rx_bytes packets errs drop fifo frame
/// compressed multicast tx_bytes …` per link.
fn sum_net_dev(text: &str) -> (u64, u64) {
    let (mut rx, mut tx) = (0u64, 0u64);
    for line in text.lines().skip(2) {
        let Some((name, counters)) = line.split_once(':') else {
            continue;
        };
        if name.trim() == "lo" {
            continue;
        }
        let fields: Vec<u64> = counters
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        if let (Some(r), Some(t)) = (fields.first(), fields.get(8)) {
            rx = rx.saturating_add(*r);
            tx = tx.saturating_add(*t);
        }
    }
    (rx, tx)
}

pub struct PortReleaser {
    dir: PathBuf,
    bus: Option<zbus::Connection>,
    /// Containers whose port a background task is detaching now.
    in_flight: Arc<Mutex<BTreeSet<String>>>,
}

impl PortReleaser {
    /// `run`: hostd's RUN (the queue is RUN/ct-detach).
    pub fn new(run: &Path) -> PortReleaser {
        PortReleaser {
            dir: run.join("ct-detach"),
            bus: None,
            in_flight: Arc::default(),
        }
    }

    pub fn set_bus(&mut self, bus: zbus::Connection) {
        self.bus = Some(bus);
    }

    /// Takes over container `name`'s port file (RUN/ct/NAME/port) and detaches the port in the
    /// background. Without a runtime (or a bus) it stays queued for `retry`.
    pub fn release(&self, name: &str, port_file: &Path) {
        let Ok(port) = std::fs::read_to_string(port_file) else {
            return;
        };
        let marker = self.dir.join(name);
        let queued =
            std::fs::create_dir_all(&self.dir).and_then(|()| std::fs::rename(port_file, &marker));
        if let Err(e) = queued {
            tracing::warn!(ct = name, error = %e, "cannot queue the port for detaching");
        }
        self.spawn(name, port.trim().to_string());
    }

    /// Before container `name` attaches a new port: its last run's port must be gone — the
    /// one queued here, and any a crash kept hostd from recording (netd detaches by owner).
    pub async fn settle(&self, name: &str) -> HostResult<()> {
        let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
        while self.busy(name) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        crate::netd::detach_owner(self.bus.as_ref(), &owner(name))
            .await
            .map_err(|e| {
                HostError::Failed(format!("the port of the last run cannot be detached: {e}"))
            })?;
        let _ = std::fs::remove_file(self.dir.join(name));
        Ok(())
    }

    /// Housekeeping: detaches every queued port no task is working on.
    pub fn retry(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let (Some(name), Ok(port)) = (
                e.file_name().to_str().map(str::to_string),
                std::fs::read_to_string(e.path()),
            ) else {
                continue;
            };
            if !self.busy(&name) {
                self.spawn(&name, port.trim().to_string());
            }
        }
    }

    fn busy(&self, name: &str) -> bool {
        self.in_flight.lock().is_ok_and(|s| s.contains(name))
    }

    fn spawn(&self, name: &str, port: String) {
        if tokio::runtime::Handle::try_current().is_err() || self.bus.is_none() {
            return;
        }
        let claimed = self
            .in_flight
            .lock()
            .is_ok_and(|mut s| s.insert(name.to_string()));
        if !claimed {
            return;
        }
        let (bus, in_flight) = (self.bus.clone(), self.in_flight.clone());
        let (name, marker) = (name.to_string(), self.dir.join(name));
        tokio::spawn(async move {
            let mut backoff = FIRST_BACKOFF;
            for attempt in 1..=TRIES {
                // A new run's `settle` may have detached it meanwhile.
                if !std::fs::read_to_string(&marker).is_ok_and(|p| p.trim() == port) {
                    break;
                }
                match crate::netd::try_detach_port(bus.as_ref(), &port).await {
                    Ok(()) => {
                        let _ = std::fs::remove_file(&marker);
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(ct = %name, %port, attempt, error = %e,
                            "cannot detach the port; trying again");
                        tokio::time::sleep(backoff).await;
                        backoff *= 4;
                    }
                }
            }
            if let Ok(mut s) = in_flight.lock() {
                s.remove(&name);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::sum_net_dev;

    #[test]
    fn net_dev_sums_links_but_loopback() {
        let text = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0
  eth0:     196       2    0    0    0     0          0         0      98       1    0    0    0     0       0          0
  eth1:       4       1    0    0    0     0          0         0       2       1    0    0    0     0       0          0
";
        assert_eq!(sum_net_dev(text), (200, 100));
    }
}
