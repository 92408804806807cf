//! apid's D-Bus client side: one call per daemon method, each bounded in time, with errors
//! sorted into "retry later" and "something is broken".

use std::time::Duration;

use model::dbus::{
    CairnError, Host1Proxy, Init1Proxy, Network1Proxy, ServiceInfo, StatusTuple, Storage1Proxy,
};
use model::fault::FaultCode;
use zbus::proxy::CacheProperties;

/// How long one D-Bus call may take before the daemon counts as not answering.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The daemons that answer `Status()`, by the name `host.info` shows them under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Daemon {
    Netd,
    Stord,
    Hostd,
}

impl Daemon {
    pub const ALL: [Daemon; 3] = [Daemon::Netd, Daemon::Stord, Daemon::Hostd];

    pub fn name(self) -> &'static str {
        match self {
            Daemon::Netd => "netd",
            Daemon::Stord => "stord",
            Daemon::Hostd => "hostd",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("apid is not connected to the bus")]
    NotConnected,
    #[error("{what} did not answer within {} s", timeout.as_secs())]
    Timeout {
        what: &'static str,
        timeout: Duration,
    },
    #[error("{what} is not running or not answering: {message}")]
    Unavailable { what: &'static str, message: String },
    #[error("{what} failed: {message}")]
    Failed { what: &'static str, message: String },
    /// The daemon refused the request and said why (org.cairn.Error.*), as its fault code.
    #[error("{message}")]
    Rejected { code: FaultCode, message: String },
}

impl BusError {
    fn from_cairn(what: &'static str, e: CairnError) -> BusError {
        match e.into_fault() {
            Ok((code, message)) => BusError::Rejected { code, message },
            Err(e) => BusError::from_zbus(what, e),
        }
    }

    /// The API fault this error is reported as.
    pub fn fault_code(&self) -> FaultCode {
        match self {
            BusError::Rejected { code, .. } => *code,
            e if e.is_transient() => FaultCode::Busy,
            _ => FaultCode::Internal,
        }
    }
}

impl BusError {
    /// True when retrying later may help (the daemon is starting, restarting or busy).
    pub fn is_transient(&self) -> bool {
        match self {
            BusError::Failed { .. } => false,
            BusError::Rejected { code, .. } => *code == FaultCode::Busy,
            _ => true,
        }
    }

    fn from_zbus(what: &'static str, e: zbus::Error) -> BusError {
        const GONE: [&str; 6] = [
            "org.freedesktop.DBus.Error.ServiceUnknown",
            "org.freedesktop.DBus.Error.NameHasNoOwner",
            "org.freedesktop.DBus.Error.NoReply",
            "org.freedesktop.DBus.Error.Timeout",
            "org.freedesktop.DBus.Error.TimedOut",
            "org.freedesktop.DBus.Error.Disconnected",
        ];
        let transient = match &e {
            zbus::Error::MethodError(name, _, _) => GONE.contains(&name.as_str()),
            zbus::Error::FDO(fdo) => matches!(
                **fdo,
                zbus::fdo::Error::ServiceUnknown(_)
                    | zbus::fdo::Error::NameHasNoOwner(_)
                    | zbus::fdo::Error::NoReply(_)
                    | zbus::fdo::Error::Timeout(_)
                    | zbus::fdo::Error::TimedOut(_)
                    | zbus::fdo::Error::Disconnected(_)
            ),
            zbus::Error::InputOutput(_) => true,
            _ => false,
        };
        let message = e.to_string();
        if transient {
            BusError::Unavailable { what, message }
        } else {
            BusError::Failed { what, message }
        }
    }
}

/// A handle on the bus; cheap to clone. Without a connection every call reports `NotConnected`,
/// which lets the HTTP side and the `system.*` methods run (and be tested) without a bus.
#[derive(Clone, Default)]
pub struct Bus {
    conn: Option<zbus::Connection>,
}

async fn bounded<T>(
    what: &'static str,
    call: impl Future<Output = zbus::Result<T>>,
) -> Result<T, BusError> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(BusError::from_zbus(what, e)),
        Err(_) => Err(BusError::Timeout {
            what,
            timeout: CALL_TIMEOUT,
        }),
    }
}

impl Bus {
    pub fn new(conn: Option<zbus::Connection>) -> Bus {
        Bus { conn }
    }

    /// The bus connection, if apid has one.
    pub fn connection(&self) -> Option<&zbus::Connection> {
        self.conn.as_ref()
    }

    fn conn(&self) -> Result<&zbus::Connection, BusError> {
        self.conn.as_ref().ok_or(BusError::NotConnected)
    }

