//! The containers' lifecycle: what each D-Bus method does. One `Manager` owns the records; the
//! kernel (monitors' records in RUN, cgroups, netd's ports) is the truth about what runs, read
//! on each request, so a restarted hostd simply re-adopts what it finds alive.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use model::ct::{
    ContainerInfo, ContainerSpec, ContainerState, Resources, TemplateInfo, is_ct_name,
};
use model::net::{PortKind, PortSpec};
use model::rules;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use vmm::launcher::{self, LAUNCH_FILE, LaunchRecord, MonitorState};

use super::disk;
use super::paths::Paths;
use super::ports::{self, PortReleaser};
use super::runtime::{Launch, idmap};
use super::store::{self, Record};
use super::template::Templates;
use crate::addresses::{self, Held, Others};
use crate::cgroup::{Cgroup, CgroupError, Kind};
use crate::declared::{self, Declared};
use crate::error::{HostError, HostResult};

/// How long the monitor may take to report the init's pid, and then its exec.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// After SIGKILL, how long the monitor may take to reap and record.
const REAP_TIMEOUT: Duration = Duration::from_secs(10);
/// How often hostd looks for containers that ended on their own (see `Manager::tick`).
pub const TICK: Duration = Duration::from_millis(500);
const PORT_FILE: &str = "port";
const PAUSED_FILE: &str = "paused";
/// In a container's run directory while stord holds it for a full pool (`hold`).
const HELD_FOR_SPACE: &str = "held-for-space";

/// What the kernel says about a container right now.
#[derive(Debug, Clone)]
pub enum Live {
    /// No monitor record: created, or stopped and cleaned up.
    Down,
    Running(MonitorState),
    Paused(MonitorState),
    /// Its init ended (code as recorded, or None when the monitor vanished without a record);
    /// its cgroup, port and run dir still await `settle`.
    Ended(Option<i32>),
}

pub struct Manager {
    paths: Paths,
    templates: Templates,
    records: BTreeMap<String, Record>,
    bus: Option<zbus::Connection>,
    /// host.toml's containers and templates that hostd could not apply, with why.
    config_failed: BTreeMap<String, String>,
    /// hostd's own binary: the monitor and the exec helper are hostd started again.
    exe: PathBuf,
    /// Stopped containers' ports, detached without the stop waiting for netd.
    ports: PortReleaser,
    /// host.toml's templates and containers, which the API may not delete.
    declared: Declared,
}

/// In a guest's run directory while a volume snapshot holds it still: a hostd killed before
/// letting it go finds it at its next start and lets it go then.
pub const QUIESCED: &str = "quiesced";

impl Manager {
    pub fn new(state: &Path, exe: PathBuf) -> Manager {
        let paths = Paths::new(state);
        sweep_deleted(&paths);
        let records = store::load_all(&paths);
        let templates = Templates::new(paths.templates());
        let ports = PortReleaser::new(&paths.run);
        let m = Manager {
            paths,
            templates,
            records,
            bus: None,
            config_failed: BTreeMap::new(),
            exe,
            ports,
            declared: Declared::default(),
        };
        for name in m.records.keys() {
            match m.live(name) {
                Live::Running(s) | Live::Paused(s) => tracing::info!(
                    ct = %name, pid = s.guest_pid, monitor = s.monitor_pid,
                    "re-adopted a running container"
                ),
                Live::Ended(code) => {
                    tracing::info!(ct = %name, ?code, "container ended while hostd was away")
                }
                Live::Down => {}
            }
        }
        m
    }

    /// The bus connection used to reach netd (ports).
    pub fn set_bus(&mut self, bus: zbus::Connection) {
        self.ports.set_bus(bus.clone());
        self.bus = Some(bus);
    }

    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    /// The record of container `name`. A malformed name cannot name anything: it is refused as
    /// invalid rather than reported as not found.
    fn record(&self, name: &str) -> HostResult<&Record> {
        if !is_ct_name(name) {
            return Err(HostError::InvalidArgs(format!(
                "container {name:?} is not a valid name; expected lowercase letters, digits and \
                 hyphens, starting with a letter or digit"
            )));
        }
        self.records
            .get(name)
            .ok_or_else(|| HostError::NotFound(format!("container {name:?} does not exist")))
    }

    pub fn live(&self, name: &str) -> Live {
        let run = self.paths.run_dir(name);
        let Some(s) = launcher::read_state(&run) else {
            return Live::Down;
        };
        let running = |s: MonitorState| {
            if run.join(PAUSED_FILE).exists() {
                Live::Paused(s)
            } else {
                Live::Running(s)
            }
        };
        if s.alive() {
            return running(s);
        }
        match launcher::exit_of::<()>(&run, &s) {
            Ok(Some(exit)) => Live::Ended(Some(exit.ended.code())),
            // The init is gone but its monitor has not recorded how yet: not ended until it
            // has (the next look settles it).
            _ if s.monitor_alive() => running(s),
            // The monitor wrote no exit: it was killed; the kernel killed the pid namespace.
            _ => Live::Ended(None),
        }
    }

