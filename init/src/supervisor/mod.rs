//! The supervisor: one control loop that starts the daemons in order, waits for each to own its
//! bus name, reaps every child (`waitpid(-1)`: PID 1 owns all reaping), restarts crashed daemons
//! with back-off, restarts a running daemon that is no longer reachable on the bus (`liveness`),
//! and stops them in reverse order on Poweroff/Reboot. The D-Bus frontend (`init1`) only reads a
//! snapshot and sends commands into this loop.

mod apply;
mod events;
mod liveness;
pub mod logs;
mod service;
pub mod unattended;

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command as Process, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use model::dbus::{BUS_ADDRESS_ENV, ServiceInfo};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot};

use crate::Mode;
use crate::bus;
use crate::init1::Init1;
use service::{Service, State};

/// How long a daemon has to exit after SIGTERM before it is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(5);
/// Time for apid to send a request's answer before init stops or restarts it for that request
/// (host.poweroff, host.reboot, host.rollback, host.applyConfig).
pub const ANSWER_GRACE: Duration = Duration::from_secs(1);
/// How long an unreachable daemon (lost its bus name, answers no Ping) has to exit after
/// SIGTERM before it is killed: short, because nobody can reach it meanwhile, and a stuck one
/// will not act on SIGTERM anyway.
const UNREACHABLE_GRACE: Duration = Duration::from_millis(300);

/// What init was told to supervise, and where.
pub struct Plan {
    pub mode: Mode,
    pub bindir: PathBuf,
    pub config: PathBuf,
    pub state: PathBuf,
    pub ready_timeout: Duration,
    pub boot: BootInfo,
    /// `cairn.config=` to fetch and apply (`apply::fetch_and_apply`).
    pub config_url: Option<String>,
    /// `cairn.install=`: the disk to install onto unattended (`unattended::install`).
    pub install: Option<String>,
    /// The kernel command line (empty in a sandbox): `cairn.slot=` says an installed boot.
    pub cmdline: String,
}

/// How this boot's config was chosen (`Init1.BootInfo`, `host.info`).
#[derive(Debug, Clone, Default)]
pub struct BootInfo {
    /// `running` or `maintenance`.
    pub mode: String,
    /// `state`, `medium`, `file` (a sandbox's) or `none`.
    pub source: String,
    /// Why maintenance; empty otherwise.
    pub problem: String,
}

/// How the supervisor ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Poweroff,
    Reboot,
}

/// Why a request from the D-Bus frontend was refused; init1 maps each to its
/// `org.cairn.Error.*` kind.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("no service named {0:?}; ListServices lists them")]
    NoSuchService(String),
    /// A config that does not validate: every diagnostic, one per line.
    #[error("{0}")]
    InvalidConfig(String),
    #[error("{0}")]
    Failed(String),
}

/// Requests from the D-Bus frontend.
pub enum Request {
    Restart {
        name: String,
        reply: oneshot::Sender<Result<(), RequestError>>,
    },
    /// host.applyConfig: the new host.toml's text; with `dry_run` only the changes. `source`
    /// is what `host.info` reports afterwards (`state`, or `url` for cairn.config=).
    ApplyConfig {
        text: String,
        dry_run: bool,
        source: &'static str,
        reply: oneshot::Sender<Result<Vec<String>, RequestError>>,
    },
    /// Every service restarted, as an applied config asks (sent by the control loop itself).
    RestartAll,
    Shutdown(End),
}

/// How this boot's config was chosen, shared with Init1 (an applied config changes it).
pub type SharedBoot = Arc<Mutex<BootInfo>>;

/// Readiness verdict about one start of one service.
struct Readiness {
    index: usize,
    generation: u64,
    ready: bool,
}

pub type Snapshot = Arc<Mutex<Vec<ServiceInfo>>>;

struct Supervisor {
    plan: Plan,
    boot: SharedBoot,
    /// The control loop's own request queue (an applied config restarts the services later).
    requests: mpsc::UnboundedSender<Request>,
    bus: bus::Bus,
    conn: zbus::Connection,
    services: Vec<Service>,
    snapshot: Snapshot,
    /// The index of the service whose readiness the boot sequence waits for.
    booting: Option<usize>,
    /// Set once the shutdown began: exits are expected, nothing is restarted.
    stopping_all: bool,
    /// Set when the bus daemon exited: every Ping then fails on init's side, which says
    /// nothing about the daemons, so liveness verdicts are ignored from then on.
    bus_gone: bool,
    ready_tx: mpsc::UnboundedSender<Readiness>,
    lost_tx: mpsc::UnboundedSender<liveness::Lost>,
    /// A/B updates; None in a sandbox.
    updater: Option<crate::update::Updater>,
}

