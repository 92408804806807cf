//! D-Bus names, object paths and client proxies of Cairn's daemons.
//!
//! Every daemon owns one well-known name and serves one interface at one path; hostd also serves
//! one `org.cairn.Container1` object per container (`container_path`). The bus address
//! comes from `DBUS_SYSTEM_BUS_ADDRESS`, which `init` sets for every daemon it starts.

use zbus::proxy;

pub const INIT_NAME: &str = "org.cairn.Init1";
pub const INIT_PATH: &str = "/org/cairn/Init1";
pub const HOST_NAME: &str = "org.cairn.Host1";
pub const HOST_PATH: &str = "/org/cairn/Host1";
/// hostd serves one `org.cairn.Container1` object per container under this path.
pub const CONTAINER_PATH_PREFIX: &str = "/org/cairn/Host1/ct/";
pub const NETWORK_NAME: &str = "org.cairn.Network1";
pub const NETWORK_PATH: &str = "/org/cairn/Network1";
pub const STORAGE_NAME: &str = "org.cairn.Storage1";
pub const STORAGE_PATH: &str = "/org/cairn/Storage1";
/// apid has no interface of its own yet; it owns this name so that init can tell it is ready.
pub const API_NAME: &str = "org.cairn.Api1";

/// The signal init and hostd send for each event (`event.list`): `(what, kind, name, detail)`,
/// e.g. `("ct", "started", "web1", "")`, `("service", "crashed", "hostd", "killed by SIGKILL")`.
pub const EVENT_SIGNAL: &str = "Event";

/// The environment variable that carries the bus address to every daemon.
pub const BUS_ADDRESS_ENV: &str = "DBUS_SYSTEM_BUS_ADDRESS";

/// The daemons init supervises, in start order, with the bus name that marks each one ready.
pub const SERVICES: [(&str, &str); 4] = [
    ("netd", NETWORK_NAME),
    ("stord", STORAGE_NAME),
    ("hostd", HOST_NAME),
    ("apid", API_NAME),
];

/// One supervised service as `ListServices` reports it. On the wire: `(ssuuts)`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceInfo {
    pub name: String,
    /// One of `ServiceState::as_str`.
    pub state: String,
    /// 0 when the service has no process.
    pub pid: u32,
    pub restarts: u32,
    /// Unix time (seconds) of the last state change.
    pub since: u64,
    /// Why the service last stopped without being asked to (it exited, was killed, lost its
    /// bus name, stopped answering, could not be started): what its last restart, back-off or
    /// `failed` state is about. Empty when that never happened.
    #[serde(default)]
    pub last_error: String,
}

pub type ServiceTuple = (String, String, u32, u32, u64, String);

impl From<ServiceTuple> for ServiceInfo {
    fn from((name, state, pid, restarts, since, last_error): ServiceTuple) -> Self {
        ServiceInfo {
            name,
            state,
            pid,
            restarts,
            since,
            last_error,
        }
    }
}

impl From<ServiceInfo> for ServiceTuple {
    fn from(s: ServiceInfo) -> Self {
        (s.name, s.state, s.pid, s.restarts, s.since, s.last_error)
    }
}

/// A daemon's `Status()` answer: its version and counts of the objects it manages. On the wire:
/// `(sa{su})`.
pub type StatusTuple = (String, std::collections::HashMap<String, u32>);