    /// Cleans up after a container whose init ended: port, cgroup, run dir; records the exit.
    async fn settle(&mut self, name: &str) {
        let Live::Ended(code) = self.live(name) else {
            return;
        };
        tracing::info!(ct = name, ?code, "container stopped; cleaning up");
        self.teardown(name).await;
        if let Some(r) = self.records.get_mut(name) {
            r.last_exit = code.or(Some(255));
            if let Err(e) = store::save(&self.paths, r) {
                tracing::warn!(ct = name, error = %e, "cannot save the container record");
            }
        }
    }

    /// Removes what a run leaves on the host: the netd port (in the background: see
    /// `ports`), the cgroup (killing anything left in it), the run dir. Every step is tried;
    /// failures are logged.
    async fn teardown(&mut self, name: &str) {
        let run = self.paths.run_dir(name);
        self.ports.release(name, &run.join(PORT_FILE));
        let owned = name.to_string();
        let cg = tokio::task::spawn_blocking(move || match Cgroup::open(Kind::Container, &owned) {
            Ok(cg) => {
                let _ = cg.freeze(false);
                cg.kill_all().and_then(|()| cg.remove())
            }
            Err(CgroupError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        })
        .await;
        match cg {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(ct = name, error = %e, "cannot remove the cgroup"),
            Err(e) => tracing::warn!(ct = name, error = %e, "cgroup clean-up task failed"),
        }
        if let Err(e) = std::fs::remove_dir_all(&run)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(ct = name, error = %e, "cannot remove {}", run.display());
        }
    }

    // ---- templates ----------------------------------------------------------------------

    /// The template store, for an import that runs without the manager's lock (unpacking a
    /// distribution takes seconds; the containers need not wait for it).
    pub fn templates_handle(&self) -> Templates {
        Templates::new(self.paths.templates())
    }

    /// The bus connection, for calls made without the manager's lock.
    pub fn bus(&self) -> Option<zbus::Connection> {
        self.bus.clone()
    }

    pub fn list_templates(&self) -> Vec<TemplateInfo> {
        self.templates.list()
    }

    pub fn set_declared(&mut self, declared: Declared) {
        self.declared = declared;
    }

    pub fn delete_template(&self, name: &str) -> HostResult<()> {
        self.declared.check_delete(declared::Kind::Template, name)?;
        let users: Vec<&str> = self
            .records
            .values()
            .filter(|r| r.spec.template == name)
            .map(|r| r.spec.name.as_str())
            .collect();
        if !users.is_empty() {
            return Err(HostError::Conflict(format!(
                "template {name:?} is used by containers {users:?}; delete them first"
            )));
        }
        self.templates.delete(name)
    }

    // ---- containers ---------------------------------------------------------------------

    pub async fn create(&mut self, spec_json: &str) -> HostResult<ContainerInfo> {
        self.create_among(spec_json, &Others::default()).await
    }

    /// Creates a container beside the VMs `vms` (containers and VMs share one namespace and
    /// the networks' addresses), by the rules host.toml follows (`model::rules`).
    pub async fn create_among(
        &mut self,
        spec_json: &str,
        vms: &Others,
    ) -> HostResult<ContainerInfo> {
        let spec: ContainerSpec = serde_json::from_str(spec_json)
            .map_err(|e| HostError::InvalidArgs(format!("container spec: {e}")))?;
        spec.validate()
            .map_err(|e| HostError::InvalidArgs(e.to_string()))?;
        if self.records.contains_key(&spec.name) {
            return Err(HostError::Conflict(format!(
                "container {:?} exists already",
                spec.name
            )));
        }
        let vm = vms
            .names
            .contains(&spec.name)
            .then(|| format!("vm {:?}", spec.name));
        if let Some(taken) = rules::problem(
            "container",
            format_args!("{:?}", spec.name),
            rules::guest_name_free(vm.as_deref()),
        ) {
            return Err(HostError::Conflict(taken));
        }
        let t0 = Instant::now();
        self.templates.get(&spec.template)?;
        if let Some(net) = &spec.network {
            let info = crate::netd::network_spec(self.bus.as_ref(), net).await?;
            let mut held = self.held_addresses();
            held.extend(vms.held.iter().cloned());
            addresses::check("addresses", &spec.addresses, &info, &held)?;
            // Port limits netd still keeps for a deleted container of this name (its delete
            // could not reach netd) are not this one's.
            crate::netd::forget_owner(self.bus.as_ref(), &ports::owner(&spec.name)).await;
        }
        let t_network = t0.elapsed();
        let slot = if spec.privileged {
            0
        } else {
            idmap::allocate(
                self.records
                    .values()
                    .filter(|r| !r.spec.privileged)
                    .map(|r| r.slot),
            )
            .ok_or_else(|| {
                HostError::Conflict("no id-map range is left for another container".into())
            })?
        };
        let record = Record {
            spec,
            slot,
            created: launcher::now(),
            started: None,
            last_exit: None,
        };
        let d = store::dirs(&self.paths, &record.spec.name);
        if d.dir.exists() {
            // Left by a crash between mkdir and saving the record: nobody owns it.
            let _ = std::fs::remove_dir_all(&d.dir);
        }
        // The upper layer belongs to container root: overlayfs mounted in the user namespace
        // writes there as that uid.
        let root = (!record.spec.privileged).then(|| idmap::host_base(slot));
        let on_volume = record.spec.pool.is_some();
        let made = (|| -> std::io::Result<()> {
            std::fs::create_dir_all(&d.dir)?;
            for dir in [d.merged(), d.lower()] {
                std::fs::create_dir(&dir)?;
            }
            if !on_volume {
                for dir in [d.upper(), d.work()] {
                    std::fs::create_dir(&dir)?;
                    if let Some(uid) = root {
                        std::os::unix::fs::chown(&dir, Some(uid), Some(uid))?;
                    }
                }
            }
            Ok(())
        })();
        if let Err(e) = made {
            let _ = std::fs::remove_dir_all(&d.dir);
            return Err(HostError::io(format!("creating {}", d.dir.display()), e));
        }
        // The record before the volume: a hostd killed in between leaves a container that
        // says its volume is missing and can be deleted, never a volume nobody knows of.
        if let Err(e) = store::save(&self.paths, &record) {
            let _ = std::fs::remove_dir_all(&d.dir);
            return Err(HostError::io(format!("creating {}", d.dir.display()), e));
        }
        if let Err(e) = disk::make(self.bus.as_ref(), &record.spec, &d, root).await {
            let _ = std::fs::remove_dir_all(&d.dir);
            return Err(e);
        }
        let name = record.spec.name.clone();
        tracing::info!(
            ct = %name,
            template = %record.spec.template,
            slot,
            network_us = t_network.as_micros() as u64,
            us = t0.elapsed().as_micros() as u64,
            "container created"
        );
        self.records.insert(name.clone(), record);
        self.info(&name).await
    }

