//! What `host.info` and `host.services` show, kept current by what the daemons push, so that
//! answering them costs no D-Bus call.
//!
//! Each source is asked once at start and again when it says it changed: init signals that its
//! `Services` property is stale, netd, hostd and stord signal their `Counts` (netd also its
//! `Management`), and a daemon that leaves or (re)joins the bus is seen in `NameOwnerChanged`.
//! A refresh every `SAFETY_NET` covers a signal lost on the way. Until a source has answered
//! once, a request asks it directly.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use model::dbus::{ServiceInfo, StatusTuple};

use crate::bus::{Bus, BusError, Daemon};

/// How often every source is asked again even without a signal.
const SAFETY_NET: Duration = Duration::from_secs(10);

/// Where a piece of host state comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Init,
    Daemon(Daemon),
}

impl Source {
    const ALL: [Source; 4] = [
        Source::Init,
        Source::Daemon(Daemon::Netd),
        Source::Daemon(Daemon::Stord),
        Source::Daemon(Daemon::Hostd),
    ];

    fn of_bus_name(name: &str) -> Option<Source> {
        use model::dbus::{HOST_NAME, INIT_NAME, NETWORK_NAME, STORAGE_NAME};
        match name {
            INIT_NAME => Some(Source::Init),
            NETWORK_NAME => Some(Source::Daemon(Daemon::Netd)),
            STORAGE_NAME => Some(Source::Daemon(Daemon::Stord)),
            HOST_NAME => Some(Source::Daemon(Daemon::Hostd)),
            _ => None,
        }
    }

    fn of_path(path: &str) -> Option<Source> {
        use model::dbus::{HOST_PATH, INIT_PATH, NETWORK_PATH, STORAGE_PATH};
        match path {
            INIT_PATH => Some(Source::Init),
            NETWORK_PATH => Some(Source::Daemon(Daemon::Netd)),
            STORAGE_PATH => Some(Source::Daemon(Daemon::Stord)),
            HOST_PATH => Some(Source::Daemon(Daemon::Hostd)),
            _ => None,
        }
    }

    fn index(self) -> usize {
        match self {
            Source::Init => 0,
            Source::Daemon(Daemon::Netd) => 1,
            Source::Daemon(Daemon::Stord) => 2,
            Source::Daemon(Daemon::Hostd) => 3,
        }
    }
}

/// What init says: seconds since it started (at `at`), the kernel release, the services.
#[derive(Debug, Clone)]
pub struct InitView {
    uptime: u64,
    at: Instant,
    pub kernel: String,
    pub services: Vec<ServiceInfo>,
    /// (mode, config source, maintenance reason): fixed for the boot.
    pub boot: (String, String, String),
    /// The OS slots; None in a sandbox (init has none) or when init could not say.
    pub os: Option<model::update::SlotsInfo>,
}

impl InitView {
    /// Seconds since init started, now.
    pub fn uptime(&self) -> u64 {
        self.uptime + self.at.elapsed().as_secs()
    }
}

/// What a daemon says: its `Status` and, for netd, the management interface.
#[derive(Debug, Clone)]
pub struct DaemonView {
    pub status: StatusTuple,
    pub management: Option<Result<(String, String, String), String>>,
    /// host.toml's items the daemon could not apply: (item, why).
    pub config_failures: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
enum View {
    Init(InitView),
    Daemon(DaemonView),
}

/// One source's last answer (or why it gave none), and the number of the refresh that got it:
/// refreshes run concurrently, and an older one must not overwrite a newer answer.
#[derive(Debug, Clone, Default)]
struct Slot {
    answer: Option<Result<View, String>>,
    generation: u64,
}

#[derive(Clone, Default)]
pub struct HostState {
    slots: Arc<RwLock<[Slot; 4]>>,
    next_generation: Arc<std::sync::atomic::AtomicU64>,
    /// Whether a follower keeps the slots current; without one every request asks.
    followed: bool,
    /// Where a config failure that appears becomes an event.
    events: Option<Arc<crate::events::Events>>,
}

impl HostState {
    /// Keeps the state of the daemons current through `watcher`, a bus handle of its own: its
    /// connection carries only the follower's signals and questions, so a daemon that hangs on
    /// one of them can never hold up the connection that serves API calls and answers init's
    /// liveness Pings.
    pub fn follow(watcher: Bus, events: Arc<crate::events::Events>) -> HostState {
        let Some(conn) = watcher.connection().cloned() else {
            return HostState::default();
        };
        let state = HostState {
            followed: true,
            events: Some(events),
            ..HostState::default()
        };
        tokio::spawn(follow(watcher, conn, state.clone()));
        state
    }

    fn get(&self, source: Source) -> Option<Result<View, String>> {
        if !self.followed {
            return None;
        }
        self.slots.read().ok()?[source.index()].answer.clone()
    }

    /// init's view: pushed, or asked now if it never answered.
    pub async fn init(&self, bus: &Bus) -> Result<InitView, String> {
        let answer = match self.get(Source::Init) {
            Some(a) => a,
            None => self.refresh(bus, Source::Init).await,
        };
        match answer {
            Ok(View::Init(v)) => Ok(v),
            Ok(View::Daemon(_)) => Err("init's state is missing".into()),
            Err(e) => Err(e),
        }
    }