#[proxy(
    interface = "org.cairn.Init1",
    default_service = "org.cairn.Init1",
    default_path = "/org/cairn/Init1"
)]
pub trait Init1 {
    fn list_services(&self) -> zbus::Result<Vec<ServiceTuple>>;
    /// Stops (if running) and starts a service again; also revives a `failed` one. An unknown
    /// name is `NotFound`.
    fn restart_service(&self, name: &str) -> Result<(), CairnError>;
    fn reboot(&self) -> zbus::Result<()>;
    fn poweroff(&self) -> zbus::Result<()>;
    /// Seconds since init started, and the kernel release (`uname -r`).
    fn system_info(&self) -> zbus::Result<(u64, String)>;
    /// This boot's mode (`running`, `maintenance`), config source and maintenance reason.
    fn boot_info(&self) -> zbus::Result<(String, String, String)>;
    /// Validates a whole host.toml and answers the changes applying it makes; unless
    /// `dry_run`, saves and applies it (the services restart with it).
    fn apply_config(&self, text: &str, dry_run: bool) -> Result<Vec<String>, CairnError>;
    /// JSON array of `model::install::DiskInfo`; Conflict in a sandbox.
    fn list_disks(&self) -> Result<String, CairnError>;
    /// Starts installing onto `disk` with `config` (empty: none); `host.install`'s errors.
    fn install(&self, disk: &str, config: &str, force: bool) -> Result<(), CairnError>;
    /// JSON `model::install::JobReport`.
    fn install_status(&self) -> Result<String, CairnError>;
    /// Starts an update from the bundle at `url`; `host.update`'s errors.
    fn update(&self, url: &str, reboot: bool) -> Result<(), CairnError>;
    /// JSON `model::install::JobReport` of the last update.
    fn update_status(&self) -> Result<String, CairnError>;
    /// Boots the other slot from now on (and reboots); what was done, in words.
    fn rollback(&self) -> Result<String, CairnError>;
    /// JSON `model::update::SlotsInfo`.
    fn slots(&self) -> Result<String, CairnError>;
    /// Loads the image's module group (modules.d, e.g. `storage`); the modules that failed
    /// ("PATH: why"). No such group (a sandbox) → NotFound.
    fn load_modules(&self, group: &str) -> Result<Vec<String>, CairnError>;
    /// JSON `model::api::event::LogPage`: the lines kept of `service` ("" for all) at
    /// `min_level` or above after `since`, at most `max`; waits up to `wait_s` (at most 25)
    /// for one when none is there yet. Unknown service or level: InvalidArgs.
    fn logs(
        &self,
        service: &str,
        min_level: &str,
        since: u64,
        max: u32,
        wait_s: u32,
    ) -> Result<String, CairnError>;
}

