//! The supervisor's events for `event.list` — a service started, ready, stopped, crashed,
//! failed; a config applied — signalled as Init1's `Event(what, kind, name, detail)`
//! (`model::dbus::EVENT_SIGNAL`). One task sends them all, in the order they happened.

use std::sync::OnceLock;

use tokio::sync::mpsc;

type Event = (&'static str, &'static str, String, String);

static QUEUE: OnceLock<mpsc::UnboundedSender<Event>> = OnceLock::new();

/// Starts the task that signals the events on `conn` (init's own connection).
pub fn start(conn: zbus::Connection) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
    if QUEUE.set(tx).is_err() {
        return;
    }
    tokio::spawn(async move {
        while let Some((what, kind, name, detail)) = rx.recv().await {
            let sent = conn
                .emit_signal(
                    None::<()>,
                    model::dbus::INIT_PATH,
                    model::dbus::INIT_NAME,
                    model::dbus::EVENT_SIGNAL,
                    &(what, kind, name.as_str(), detail.as_str()),
                )
                .await;
            if let Err(e) = sent {
                tracing::debug!(error = %e, "cannot signal an event");
            }
        }
    });
}

/// Queues one event; nothing happens before `start`.
pub fn emit(what: &'static str, kind: &'static str, name: &str, detail: impl Into<String>) {
    if let Some(tx) = QUEUE.get() {
        let _ = tx.send((what, kind, name.to_string(), detail.into()));
    }
}