    /// A daemon's view: pushed, or asked now if it never answered.
    pub async fn daemon(&self, bus: &Bus, daemon: Daemon) -> Result<DaemonView, String> {
        let source = Source::Daemon(daemon);
        let answer = match self.get(source) {
            Some(a) => a,
            None => self.refresh(bus, source).await,
        };
        match answer {
            Ok(View::Daemon(v)) => Ok(v),
            Ok(View::Init(_)) => Err(format!("{}'s state is missing", daemon.name())),
            Err(e) => Err(e),
        }
    }

    /// Asks `source` now and keeps its answer, unless a later refresh already stored one.
    async fn refresh(&self, bus: &Bus, source: Source) -> Result<View, String> {
        let generation = self
            .next_generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let answer = ask(bus, source).await.map_err(|e| e.to_string());
        let mut appeared = Vec::new();
        if let Ok(mut slots) = self.slots.write() {
            let slot = &mut slots[source.index()];
            if generation > slot.generation {
                appeared = new_failures(slot.answer.as_ref(), &answer);
                *slot = Slot {
                    answer: Some(answer.clone()),
                    generation,
                };
            }
        }
        if let (Some(events), Source::Daemon(daemon)) = (&self.events, source) {
            for (item, why) in appeared {
                events.push(
                    "config",
                    "failed",
                    &item,
                    &format!("{}: {why}", daemon.name()),
                );
            }
        }
        answer
    }
}

async fn ask(bus: &Bus, source: Source) -> Result<View, BusError> {
    match source {
        Source::Init => {
            let at = Instant::now();
            let ((uptime, kernel), services, boot) =
                tokio::try_join!(bus.system_info(), bus.list_services(), bus.boot_info())?;
            let os = bus
                .slots()
                .await
                .ok()
                .and_then(|json| serde_json::from_str(&json).ok());
            Ok(View::Init(InitView {
                uptime,
                at,
                kernel,
                services,
                boot,
                os,
            }))
        }
        Source::Daemon(daemon) => {
            let status = bus.status(daemon).await?;
            let management = match daemon {
                Daemon::Netd => Some(bus.management_address().await.map_err(|e| e.to_string())),
                _ => None,
            };
            let config_failures = config_failures(bus, daemon).await;
            Ok(View::Daemon(DaemonView {
                status,
                management,
                config_failures,
            }))
        }
    }
}

/// The config failures in `new` that `old` did not list.
fn new_failures(
    old: Option<&Result<View, String>>,
    new: &Result<View, String>,
) -> Vec<(String, String)> {
    let failures = |v: Option<&Result<View, String>>| match v {
        Some(Ok(View::Daemon(d))) => d.config_failures.clone(),
        _ => Vec::new(),
    };
    let before = failures(old);
    failures(Some(new))
        .into_iter()
        .filter(|f| !before.contains(f))
        .collect()
}

/// The daemon's `ConfigFailures`: hostd's and netd's host.toml items they could not apply
/// (stord keeps none). A daemon that cannot say has none to show; its `Status` error says why.
async fn config_failures(bus: &Bus, daemon: Daemon) -> Vec<(String, String)> {
    use model::dbus::{Host1Proxy, Network1Proxy};
    let answer = match daemon {
        Daemon::Hostd => {
            bus.daemon_call(
                "hostd",
                crate::bus::CALL_TIMEOUT,
                |p: Host1Proxy<'static>| async move { p.config_failures().await },
            )
            .await
        }
        Daemon::Netd => {
            bus.daemon_call(
                "netd",
                crate::bus::CALL_TIMEOUT,
                |p: Network1Proxy<'static>| async move { p.config_failures().await },
            )
            .await
        }
        Daemon::Stord => return Vec::new(),
    };
    answer.unwrap_or_default()
}

/// Follows the daemons' signals for as long as apid runs.
async fn follow(bus: Bus, conn: zbus::Connection, state: HostState) {
    let owners = async {
        zbus::fdo::DBusProxy::new(&conn)
            .await?
            .receive_name_owner_changed()
            .await
    };
    let changes = async {
        let rule = zbus::MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .interface("org.freedesktop.DBus.Properties")
            .member("PropertiesChanged")
            .path_namespace("/org/cairn")
            .build()?;
        zbus::MessageStream::for_match_rule(rule, &conn, None).await
    };
    let (mut owners, mut changes) = match tokio::try_join!(owners, changes) {
        Ok(streams) => streams,
        Err(e) => {
            // Without the signals every request asks the daemons itself, as before.
            tracing::warn!(error = %e, "cannot follow the daemons' signals; host.info asks each time");
            return;
        }
    };
    let refresh = |source: Source| {
        let (bus, state) = (bus.clone(), state.clone());
        tokio::spawn(async move {
            let _ = state.refresh(&bus, source).await;
        });
    };
    let mut every = tokio::time::interval(SAFETY_NET);
    loop {
        tokio::select! {
            _ = every.tick() => Source::ALL.into_iter().for_each(refresh),
            Some(signal) = owners.next() => {
                if let Ok(args) = signal.args()
                    && let Some(source) = Source::of_bus_name(args.name().as_str())
                {
                    refresh(source);
                    // A daemon's coming or going is a change in init's service table too;
                    // init signals it, but asking costs little and closes the race.
                    refresh(Source::Init);
                }
            }
            Some(Ok(msg)) = changes.next() => {
                let header = msg.header();
                if let Some(source) = header.path().and_then(|p| Source::of_path(p.as_str())) {
                    refresh(source);
                }
            }
            else => break,
        }
    }
}