#[proxy(
    interface = "org.cairn.Host1",
    default_service = "org.cairn.Host1",
    default_path = "/org/cairn/Host1"
)]
pub trait Host1 {
    fn status(&self) -> zbus::Result<StatusTuple>;
    /// host.toml's items hostd could not apply: (item, why).
    fn config_failures(&self) -> Result<Vec<(String, String)>, CairnError>;
    /// Imports a template from a rootfs tarball (a path on the host) whose sha256 must match
    /// (`sha256:<hex>`); returns JSON `model::ct::TemplateInfo`.
    fn import_template(
        &self,
        name: &str,
        tarball: &str,
        sha256: &str,
    ) -> Result<String, CairnError>;
    /// As `import_template`, kept in stord pool `pool` (a dir or nfs pool) under its
    /// directory's `templates/NAME/`; `pool` empty: hostd's state, as `import_template`.
    fn import_template_in_pool(
        &self,
        name: &str,
        tarball: &str,
        sha256: &str,
        pool: &str,
    ) -> Result<String, CairnError>;
    /// Holds a volume's user still (`freeze`) for a snapshot, or lets it go on: `holder` is
    /// `ct:NAME` (its processes frozen and its layer's filesystem frozen, flushed) or
    /// `vm:NAME` (paused). A guest that is not running needs nothing; one paused by someone
    /// else stays paused. Returns whether it was held still by this call.
    fn quiesce(&self, holder: &str, freeze: bool) -> Result<bool, CairnError>;
    /// Holds a guest (`ct:NAME`, `vm:NAME`) while the thin pool under its disk is full — a
    /// container's processes frozen as they leave the kernel, a VM paused — or lets it go on
    /// (`hold` false) once the pool has room. Whether this call held or released it (a guest
    /// not running, or paused by its user, is left alone).
    fn hold(&self, holder: &str, hold: bool) -> Result<bool, CairnError>;
    /// JSON array of `model::ct::TemplateInfo`.
    fn list_templates(&self) -> Result<String, CairnError>;
    fn delete_template(&self, name: &str) -> Result<(), CairnError>;
    /// Creates (does not start) a container from a JSON `model::ct::ContainerSpec`; returns
    /// JSON `model::ct::ContainerInfo`.
    fn create_container(&self, spec_json: &str) -> Result<String, CairnError>;
    fn start_container(&self, name: &str) -> Result<(), CairnError>;
    /// Signals the container's init, waits up to `timeout_s`, then kills it.
    fn stop_container(&self, name: &str, timeout_s: u32) -> Result<(), CairnError>;
    fn restart_container(&self, name: &str, timeout_s: u32) -> Result<(), CairnError>;
    /// Freezes every process of the container (cgroup freezer).
    fn pause_container(&self, name: &str) -> Result<(), CairnError>;
    fn resume_container(&self, name: &str) -> Result<(), CairnError>;
    /// Deletes a stopped container and everything it had on the host.
    fn delete_container(&self, name: &str) -> Result<(), CairnError>;
    /// JSON array of `model::ct::ContainerInfo`.
    fn list_containers(&self) -> Result<String, CairnError>;
    /// JSON `model::ct::ContainerInfo`, with usage read now.
    fn container_info(&self, name: &str) -> Result<String, CairnError>;
    /// Changes a running container's limits live: JSON `model::ct::Resources`, only the
    /// fields given change.
    fn set_container(&self, name: &str, resources_json: &str) -> Result<(), CairnError>;
    /// Runs `argv` inside the container; returns (exit code, stdout, stderr), NUL and invalid
    /// UTF-8 as U+FFFD. More than 16 MiB of output (the two together) is `TooLarge`.
    fn exec(
        &self,
        name: &str,
        argv: Vec<String>,
        timeout_s: u32,
    ) -> Result<(i32, String, String), CairnError>;
    /// As `exec`, known by `tag` (1 to 128 bytes, unique among running execs: 105) until it
    /// ends, so that `kill_exec` can stop it.
    fn exec_tagged(
        &self,
        name: &str,
        argv: Vec<String>,
        timeout_s: u32,
        tag: &str,
    ) -> Result<(i32, String, String), CairnError>;
    /// Kills the exec tagged `tag`, its whole process group (it answers 137); whether one ran.
    fn kill_exec(&self, tag: &str) -> Result<bool, CairnError>;
    /// The last `max_bytes` (1 to 1 MiB) of the container's console log.
    fn console_log(&self, name: &str, max_bytes: u32) -> Result<String, CairnError>;
    /// A connected socket to the console of guest `name` (`kind` "ct" or "vm"): reads are its
    /// output from now on, writes its input; one attached client per guest, the newest wins.
    fn console_attach(&self, kind: &str, name: &str) -> Result<zbus::OwnedFd, CairnError>;
    /// Starts `argv` in running container `name` on a new pty of `rows` x `cols` (the command
    /// is a session leader with the pty as its controlling terminal; `env_json` is a JSON object
    /// of variables added to PATH, container=cairn and TERM=xterm): (exec id, the pty's master).
    /// The command ends by itself, or gets SIGHUP when the last copy of the master is closed.
    fn exec_tty(
        &self,
        name: &str,
        argv: Vec<String>,
        env_json: &str,
        rows: u16,
        cols: u16,
    ) -> Result<(u64, zbus::OwnedFd), CairnError>;
    /// Waits for exec `id` (of `exec_tty`) to end: its exit code (128+N when killed by signal
    /// N). The code is kept for a minute after the end for a late waiter; an unknown id is
    /// NotFound.
    fn exec_wait(&self, id: u64) -> Result<i32, CairnError>;
    /// Sends signal `signal` (1 to 64) to exec `id`'s command and the process group it leads.
    fn exec_signal(&self, id: u64, signal: i32) -> Result<(), CairnError>;
    /// Container `name`'s regular file `path` (absolute, no . or ..), opened by hostd inside
    /// the container's root (running or stopped): (fd, permission bits, size).
    fn file_open_read(
        &self,
        name: &str,
        path: &str,
    ) -> Result<(zbus::OwnedFd, u32, u64), CairnError>;
    /// Starts writing container `name`'s `path`: a hidden temporary beside it, `mode` its
    /// permission bits, `uid`/`gid` its owner as the container sees them; (fd to write the
    /// bytes to, token). Nothing shows at `path` until `file_commit(token)`.
    fn file_open_write(
        &self,
        name: &str,
        path: &str,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<(zbus::OwnedFd, String), CairnError>;
    /// Renames the written file into place (synced first); its size.
    fn file_commit(&self, token: &str) -> Result<u64, CairnError>;
    /// Drops an uncommitted write; whether there was one.
    fn file_abort(&self, token: &str) -> Result<bool, CairnError>;
    /// Creates (does not start) a VM from a JSON `model::vm::VmSpec`: checks the kernel,
    /// initrd, disks, networks and memory; returns JSON `model::vm::VmInfo`.
    fn create_vm(&self, spec_json: &str) -> Result<String, CairnError>;
    /// Starts the VM's jailed VMM process (taps attached, kernel booted).
    fn start_vm(&self, name: &str) -> Result<(), CairnError>;
    /// Asks the guest to power off (Ctrl-Alt-Del on the i8042), waits up to `timeout_s`, then
    /// kills the VMM.
    fn stop_vm(&self, name: &str, timeout_s: u32) -> Result<(), CairnError>;
    fn pause_vm(&self, name: &str) -> Result<(), CairnError>;
    fn resume_vm(&self, name: &str) -> Result<(), CairnError>;
    /// Writes guest memory, vCPU and device state into `dir` (a new directory on the host);
    /// the VM is paused for the copy and left as it was.
    fn snapshot_vm(&self, name: &str, dir: &str) -> Result<(), CairnError>;
    /// Replaces a stopped (or created) VM's run with a new VMM process resumed from the
    /// snapshot in `dir`.
    fn restore_vm(&self, name: &str, dir: &str) -> Result<(), CairnError>;
    /// Changes a stopped VM's vCPUs and memory (JSON `model::vm::VmChanges`); returns JSON
    /// `model::vm::VmInfo`.
    fn set_vm(&self, name: &str, changes_json: &str) -> Result<String, CairnError>;
    /// Deletes a VM that is not running, and everything it had on the host.
    fn delete_vm(&self, name: &str) -> Result<(), CairnError>;
    /// JSON array of `model::vm::VmInfo`.
    fn list_vms(&self) -> Result<String, CairnError>;
    /// JSON `model::vm::VmInfo`.
    fn vm_info(&self, name: &str) -> Result<String, CairnError>;
    /// The last `max_bytes` (1 to 1 MiB) of the VM's serial console log.
    fn vm_console(&self, name: &str, max_bytes: u32) -> Result<String, CairnError>;
    /// Sends `data` to the VM's serial console input.
    fn vm_console_input(&self, name: &str, data: &str) -> Result<(), CairnError>;
}

/// The object path of container `name`'s `org.cairn.Container1` object: `-` (not allowed in
/// object paths) becomes `_` (not allowed in container names), so the mapping is one-to-one.
pub fn container_path(name: &str) -> String {
    format!("{CONTAINER_PATH_PREFIX}{}", name.replace('-', "_"))
}

/// One container, served by hostd at `container_path(name)`; the same operations as the
/// `*Container` methods of Host1. Build it with `.path(container_path(name))`.
#[proxy(
    interface = "org.cairn.Container1",
    default_service = "org.cairn.Host1"
)]
pub trait Container1 {
    #[zbus(property(emits_changed_signal = "false"))]
    fn name(&self) -> zbus::Result<String>;
    /// `model::ct::ContainerState::as_str`: created, running, paused or stopped.
    #[zbus(property(emits_changed_signal = "false"))]
    fn state(&self) -> zbus::Result<String>;
    /// The init's pid on the host; 0 when not running.
    #[zbus(property(emits_changed_signal = "false"))]
    fn pid(&self) -> zbus::Result<u32>;
    fn start(&self) -> Result<(), CairnError>;
    /// Signals the container's init, waits up to `timeout_s`, then kills it.
    fn stop(&self, timeout_s: u32) -> Result<(), CairnError>;
    /// JSON `model::ct::ContainerInfo`.
    fn info(&self) -> Result<String, CairnError>;
}