pub async fn run(plan: Plan) -> anyhow::Result<End> {
    let mut sigchld = signal(SignalKind::child())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;

    let bus = bus::start(
        &bus::find_daemon(&plan.bindir),
        &bus::socket_path(plan.mode, &plan.state),
    )?;
    let conn = zbus::connection::Builder::address(bus.address.as_str())
        .build()
        .await
        .context("connect to the bus init started")?;

    let services: Vec<Service> = model::dbus::SERVICES
        .iter()
        .map(|(name, bus_name)| Service::new(name, bus_name))
        .collect();
    let snapshot: Snapshot = Arc::new(Mutex::new(services.iter().map(Service::info).collect()));
    let (req_tx, mut req_rx) = mpsc::unbounded_channel();
    let boot: SharedBoot = Arc::new(Mutex::new(plan.boot.clone()));
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let (lost_tx, mut lost_rx) = mpsc::unbounded_channel();
    // A sandbox runs on a dev machine, whose disks are not ours to write.
    let installer =
        (plan.mode == Mode::Appliance).then(|| crate::install::Installer::new(Default::default()));
    let updater = (plan.mode == Mode::Appliance)
        .then(|| crate::update::Updater::new(&plan.state, &plan.config, &plan.cmdline));
    conn.object_server()
        .at(
            model::dbus::INIT_PATH,
            Init1::new(
                snapshot.clone(),
                req_tx.clone(),
                std::time::Instant::now(),
                boot.clone(),
                installer.clone(),
                updater.clone(),
            ),
        )
        .await?;
    conn.request_name(model::dbus::INIT_NAME).await?;
    events::start(conn.clone());

    let mut sup = Supervisor {
        plan,
        boot,
        requests: req_tx,
        bus,
        conn,
        services,
        snapshot,
        booting: None,
        stopping_all: false,
        bus_gone: false,
        ready_tx,
        lost_tx,
        updater,
    };
    if let Some(updater) = sup.updater.clone() {
        let requests = sup.requests.clone();
        tokio::spawn(async move {
            let checking = updater.clone();
            let trial = tokio::task::spawn_blocking(move || checking.on_boot())
                .await
                .unwrap_or(false);
            if !trial {
                return;
            }
            tokio::time::sleep(crate::update::TRIAL_DEADLINE).await;
            if updater.in_trial() {
                eprintln!(
                    "cairn: the updated system is not healthy {} s after boot; rebooting (GRUB \
                     goes back to the old one when its tries are spent)",
                    crate::update::TRIAL_DEADLINE.as_secs()
                );
                let _ = requests.send(Request::Shutdown(End::Reboot));
            }
        });
    }
    if let Some(url) = sup.plan.config_url.clone() {
        tokio::spawn(apply::fetch_and_apply(
            url,
            sup.requests.clone(),
            sup.boot.clone(),
        ));
    }
    if let (Some(disk), Some(installer)) = (sup.plan.install.clone(), installer) {
        tokio::spawn(unattended::install(
            disk,
            installer,
            sup.plan.config.clone(),
            crate::config_source::saved(&sup.plan.state),
            sup.plan.config_url.is_some(),
            sup.boot.clone(),
            sup.requests.clone(),
        ));
    }
    sup.boot_next(0);
    sup.publish();

    // Pets the trial boot's watchdog from this loop, so that it fires when the loop stops.
    let mut pet = tokio::time::interval(crate::update::WATCHDOG_PET);
    let end = loop {
        let next_timer = sup.next_timer();
        tokio::select! {
            _ = pet.tick() => {
                if let Some(updater) = &sup.updater {
                    updater.pet_watchdog();
                }
            }
            _ = sigchld.recv() => sup.reap(),
            Some(r) = ready_rx.recv() => sup.on_readiness(r),
            Some(lost) = lost_rx.recv() => sup.on_unreachable(lost),
            Some(req) = req_rx.recv() => match req {
                Request::Restart { name, reply } => {
                    let _ = reply.send(sup.restart(&name));
                }
                Request::ApplyConfig { text, dry_run, source, reply } => {
                    let _ = reply.send(sup.apply_config(&text, dry_run, source));
                }
                Request::RestartAll => {
                    for name in model::dbus::SERVICES.iter().map(|(name, _)| *name) {
                        let _ = sup.restart(name);
                    }
                }
                Request::Shutdown(end) => break end,
            },
            _ = sleep_until(next_timer) => sup.timers_due(),
            _ = sigterm.recv() => break End::Poweroff,
            _ = sigint.recv() => break End::Poweroff,
        }
        sup.publish();
    };
    tracing::info!(?end, "stopping services");
    sup.shutdown(&mut sigchld).await;
    Ok(end)
}

