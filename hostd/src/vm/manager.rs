//! hostd's side of VMs: specs kept under STATE/vms/NAME/spec.json, one jailed VMM process per
//! running VM (see `vmm::process`) started through the launcher (`vmm::launcher`, as
//! containers are), its records under RUN/vm/NAME/ (launch.json, the monitor's state.json and
//! exit.json, console.log, vmm.log, the jail root). A hostd restart re-adopts
//! running VMs from those records; `tick` notices VMs that ended while nobody asked and cleans
//! up after them (ports, jail, cgroup), keeping how they ended.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use model::net::{PortKind, PortSpec};
use model::vm::{VmChanges, VmInfo, VmSpec, VmState};
use sha2::Digest;

use vmm::control::{self, Request, SOCKET};
use vmm::jail;
use vmm::launch::{self, JAIL_SNAPSHOT_DIR, Launch, VmLaunch, VmmExit};
use vmm::launcher::{self, EXIT_FILE, LAUNCH_FILE, LaunchRecord, MonitorState, STATE_FILE};
use vmm::machine::{SNAPSHOT_MEMORY, SNAPSHOT_STATE};
use vmm::vstate::memory;
use vmm::{DiskConfig, NetConfig, VmConfig};

use crate::addresses::{self, Held, Others};
use crate::cgroup::{Cgroup, Kind};
use crate::ct::paths::RUN_DIR_ENV;
use crate::declared::Declared;
use crate::error::{HostError, HostResult};

/// How long a VMM may take to build its VM and answer the start handshake.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a VMM's monitor may take to record its end after the VMM is gone.
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a control request may take (a snapshot writes all of guest memory).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
pub const CONSOLE_LOG: &str = "console.log";
const VMM_LOG: &str = "vmm.log";

struct Record {
    spec: VmSpec,
    taps: Vec<String>,
    paused: bool,
    last_exit: Option<String>,
    crashed: bool,
}

impl Record {
    fn new(spec: VmSpec) -> Record {
        Record {
            spec,
            taps: Vec::new(),
            paused: false,
            last_exit: None,
            crashed: false,
        }
    }
}

pub struct VmManager {
    state: PathBuf,
    run: PathBuf,
    exe: PathBuf,
    bus: Option<zbus::Connection>,
    vms: BTreeMap<String, Record>,
    /// host.toml's VMs, which the API may not delete.
    declared: Declared,
}