/// Errors Cairn's daemons return over D-Bus. The error name says what kind of failure it is
/// (`org.cairn.Error.NotFound`, …) and apid maps each kind to one XML-RPC fault code; the
/// message names the field or object and what is wrong with it.
#[derive(zbus::DBusError, Debug)]
#[zbus(prefix = "org.cairn.Error")]
pub enum CairnError {
    #[zbus(error)]
    ZBus(zbus::Error),
    /// A request argument is malformed or out of range; nothing was changed.
    InvalidArgs(String),
    /// The named object does not exist.
    NotFound(String),
    /// The object exists already, or its state forbids the request.
    Conflict(String),
    /// Try again later.
    Busy(String),
    /// The kernel or a peer refused; what this request had done is rolled back.
    Failed(String),
    /// The answer would be larger than its cap (D-Bus carries at most 32 MiB a message); the
    /// message says how large it was and what the cap is.
    TooLarge(String),
}

impl CairnError {
    /// The stable API fault a daemon's verdict is reported as, with its message; the one place
    /// where error kinds become fault codes. A bus failure is no verdict: it comes back as is.
    pub fn into_fault(self) -> Result<(crate::fault::FaultCode, String), zbus::Error> {
        use crate::fault::FaultCode;
        match self {
            CairnError::ZBus(e) => Err(e),
            CairnError::InvalidArgs(m) => Ok((FaultCode::BadParams, m)),
            CairnError::NotFound(m) => Ok((FaultCode::NotFound, m)),
            CairnError::Conflict(m) => Ok((FaultCode::Conflict, m)),
            CairnError::Busy(m) => Ok((FaultCode::Busy, m)),
            CairnError::Failed(m) => Ok((FaultCode::Internal, m)),
            CairnError::TooLarge(m) => Ok((FaultCode::TooLarge, m)),
        }
    }
}

