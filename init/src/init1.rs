//! `org.cairn.Init1`: the supervisor's D-Bus frontend. It reads the supervisor's snapshot and
//! sends requests into the control loop; it never touches processes itself.

use std::time::Instant;

use model::dbus::{CairnError, ServiceTuple};
use tokio::sync::{mpsc, oneshot};
use zbus::fdo;

use crate::install::{InstallError, Installer, Payload};
use crate::supervisor::{End, Request, RequestError, SharedBoot, Snapshot};
use crate::update::{UpdateError, Updater};

pub struct Init1 {
    snapshot: Snapshot,
    requests: mpsc::UnboundedSender<Request>,
    started: Instant,
    boot: SharedBoot,
    /// None in a sandbox.
    installer: Option<Installer>,
    /// None in a sandbox.
    updater: Option<Updater>,
}

impl Init1 {
    pub fn new(
        snapshot: Snapshot,
        requests: mpsc::UnboundedSender<Request>,
        started: Instant,
        boot: SharedBoot,
        installer: Option<Installer>,
        updater: Option<Updater>,
    ) -> Self {
        Init1 {
            snapshot,
            requests,
            started,
            boot,
            installer,
            updater,
        }
    }

    fn updater(&self) -> Result<&Updater, CairnError> {
        self.updater
            .as_ref()
            .ok_or_else(|| CairnError::Conflict("a sandbox has no OS slots to update".into()))
    }

    fn installer(&self) -> Result<&Installer, CairnError> {
        self.installer.as_ref().ok_or_else(|| {
            CairnError::Conflict(
                "a sandbox installs nothing: its disks are the dev machine's".into(),
            )
        })
    }