    /// The addresses the containers hold on their networks.
    pub fn held_addresses(&self) -> Vec<Held> {
        self.records
            .values()
            .filter_map(|r| {
                let net = r.spec.network.as_deref()?;
                Some(Held::of(
                    net,
                    &r.spec.addresses,
                    &format!("container {:?}", r.spec.name),
                ))
            })
            .flatten()
            .collect()
    }

    /// Housekeeping, run by hostd every `TICK`: a container whose init ended on its own is
    /// cleaned up now (its port, cgroup and run dir go at once, not at the next request), and
    /// one that rebooted itself is started again. In a pid namespace reboot(2) ends the init
    /// with SIGHUP for a restart (SIGINT for halt/power-off), so an exit by SIGHUP is a reboot.
    pub async fn tick(&mut self) {
        self.ports.retry();
        let ended: Vec<(String, Option<i32>)> = self
            .records
            .keys()
            .filter_map(|n| match self.live(n) {
                Live::Ended(code) => Some((n.clone(), code)),
                _ => None,
            })
            .collect();
        for (name, code) in ended {
            self.settle(&name).await;
            if code == Some(128 + libc::SIGHUP) {
                tracing::info!(ct = %name, "container rebooted itself; starting it again");
                if let Err(e) = self.start(&name).await {
                    tracing::warn!(ct = %name, error = %e, "restart after reboot failed");
                }
            }
        }
    }

    pub async fn start(&mut self, name: &str) -> HostResult<()> {
        self.record(name)?;
        self.settle(name).await;
        match self.live(name) {
            Live::Down => {}
            Live::Running(_) | Live::Paused(_) => {
                return Err(HostError::Conflict(format!(
                    "container {name:?} is running already"
                )));
            }
            Live::Ended(_) => {
                return Err(HostError::Failed(format!(
                    "container {name:?}: the last run could not be cleaned up; see hostd's log"
                )));
            }
        }
        let started = Instant::now();
        let result = self.start_inner(name).await;
        if let Err(e) = &result {
            tracing::warn!(ct = name, error = %e, "start failed; rolling back");
            self.teardown(name).await;
        } else {
            tracing::info!(
                ct = name,
                ms = started.elapsed().as_millis() as u64,
                "container running"
            );
            if let Some(r) = self.records.get_mut(name) {
                r.started = Some(launcher::now());
                r.last_exit = None;
                let _ = store::save(&self.paths, r);
            }
        }
        result
    }