/// Structured arguments and answers (network and port specs, info read back from the kernel)
/// travel as JSON strings of the serde types in `model::net`: D-Bus has no optional fields, and
/// one JSON schema serves D-Bus, XML-RPC and cairnctl alike.
#[proxy(
    interface = "org.cairn.Network1",
    default_service = "org.cairn.Network1",
    default_path = "/org/cairn/Network1"
)]
pub trait Network1 {
    fn status(&self) -> zbus::Result<StatusTuple>;
    /// host.toml's networks netd could not apply: (item, why).
    fn config_failures(&self) -> Result<Vec<(String, String)>, CairnError>;
    /// (interface, "a.b.c.d/len" or "", "static" | "dhcp" | "none").
    fn management_address(&self) -> zbus::Result<(String, String, String)>;
    /// Creates a network from a JSON `model::net::NetworkSpec`.
    fn create_network(&self, spec_json: &str) -> Result<(), CairnError>;
    /// Deletes a network that has no ports left.
    fn delete_network(&self, name: &str) -> Result<(), CairnError>;
    /// JSON array of `model::net::NetworkInfo`, each read back from the kernel.
    fn list_networks(&self) -> Result<String, CairnError>;
    /// JSON `model::net::NetworkInfo` of one network.
    fn network_info(&self, name: &str) -> Result<String, CairnError>;
    /// JSON `model::net::NetworkSpec` of one network as netd records it: no kernel readback,
    /// so it costs the same with 2 ports or 2 000 (hostd checks each guest's create with it).
    fn network_spec(&self, name: &str) -> Result<String, CairnError>;
    /// Attaches a port from a JSON `model::net::PortSpec`; returns a JSON `model::net::PortInfo`.
    fn attach_port(&self, spec_json: &str) -> Result<String, CairnError>;
    fn detach_port(&self, port: &str) -> Result<(), CairnError>;
    /// Detaches every port of `owner` (`ct:NAME`, `vm:NAME`), whatever the owner remembers of
    /// them; returns their names.
    fn detach_owner(&self, owner: &str) -> Result<Vec<String>, CairnError>;
    /// The owner is gone for good (hostd: its guest was deleted): its ports are detached and
    /// the limits netd keeps for its next ports (what `SetLimits` gave its port) dropped;
    /// returns the detached ports' names.
    fn forget_owner(&self, owner: &str) -> Result<Vec<String>, CairnError>;
    /// An owner of ports says which of its guests run: every port whose owner starts with one
    /// of `prefixes` and is not in `owners` is detached (hostd at start: what died while it was
    /// away); returns their names.
    fn keep_owners(&self, prefixes: &[&str], owners: &[&str]) -> Result<Vec<String>, CairnError>;
    /// JSON array of `model::net::PortInfo`.
    fn list_ports(&self) -> Result<String, CairnError>;
    /// Sets the limits (JSON `model::net::Limits`) of a port, or the aggregate of a network,
    /// live: the port keeps its link and its traffic. A port's limits are kept for its owner:
    /// the owner's next port on that network gets them (a guest's restart).
    fn set_limits(&self, target: &str, limits_json: &str) -> Result<(), CairnError>;
}

