//! `org.cairn.Init1`: the supervisor's D-Bus frontend. It reads the supervisor's snapshot and
//! sends requests into the control loop; it never touches processes itself.

use std::time::Instant;

use model::dbus::ServiceTuple;
use tokio::sync::{mpsc, oneshot};
use zbus::fdo;

use crate::supervisor::{End, Request, Snapshot};

pub struct Init1 {
    snapshot: Snapshot,
    requests: mpsc::UnboundedSender<Request>,
    started: Instant,
}

impl Init1 {
    pub fn new(
        snapshot: Snapshot,
        requests: mpsc::UnboundedSender<Request>,
        started: Instant,
    ) -> Self {
        Init1 {
            snapshot,
            requests,
            started,
        }
    }

    fn send(&self, req: Request) -> fdo::Result<()> {
        self.requests
            .send(req)
            .map_err(|_| fdo::Error::Failed("init is shutting down".into()))
    }
}

#[zbus::interface(name = "org.cairn.Init1")]
impl Init1 {
    /// `ListServices` as a property. Its change signal carries no value (the table may change
    /// again before a value would arrive), only that it is stale.
    #[zbus(property(emits_changed_signal = "invalidates"))]
    async fn services(&self) -> fdo::Result<Vec<ServiceTuple>> {
        self.list_services().await
    }

    /// (name, state, pid, restarts, since) of every supervised service, in start order.
    async fn list_services(&self) -> fdo::Result<Vec<ServiceTuple>> {
        let snapshot = self
            .snapshot
            .lock()
            .map_err(|_| fdo::Error::Failed("service table unavailable".into()))?;
        Ok(snapshot.iter().cloned().map(Into::into).collect())
    }

    async fn restart_service(&self, name: String) -> fdo::Result<()> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Restart { name, reply })?;
        match answer.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(msg)) => Err(fdo::Error::InvalidArgs(msg)),
            Err(_) => Err(fdo::Error::Failed("init is shutting down".into())),
        }
    }

    /// Returns at once; the orderly shutdown runs in the control loop.
    async fn reboot(&self) -> fdo::Result<()> {
        self.send(Request::Shutdown(End::Reboot))
    }

    async fn poweroff(&self) -> fdo::Result<()> {
        self.send(Request::Shutdown(End::Poweroff))
    }

    /// Seconds since init started, and the kernel release.
    async fn system_info(&self) -> (u64, String) {
        let release = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        (self.started.elapsed().as_secs(), release)
    }
}

/// Signals that Init1's `Services` changed.
pub async fn services_changed(conn: &zbus::Connection) {
    let Ok(iface) = conn
        .object_server()
        .interface::<_, Init1>(model::dbus::INIT_PATH)
        .await
    else {
        return;
    };
    if let Err(e) = iface
        .get()
        .await
        .services_invalidate(iface.signal_emitter())
        .await
    {
        tracing::debug!(error = %e, "cannot signal the service table");
    }
}
