//! Liveness of a running daemon, checked rather than assumed: a daemon whose process lives on
//! but whose bus connection died (a D-Bus protocol error, a dropped socket) or whose runtime is
//! stuck is as unreachable as a crashed one, yet `waitpid` never says so. From the moment it is
//! ready, each start of a daemon has one watcher that
//!
//! - follows `NameOwnerChanged` for the daemon's bus name: any change means the process that
//!   was ready no longer owns it (the bus tells at once);
//! - sends `org.freedesktop.DBus.Peer.Ping` to that name every `PING_INTERVAL` (zbus answers it
//!   on every connection, whatever objects it serves); a daemon that answered no Ping for
//!   `SILENCE` is stuck.
//!
//! The watcher reports once and ends; the supervisor then restarts the daemon. A daemon that
//! lost its name is restarted at once (the issue allows 2 s for that). A stuck one is given
//! `SILENCE`, five seconds of no answer, not one slow answer: on a loaded 2-core machine a
//! healthy daemon's runtime can miss a second of Pings (a blocking cgroup cleanup did), and
//! restarting it then would turn load into outages.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::mpsc;
use zbus::fdo::{DBusProxy, PeerProxy};
use zbus::names::BusName;

/// How often a running daemon is pinged.
pub const PING_INTERVAL: Duration = Duration::from_secs(1);
/// A daemon that answered no Ping for this long is stuck (5 pings in a row unanswered).
pub const SILENCE: Duration = Duration::from_secs(5);

/// One watcher's verdict: the daemon of this start is unreachable, and why.
pub struct Lost {
    pub index: usize,
    pub generation: u64,
    pub cause: String,
}

/// Watches `bus_name` until the daemon that owns it now is unreachable, then reports. Without a
/// verdict (init's own bus connection is gone) it reports nothing: init cannot tell, and must
/// not kill a daemon for its own trouble.
pub async fn watch(
    conn: zbus::Connection,
    bus_name: &'static str,
    index: usize,
    generation: u64,
    tx: mpsc::UnboundedSender<Lost>,
) {
    match unreachable(&conn, bus_name).await {
        Ok(cause) => {
            let _ = tx.send(Lost {
                index,
                generation,
                cause,
            });
        }
        Err(e) => tracing::warn!(name = bus_name, error = %e, "cannot watch a daemon's liveness"),
    }
}

/// Returns (why) once the name's owner is gone or silent; Err when init cannot watch at all.
async fn unreachable(conn: &zbus::Connection, bus_name: &'static str) -> zbus::Result<String> {
    let name = BusName::try_from(bus_name)?;
    let dbus = DBusProxy::new(conn).await?;
    // Subscribed before the owner is read, so no change between the two goes unseen.
    let mut changes = dbus
        .receive_name_owner_changed_with_args(&[(0, bus_name)])
        .await?;
    let owner = match dbus.get_name_owner(name.clone()).await {
        Ok(owner) => owner,
        Err(zbus::fdo::Error::NameHasNoOwner(_)) => {
            return Ok(format!("lost its bus name {bus_name}"));
        }
        Err(e) => return Err(e.into()),
    };
    let peer = PeerProxy::builder(conn)
        .destination(name)
        .path("/")
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await?;

    let mut last_answer = Instant::now();
    let mut next = last_answer + PING_INTERVAL;
    let mut why = String::new();
    loop {
        tokio::select! {
            Some(change) = changes.next() => {
                // Filtered on the name: any change means the owner that was ready is gone.
                let new_owner = change
                    .args()
                    .ok()
                    .and_then(|a| a.new_owner().as_ref().map(|o| o.to_string()));
                if new_owner.as_deref() == Some(owner.as_str()) {
                    continue;
                }
                return Ok(match new_owner {
                    Some(other) => format!("lost its bus name {bus_name} to {other}"),
                    None => format!("lost its bus name {bus_name}"),
                });
            }
            answer = ping_at(&peer, next, last_answer + SILENCE) => {
                let now = Instant::now();
                match answer {
                    Ok(()) => last_answer = now,
                    Err(e) => why = e,
                }
                if now >= last_answer + SILENCE {
                    return Ok(format!(
                        "answered no Ping on {bus_name} for {} ms ({why})",
                        now.duration_since(last_answer).as_millis()
                    ));
                }
                next = now + PING_INTERVAL;
            }
        }
    }
}

/// One Ping sent at `at`, given up at `deadline`; Err says how it failed.
async fn ping_at(peer: &PeerProxy<'_>, at: Instant, deadline: Instant) -> Result<(), String> {
    tokio::time::sleep_until(at.into()).await;
    match tokio::time::timeout_at(deadline.into(), peer.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer".into()),
    }
}