#[proxy(
    interface = "org.cairn.Storage1",
    default_service = "org.cairn.Storage1",
    default_path = "/org/cairn/Storage1"
)]
pub trait Storage1 {
    fn status(&self) -> zbus::Result<StatusTuple>;
    /// Makes a pool (JSON `model::storage::PoolSpec`); JSON `PoolInfo`.
    fn create_pool(&self, spec_json: &str) -> Result<String, CairnError>;
    fn delete_pool(&self, name: &str) -> Result<(), CairnError>;
    /// JSON array of `model::storage::PoolInfo`.
    fn list_pools(&self) -> Result<String, CairnError>;
    fn pool_info(&self, name: &str) -> Result<String, CairnError>;
    /// Makes a volume (JSON `model::storage::VolumeSpec`); JSON `VolumeInfo`.
    fn create_volume(&self, spec_json: &str) -> Result<String, CairnError>;
    fn delete_volume(&self, volume: &str) -> Result<(), CairnError>;
    /// JSON array of `model::storage::VolumeInfo`: of one pool, or every pool's ("").
    fn list_volumes(&self, pool: &str) -> Result<String, CairnError>;
    fn volume_info(&self, volume: &str) -> Result<String, CairnError>;
    fn grow_volume(&self, volume: &str, size: &str) -> Result<String, CairnError>;
    fn snapshot_volume(&self, volume: &str, snapshot: &str) -> Result<String, CairnError>;
    fn clone_volume(&self, source: &str, volume: &str) -> Result<String, CairnError>;
    /// JSON `model::storage::BackupInfo` of a backup of `volume` into `pool`.
    fn backup_volume(&self, volume: &str, pool: &str) -> Result<String, CairnError>;
    /// JSON `VolumeInfo` of the volume made from `backup`.
    fn restore_volume(&self, backup: &str, volume: &str) -> Result<String, CairnError>;
    /// Deletes `snapshot` (POOL/NAME@SNAP); JSON `VolumeInfo` of its volume afterwards.
    fn delete_snapshot(&self, snapshot: &str) -> Result<String, CairnError>;
    /// JSON `VolumeInfo` of the volume made from `image`, an absolute path of a raw disk image
    /// on the host (left where it is).
    fn import_volume(&self, image: &str, volume: &str) -> Result<String, CairnError>;
    /// Deletes `backup` (a file in a pool's backups/ directory) and its sha256 beside it.
    fn delete_backup(&self, backup: &str) -> Result<(), CairnError>;
    /// `holder` (`vm:NAME`) uses `volume` from now on (until released): it cannot be deleted.
    /// Returns JSON `VolumeInfo` (its `path` is what the guest opens). Idempotent.
    fn open_volume(&self, volume: &str, holder: &str) -> Result<String, CairnError>;
    /// `holder` no longer uses `volume` (one already released, or gone, is fine).
    fn release_volume(&self, volume: &str, holder: &str) -> Result<(), CairnError>;
    /// The holders starting with `prefix` that still exist are `holders`: every other one's
    /// holds are released (hostd at start: what was deleted while it was away). Returns
    /// what was released, as `VOLUME by HOLDER`.
    fn keep_holders(&self, prefix: &str, holders: &[&str]) -> Result<Vec<String>, CairnError>;
    /// A thin pool filled (`full`: its writes wait, `guests` were held) or has room again
    /// (`guests` went on).
    #[zbus(signal)]
    fn pool_space(&self, pool: &str, full: bool, guests: Vec<String>) -> zbus::Result<()>;
    /// Exports a volume as an iSCSI LUN (JSON `model::export::ExportSpec`); JSON `ExportInfo`.
    fn create_export(&self, spec_json: &str) -> Result<String, CairnError>;
    fn delete_export(&self, name: &str) -> Result<(), CairnError>;
    /// JSON array of `model::export::ExportInfo`.
    fn list_exports(&self) -> Result<String, CairnError>;
    fn export_info(&self, name: &str) -> Result<String, CairnError>;
}

/// The configuration of Cairn's bus (dbus-daemon), listening on `socket`. The policy is part of
/// the contract: only root connects — every daemon runs as root and apid is the network
/// boundary — and on the bus everything is trusted. Tests start private buses with it too.
pub fn bus_config(socket: &std::path::Path) -> String {
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <deny user="*"/>
    <allow user="root"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow receive_sender="*"/>
  </policy>
  <limit name="max_replies_per_connection">1024</limit>
</busconfig>
"#,
        socket.display()
    )
}

/// Connects to the bus named by `DBUS_SYSTEM_BUS_ADDRESS`.
pub async fn connect_bus() -> zbus::Result<zbus::Connection> {
    bus_builder()?.build().await
}

/// A connection builder for the bus named by `DBUS_SYSTEM_BUS_ADDRESS`, for daemons that add
/// their name and object before connecting.
pub fn bus_builder() -> zbus::Result<zbus::connection::Builder<'static>> {
    let address = std::env::var(BUS_ADDRESS_ENV).map_err(|_| {
        zbus::Error::Address(format!(
            "{BUS_ADDRESS_ENV} is not set: start Cairn daemons through init"
        ))
    })?;
    Ok(zbus::connection::Builder::address(address.as_str()))
}