/// The MACs of a VM's NICs: given ones, else 52:54:00 plus three bytes of a hash of the
/// name and index (stable across restarts and hosts).
pub fn macs(spec: &VmSpec) -> Vec<String> {
    spec.nics
        .iter()
        .enumerate()
        .map(|(i, n)| {
            n.mac.clone().unwrap_or_else(|| {
                let h = sha2::Sha256::digest(format!("{}/{i}", spec.name).as_bytes());
                format!("52:54:00:{:02x}:{:02x}:{:02x}", h[0], h[1], h[2])
            })
        })
        .collect()
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// Whether the host has less RAM than `spec` asks for (vm.create's and vm.set's check).
fn memory_problem(spec: &VmSpec) -> Option<String> {
    let host = memory::host_memory_bytes()?;
    (spec.memory_mib.saturating_mul(memory::MIB) > host).then(|| {
        format!(
            "memory_mib {}: more than the host's {} MiB",
            spec.memory_mib,
            host / memory::MIB
        )
    })
}

/// Reads the first bytes of `path` and says whether it is an ELF or a bzImage.
fn check_kernel(path: &str) -> Result<(), String> {
    let mut f = std::fs::File::open(path).map_err(|e| format!("kernel {path:?}: {e}"))?;
    let mut head = vec![0u8; 0x206];
    let n = f
        .read(&mut head)
        .map_err(|e| format!("kernel {path:?}: {e}"))?;
    let elf = n >= 4 && head[..4] == *b"\x7fELF";
    let bz = n >= 0x206 && head[0x202..0x206] == *b"HdrS";
    if elf || bz {
        Ok(())
    } else {
        Err(format!(
            "kernel {path:?} is neither an ELF vmlinux nor a bzImage"
        ))
    }
}

impl VmManager {
    pub fn new(state: &Path, exe: PathBuf) -> VmManager {
        let run = std::env::var_os(RUN_DIR_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/run/cairn"))
            .join("vm");
        let state = state.join("vms");
        let mut vms = BTreeMap::new();
        if let Ok(dir) = std::fs::read_dir(&state) {
            for e in dir.flatten() {
                let spec_path = e.path().join("spec.json");
                match std::fs::read(&spec_path)
                    .map_err(|e| e.to_string())
                    .and_then(|b| serde_json::from_slice::<VmSpec>(&b).map_err(|e| e.to_string()))
                {
                    Ok(spec) => {
                        vms.insert(spec.name.clone(), Record::new(spec));
                    }
                    Err(err) => {
                        tracing::warn!(path = %spec_path.display(), %err, "skipping a VM whose spec cannot be read")
                    }
                }
            }
        }
        let mut m = VmManager {
            state,
            run,
            exe,
            bus: None,
            declared: Declared::default(),
            vms,
        };
        m.readopt();
        m
    }

    pub fn set_bus(&mut self, bus: zbus::Connection) {
        self.bus = Some(bus);
    }

    fn run_dir(&self, name: &str) -> PathBuf {
        self.run.join(name)
    }

    fn running_state(&self, name: &str) -> Option<MonitorState> {
        launcher::read_state(&self.run_dir(name)).filter(MonitorState::alive)
    }

    /// VMs whose VMM outlived a hostd restart: they keep running; their taps are read back
    /// from launch.json and their paused flag from the VMM.
    fn readopt(&mut self) {
        let names: Vec<String> = self.vms.keys().cloned().collect();
        for name in names {
            if self.running_state(&name).is_none() {
                continue;
            }
            let launch: Option<Launch> = std::fs::read(self.run_dir(&name).join(LAUNCH_FILE))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            let sock = self.run_dir(&name).join("root").join(SOCKET);
            let paused = control::request(&sock, &Request::Info, None, Duration::from_secs(2))
                .map(|r| r.paused)
                .unwrap_or(false);
            if let Some(rec) = self.vms.get_mut(&name) {
                rec.taps = launch
                    .map(|l| l.guest.config.nets.into_iter().map(|n| n.tap).collect())
                    .unwrap_or_default();
                rec.paused = paused;
            }
            tracing::info!(vm = name, paused, "re-adopted a running VM");
        }
    }

    pub fn names(&self) -> Vec<String> {
        self.vms.keys().cloned().collect()
    }

    /// The record of VM `name`. A malformed name cannot name anything: it is refused as
    /// invalid rather than reported as not found.
    fn record(&self, name: &str) -> HostResult<&Record> {
        if let Some(bad) = model::rules::problem(
            "name",
            format_args!("{name:?}"),
            model::rules::vm_name(name),
        ) {
            return Err(HostError::InvalidArgs(bad));
        }
        self.vms
            .get(name)
            .ok_or_else(|| HostError::NotFound(format!("no VM named {name:?}")))
    }

    fn info_of(&self, name: &str, rec: &Record) -> VmInfo {
        let running = self.running_state(name);
        let state = match (&running, rec.paused, rec.crashed, &rec.last_exit) {
            (Some(_), true, _, _) => VmState::Paused,
            (Some(_), false, _, _) => VmState::Running,
            (None, _, true, _) => VmState::Crashed,
            (None, _, false, Some(_)) => VmState::Stopped,
            (None, _, false, None) => VmState::Created,
        };
        VmInfo {
            name: name.to_string(),
            state,
            pid: running.map(|s| s.guest_pid),
            last_exit: rec.last_exit.clone(),
            taps: rec.taps.clone(),
            macs: macs(&rec.spec),
            spec: rec.spec.clone(),
        }
    }

    pub fn list(&self) -> Vec<VmInfo> {
        self.vms.iter().map(|(n, r)| self.info_of(n, r)).collect()
    }

    pub fn info(&self, name: &str) -> HostResult<VmInfo> {
        Ok(self.info_of(name, self.record(name)?))
    }

    /// Checks everything about a spec that needs the host, before anything is stored.
    async fn check_host(&self, spec: &VmSpec, others: &Others) -> HostResult<()> {
        let mut problems = Vec::new();
        if let Err(e) = check_kernel(&spec.kernel) {
            problems.push(e);
        }
        if let Some(initrd) = &spec.initrd {
            match std::fs::metadata(initrd) {
                Ok(m) if m.is_file() && m.len() > 0 => {}
                Ok(_) => problems.push(format!("initrd {initrd:?} is not a non-empty file")),
                Err(e) => problems.push(format!("initrd {initrd:?}: {e}")),
            }
        }
        problems.extend(memory_problem(spec));
        for (i, d) in spec.disks.iter().enumerate() {
            if let Some(v) = &d.volume
                && crate::stord::volume(self.bus.as_ref(), v).await?.is_none()
            {
                problems.push(format!("disks[{i}].volume {v:?}: no such volume"));
            }
            if let Some(p) = &d.path {
                match std::fs::metadata(p) {
                    Ok(m) if m.is_file() => {}
                    Ok(_) => problems.push(format!("disks[{i}].path {p:?} is not a regular file")),
                    Err(e) => problems.push(format!("disks[{i}].path {p:?}: {e}")),
                }
            }
        }
        let mut nets = Vec::new();
        for (i, n) in spec.nics.iter().enumerate() {
            match crate::netd::network_spec(self.bus.as_ref(), &n.network).await {
                Ok(net) => nets.push((i, net)),
                Err(e) if crate::netd::is_not_found(&e) => problems.push(format!(
                    "nics[{i}].network {:?}: no such network",
                    n.network
                )),
                Err(e) => return Err(e),
            }
        }
        if !problems.is_empty() {
            return Err(HostError::InvalidArgs(problems.join("; ")));
        }
        let mut held: Vec<Held> = self
            .vms
            .values()
            .filter(|r| r.spec.name != spec.name)
            .flat_map(|r| held_by(&r.spec))
            .collect();
        held.extend(others.held.iter().cloned());
        for (i, net) in nets {
            let nic = &spec.nics[i];
            addresses::check(&format!("nics[{i}].addresses"), &nic.addresses, &net, &held)?;
            held.extend(Held::of(&net.name, &nic.addresses, &nic_holder(spec, i)));
        }
        Ok(())
    }

    /// The addresses the VMs' NICs hold on their networks.
    pub fn held_addresses(&self) -> Vec<Held> {
        self.vms.values().flat_map(|r| held_by(&r.spec)).collect()
    }

    pub async fn create(&mut self, spec_json: &str) -> HostResult<VmInfo> {
        self.create_among(spec_json, &Others::default()).await
    }

    /// Creates a VM beside the containers named `containers` (containers and VMs share one
    /// namespace).
    pub async fn create_among(
        &mut self,
        spec_json: &str,
        containers: &Others,
    ) -> HostResult<VmInfo> {
        let spec: VmSpec = serde_json::from_str(spec_json)
            .map_err(|e| HostError::InvalidArgs(format!("VM spec: {e}")))?;
        spec.validate()
            .map_err(|e| HostError::InvalidArgs(e.to_string()))?;
        let ct = containers
            .names
            .contains(&spec.name)
            .then(|| format!("container {:?}", spec.name));
        if let Some(taken) = model::rules::problem(
            "vm",
            format_args!("{:?}", spec.name),
            model::rules::guest_name_free(ct.as_deref()),
        ) {
            return Err(HostError::Conflict(taken));
        }
        if self.vms.contains_key(&spec.name) {
            return Err(HostError::Conflict(format!(
                "VM {:?} exists already",
                spec.name
            )));
        }
        self.check_host(&spec, containers).await?;
        self.hold_volumes(&spec).await?;
        let dir = self.state.join(&spec.name);
        let json =
            serde_json::to_vec_pretty(&spec).map_err(|e| HostError::Failed(e.to_string()))?;
        let path = dir.join("spec.json");
        let written = std::fs::create_dir_all(&dir)
            .map_err(|e| HostError::io(dir.display(), e))
            .and_then(|()| {
                std::fs::write(&path, json).map_err(|e| HostError::io(path.display(), e))
            });
        if let Err(e) = written {
            let _ = std::fs::remove_dir_all(&dir);
            self.release_volumes(&spec).await;
            return Err(e);
        }
        if !spec.nics.is_empty() {
            // Port limits netd still keeps for a deleted VM of this name (its delete could
            // not reach netd) are not this one's.
            crate::netd::forget_owner(self.bus.as_ref(), &owner(&spec.name)).await;
        }
        let name = spec.name.clone();
        self.vms.insert(name.clone(), Record::new(spec));
        tracing::info!(vm = name, "VM created");
        self.info(&name)
    }

    /// The VM holds its volumes (stord refuses to delete them) until it is deleted; all or
    /// none.
    async fn hold_volumes(&self, spec: &VmSpec) -> HostResult<()> {
        let holder = owner(&spec.name);
        let mut held = Vec::new();
        for v in spec.disks.iter().filter_map(|d| d.volume.as_deref()) {
            if let Err(e) = crate::stord::open(self.bus.as_ref(), v, &holder).await {
                for v in held {
                    crate::stord::release(self.bus.as_ref(), v, &holder).await;
                }
                return Err(e);
            }
            held.push(v);
        }
        Ok(())
    }

    async fn release_volumes(&self, spec: &VmSpec) {
        let holder = owner(&spec.name);
        for v in spec.disks.iter().filter_map(|d| d.volume.as_deref()) {
            crate::stord::release(self.bus.as_ref(), v, &holder).await;
        }
    }

    /// The names stord knows the VMs' holds by.
    pub fn volume_holders(&self) -> Vec<String> {
        self.vms.keys().map(|n| owner(n)).collect()
    }

    async fn attach_ports(&self, spec: &VmSpec) -> HostResult<Vec<String>> {
        let mut taps = Vec::new();
        for (nic, mac) in spec.nics.iter().zip(macs(spec)) {
            let port = PortSpec {
                network: nic.network.clone(),
                owner: owner(&spec.name),
                kind: PortKind::Tap,
                netns: None,
                guest_ifname: None,
                mac: Some(mac),
                vlan: None,
                tagged_vlans: Vec::new(),
                addresses: nic.addresses.clone(),
                limits: None,
                port_security: true,
            };
            match crate::netd::attach_port(self.bus.as_ref(), &port).await {
                Ok(info) => taps.push(info.name),
                Err(e) => {
                    self.detach_ports(&spec.name).await;
                    return Err(e);
                }
            }
        }
        Ok(taps)
    }

    /// Detaches every port netd has for VM `name`: by owner, so a tap a crashed hostd never
    /// recorded goes too.
    async fn detach_ports(&self, name: &str) {
        if let Err(e) = crate::netd::detach_owner(self.bus.as_ref(), &owner(name)).await {
            tracing::warn!(vm = name, error = %e, "cannot detach the VM's ports");
        }
    }

    pub async fn start(&mut self, name: &str) -> HostResult<()> {
        self.launch(name, None).await
    }

    /// Starts a VMM for `name`: booting, or resuming the snapshot in `snapshot`.
    async fn launch(&mut self, name: &str, snapshot: Option<&Path>) -> HostResult<()> {
        let spec = self.record(name)?.spec.clone();
        if self.running_state(name).is_some() {
            return Err(HostError::Conflict(format!("VM {name:?} is running")));
        }
        // The addresses were checked at create; what is checked again is what can change.
        self.check_host(&spec, &Others::default()).await?;
        let run = self.run_dir(name);
        let root = run.join("root");
        // Whatever a previous run left (a crash before cleanup) goes first.
        let _ = jail::teardown_root(&root);
        std::fs::create_dir_all(&run).map_err(|e| HostError::io(run.display(), e))?;
        // Root's alone: the VMM's control socket (console attach included) is in it.
        std::fs::set_permissions(&run, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(|e| HostError::io(run.display(), e))?;
        let _ = std::fs::remove_file(run.join(EXIT_FILE));
        // Each run's console starts empty (the monitor rotates it while the VM runs).
        let console = run.join(CONSOLE_LOG);
        std::fs::write(&console, b"").map_err(|e| HostError::io(console.display(), e))?;
        let _ = std::fs::remove_file(launcher::console::rotated_path(&console));

        // Not running, so any port of this VM is a leftover (hostd or the VMM killed before
        // it was detached): it goes, or the new attach would conflict with it.
        if !spec.nics.is_empty() {
            crate::netd::detach_owner(self.bus.as_ref(), &owner(name)).await?;
        }
        let cgroup = self.make_cgroup(name, &spec)?;
        let taps = match self.attach_ports(&spec).await {
            Ok(t) => t,
            Err(e) => {
                remove_cgroup(cgroup);
                return Err(e);
            }
        };
        match self
            .spawn_vmm(
                name,
                &spec,
                &run,
                &root,
                &taps,
                snapshot,
                cgroup.as_ref().map(|c| c.path().to_path_buf()),
            )
            .await
        {
            Ok(()) => {
                if let Some(rec) = self.vms.get_mut(name) {
                    rec.taps = taps;
                    rec.paused = false;
                    rec.last_exit = None;
                    rec.crashed = false;
                }
                tracing::info!(vm = name, restored = snapshot.is_some(), "VM started");
                Ok(())
            }
            Err(e) => {
                self.detach_ports(name).await;
                let _ = jail::teardown_root(&root);
                remove_cgroup(cgroup);
                Err(e)
            }
        }
    }

    fn make_cgroup(&self, name: &str, spec: &VmSpec) -> HostResult<Option<Cgroup>> {
        let r = &spec.resources;
        if r.cpu_limit.is_none() && r.cpu_weight.is_none() && r.cpuset.is_none() {
            return Ok(None);
        }
        if let Ok(old) = Cgroup::open(Kind::Vm, name) {
            let _ = old.remove();
        }
        let cg = Cgroup::create(Kind::Vm, name)?;
        if let Err(e) = cg.apply(r) {
            let _ = cg.remove();
            return Err(HostError::Failed(format!("VM {name:?} CPU limits: {e}")));
        }
        Ok(Some(cg))
    }

    #[allow(clippy::too_many_arguments)]
    async fn spawn_vmm(
        &self,
        name: &str,
        spec: &VmSpec,
        run: &Path,
        root: &Path,
        taps: &[String],
        snapshot: Option<&Path>,
        cgroup: Option<PathBuf>,
    ) -> HostResult<()> {
        let mut files: Vec<(PathBuf, String, bool)> = vec![
            (PathBuf::from(&spec.kernel), "kernel".into(), true),
            (PathBuf::from("/dev/kvm"), "dev/kvm".into(), false),
        ];
        if let Some(i) = &spec.initrd {
            files.push((PathBuf::from(i), "initrd".into(), true));
        }
        let mut disks = Vec::new();
        for (i, d) in spec.disks.iter().enumerate() {
            let path = match (&d.volume, &d.path) {
                // Held since vm.create; opening again (idempotent) gives its file.
                (Some(v), _) => Some(
                    crate::stord::open(self.bus.as_ref(), v, &owner(name))
                        .await?
                        .path,
                ),
                (None, p) => p.clone(),
            };
            if let Some(p) = &path {
                files.push((PathBuf::from(p), format!("disk{i}"), d.read_only));
                disks.push(DiskConfig {
                    path: PathBuf::from(format!("/disk{i}")),
                    read_only: d.read_only,
                });
            }
        }
        if !taps.is_empty() {
            files.push((PathBuf::from("/dev/net/tun"), "dev/net/tun".into(), false));
        }
        if let Some(dir) = snapshot {
            for f in [SNAPSHOT_STATE, SNAPSHOT_MEMORY] {
                files.push((
                    dir.join(f),
                    format!("{}/{f}", &JAIL_SNAPSHOT_DIR[1..]),
                    true,
                ));
            }
        }
        let refs: Vec<(&Path, &str, bool)> = files
            .iter()
            .map(|(p, n, ro)| (p.as_path(), n.as_str(), *ro))
            .collect();
        jail::prepare_root(root, &refs, &[])
            .map_err(|e| HostError::Failed(format!("VM {name:?} jail: {e}")))?;

        let mut nets = Vec::new();
        for (tap, mac) in taps.iter().zip(macs(spec)) {
            let mac = parse_mac(&mac)
                .ok_or_else(|| HostError::InvalidArgs(format!("MAC {mac:?} is not valid")))?;
            nets.push(NetConfig {
                tap: tap.clone(),
                mac,
            });
        }
        let config = VmConfig {
            vcpus: u8::try_from(spec.vcpus)
                .map_err(|_| HostError::InvalidArgs(format!("vcpus {}", spec.vcpus)))?,
            mem_mib: u32::try_from(spec.memory_mib)
                .map_err(|_| HostError::InvalidArgs(format!("memory_mib {}", spec.memory_mib)))?,
            kernel: PathBuf::from("/kernel"),
            initrd: spec.initrd.as_ref().map(|_| PathBuf::from("/initrd")),
            cmdline: spec.cmdline.clone(),
            disks,
            nets,
            // The serial port writes to its monitor's pty; the monitor keeps the log.
            console_log: None,
        };
        let launch: Launch = LaunchRecord {
            name: name.to_string(),
            run_dir: run.to_path_buf(),
            cgroup,
            guest: VmLaunch {
                root: root.to_path_buf(),
                config,
                restore: snapshot.is_some(),
                console: Some(run.join(CONSOLE_LOG)),
            },
        };
        let launch_path = launch
            .write()
            .map_err(|e| HostError::io(run.join(LAUNCH_FILE).display(), e))?;

        // The taps are attached already: nothing to do between the pid and go.
        crate::guest::Starting::spawn(
            format!("VM {name:?}"),
            self.exe.clone(),
            "--vmm",
            launch_path,
            run.join(VMM_LOG),
            START_TIMEOUT,
        )
        .await?
        .release()
        .await
    }

    async fn ask(
        &self,
        name: &str,
        req: Request,
        dir: Option<std::fs::File>,
    ) -> HostResult<control::Response> {
        self.record(name)?;
        if self.running_state(name).is_none() {
            return Err(HostError::Conflict(format!("VM {name:?} is not running")));
        }
        let sock = self.run_dir(name).join("root").join(SOCKET);
        tokio::task::spawn_blocking(move || {
            control::request(
                &sock,
                &req,
                dir.as_ref().map(|d| d.as_fd()),
                REQUEST_TIMEOUT,
            )
        })
        .await
        .map_err(|e| HostError::Failed(e.to_string()))?
        .map_err(|e| match e {
            control::ControlError::Busy(why) => HostError::Busy(why),
            e => HostError::Failed(e.to_string()),
        })
    }

    pub async fn pause(&mut self, name: &str) -> HostResult<()> {
        // As for containers: the wrong state is a conflict, not a silent success.
        if self.record(name)?.paused && self.running_state(name).is_some() {
            return Err(HostError::Conflict(format!(
                "VM {name:?} is paused already"
            )));
        }
        self.ask(name, Request::Pause, None).await?;
        if let Some(r) = self.vms.get_mut(name) {
            r.paused = true;
        }
        Ok(())
    }

    pub async fn resume(&mut self, name: &str) -> HostResult<()> {
        if !self.record(name)?.paused && self.running_state(name).is_some() {
            return Err(HostError::Conflict(format!("VM {name:?} is not paused")));
        }
        self.ask(name, Request::Resume, None).await?;
        if let Some(r) = self.vms.get_mut(name) {
            r.paused = false;
        }
        Ok(())
    }

    /// Pauses a running VM for a snapshot of its volume (`freeze`: its disk writes are
    /// synchronous, so paused means the volume is as the guest left it), or resumes it. A VM
    /// paused by its user stays paused. Returns whether this call paused or resumed it.
    pub async fn quiesce(&mut self, name: &str, freeze: bool) -> HostResult<bool> {
        let running = self.running_state(name).is_some();
        let paused = self.record(name)?.paused;
        let marker = self.run_dir(name).join(crate::ct::manager::QUIESCED);
        if freeze {
            if running && !paused {
                std::fs::write(&marker, b"").map_err(|e| HostError::io(marker.display(), e))?;
                if let Err(e) = self.pause(name).await {
                    let _ = std::fs::remove_file(&marker);
                    return Err(e);
                }
                return Ok(true);
            }
            Ok(false)
        } else if std::fs::remove_file(&marker).is_ok() {
            self.resume(name).await?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// Resumes the VMs a killed hostd left paused for a snapshot.
    pub async fn release_quiesced(&mut self) {
        let names: Vec<String> = self
            .vms
            .keys()
            .filter(|n| self.run_dir(n).join(crate::ct::manager::QUIESCED).exists())
            .cloned()
            .collect();
        for name in names {
            match self.quiesce(&name, false).await {
                Ok(_) => tracing::warn!(vm = %name, "resumed a VM a snapshot held still"),
                Err(e) => tracing::error!(vm = %name, error = %e, "cannot resume a held VM"),
            }
        }
    }

    pub async fn console_input(&self, name: &str, data: &str) -> HostResult<()> {
        self.ask(
            name,
            Request::ConsoleInput {
                data: data.to_string(),
            },
            None,
        )
        .await
        .map(|_| ())
    }

    /// Snapshots into `dir`, a new (or empty) directory.
    pub async fn snapshot(&mut self, name: &str, dir: &str) -> HostResult<()> {
        let path = Path::new(dir);
        if !path.is_absolute() {
            return Err(HostError::InvalidArgs(format!(
                "snapshot directory {dir:?} must be absolute"
            )));
        }
        if path.join(SNAPSHOT_STATE).exists() {
            return Err(HostError::Conflict(format!(
                "{dir:?} already holds a snapshot"
            )));
        }
        self.record(name)?;
        // Refused before anything is made: a VM that does not run has nothing to snapshot.
        if self.running_state(name).is_none() {
            return Err(HostError::Conflict(format!("VM {name:?} is not running")));
        }
        let made = make_dirs(path).map_err(|e| HostError::io(dir, e))?;
        let result = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags_dir()
            .open(path)
        {
            Ok(fd) => self
                .ask(name, Request::Snapshot, Some(fd))
                .await
                .map(|_| ()),
            Err(e) => Err(HostError::io(dir, e)),
        };
        if result.is_err() {
            // No half-written snapshot stays behind: its files, and the directories we made.
            for f in [SNAPSHOT_STATE, SNAPSHOT_MEMORY] {
                let _ = std::fs::remove_file(path.join(f));
            }
            remove_dirs(&made);
        }
        result
    }

    /// Starts `name` from the snapshot in `dir` (the VM must not be running).
    pub async fn restore(&mut self, name: &str, dir: &str) -> HostResult<()> {
        let path = Path::new(dir);
        for f in [SNAPSHOT_STATE, SNAPSHOT_MEMORY] {
            if !path.join(f).is_file() {
                return Err(HostError::InvalidArgs(format!(
                    "{dir:?} has no {f}: not a snapshot"
                )));
            }
        }
        self.launch(name, Some(path)).await
    }

    /// Asks the guest to shut down (Ctrl-Alt-Del), waits `timeout_s`, then ends the VMM.
    pub async fn stop(&mut self, name: &str, timeout_s: u32) -> HostResult<()> {
        self.record(name)?;
        if let Some(state) = self.running_state(name) {
            let _ = self.ask(name, Request::CtrlAltDel, None).await;
            let (pid, start) = (state.guest_pid, state.guest_start);
            let gone = |timeout| crate::guest::wait_gone(pid, start, timeout);
            if !gone(Duration::from_secs(u64::from(timeout_s))).await {
                let _ = self.ask(name, Request::Stop, None).await;
                if !gone(Duration::from_secs(1)).await && state.alive() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            // The monitor writes exit.json right after reaping (slowly on a loaded host) and
            // then exits.
            crate::guest::wait_gone(state.monitor_pid, state.monitor_start, EXIT_TIMEOUT).await;
        }
        self.cleanup(name).await;
        Ok(())
    }

    /// Changes the spec of stopped VM `name` (its vCPUs, memory): checked by vm.create's
    /// rules, written whole (a new spec.json renamed over the old), used at the next start.
    pub fn set(&mut self, name: &str, changes_json: &str) -> HostResult<VmInfo> {
        let changes: VmChanges = serde_json::from_str(changes_json)
            .map_err(|e| HostError::InvalidArgs(format!("VM changes: {e}")))?;
        let old = self.record(name)?.spec.clone();
        self.declared
            .check_delete(crate::declared::Kind::Vm, name)?;
        if self.running_state(name).is_some() {
            return Err(HostError::Conflict(format!(
                "VM {name:?} is running; stop it first"
            )));
        }
        let new = changes
            .apply(&old)
            .map_err(|e| HostError::InvalidArgs(e.to_string()))?;
        if let Some(problem) = memory_problem(&new) {
            return Err(HostError::InvalidArgs(problem));
        }
        let json = serde_json::to_vec_pretty(&new).map_err(|e| HostError::Failed(e.to_string()))?;
        let path = self.state.join(name).join("spec.json");
        model::files::write_atomic(&path, &json).map_err(|e| HostError::io(path.display(), e))?;
        if let Some(r) = self.vms.get_mut(name) {
            r.spec = new;
        }
        tracing::info!(vm = name, ?changes, "VM changed");
        self.info(name)
    }

    pub fn set_declared(&mut self, declared: Declared) {
        self.declared = declared;
    }

    pub async fn delete(&mut self, name: &str) -> HostResult<()> {
        self.record(name)?;
        self.declared
            .check_delete(crate::declared::Kind::Vm, name)?;
        if self.running_state(name).is_some() {
            return Err(HostError::Conflict(format!(
                "VM {name:?} is running; stop it first"
            )));
        }
        self.cleanup(name).await;
        let dir = self.state.join(name);
        std::fs::remove_dir_all(&dir).map_err(|e| HostError::io(dir.display(), e))?;
        let _ = std::fs::remove_dir_all(self.run_dir(name));
        if let Some(r) = self.vms.remove(name) {
            self.release_volumes(&r.spec).await;
            if !r.spec.nics.is_empty() {
                crate::netd::forget_owner(self.bus.as_ref(), &owner(name)).await;
            }
        }
        tracing::info!(vm = name, "VM deleted");
        Ok(())
    }

    /// A connection to the serial console of running VM `name`: reads are its output from
    /// now on, writes its input (the VMM keeps one attached client; a newer one takes over).
    pub async fn console_attach(&self, name: &str) -> HostResult<std::os::unix::net::UnixStream> {
        self.record(name)?;
        if self.running_state(name).is_none() {
            return Err(HostError::Conflict(format!(
                "VM {name:?} is not running; start it to attach its console"
            )));
        }
        let sock = self.run_dir(name).join("root").join(SOCKET);
        tokio::task::spawn_blocking(move || control::attach(&sock, Duration::from_secs(5)))
            .await
            .map_err(|e| HostError::Failed(e.to_string()))?
            .map_err(|e| HostError::Failed(e.to_string()))
    }

    pub fn console(&self, name: &str, max_bytes: u32) -> HostResult<String> {
        self.record(name)?;
        crate::ct::console::tail(&self.run_dir(name).join(CONSOLE_LOG), max_bytes)
    }

    /// After a VMM ended: records how, releases its ports, jail and cgroup.
    async fn cleanup(&mut self, name: &str) {
        let run = self.run_dir(name);
        let exit: Result<VmmExit, String> =
            launcher::read_exit(&run).and_then(|e| e.ok_or_else(|| format!("no {EXIT_FILE}")));
        if let Some(r) = self.vms.get_mut(name) {
            r.taps.clear();
        }
        self.detach_ports(name).await;
        if let Err(e) = jail::teardown_root(&run.join("root")) {
            tracing::warn!(vm = name, error = %e, "cannot remove the jail");
        }
        if let Ok(cg) = Cgroup::open(Kind::Vm, name) {
            let _ = cg.remove();
        }
        let _ = std::fs::remove_file(run.join(STATE_FILE));
        if let Some(rec) = self.vms.get_mut(name) {
            rec.paused = false;
            match exit {
                Ok(exit) => {
                    let how = launch::describe(&exit);
                    rec.crashed = launch::crashed(&exit);
                    if rec.crashed {
                        tracing::warn!(vm = name, %how, "VMM crashed");
                    } else {
                        tracing::info!(vm = name, %how, "VM ended");
                    }
                    rec.last_exit = Some(how);
                }
                Err(why) => {
                    // Said, not hidden: the VM ended but its monitor left no readable record.
                    tracing::warn!(vm = name, %why, "VM ended without an exit record");
                    rec.last_exit = Some(format!("ended without an exit record ({why})"));
                }
            }
        }
    }

    /// Housekeeping: VMs whose VMM ended since the last look are cleaned up.
    pub async fn tick(&mut self) {
        let ended: Vec<String> = self
            .vms
            .keys()
            .filter(|n| {
                // A VMM that runs now is not ended, whatever exit.json a slow monitor of an
                // earlier run left.
                let run = self.run_dir(n);
                run.join(EXIT_FILE).exists()
                    && run.join("root").exists()
                    && self.running_state(n).is_none()
            })
            .cloned()
            .collect();
        for name in ended {
            self.cleanup(&name).await;
        }
    }

    /// The owners (at netd) of the ports of the VMs that run now.
    pub fn port_owners(&self) -> Vec<String> {
        self.vms
            .keys()
            .filter(|n| self.running_state(n).is_some())
            .map(|n| owner(n))
            .collect()
    }

    pub fn counts(&self) -> (usize, usize) {
        let running = self
            .vms
            .keys()
            .filter(|n| self.running_state(n).is_some())
            .count();
        (self.vms.len(), running)
    }
}

/// The addresses a VM's NICs hold.
fn held_by(spec: &VmSpec) -> Vec<Held> {
    spec.nics
        .iter()
        .enumerate()
        .flat_map(|(i, n)| Held::of(&n.network, &n.addresses, &nic_holder(spec, i)))
        .collect()
}

fn nic_holder(spec: &VmSpec, i: usize) -> String {
    format!("VM {:?} nic {i}", spec.name)
}

/// The owner of VM `name`'s ports at netd.
fn owner(name: &str) -> String {
    format!("vm:{name}")
}

trait DirOpen {
    fn custom_flags_dir(&mut self) -> &mut Self;
}

impl DirOpen for std::fs::OpenOptions {
    fn custom_flags_dir(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
    }
}

fn remove_cgroup(cg: Option<Cgroup>) {
    if let Some(cg) = cg {
        let _ = cg.remove();
    }
}

/// `create_dir_all` that answers which directories it made, the deepest last; what it made
/// before a failure is removed again.
fn make_dirs(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut missing: Vec<PathBuf> = path
        .ancestors()
        .take_while(|a| !a.as_os_str().is_empty() && !a.exists())
        .map(Path::to_path_buf)
        .collect();
    missing.reverse();
    let mut made = Vec::new();
    for d in missing {
        match std::fs::create_dir(&d) {
            Ok(()) => made.push(d),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && d.is_dir() => {}
            Err(e) => {
                remove_dirs(&made);
                return Err(e);
            }
        }
    }
    Ok(made)
}

/// Removes directories `make_dirs` made, deepest first; one that is not empty stays.
fn remove_dirs(made: &[PathBuf]) {
    for d in made.iter().rev() {
        let _ = std::fs::remove_dir(d);
    }
}

#[cfg(test)]
mod tests {
    use super::{make_dirs, remove_dirs};

    #[test]
    fn made_directories_are_the_missing_ones_and_only_they_go() {
        let base = std::env::temp_dir().join(format!("hostd-make-dirs-{}", std::process::id()));
        std::fs::create_dir_all(&base).unwrap();
        let leaf = base.join("a/b/c");
        let made = make_dirs(&leaf).unwrap();
        assert_eq!(made, [base.join("a"), base.join("a/b"), leaf.clone()]);
        assert!(
            make_dirs(&leaf).unwrap().is_empty(),
            "nothing to make twice"
        );
        remove_dirs(&made);
        assert!(!base.join("a").exists() && base.exists());
        std::fs::remove_dir(&base).unwrap();
    }

    /// vm.set changes the spec of a VM that does not run, by vm.create's rules, and the
    /// change outlives hostd (a new manager reads it back); a bad change changes nothing.
    #[tokio::test]
    async fn set_changes_a_stopped_vm_by_the_create_rules() {
        use super::{HostError, VmManager};
        let base = std::env::temp_dir().join(format!("hostd-vm-set-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        let kernel = base.join("vmlinux");
        std::fs::write(&kernel, b"\x7fELF and not much else").unwrap();
        let name = format!("set{}", std::process::id());
        let mut vms = VmManager::new(&base, "/nonexistent/hostd".into());
        let spec = serde_json::json!({"name": name, "memory_mib": 64, "kernel": kernel});
        vms.create(&spec.to_string()).await.unwrap();

        let info = vms
            .set(&name, r#"{"vcpus": 2, "memory_mib": 128}"#)
            .unwrap();
        assert_eq!((info.spec.vcpus, info.spec.memory_mib), (2, 128));
        let info = vms.set(&name, r#"{"memory_mib": 96}"#).unwrap();
        assert_eq!(
            (info.spec.vcpus, info.spec.memory_mib),
            (2, 96),
            "only what is given"
        );

        for (bad, says) in [
            (r#"{"vcpus": 9}"#, "vcpus"),
            (r#"{"vcpus": 0, "memory_mib": 64}"#, "vcpus"),
            (r#"{"memory_mib": 0}"#, "memory_mib"),
            (r#"{"memory_mib": 1099511627776}"#, "memory_mib"),
            ("{}", "nothing to change"),
            (r#"{"kernel": "/other"}"#, "unknown field"),
        ] {
            match vms.set(&name, bad) {
                Err(HostError::InvalidArgs(m)) => assert!(m.contains(says), "{bad}: {m}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert!(matches!(
            vms.set("nosuchvm", r#"{"vcpus": 2}"#),
            Err(HostError::NotFound(_))
        ));
        // A VM whose guest runs (its monitor's record names a live process: this test's) is
        // not changed under it.
        vms.run = base.join("run");
        let own = std::process::id();
        let start = vmm::launcher::start_time(own).unwrap();
        let state = vmm::launcher::MonitorState {
            monitor_pid: own,
            monitor_start: start,
            guest_pid: own,
            guest_start: start,
            started: 0,
        };
        let run_dir = vms.run.join(&name);
        std::fs::create_dir_all(&run_dir).unwrap();
        std::fs::write(
            run_dir.join(vmm::launcher::STATE_FILE),
            serde_json::to_vec(&state).unwrap(),
        )
        .unwrap();
        match vms.set(&name, r#"{"vcpus": 1}"#) {
            Err(HostError::Conflict(m)) => assert!(m.contains("running"), "{m}"),
            other => panic!("a running VM: {other:?}"),
        }
        std::fs::remove_dir_all(&run_dir).unwrap();
        let again = VmManager::new(&base, "/nonexistent/hostd".into());
        let info = again.info(&name).unwrap();
        assert_eq!((info.spec.vcpus, info.spec.memory_mib), (2, 96));
        std::fs::remove_dir_all(&base).unwrap();
    }
}
