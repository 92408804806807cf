//! `ct.*` and `template.*`: OS containers and their templates, served by hostd.

use serde::{Deserialize, Serialize};

use super::{actions, rpc_type};
use crate::ct::{ContainerInfo, ContainerSpec, Resources, TemplateInfo};

/// What `ct.exec` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecOutput {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
}

rpc_type!("struct": ContainerSpec, ContainerInfo, Resources, TemplateInfo, ExecOutput);

actions! { ACTIONS;
    TemplateImport = "template.import", Hostd,
        (name: String, path: String, sha256: String, pool: Option<String>) -> TemplateInfo,
        "Imports an OS template: template.import(name, path, sha256, pool?) unpacks the rootfs \
         tarball at path (on the host) once its digest matches sha256 (\"sha256:<hex>\"). With \
         pool (a dir or nfs pool; thin and iscsi pools hold no files: 105), the tarball and its \
         rootfs are kept in the pool's directory under templates/NAME/ and containers made from \
         the template overlay that copy; without, hostd's state keeps it. path may also be an \
         http:// or https:// URL (https checked against the Mozilla roots): apid downloads it \
         first (streamed, its sha256 checked on the way, at most 5 redirects; nothing kept \
         when it does not match: 102); run it as a task (task.start) to see the download's \
         progress and to have more than a request's 30 s. path bundled:NAME names a template \
         the image carries (bundled:busybox in images built with --debug-shell): sha256 may \
         then be \"\", the digest the image carries beside it is checked (no such template: \
         104). path upload:NAME names a tarball sent with PUT /uploads/NAME (no such upload: \
         104); it is consumed (removed) once imported. Returns {name, version?, sha256, \
         size_bytes, pool?}. Unpacking may take up to 25 s.";
    TemplateList = "template.list", Hostd, () -> Vec<TemplateInfo>,
        "Every template: {name, version?, sha256, size_bytes, pool? (the pool that keeps it)}.";
    TemplateDelete = "template.delete", Hostd, (name: String) -> bool,
        "Deletes a template that no container uses and host.toml does not declare, with its \
         files in the pool that kept it. While a pool keeps templates, pool.delete refuses it \
         (105).";
    CtCreate = "ct.create", Hostd, (spec: ContainerSpec) -> ContainerInfo,
        "Creates (does not start) a container from {name, template, network?, addresses?, \
         gateway?, hostname?, command?, privileged?, resources?, pool?, disk?}; resources: \
         {cpu_limit? (% of one CPU), cpu_weight?, cpuset?, memory? (bytes), swap?, pids?, \
         io_weight?}; pool and disk (bytes, at least 16 MiB; both or neither) put the writable \
         layer on a volume POOL/ct-NAME of that size: a hard quota. Returns the container as \
         ct.info shows it.";
    CtStart = "ct.start", Hostd, (name: String) -> bool,
        "Starts a created or stopped container.";
    CtStop = "ct.stop", Hostd, (name: String) -> bool,
        "Stops a container: signals its init, waits up to 10 s, then kills every process. \
         ct.stopTimeout takes another grace period.";
    CtStopTimeout = "ct.stopTimeout", Hostd, (name: String, seconds: u32) -> bool,
        "ct.stopTimeout(name, seconds): as ct.stop with a grace period of 0 to 20 seconds (0 \
         kills at once).";
    CtRestart = "ct.restart", Hostd, (name: String) -> bool,
        "Stops (as ct.stop) and starts a container again.";
    CtPause = "ct.pause", Hostd, (name: String) -> bool,
        "Freezes every process of a running container (cgroup freezer).";
    CtResume = "ct.resume", Hostd, (name: String) -> bool,
        "Thaws a paused container.";
    CtDelete = "ct.delete", Hostd, (name: String) -> bool,
        "Deletes a stopped container that host.toml does not declare, and everything it \
         had on the host.";
    CtList = "ct.list", Hostd, () -> Vec<ContainerInfo>,
        "Every container, as ct.info describes it.";
    CtInfo = "ct.info", Hostd, (name: String) -> ContainerInfo,
        "One container: {name, template, state (created|running|paused|stopped), pid?, \
         exit_code?, hostname, addresses, port?, privileged, resources, usage?: {cpu_usec, \
         memory_bytes, pids, io_read_bytes, io_write_bytes, net_rx_bytes, net_tx_bytes, \
         oom_kills}, created, started?}, usage read now.";
    CtSet = "ct.set", Hostd, (name: String, resources: Resources) -> bool,
        "Changes a container's limits live, without a restart: {cpu_limit?, cpu_weight?, \
         cpuset?, memory?, swap?, pids?, io_weight?}; only the members given change.";
    CtExec = "ct.exec", Hostd, (name: String, argv: Vec<String>) -> ExecOutput,
        "ct.exec(name, argv): runs argv inside a running container, killed after 20 s (after \
         1 h when run as a task; task.cancel kills it and what it started: 137). Returns \
         {exit_code, stdout, stderr}.";
    CtConsole = "ct.console", Hostd, (name: String) -> String,
        "The last 64 KiB of a container's console log.";
}