/// How long the guests' monitors have to end their guests at shutdown.
const ORPHAN_DEADLINE: Duration = Duration::from_secs(5);

/// The live children of `parent` but `except`, from /proc (init does not spawn them: they
/// are orphans it reaps).
fn children_of(parent: u32, except: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != except && parent_of(pid) == Some(parent))
        .collect()
}

/// The parent of `pid` from /proc/PID/stat; None once it is gone or a zombie.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command's closing parenthesis: state, then ppid.
    let mut rest = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    let state = rest.next()?;
    if state == "Z" {
        return None;
    }
    rest.next()?.parse().ok()
}

fn is_child(pid: u32) -> bool {
    parent_of(pid) == Some(std::process::id())
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

impl Supervisor {
    /// Updates the table Init1 serves; when it changed, Init1 signals that its `Services`
    /// property is stale, so that clients (apid's host.info) refresh it without polling.
    fn publish(&self) {
        let now: Vec<ServiceInfo> = self.services.iter().map(Service::info).collect();
        let changed = match self.snapshot.lock() {
            Ok(mut s) if *s != now => {
                *s = now;
                true
            }
            _ => false,
        };
        if changed {
            let conn = self.conn.clone();
            tokio::spawn(async move { crate::init1::services_changed(&conn).await });
        }
    }

    /// Starts the boot sequence at `index`, skipping nothing: a service that fails to start is
    /// reported and the next one still gets its turn.
    fn boot_next(&mut self, index: usize) {
        self.booting = None;
        for i in index..self.services.len() {
            if self.start(i) {
                self.booting = Some(i);
                return;
            }
        }
        self.all_started();
    }

    fn all_started(&self) {
        let running = self
            .services
            .iter()
            .filter(|s| s.state == State::Running)
            .count();
        println!(
            "cairn: boot sequence done: {running} of {} services running",
            self.services.len()
        );
    }

    /// Spawns the service's process and a watcher for its bus name. False if it could not be
    /// spawned at all (the service is then marked failed).
    fn start(&mut self, index: usize) -> bool {
        let plan = &self.plan;
        let svc = &mut self.services[index];
        let state_dir = plan.state.join(svc.name);
        let spawned = std::fs::create_dir_all(&state_dir)
            .map_err(anyhow::Error::from)
            .and_then(|()| spawn_daemon(plan, svc.name, &state_dir, &self.bus.address));
        let pid = match spawned {
            Ok(pid) => pid,
            Err(e) => {
                tracing::error!(service = svc.name, error = %format!("{e:#}"), "cannot start");
                svc.last_error = format!("cannot start: {e:#}");
                svc.set_state(State::Failed);
                events::emit("service", "failed", svc.name, svc.last_error.clone());
                return false;
            }
        };
        if svc.started_at.is_some() {
            svc.restarts += 1;
        }
        svc.pid = Some(pid);
        svc.started_at = Some(Instant::now());
        svc.restart_at = None;
        svc.kill_at = None;
        svc.kill_reason = None;
        svc.stop_watching();
        svc.generation += 1;
        svc.set_state(State::Starting);
        tracing::info!(service = svc.name, pid, "started");
        events::emit("service", "started", svc.name, format!("pid {pid}"));
        tokio::spawn(watch_readiness(
            self.conn.clone(),
            svc.bus_name,
            plan.ready_timeout,
            Readiness {
                index,
                generation: svc.generation,
                ready: false,
            },
            self.ready_tx.clone(),
        ));
        true
    }

    fn on_readiness(&mut self, r: Readiness) {
        let svc = &mut self.services[r.index];
        if r.generation != svc.generation || svc.state != State::Starting {
            return;
        }
        if r.ready {
            svc.set_state(State::Running);
            tracing::info!(service = svc.name, pid = svc.pid, "ready");
            events::emit("service", "ready", svc.name, "");
            // From now on its reachability is checked, not assumed.
            let watcher = tokio::spawn(liveness::watch(
                self.conn.clone(),
                svc.bus_name,
                r.index,
                r.generation,
                self.lost_tx.clone(),
            ));
            svc.liveness = Some(watcher.abort_handle());
            if svc.bus_name == model::dbus::API_NAME {
                println!("cairn: api ready");
                // apid starts last: every service before it is running, and the API is up.
                if let Some(updater) = self.updater.clone().filter(|u| u.in_trial()) {
                    let conn = self.conn.clone();
                    tokio::spawn(async move {
                        let _ = tokio::task::spawn_blocking(move || updater.confirm()).await;
                        // apid keeps init's view until told it changed.
                        crate::init1::services_changed(&conn).await;
                    });
                }
            }
        } else if let Some(pid) = svc.pid {
            // Treated as a crash: the reaper sees it exit and schedules the restart.
            tracing::error!(
                service = svc.name,
                timeout = ?self.plan.ready_timeout,
                "did not own its bus name in time; killing it"
            );
            svc.kill_reason = Some(format!(
                "did not own its bus name {} within {} s of its start",
                svc.bus_name,
                self.plan.ready_timeout.as_secs()
            ));
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        if self.booting == Some(r.index) {
            self.boot_next(r.index + 1);
        }
    }

    /// Collects every exited child: our services, the bus, and orphans re-parented to us.
    fn reap(&mut self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(status) => {
                    if let Some(pid) = status.pid()
                        && !crate::children::claim(pid.as_raw() as u32, &status)
                    {
                        self.on_exit(pid.as_raw() as u32, status);
                    }
                }
            }
        }
    }

    /// A running daemon is unreachable on the bus: SIGTERM now, SIGKILL after a short grace;
    /// its exit is then handled as a crash (back-off, fast-crash count), reported with `cause`.
    fn on_unreachable(&mut self, lost: liveness::Lost) {
        let svc = &mut self.services[lost.index];
        if lost.generation != svc.generation
            || svc.state != State::Running
            || self.stopping_all
            || self.bus_gone
        {
            return;
        }
        let Some(pid) = svc.pid else {
            return;
        };
        tracing::error!(service = svc.name, pid, cause = %lost.cause, "unreachable on the bus; restarting it");
        svc.liveness = None;
        svc.last_error = lost.cause.clone();
        svc.kill_reason = Some(lost.cause);
        svc.kill_at = Some(Instant::now() + UNREACHABLE_GRACE);
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    }

    fn on_exit(&mut self, pid: u32, status: WaitStatus) {
        if pid == self.bus.pid {
            tracing::error!(
                ?status,
                "the bus daemon exited; daemons lose their connections"
            );
            self.bus_gone = true;
            return;
        }
        let Some(index) = self.services.iter().position(|s| s.pid == Some(pid)) else {
            return;
        };
        let booting = self.booting == Some(index);
        let svc = &mut self.services[index];
        svc.stop_watching();
        svc.kill_at = None;
        if svc.state == State::Stopping || self.stopping_all {
            svc.pid = None;
            svc.kill_reason = None;
            svc.set_state(State::Stopped);
            events::emit("service", "stopped", svc.name, describe_exit(status));
            if std::mem::take(&mut svc.start_after_stop) {
                self.start(index);
            }
            return;
        }
        tracing::warn!(service = svc.name, pid, ?status, "exited unexpectedly");
        svc.last_error = match svc.kill_reason.take() {
            Some(cause) => cause,
            None => describe_exit(status),
        };
        svc.crashed(Instant::now());
        events::emit("service", "crashed", svc.name, svc.last_error.clone());
        if svc.state == State::Failed {
            events::emit(
                "service",
                "failed",
                svc.name,
                format!("crashed {} times in a row; not restarted", svc.fast_crashes),
            );
            tracing::error!(
                service = svc.name,
                crashes = svc.fast_crashes,
                "crashed too often in a row; not restarting"
            );
            let name = svc.name;
            if booting {
                self.boot_next(index + 1);
            }
            if self.updater.as_ref().is_some_and(|u| u.in_trial()) {
                eprintln!(
                    "cairn: {name} keeps failing on the updated system; rebooting (GRUB goes \
                     back to the old one when its tries are spent)"
                );
                let _ = self.requests.send(Request::Shutdown(End::Reboot));
            }
        }
    }

    /// The next restart after a back-off, or SIGKILL after a grace, whichever comes first.
    fn next_timer(&self) -> Option<Instant> {
        self.services
            .iter()
            .flat_map(|s| [s.restart_at, s.kill_at])
            .flatten()
            .min()
    }

    fn timers_due(&mut self) {
        let now = Instant::now();
        for svc in &mut self.services {
            if svc.kill_at.is_some_and(|t| t <= now) {
                svc.kill_at = None;
                if let Some(pid) = svc.pid {
                    tracing::warn!(
                        service = svc.name,
                        pid,
                        "did not exit after SIGTERM; killing"
                    );
                    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                }
            }
        }
        for i in 0..self.services.len() {
            if self.services[i].restart_at.is_some_and(|t| t <= now) {
                self.services[i].restart_at = None;
                if !self.start(i) && self.booting == Some(i) {
                    self.boot_next(i + 1);
                }
            }
        }
    }

    /// RestartService: stop (if running) and start again; also revives a failed service.
    fn restart(&mut self, name: &str) -> Result<(), RequestError> {
        let index = self
            .services
            .iter()
            .position(|s| s.name == name)
            .ok_or_else(|| RequestError::NoSuchService(name.to_string()))?;
        let svc = &mut self.services[index];
        svc.fast_crashes = 0;
        match svc.pid {
            Some(pid) => {
                // Its name goes away as it stops: that is no loss to report.
                svc.stop_watching();
                svc.start_after_stop = true;
                svc.set_state(State::Stopping);
                // As at shutdown: a daemon that ignores SIGTERM (or is stuck) is killed.
                svc.kill_at = Some(Instant::now() + STOP_DEADLINE);
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            }
            None => {
                self.start(index);
            }
        }
        Ok(())
    }

    /// Stops the services in reverse start order, each with a deadline, then the bus.
    async fn shutdown(&mut self, sigchld: &mut tokio::signal::unix::Signal) {
        self.stopping_all = true;
        for svc in &mut self.services {
            svc.stop_watching();
            svc.kill_at = None;
        }
        for i in (0..self.services.len()).rev() {
            self.services[i].restart_at = None;
            self.services[i].start_after_stop = false;
            let Some(pid) = self.services[i].pid else {
                self.services[i].set_state(State::Stopped);
                continue;
            };
            self.services[i].set_state(State::Stopping);
            self.publish();
            let pid = Pid::from_raw(pid as i32);
            let _ = kill(pid, Signal::SIGTERM);
            if !self.wait_gone(i, STOP_DEADLINE, sigchld).await {
                tracing::warn!(
                    service = self.services[i].name,
                    "did not stop in time; killing"
                );
                let _ = kill(pid, Signal::SIGKILL);
                self.wait_gone(i, Duration::from_secs(2), sigchld).await;
            }
            tracing::info!(service = self.services[i].name, "stopped");
        }
        self.end_orphans(sigchld).await;
        let _ = self.conn.release_name(model::dbus::INIT_NAME).await;
        let _ = kill(Pid::from_raw(self.bus.pid as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(WaitStatus::StillAlive) | Err(_) = waitpid(
                Pid::from_raw(self.bus.pid as i32),
                Some(WaitPidFlag::WNOHANG),
            ) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            } else {
                break;
            }
        }
        self.reap();
    }

    /// What the daemons left to init, the reaper — the guests' monitors, which outlive hostd
    /// by design — is asked to end (a monitor ends its guest on SIGTERM and records how),
    /// then killed after a deadline: nothing of a stopped init's runs on.
    async fn end_orphans(&mut self, sigchld: &mut tokio::signal::unix::Signal) {
        let orphans = children_of(std::process::id(), self.bus.pid);
        if orphans.is_empty() {
            return;
        }
        tracing::info!(count = orphans.len(), "ending the guests' monitors");
        for &pid in &orphans {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
        let deadline = Instant::now() + ORPHAN_DEADLINE;
        let mut left = orphans;
        while !left.is_empty() && Instant::now() < deadline {
            let _ = tokio::time::timeout_at(deadline.into(), sigchld.recv()).await;
            self.reap();
            left.retain(|&pid| is_child(pid));
        }
        for &pid in &left {
            tracing::warn!(pid, "did not end after SIGTERM; killing");
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        if !left.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            self.reap();
        }
    }

    async fn wait_gone(
        &mut self,
        index: usize,
        limit: Duration,
        sigchld: &mut tokio::signal::unix::Signal,
    ) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            self.reap();
            if self.services[index].pid.is_none() {
                return true;
            }
            if tokio::time::timeout_at(deadline.into(), sigchld.recv())
                .await
                .is_err()
            {
                self.reap();
                return self.services[index].pid.is_none();
            }
        }
    }
}