    async fn start_inner(&mut self, name: &str) -> HostResult<()> {
        let t0 = Instant::now();
        let r = self.record(name)?.clone();
        let spec = &r.spec;
        let d = store::dirs(&self.paths, name);
        disk::ensure_mounted(self.bus.as_ref(), spec, &d).await?;
        let run = self.paths.run_dir(name);
        let _ = std::fs::remove_dir_all(&run);
        std::fs::create_dir_all(&run).map_err(|e| HostError::io(run.display(), e))?;
        // Root's alone: the console's attach socket is in it.
        std::fs::set_permissions(&run, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(|e| HostError::io(run.display(), e))?;
        // The cgroup first: a limit this host cannot enforce fails the start before any
        // process exists.
        let cg = match Cgroup::create(Kind::Container, name) {
            Ok(cg) => cg,
            Err(CgroupError::Exists(_)) => {
                // Left by a crash: nothing of ours runs (checked above), so it goes — in a
                // blocking task, as teardown does: kill_all waits for the kernel to settle.
                let owned = name.to_string();
                tokio::task::spawn_blocking(move || {
                    let old = Cgroup::open(Kind::Container, &owned)?;
                    old.kill_all()?;
                    old.remove()
                })
                .await
                .map_err(|e| HostError::Failed(format!("cgroup clean-up task: {e}")))??;
                Cgroup::create(Kind::Container, name).map_err(HostError::from)?
            }
            Err(e) => return Err(e.into()),
        };
        cg.apply(&spec.resources).map_err(HostError::from)?;
        if !spec.privileged {
            // Delegate the group to container root (as LXC does), so that its init may make
            // sub-groups in its cgroup namespace; limits stay in the files it cannot write.
            let root = idmap::host_base(r.slot);
            for f in [
                "",
                "cgroup.procs",
                "cgroup.threads",
                "cgroup.subtree_control",
            ] {
                let p = cg.path().join(f);
                if let Err(e) = std::os::unix::fs::chown(&p, Some(root), Some(root)) {
                    tracing::debug!(ct = name, path = %p.display(), error = %e, "not delegated");
                }
            }
        }
        let t_cgroup = t0.elapsed();
        let launch = LaunchRecord {
            name: name.to_string(),
            run_dir: run.clone(),
            cgroup: Some(cg.path().to_path_buf()),
            guest: Launch {
                lower: self.templates.rootfs(&spec.template),
                lower_mount: d.lower(),
                upper: d.upper(),
                work: d.work(),
                merged: d.merged(),
                console: d.console(),
                hostname: spec.hostname().to_string(),
                argv: spec.argv(),
                privileged: spec.privileged,
                slot: r.slot,
                gateway: spec.gateway.clone(),
            },
        };
        let launch_path = launch
            .write()
            .map_err(|e| HostError::io(run.join(LAUNCH_FILE).display(), e))?;
        let starting = crate::guest::Starting::spawn(
            format!("container {name:?}"),
            self.exe.clone(),
            "--monitor",
            launch_path,
            run.join("monitor.log"),
            HANDSHAKE_TIMEOUT,
        )
        .await?;
        let pid = starting.pid;
        let t_pid = t0.elapsed();
        // Returning with an error below drops `starting`: the monitor then kills the waiting
        // init.
        if let Some(network) = &spec.network {
            self.ports.settle(name).await?;
            let port = self
                .attach_port(name, network, pid, &spec.addresses)
                .await?;
            std::fs::write(run.join(PORT_FILE), &port)
                .map_err(|e| HostError::io("port file", e))?;
        }
        let t_port = t0.elapsed();
        starting.release().await?;
        tracing::info!(
            ct = name,
            pid,
            cgroup_us = t_cgroup.as_micros() as u64,
            monitor_pid_us = t_pid.as_micros() as u64,
            port_us = t_port.as_micros() as u64,
            init_us = t0.elapsed().as_micros() as u64,
            "container init running"
        );
        Ok(())
    }

    async fn attach_port(
        &self,
        name: &str,
        network: &str,
        pid: u32,
        addresses: &[String],
    ) -> HostResult<String> {
        let spec = PortSpec {
            network: network.to_string(),
            owner: super::ports::owner(name),
            kind: PortKind::Veth,
            netns: Some(format!("/proc/{pid}/ns/net")),
            guest_ifname: Some("eth0".into()),
            mac: None,
            vlan: None,
            tagged_vlans: Vec::new(),
            addresses: addresses.to_vec(),
            limits: None,
            port_security: true,
        };
        Ok(crate::netd::attach_port(self.bus.as_ref(), &spec)
            .await?
            .name)
    }

    /// The signal that asks the container's init to shut down, as LXC picks it: systemd
    /// powers off on SIGRTMIN+4 (it ignores SIGPWR without a sigpwr.target, and re-executes on
    /// SIGTERM); other template inits get SIGPWR (sysvinit: powerfail → shutdown; busybox:
    /// halt). A given command gets SIGTERM, what ordinary programs handle. An init without a
    /// handler ignores any of them, and the deadline's SIGKILL ends it.
    fn stop_signal(&self, spec: &ContainerSpec) -> i32 {
        if spec.command.is_some() {
            return libc::SIGTERM;
        }
        let init = self.templates.rootfs(&spec.template).join("sbin/init");
        match std::fs::read_link(&init) {
            Ok(target) if target.to_string_lossy().contains("systemd") => libc::SIGRTMIN() + 4,
            _ => libc::SIGPWR,
        }
    }

    /// Stop, step 1 (under the lock): thaw a paused container and send its init the stop
    /// signal. Steps 2 (`wait_stopped`, without the lock, so that other requests and other
    /// stops go on meanwhile) and 3 (`stop_finish`) follow.
    pub async fn stop_begin(&mut self, name: &str) -> HostResult<StopPlan> {
        let spec = self.record(name)?.spec.clone();
        self.settle(name).await;
        let state = match self.live(name) {
            Live::Running(s) => s,
            Live::Paused(s) => {
                // A frozen init cannot act on a signal: thaw first.
                self.thaw(name).await?;
                s
            }
            _ => {
                return Err(HostError::Conflict(format!(
                    "container {name:?} is not running"
                )));
            }
        };
        // Running also covers an init that just ended and whose monitor is still recording:
        // its pid must not be signalled (it may be reused already).
        if state.alive() {
            // SAFETY: kill(2) with the pid of the init the monitor recorded, checked alive.
            unsafe { libc::kill(state.guest_pid as libc::pid_t, self.stop_signal(&spec)) };
        }
        Ok(StopPlan {
            name: name.to_string(),
            state,
        })
    }

    /// Stop, step 3: clean up (port, cgroup, run dir) and record the exit.
    pub async fn stop_finish(&mut self, name: &str) -> HostResult<()> {
        self.settle(name).await;
        match self.live(name) {
            Live::Down => {
                tracing::info!(ct = name, "container stopped");
                Ok(())
            }
            _ => Err(HostError::Failed(format!(
                "container {name:?} did not stop: its init survived SIGKILL; see hostd's log"
            ))),
        }
    }

    pub async fn stop(&mut self, name: &str, timeout_s: u32) -> HostResult<()> {
        let plan = self.stop_begin(name).await?;
        wait_stopped(&plan, timeout_s).await;
        self.stop_finish(name).await
    }

    /// Whether the container runs (or is paused): what a restart stops first.
    pub async fn is_up(&mut self, name: &str) -> HostResult<bool> {
        self.record(name)?;
        self.settle(name).await;
        Ok(matches!(
            self.live(name),
            Live::Running(_) | Live::Paused(_)
        ))
    }

    async fn thaw(&self, name: &str) -> HostResult<()> {
        self.freeze(name, false).await
    }

    async fn freeze(&self, name: &str, frozen: bool) -> HostResult<()> {
        let owned = name.to_string();
        tokio::task::spawn_blocking(move || {
            Cgroup::open(Kind::Container, &owned).and_then(|cg| cg.freeze(frozen))
        })
        .await
        .map_err(|e| HostError::Failed(e.to_string()))?
        .map_err(HostError::from)?;
        let flag = self.paths.run_dir(name).join(PAUSED_FILE);
        if frozen {
            std::fs::write(&flag, b"").map_err(|e| HostError::io(flag.display(), e))
        } else {
            match std::fs::remove_file(&flag) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(HostError::io(flag.display(), e))
                }
                _ => Ok(()),
            }
        }
    }

    pub async fn pause(&mut self, name: &str) -> HostResult<()> {
        self.record(name)?;
        self.settle(name).await;
        match self.live(name) {
            Live::Running(_) => self.freeze(name, true).await,
            Live::Paused(_) => Err(HostError::Conflict(format!(
                "container {name:?} is paused already"
            ))),
            _ => Err(HostError::Conflict(format!(
                "container {name:?} is not running"
            ))),
        }
    }

    pub async fn resume(&mut self, name: &str) -> HostResult<()> {
        self.record(name)?;
        match self.live(name) {
            Live::Paused(_) => self.freeze(name, false).await,
            _ => Err(HostError::Conflict(format!(
                "container {name:?} is not paused"
            ))),
        }
    }

    /// Holds a running container while the thin pool under its disk is full (`hold`), or lets
    /// it go on once the pool has room; a container paused by its user is left alone. Its
    /// processes are frozen as each leaves the kernel — one blocked on a write to the full
    /// pool freezes when the write completes — so this does not wait for "frozen" as `pause`
    /// does. Returns whether this call held or released it.
    pub async fn hold(&mut self, name: &str, hold: bool) -> HostResult<bool> {
        self.record(name)?;
        let marker = self.paths.run_dir(name).join(HELD_FOR_SPACE);
        if hold {
            if !matches!(self.live(name), Live::Running(_)) {
                return Ok(false);
            }
            std::fs::write(&marker, b"").map_err(|e| HostError::io(marker.display(), e))?;
            let owned = name.to_string();
            tokio::task::spawn_blocking(move || {
                Cgroup::open(Kind::Container, &owned).and_then(|cg| cg.request_freeze(true))
            })
            .await
            .map_err(|e| HostError::Failed(e.to_string()))?
            .map_err(HostError::from)?;
            let flag = self.paths.run_dir(name).join(PAUSED_FILE);
            std::fs::write(&flag, b"").map_err(|e| HostError::io(flag.display(), e))?;
            Ok(true)
        } else {
            if std::fs::remove_file(&marker).is_err() {
                return Ok(false);
            }
            self.freeze(name, false).await?;
            Ok(true)
        }
    }

    /// Holds the container still for a snapshot of its volume (`freeze`): its processes
    /// frozen when it runs, and its layer's filesystem frozen (flushed, consistent on the
    /// volume); or lets it go on. A container paused by its user stays paused. Returns
    /// whether this call froze or thawed its processes.
    pub async fn quiesce(&mut self, name: &str, freeze: bool) -> HostResult<bool> {
        self.record(name)?;
        self.settle(name).await;
        let d = store::dirs(&self.paths, name);
        let marker = self.paths.run_dir(name).join(QUIESCED);
        if freeze {
            let running = matches!(self.live(name), Live::Running(_));
            if running {
                std::fs::write(&marker, b"").map_err(|e| HostError::io(marker.display(), e))?;
                if let Err(e) = self.freeze(name, true).await {
                    let _ = std::fs::remove_file(&marker);
                    return Err(e);
                }
            }
            if let Err(e) = disk::fsfreeze(&d, true) {
                if std::fs::remove_file(&marker).is_ok() {
                    let _ = self.freeze(name, false).await;
                }
                return Err(e);
            }
            Ok(running)
        } else {
            let thawed = disk::fsfreeze(&d, false);
            let resumed = std::fs::remove_file(&marker).is_ok();
            if resumed {
                self.freeze(name, false).await?;
            }
            thawed.map(|()| resumed)
        }
    }

    /// Lets go of the containers a killed hostd left held still for a snapshot.
    pub async fn release_quiesced(&mut self) {
        let names: Vec<String> = self
            .records
            .keys()
            .filter(|n| self.paths.run_dir(n).join(QUIESCED).exists())
            .cloned()
            .collect();
        for name in names {
            match self.quiesce(&name, false).await {
                Ok(_) => tracing::warn!(ct = %name, "let go of a container a snapshot held still"),
                Err(e) => tracing::error!(ct = %name, error = %e, "cannot let a held container go"),
            }
        }
    }

    pub async fn delete(&mut self, name: &str) -> HostResult<()> {
        self.record(name)?;
        self.declared
            .check_delete(declared::Kind::Container, name)?;
        self.settle(name).await;
        if matches!(self.live(name), Live::Running(_) | Live::Paused(_)) {
            return Err(HostError::Conflict(format!(
                "container {name:?} is running; stop it first"
            )));
        }
        self.teardown(name).await;
        if let Some(r) = self.records.get(name) {
            let spec = r.spec.clone();
            disk::remove(self.bus.as_ref(), &spec, &store::dirs(&self.paths, name)).await;
        }
        let dir = self.paths.ct_dir(name);
        // Rename first: a half-deleted container is never loaded as a container again (the
        // store skips dot names). The name is this deletion's own, so the same name may be
        // created and deleted again while this one is still being removed.
        static DELETIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = DELETIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let doomed = self
            .paths
            .containers()
            .join(format!(".{name}.deleting.{}.{n}", std::process::id()));
        std::fs::rename(&dir, &doomed).map_err(|e| HostError::io(dir.display(), e))?;
        if let Some(r) = self.records.remove(name)
            && r.spec.network.is_some()
        {
            crate::netd::forget_owner(self.bus.as_ref(), &ports::owner(name)).await;
        }
        // The container is gone now; removing its files is the disk's time (several ms of
        // ext4 metadata work for the overlay's dirs), not the caller's, and not the runtime's.
        remove_in_background(doomed);
        tracing::info!(ct = name, "container deleted");
        Ok(())
    }

    /// The names stord knows the containers' volume holds by (`ct:NAME`).
    pub fn volume_holders(&self) -> Vec<String> {
        self.records
            .values()
            .filter(|r| r.spec.pool.is_some())
            .map(|r| format!("ct:{}", r.spec.name))
            .collect()
    }

    pub async fn list(&mut self) -> Vec<ContainerInfo> {
        let names: Vec<String> = self.records.keys().cloned().collect();
        let mut out = Vec::new();
        for n in names {
            if let Ok(i) = self.info(&n).await {
                out.push(i);
            }
        }
        out
    }

    pub async fn info(&mut self, name: &str) -> HostResult<ContainerInfo> {
        self.record(name)?;
        self.settle(name).await;
        let r = self.record(name)?;
        let live = self.live(name);
        let (state, pid) = match &live {
            Live::Running(s) => (ContainerState::Running, Some(s.guest_pid)),
            Live::Paused(s) => (ContainerState::Paused, Some(s.guest_pid)),
            _ if r.started.is_some() => (ContainerState::Stopped, None),
            _ => (ContainerState::Created, None),
        };
        let run = self.paths.run_dir(name);
        let running = pid.is_some();
        let port = if running {
            std::fs::read_to_string(run.join(PORT_FILE)).ok()
        } else {
            None
        };
        let usage = if running {
            Cgroup::open(Kind::Container, name)
                .and_then(|cg| cg.usage())
                .ok()
                .map(|mut usage| {
                    if let Some((rx, tx)) = pid.and_then(ports::traffic) {
                        usage.net_rx_bytes = rx;
                        usage.net_tx_bytes = tx;
                    }
                    usage
                })
        } else {
            None
        };
        Ok(ContainerInfo {
            name: name.to_string(),
            template: r.spec.template.clone(),
            state,
            pid,
            exit_code: if running { None } else { r.last_exit },
            hostname: r.spec.hostname().to_string(),
            addresses: r.spec.addresses.clone(),
            port,
            privileged: r.spec.privileged,
            autostart: r.spec.autostart,
            resources: r.spec.resources.clone(),
            usage,
            created: r.created,
            started: r.started,
        })
    }

    pub async fn set(&mut self, name: &str, resources_json: &str) -> HostResult<()> {
        self.record(name)?;
        let given: Resources = serde_json::from_str(resources_json)
            .map_err(|e| HostError::InvalidArgs(format!("resources: {e}")))?;
        if given.is_unset() {
            return Err(HostError::InvalidArgs(
                "resources: give at least one of cpu_limit, cpu_weight, cpuset, memory, swap, \
                 pids, io_weight"
                    .into(),
            ));
        }
        let mut merged = self.record(name)?.spec.resources.clone();
        macro_rules! take {
            ($($f:ident),*) => { $( if given.$f.is_some() { merged.$f = given.$f.clone(); } )* };
        }
        take!(cpu_limit, cpu_weight, cpuset, memory, swap, pids, io_weight);
        merged.validate().map_err(|p| {
            HostError::InvalidArgs(
                p.iter()
                    .map(|m| format!("resources.{m}"))
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        self.settle(name).await;
        if matches!(self.live(name), Live::Running(_) | Live::Paused(_)) {
            Cgroup::open(Kind::Container, name)
                .and_then(|cg| cg.apply(&given))
                .map_err(HostError::from)?;
        }
        if let Some(r) = self.records.get_mut(name) {
            r.spec.resources = merged;
            store::save(&self.paths, r).map_err(|e| HostError::io("saving the record", e))?;
        }
        Ok(())
    }

    /// The init pid exec joins; Conflict unless running.
    pub async fn exec_target(&mut self, name: &str) -> HostResult<(u32, PathBuf)> {
        self.record(name)?;
        self.settle(name).await;
        match self.live(name) {
            Live::Running(s) => Ok((s.guest_pid, self.exe.clone())),
            Live::Paused(_) => Err(HostError::Conflict(format!(
                "container {name:?} is paused; resume it to exec"
            ))),
            _ => Err(HostError::Conflict(format!(
                "container {name:?} is not running; start it to exec"
            ))),
        }
    }

    /// Where container `name`'s files are (`super::files`): its init's root while it runs,
    /// else the layers of its overlay (a layer on a volume mounted again when it is not).
    pub async fn file_target(&mut self, name: &str) -> HostResult<super::files::Target> {
        use super::files::{Layers, Root, Target};
        self.record(name)?;
        self.settle(name).await;
        let r = self.record(name)?.clone();
        let id_base = (!r.spec.privileged).then(|| idmap::host_base(r.slot));
        let root = match self.live(name) {
            Live::Running(s) | Live::Paused(s) => Root::Running { pid: s.guest_pid },
            _ => {
                let d = store::dirs(&self.paths, name);
                disk::ensure_mounted(self.bus.as_ref(), &r.spec, &d).await?;
                Root::Stopped(Layers {
                    lower: self.templates.rootfs(&r.spec.template),
                    lower_mount: d.lower(),
                    upper: d.upper(),
                    work: d.work(),
                    merged: d.merged(),
                    slot: (!r.spec.privileged).then_some(r.slot),
                })
            }
        };
        Ok(Target {
            name: name.to_string(),
            root,
            id_base,
        })
    }

    /// A connection to the console of running (or paused) container `name`.
    pub async fn console_attach(
        &mut self,
        name: &str,
    ) -> HostResult<std::os::unix::net::UnixStream> {
        self.record(name)?;
        self.settle(name).await;
        match self.live(name) {
            Live::Running(_) | Live::Paused(_) => super::console::attach(&self.paths.run_dir(name)),
            _ => Err(HostError::Conflict(format!(
                "container {name:?} is not running; start it to attach its console"
            ))),
        }
    }

    pub fn console_log(&self, name: &str, max_bytes: u32) -> HostResult<String> {
        self.record(name)?;
        super::console::tail(&store::dirs(&self.paths, name).console(), max_bytes)
    }

    /// The containers' names, sorted.
    /// The owners (at netd) of the ports of the containers that run now (paused included).
    pub fn port_owners(&self) -> Vec<String> {
        self.records
            .keys()
            .filter(|n| matches!(self.live(n), Live::Running(_) | Live::Paused(_)))
            .map(|n| super::ports::owner(n))
            .collect()
    }

    pub fn names(&self) -> Vec<String> {
        self.records.keys().cloned().collect()
    }

    pub fn exists(&self, name: &str) -> bool {
        self.records.contains_key(name)
    }

    /// Records (or, with `None`, clears) why host.toml's entry `what` could not be applied.
    pub fn set_config_failed(&mut self, what: &str, why: Option<String>) {
        match why {
            Some(why) => {
                self.config_failed.insert(what.to_string(), why);
            }
            None => {
                self.config_failed.remove(what);
            }
        }
    }

    /// How many host.toml entries hostd could not apply.
    pub fn config_failed(&self) -> usize {
        self.config_failed.len()
    }

    /// host.toml's entries hostd could not apply, with why (`ConfigFailures`).
    pub fn config_failures(&self) -> Vec<(String, String)> {
        self.config_failed
            .iter()
            .map(|(what, why)| (what.clone(), why.clone()))
            .collect()
    }

    /// A container's state, init pid and last exit code as the kernel shows them now, without
    /// cleaning up after an ended one (events look at every tick); None when there is none.
    pub fn state_of(&self, name: &str) -> Option<(ContainerState, Option<u32>, Option<i32>)> {
        let r = self.records.get(name)?;
        Some(match self.live(name) {
            Live::Running(s) => (ContainerState::Running, Some(s.guest_pid), None),
            Live::Paused(s) => (ContainerState::Paused, Some(s.guest_pid), None),
            Live::Ended(code) => (ContainerState::Stopped, None, code.or(Some(255))),
            Live::Down if r.started.is_some() => (ContainerState::Stopped, None, r.last_exit),
            Live::Down => (ContainerState::Created, None, None),
        })
    }

    /// (containers, running, templates).
    pub fn counts(&self) -> (usize, usize, usize) {
        let running = self
            .records
            .keys()
            .filter(|n| matches!(self.live(n), Live::Running(_) | Live::Paused(_)))
            .count();
        (self.records.len(), running, self.templates.list().len())
    }
}

/// Removes a directory hostd no longer uses, in a blocking task when there is a runtime (the
/// caller does not wait for it); what a crash leaves behind, `sweep_deleted` removes at the
/// next start.
fn remove_in_background(dir: PathBuf) {
    let remove = move || {
        if let Err(e) = std::fs::remove_dir_all(&dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %dir.display(), error = %e, "cannot remove a deleted container's files");
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => drop(rt.spawn_blocking(remove)),
        Err(_) => remove(),
    }
}

/// Removes what deletions interrupted by a crash left under STATE/containers (`.NAME.deleting…`).
fn sweep_deleted(paths: &Paths) {
    for e in std::fs::read_dir(paths.containers())
        .into_iter()
        .flatten()
        .flatten()
    {
        let is_deleting = e
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with('.') && n.contains(".deleting"));
        if is_deleting {
            remove_in_background(e.path());
        }
    }
}

/// A stop in progress.
pub struct StopPlan {
    name: String,
    state: MonitorState,
}

/// Stop, step 2: waits up to `timeout_s` for the init to end, then kills the container (SIGKILL
/// to a pid namespace's init kills every process in it; the cgroup kill catches anything that
/// escaped into it otherwise), then waits for the monitor to reap and record (it exits right
/// after). Both waits wake on the process's end (pidfd), not on a poll.
pub async fn wait_stopped(plan: &StopPlan, timeout_s: u32) {
    let s = &plan.state;
    let timeout = Duration::from_secs(u64::from(timeout_s));
    // With no time to wait the first look may not have seen an end that already happened:
    // the pid is checked again before it is killed (it may have been reused since).
    if !crate::guest::wait_gone(s.guest_pid, s.guest_start, timeout).await && s.alive() {
        tracing::info!(ct = %plan.name, timeout_s, "init did not stop in time; killing the container");
        let pid = Pid::from_raw(plan.state.guest_pid as i32);
        let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        // Not waited for here: the monitor's end (below) comes after the init's, and
        // teardown's `kill_all` waits for the group to be empty before removing it.
        if let Err(e) = Cgroup::open(Kind::Container, &plan.name).and_then(|cg| cg.kill()) {
            tracing::debug!(ct = %plan.name, error = %e, "cgroup kill");
        }
    }
    crate::guest::wait_gone(s.monitor_pid, s.monitor_start, REAP_TIMEOUT).await;
}

/// Runs `argv` in the container whose init is `pid`, through the exec helper.
pub async fn exec(
    exe: &Path,
    name: &str,
    pid: u32,
    argv: &[String],
    timeout_s: u32,
) -> HostResult<(i32, String, String)> {
    exec_tagged(exe, name, pid, argv, timeout_s, None).await
}

/// [`exec`], known by `tag` while it runs: `exec::kill(tag)` stops it before its deadline.
pub async fn exec_tagged(
    exe: &Path,
    name: &str,
    pid: u32,
    argv: &[String],
    timeout_s: u32,
    tag: Option<&str>,
) -> HostResult<(i32, String, String)> {
    if argv.is_empty() {
        return Err(HostError::InvalidArgs(
            "argv is empty; give the program to run".into(),
        ));
    }
    if argv.iter().any(|a| a.contains('\0')) {
        return Err(HostError::InvalidArgs(
            "argv has an argument with a NUL byte".into(),
        ));
    }
    let timeout_s = timeout_s.max(1);
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("--ct-exec")
        .arg(name)
        .arg(pid.to_string())
        .arg(timeout_s.to_string())
        .arg("--")
        .args(argv)
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let tagged = super::exec::Tagged::reserve(tag).map_err(HostError::Conflict)?;
    let mut child = cmd
        .spawn()
        .map_err(|e| HostError::io(format!("starting {}", exe.display()), e))?;
    tagged.started(child.id().unwrap_or(0));
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(HostError::Failed(
            "exec helper: its output pipes are missing".into(),
        ));
    };
    // The helper enforces the deadline itself; this one only guards against a stuck helper.
    let (out, status) =
        tokio::time::timeout(Duration::from_secs(u64::from(timeout_s) + 10), async {
            super::exec::read_capped(stdout, stderr, super::exec::OUTPUT_CAP, child.wait()).await
        })
        .await
        .map_err(|_| HostError::Failed(format!("exec in {name:?}: the helper hung")))?
        .map_err(|e| HostError::io("exec helper", e))?;
    let code = status.code().unwrap_or(128);
    let stdout = super::console::bus_text(&out.stdout);
    let stderr = super::console::bus_text(&out.stderr);
    if code == super::exec::HELPER_FAILED && stderr.starts_with(super::exec::HELPER_PREFIX) {
        return Err(HostError::Failed(format!(
            "exec in {name:?}: {}",
            stderr.trim()
        )));
    }
    let cap = super::exec::OUTPUT_CAP;
    if out.truncated() {
        return Err(HostError::TooLarge(format!(
            "exec in {name:?}: the command wrote {} bytes of output (stdout and stderr \
             together; it exited with {code}); the cap is {cap} bytes (16 MiB): write large \
             output to a file in the container instead",
            out.written
        )));
    }
    if stdout.len() + stderr.len() > cap {
        return Err(HostError::TooLarge(format!(
            "exec in {name:?}: the command's output is {} bytes as text (invalid UTF-8 and \
             NUL replaced by U+FFFD; it exited with {code}); the cap is {cap} bytes (16 MiB)",
            stdout.len() + stderr.len()
        )));
    }
    Ok((code, stdout, stderr))
}