    /// Reboots or powers off after [`crate::supervisor::ANSWER_GRACE`]: the caller's answer
    /// (apid's, over HTTPS) must leave before apid is stopped, or the client sees its
    /// connection reset and retries against a host going down.
    fn end_soon(&self, end: End) -> fdo::Result<()> {
        if self.requests.is_closed() {
            return Err(fdo::Error::Failed("init is shutting down".into()));
        }
        let requests = self.requests.clone();
        tokio::spawn(async move {
            tokio::time::sleep(crate::supervisor::ANSWER_GRACE).await;
            let _ = requests.send(Request::Shutdown(end));
        });
        Ok(())
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

    /// (name, state, pid, restarts, since, last_error) of every supervised service, in start
    /// order.
    async fn list_services(&self) -> fdo::Result<Vec<ServiceTuple>> {
        let snapshot = self
            .snapshot
            .lock()
            .map_err(|_| fdo::Error::Failed("service table unavailable".into()))?;
        Ok(snapshot.iter().cloned().map(Into::into).collect())
    }

    /// Stops (if running) and starts the service again; also revives a `failed` one.
    async fn restart_service(&self, name: String) -> Result<(), CairnError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::Restart { name, reply })
            .map_err(|_| CairnError::Busy("init is shutting down".into()))?;
        match answer.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e @ RequestError::NoSuchService(_))) => Err(CairnError::NotFound(e.to_string())),
            Ok(Err(e)) => Err(CairnError::Failed(e.to_string())),
            Err(_) => Err(CairnError::Busy("init is shutting down".into())),
        }
    }

    /// Returns at once; the orderly shutdown runs in the control loop.
    async fn reboot(&self) -> fdo::Result<()> {
        self.end_soon(End::Reboot)
    }

    async fn poweroff(&self) -> fdo::Result<()> {
        self.end_soon(End::Poweroff)
    }

    /// This boot's mode (`running` or `maintenance`), its config's source (`state`, `medium`,
    /// `file`, `none`) and why it is in maintenance ("" when running).
    async fn boot_info(&self) -> (String, String, String) {
        match self.boot.lock() {
            Ok(b) => (b.mode.clone(), b.source.clone(), b.problem.clone()),
            Err(_) => Default::default(),
        }
    }

    /// Validates `text` as the whole host.toml and answers what applying it changes; unless
    /// `dry_run`, saves it (STATE/config/host.toml, found first at the next boot) and restarts
    /// the services with it a second later. Errors: InvalidArgs with every `file:line:col`
    /// (nothing changed), Failed when it cannot be saved.
    async fn apply_config(&self, text: String, dry_run: bool) -> Result<Vec<String>, CairnError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::ApplyConfig {
                text,
                dry_run,
                source: "state",
                reply,
            })
            .map_err(|_| CairnError::Busy("init is shutting down".into()))?;
        match answer.await {
            Ok(Ok(changes)) => Ok(changes),
            Ok(Err(e @ RequestError::InvalidConfig(_))) => {
                Err(CairnError::InvalidArgs(e.to_string()))
            }
            Ok(Err(e)) => Err(CairnError::Failed(e.to_string())),
            Err(_) => Err(CairnError::Busy("init is shutting down".into())),
        }
    }

    /// JSON `model::api::event::LogPage`: the lines kept of `service` ("" for all) at
    /// `min_level` ("" for info) or above after `since`, at most `max`; with none yet, waits
    /// up to `wait_s` (at most 25) for one. Unknown service or level: InvalidArgs.
    async fn logs(
        &self,
        service: String,
        min_level: String,
        since: u64,
        max: u32,
        wait_s: u32,
    ) -> Result<String, CairnError> {
        use crate::supervisor::logs::{LOGS, level_arg};
        let level = level_arg(&min_level).map_err(|e| CairnError::InvalidArgs(e.to_string()))?;
        let wait = std::time::Duration::from_secs(wait_s.min(model::api::event::MAX_WAIT_S).into());
        let page = LOGS
            .wait_page(&service, level, since, max as usize, wait)
            .await
            .map_err(|e| CairnError::InvalidArgs(e.to_string()))?;
        serde_json::to_string(&page).map_err(|e| CairnError::Failed(e.to_string()))
    }

    /// JSON array of `model::install::DiskInfo`.
    async fn list_disks(&self) -> Result<String, CairnError> {
        let installer = self.installer()?.clone();
        let disks = tokio::task::spawn_blocking(move || installer.disks())
            .await
            .map_err(|e| CairnError::Failed(format!("listing the disks: {e}")))?;
        serde_json::to_string(&disks).map_err(|e| CairnError::Failed(e.to_string()))
    }

    /// Checks the disk, the config (empty: none, the installed host boots into maintenance)
    /// and the live system's payload, then installs in the background.
    async fn install(&self, disk: String, config: String, force: bool) -> Result<(), CairnError> {
        let installer = self.installer()?.clone();
        let config = (!config.is_empty()).then_some(config);
        tracing::warn!(%disk, force, "install requested");
        tokio::task::spawn_blocking(move || installer.start(&disk, config, force, Payload::running))
            .await
            .map_err(|e| CairnError::Failed(format!("starting the install: {e}")))?
            .map_err(|e| match e {
                InstallError::NoSuchDisk(_) => CairnError::NotFound(e.to_string()),
                InstallError::Refused(_) | InstallError::NoPayload(_) => {
                    CairnError::Conflict(e.to_string())
                }
                InstallError::InvalidConfig(_) => CairnError::InvalidArgs(e.to_string()),
                InstallError::Io(_) | InstallError::Internal(_) => {
                    CairnError::Failed(e.to_string())
                }
            })
    }

    /// JSON `model::install::JobReport`.
    async fn install_status(&self) -> Result<String, CairnError> {
        serde_json::to_string(&self.installer()?.report())
            .map_err(|e| CairnError::Failed(e.to_string()))
    }

    /// Fetches the bundle at `url`, checks it whole and writes it to the slot that is not
    /// running, in the background (UpdateStatus follows it); with `reboot`, reboots into it
    /// once written.
    async fn update(&self, url: String, reboot: bool) -> Result<(), CairnError> {
        let updater = self.updater()?.clone();
        let requests = self.requests.clone();
        tracing::warn!(%url, reboot, "update requested");
        tokio::task::spawn_blocking(move || {
            updater.start(&url, move || {
                if reboot {
                    // Runs on the update's own thread: a moment for whoever follows
                    // host.updateStatus (cairnctl polls every 0.5 s) to see it done.
                    std::thread::sleep(crate::update::REBOOT_AFTER);
                    let _ = requests.send(Request::Shutdown(End::Reboot));
                }
            })
        })
        .await
        .map_err(|e| CairnError::Failed(format!("starting the update: {e}")))?
        .map_err(update_error)
    }

    /// JSON `model::install::JobReport` of this boot's last update.
    async fn update_status(&self) -> Result<String, CairnError> {
        serde_json::to_string(&self.updater()?.report())
            .map_err(|e| CairnError::Failed(e.to_string()))
    }

    /// Makes the other slot the one that boots and reboots into it.
    async fn rollback(&self) -> Result<String, CairnError> {
        let updater = self.updater()?.clone();
        let what = tokio::task::spawn_blocking(move || updater.rollback())
            .await
            .map_err(|e| CairnError::Failed(format!("rolling back: {e}")))?
            .map_err(update_error)?;
        self.end_soon(End::Reboot)
            .map_err(|e| CairnError::Failed(e.to_string()))?;
        Ok(what)
    }

    /// JSON `model::update::SlotsInfo`.
    async fn slots(&self) -> Result<String, CairnError> {
        serde_json::to_string(&self.updater()?.info())
            .map_err(|e| CairnError::Failed(e.to_string()))
    }

    /// Loads the image's module group `group` (modules.d: `storage` for stord's pool kinds and
    /// exports); the modules that failed, each with why. Init alone loads modules, so the
    /// daemons ask it rather than each carrying a loader. No such group (a sandbox has none) →
    /// NotFound.
    async fn load_modules(&self, group: String) -> Result<Vec<String>, CairnError> {
        if !crate::modules::has_group(&group) {
            return Err(CairnError::NotFound(format!(
                "no module group {group:?} in this image"
            )));
        }
        tokio::task::spawn_blocking(move || crate::modules::load_group(&group))
            .await
            .map_err(|e| CairnError::Failed(format!("loading modules: {e}")))
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

fn update_error(e: UpdateError) -> CairnError {
    match e {
        UpdateError::Invalid(_) => CairnError::InvalidArgs(e.to_string()),
        UpdateError::NotInstalled(_) | UpdateError::Busy(_) => CairnError::Conflict(e.to_string()),
        UpdateError::Io(_) => CairnError::Failed(e.to_string()),
    }
}
