//! `host.*`: the appliance itself, as init and the daemons report it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{actions, rpc_type};
use crate::dbus::ServiceInfo;
pub use crate::install::{DiskInfo, JobReport};
pub use crate::update::SlotsInfo;

/// What `host.info` answers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostInfo {
    pub hostname: String,
    pub version: String,
    /// Seconds since boot; left out when init does not answer (then `init_error` says why).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<Vec<ServiceInfo>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_error: Option<String>,
    /// `running`, or `maintenance` when no valid config was found (then `config_problem`
    /// says why); left out when init does not answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Where the running config came from: `url` (cairn.config=), `state` (saved), `medium`
    /// (the boot image's), `label` (a filesystem labelled CAIRN-CONFIG), or `none` in
    /// maintenance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_problem: Option<String>,
    /// The OS, its slots and the last update (left out in a sandbox or when init does not
    /// answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<SlotsInfo>,
    /// By daemon name: its version and object counts, or the error that kept it from answering.
    pub daemons: BTreeMap<String, DaemonReport>,
    pub management: Management,
    /// host.toml's items a daemon could not apply, with why; left out when there are none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_failures: Vec<ConfigFailure>,
}

/// One host.toml item a daemon could not apply.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFailure {
    /// `hostd` or `netd`.
    pub daemon: String,
    /// What it is, as `container web1`, `vm deb`, `template alpine`, `network lan`.
    pub item: String,
    pub reason: String,
}

/// One daemon as `host.info` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DaemonReport {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Object counts (`containers`, `vms`, …).
    #[serde(flatten)]
    pub counts: BTreeMap<String, u64>,
}

/// The API's own interface as netd configured it, or why netd did not say.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Management {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// `a.b.c.d/len`, or empty when the interface has no address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// `static`, `dhcp` or `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

rpc_type!("struct": HostInfo, ServiceInfo, DiskInfo, JobReport, SlotsInfo, ConfigFailure);

actions! { ACTIONS;
    Info = "host.info", Apid, () -> HostInfo,
        "Describes the host: hostname, version, uptime (seconds), kernel, services (as \
         host.services) and daemons ({netd, stord, hostd}: each the daemon's version and object \
         counts, or {error} when it does not answer) and management ({interface, address, \
         source}: the API's own interface as netd configured it, source static, dhcp or none; \
         or {error}), mode (running, or maintenance when no valid config was found: \
         config_problem says why), config_source (url, state, medium, label or none), os \
         ({os_version, slot (a or b; empty on a live system), versions ({a, b}: what each slot \
         holds), last_update (ok: …, failed: …, rolled back by hand …)}), config_failures \
         ([{daemon, item, reason}]: host.toml's items hostd or netd could not apply and why, \
         e.g. {hostd, container web1, no template named …}; left out when none). When init \
         does not answer, uptime, kernel, services and mode are left out and init_error says \
         why.";
    Services = "host.services", Init, () -> Vec<ServiceInfo>,
        "Lists the services init supervises: an array of {name, state, pid, restarts, since, \
         last_error} structs; pid is 0 when the service has no process, since is the Unix time \
         of the last state change, last_error says why the service last stopped unasked (exited, \
         killed, lost its bus name, stopped answering; empty when it never did).";
    RestartService = "host.restartService", Init, (name: String) -> bool,
        "host.restartService(name): stops the service (SIGTERM, then SIGKILL after 5 s) and \
         starts it again; a failed service is started afresh with its crash count reset. Returns \
         true once init has accepted the request; host.services shows the progress. Unknown \
         service -> 104.";
    ApplyConfig = "host.applyConfig", Init, (text: String, dry_run: Option<bool>) -> Vec<String>,
        "host.applyConfig(text[, dry_run]): validates text as the whole host.toml and returns \
         what applying it changes, one line per item (hostname, management, api, each network, \
         template, container and VM added, changed or no longer declared). Unless dry_run, saves \
         it on the state partition (where the next boot looks first) and applies it without a \
         reboot: the services restart with it a second after the answer, re-adopting what runs; \
         a host in maintenance mode becomes running. The API then takes the new config's \
         tokens. Errors -> 102 with every file:line:col, and nothing changes.";
    Disks = "host.disks", Init, () -> Vec<DiskInfo>,
        "Lists the host's disks for host.install: an array of {name, size_bytes, model, holds, \
         unusable} structs; holds says what is on a disk now (a partition table, a filesystem \
         and its label; empty when blank), unusable why the installer cannot take it at all (it \
         holds the running state, too small, read-only; empty when it can).";
    Install = "host.install", Init, (disk: String, config: Option<String>, force: Option<bool>) -> bool,
        "host.install(disk[, config[, force]]): installs Cairn onto disk (a name from host.disks: \
         GPT, BIOS and UEFI boot, OS slots A and B, the state partition) from the live system \
         booted off the ISO or PXE, with config (a whole host.toml, validated first: errors -> \
         102 with every file:line:col) saved as its config; without one the installed host \
         boots into maintenance mode. A disk that holds a partition table or a filesystem is \
         refused (105) unless force; an unknown disk -> 104; an unusable one, or an install \
         already running -> 105. Returns true once the install has started; \
         host.installStatus shows its progress.";
    InstallStatus = "host.installStatus", Init, () -> JobReport,
        "The last host.install of this boot: {state, disk, step, done_bytes, total_bytes, \
         error}; state is idle (none yet), running, done or failed (error says why, and the \
         disk holds no partition table: nothing boots from a half-written disk).";
    Update = "host.update", Init, (url: String, reboot: Option<bool>) -> bool,
        "host.update(url[, reboot]): takes the update bundle at url — http://, fetched onto the \
         state partition, or upload:NAME, a bundle sent with PUT /uploads/NAME (taken over, so \
         it is gone afterwards; no such upload -> 104) — checks it whole — every part's sha256 and size against its MANIFEST, and \
         the minisign signature when host.toml's [update] public_key pins a key — and only \
         then writes it to the OS slot that is not running, reads it back and tells GRUB to \
         try it at the next boot (2 boots; the new system must get every service running and \
         the API ready, or GRUB goes back to this one, which reports the failed update). With \
         reboot (default false) the host reboots into it once written. A bad or unsigned \
         bundle -> 102 and nothing is written; not installed, or an update running -> 105. \
         Returns true once started; host.updateStatus follows it.";
    UpdateStatus = "host.updateStatus", Init, () -> JobReport,
        "The last host.update of this boot: {state (idle, running, done, failed), disk (the \
         slot written), step, done_bytes, total_bytes (of the download), error}.";
    Rollback = "host.rollback", Init, () -> String,
        "Makes the other OS slot the one that boots and reboots into it (after a good update: \
         back to the version before). Returns what was done, in words. Not installed, or the \
         other slot holds nothing -> 105.";
    Reboot = "host.reboot", Init, () -> bool,
        "Reboots the host. Returns true once init has accepted the request.";
    Poweroff = "host.poweroff", Init, () -> bool,
        "Powers the host off. Returns true once init has accepted the request.";
}