/// How a process ended, as ListServices' `last_error` says it.
fn describe_exit(status: WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exited with status {code}"),
        WaitStatus::Signaled(_, signal, _) => format!("killed by {}", signal.as_str()),
        other => format!("ended: {other:?}"),
    }
}

/// Starts one daemon with its config, state dir and the bus address; returns its pid.
fn spawn_daemon(
    plan: &Plan,
    name: &str,
    state_dir: &std::path::Path,
    bus_address: &str,
) -> anyhow::Result<u32> {
    let exe = plan.bindir.join(name);
    let mut cmd = Process::new(&exe);
    cmd.arg("--config")
        .arg(&plan.config)
        .arg("--state")
        .arg(state_dir)
        .env(BUS_ADDRESS_ENV, bus_address)
        .stdin(Stdio::null());
    // Its stdout and stderr go through a pipe init reads (`logs`): on to the console or the
    // sandbox's log file as before, and into host.log's ring. Close-on-exec, so that only this
    // child (which gets it as fds 1 and 2) and its own children hold the write end.
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .context("cannot make the pipe for its output")?;
    cmd.stdout(Stdio::from(write.try_clone()?))
        .stderr(Stdio::from(write));
    let console = match plan.mode {
        Mode::Sandbox => {
            let dir = plan.state.join("log");
            std::fs::create_dir_all(&dir)?;
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(format!("{name}.log")))?;
            logs::Console::File(Arc::new(Mutex::new(file)))
        }
        Mode::Appliance => logs::Console::Stdout,
    };
    if plan.mode == Mode::Sandbox {
        // SAFETY: prctl is async-signal-safe. A sandbox's daemons must not outlive it, even
        // when init itself is killed.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    // SAFETY: setsid is async-signal-safe. Its own session keeps a terminal's Ctrl-C (sent to
    // the foreground process group) away from the daemons: init stops them in order instead.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("spawn {}", exe.display()))?;
    // Our copies of the write end go with `cmd`: the reader sees the end of the pipe once the
    // daemon and whatever it started are gone.
    drop(cmd);
    let service = model::dbus::SERVICES
        .iter()
        .map(|(n, _)| *n)
        .find(|n| *n == name)
        .unwrap_or("other");
    if let Err(e) = logs::follow(service, read, console) {
        tracing::error!(service = name, error = %e, "cannot read its output; it may block on it");
    }
    // The supervisor reaps with waitpid(-1); the std handle would only wait on this one pid.
    Ok(child.id())
}

/// Polls the bus until `bus_name` has an owner or the timeout passes, then reports.
async fn watch_readiness(
    conn: zbus::Connection,
    bus_name: &'static str,
    timeout: Duration,
    mut verdict: Readiness,
    tx: mpsc::UnboundedSender<Readiness>,
) {
    let deadline = Instant::now() + timeout;
    let proxy = zbus::fdo::DBusProxy::new(&conn).await;
    while let Ok(proxy) = &proxy {
        if let Ok(name) = zbus::names::BusName::try_from(bus_name)
            && proxy.name_has_owner(name).await.unwrap_or(false)
        {
            verdict.ready = true;
            break;
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = tx.send(verdict);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_are_described_for_list_services() {
        let pid = Pid::from_raw(42);
        assert_eq!(
            describe_exit(WaitStatus::Exited(pid, 3)),
            "exited with status 3"
        );
        assert_eq!(
            describe_exit(WaitStatus::Signaled(pid, Signal::SIGKILL, false)),
            "killed by SIGKILL"
        );
    }
}