    async fn init(&self) -> Result<Init1Proxy<'static>, BusError> {
        self.proxy("init").await
    }

    /// Seconds since boot (as init counts them) and the kernel release.
    pub async fn system_info(&self) -> Result<(u64, String), BusError> {
        let init = self.init().await?;
        bounded("init", init.system_info()).await
    }

    /// (mode, config source, maintenance reason) of this boot.
    pub async fn boot_info(&self) -> Result<(String, String, String), BusError> {
        let init = self.init().await?;
        bounded("init", init.boot_info()).await
    }

    /// Init1.Slots: JSON `model::update::SlotsInfo` (a sandbox answers Conflict).
    pub async fn slots(&self) -> Result<String, BusError> {
        self.daemon_call(
            "init",
            CALL_TIMEOUT,
            |init: Init1Proxy<'static>| async move { init.slots().await },
        )
        .await
    }

    pub async fn list_services(&self) -> Result<Vec<ServiceInfo>, BusError> {
        let init = self.init().await?;
        let list = bounded("init", init.list_services()).await?;
        Ok(list.into_iter().map(ServiceInfo::from).collect())
    }

    /// Init1.RestartService: init's verdict (an unknown service is `NotFound`) comes back as
    /// its fault code.
    pub async fn restart_service(&self, name: &str) -> Result<(), BusError> {
        self.daemon_call(
            "init",
            CALL_TIMEOUT,
            |init: Init1Proxy<'static>| async move { init.restart_service(name).await },
        )
        .await
    }

    /// Init1.ApplyConfig: the changes, or init's verdict (InvalidArgs with the diagnostics).
    pub async fn apply_config(&self, text: &str, dry_run: bool) -> Result<Vec<String>, BusError> {
        self.daemon_call(
            "init",
            CALL_TIMEOUT,
            |init: Init1Proxy<'static>| async move { init.apply_config(text, dry_run).await },
        )
        .await
    }

    pub async fn reboot(&self) -> Result<(), BusError> {
        let init = self.init().await?;
        bounded("init", init.reboot()).await
    }

    pub async fn poweroff(&self) -> Result<(), BusError> {
        let init = self.init().await?;
        bounded("init", init.poweroff()).await
    }

    /// A proxy on a daemon's interface, built without property caching: every answer should
    /// come from the daemon now, not from signals cached since.
    async fn proxy<P>(&self, what: &'static str) -> Result<P, BusError>
    where
        P: From<zbus::Proxy<'static>> + zbus::proxy::Defaults,
    {
        let conn = self.conn()?;
        bounded(what, async {
            zbus::proxy::Builder::<P>::new(conn)
                .cache_properties(CacheProperties::No)
                .build()
                .await
        })
        .await
    }

    /// One call to a daemon, through its proxy `P`, whose errors carry the daemon's own verdict
    /// (`org.cairn.Error.*`). `timeout` bounds the call: most answer within `CALL_TIMEOUT`,
    /// but some (stopping a container with a grace period, exec) legitimately take longer.
    pub async fn daemon_call<P, T, F, Fut>(
        &self,
        what: &'static str,
        timeout: Duration,
        call: F,
    ) -> Result<T, BusError>
    where
        P: From<zbus::Proxy<'static>> + zbus::proxy::Defaults,
        F: FnOnce(P) -> Fut,
        Fut: Future<Output = Result<T, CairnError>>,
    {
        let proxy = self.proxy::<P>(what).await?;
        // In a task the request's budget does not apply: the work may take as long as it takes.
        let timeout = crate::task::budget(timeout);
        match tokio::time::timeout(timeout, call(proxy)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(BusError::from_cairn(what, e)),
            Err(_) => Err(BusError::Timeout { what, timeout }),
        }
    }

    /// One call to netd (see `daemon_call`).
    pub async fn netd_call<T, F, Fut>(&self, call: F) -> Result<T, BusError>
    where
        F: FnOnce(Network1Proxy<'static>) -> Fut,
        Fut: Future<Output = Result<T, CairnError>>,
    {
        self.daemon_call("netd", CALL_TIMEOUT, call).await
    }

    /// One call to stord (see `daemon_call`).
    pub async fn stord_call<T, F, Fut>(&self, call: F) -> Result<T, BusError>
    where
        F: FnOnce(Storage1Proxy<'static>) -> Fut,
        Fut: Future<Output = Result<T, CairnError>>,
    {
        self.daemon_call("stord", CALL_TIMEOUT, call).await
    }

    /// A call to init (Init1) within `timeout`, its verdict as a fault code.
    pub async fn init_call<T, F, Fut>(&self, timeout: Duration, call: F) -> Result<T, BusError>
    where
        F: FnOnce(Init1Proxy<'static>) -> Fut,
        Fut: Future<Output = Result<T, CairnError>>,
    {
        self.daemon_call("init", timeout, call).await
    }

    /// One call to hostd bounded by `timeout` (see `daemon_call`).
    pub async fn hostd_call<T, F, Fut>(&self, timeout: Duration, call: F) -> Result<T, BusError>
    where
        F: FnOnce(Host1Proxy<'static>) -> Fut,
        Fut: Future<Output = Result<T, CairnError>>,
    {
        self.daemon_call("hostd", timeout, call).await
    }

    /// netd's view of the management interface: (interface, "a.b.c.d/len" or "", source).
    pub async fn management_address(&self) -> Result<(String, String, String), BusError> {
        let netd = self.proxy::<Network1Proxy<'static>>("netd").await?;
        bounded("netd", netd.management_address()).await
    }

    pub async fn status(&self, daemon: Daemon) -> Result<StatusTuple, BusError> {
        let what = daemon.name();
        match daemon {
            Daemon::Netd => {
                let p = self.proxy::<Network1Proxy<'static>>(what).await?;
                bounded(what, p.status()).await
            }
            Daemon::Stord => {
                let p = self.proxy::<Storage1Proxy<'static>>(what).await?;
                bounded(what, p.status()).await
            }
            Daemon::Hostd => {
                let p = self.proxy::<Host1Proxy<'static>>(what).await?;
                bounded(what, p.status()).await
            }
        }
    }
}
