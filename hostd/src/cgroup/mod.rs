//! cgroup v2 groups for guests, one API for both kinds: containers' `<root>/cairn.slice/ct-NAME`
//! and VMs' `<root>/cairn.slice/vm-NAME` (a VMM's vCPU threads get the same CPU limits as a
//! container's processes). The launcher clones a guest's first process straight into its
//! group (`vmm::launcher`); everything else about groups is here.
//!
//! Every container gets a group, even where the v2 hierarchy offers no controllers (a hybrid
//! dev machine): the group alone gives freezing (pause/resume), a complete process list, and
//! `cgroup.kill`. Limits need their controller; asking for one the hierarchy lacks is a clear
//! error, never a silently ignored limit.
//!
//! The calls are synchronous file I/O on cgroupfs (microseconds), except `freeze` and
//! `kill_all`, which wait up to 5 s for the kernel to settle: call those from a blocking task.

mod hierarchy;

pub use hierarchy::ROOT_ENV;

use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use model::ct::{Resources, Usage};

/// The group under the root that holds every guest's group.
pub const SLICE: &str = "cairn.slice";

/// Whose group: the kind of guest names the group's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Container,
    Vm,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Kind::Container => "ct-",
            Kind::Vm => "vm-",
        }
    }
}
/// `cpu.max` period: 100 ms, the kernel's default, so 1% of a CPU is a 1 ms quota.
const CPU_PERIOD_USEC: u64 = 100_000;
/// How long freezing, thawing and killing may take before we call the group stuck.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(5);
/// The controllers containers use, enabled down to `cairn.slice` wherever the hierarchy has them.
const CONTROLLERS: [&str; 5] = ["cpu", "cpuset", "memory", "pids", "io"];
/// The files a cgroup's owner may be given (cgroup v2 delegation), one per line.
const DELEGATE_LIST: &str = "/sys/kernel/cgroup/delegate";
/// The ones without which a host cannot enforce the basic limits (see `controllers_available`).
const REQUIRED: [&str; 3] = ["cpu", "memory", "pids"];

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error(
        "no cgroup v2 hierarchy: /proc/self/mountinfo has no cgroup2 mount (mount one at \
         /sys/fs/cgroup, or point {ROOT_ENV} at a v2 group)"
    )]
    NoHierarchy,
    #[error(
        "{0:?} cannot name a guest's cgroup: use 1 to 64 of A-Z a-z 0-9 _ . -, not \
         starting with '.'"
    )]
    BadName(String),
    #[error(
        "cgroup {} exists already: a container of that name is running or was not cleaned up",
        .0.display()
    )]
    Exists(PathBuf),
    #[error("cgroup {} does not exist", .0.display())]
    NotFound(PathBuf),
    #[error(
        "{field} needs the cgroup v2 {controller} controller, which this kernel's v2 hierarchy \
         does not offer{}",
        if *.v1_holds_it { " (cgroup v1 holds it)" } else { "" }
    )]
    NoController {
        field: &'static str,
        controller: &'static str,
        v1_holds_it: bool,
    },
    #[error("invalid limits: {0}")]
    Invalid(String),
    #[error("{op} {}: {source}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: the group did not become {want} within {} s", .path.display(), SETTLE_TIMEOUT.as_secs())]
    Timeout { path: PathBuf, want: &'static str },
    #[error("sending SIGKILL to pid {pid} of {}: {source}", .path.display())]
    Kill {
        pid: u32,
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
}

type Result<T> = std::result::Result<T, CgroupError>;

/// True when the v2 hierarchy offers the controllers that container limits need: cpu, memory
/// and pids (io and cpuset are checked when a limit asks for them). False on a hybrid host
/// whose v1 hierarchies hold them.
pub fn controllers_available() -> bool {
    let Some(root) = hierarchy::root() else {
        return false;
    };
    let have = hierarchy::controllers_of(&root);
    REQUIRED.iter().all(|c| have.iter().any(|h| h == c))
}

/// The names of the guests of `kind` that have a group now (for re-adoption after a restart).
pub fn names(kind: Kind) -> Result<Vec<String>> {
    let root = hierarchy::root().ok_or(CgroupError::NoHierarchy)?;
    let slice = root.join(SLICE);
    let entries = match std::fs::read_dir(&slice) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("listing", &slice, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_err("listing", &slice, e))?;
        if let Some(name) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.strip_prefix(kind.prefix()))
            && entry.path().is_dir()
        {
            names.push(name.to_string());
        }
    }
    names.sort();
    Ok(names)
}

/// One guest's cgroup. Dropping it leaves the group alone (the guest may outlive hostd);
/// `remove` deletes it.
#[derive(Debug)]
pub struct Cgroup {
    path: PathBuf,
}

impl Cgroup {
    /// Makes `<root>/cairn.slice/{ct,vm}-NAME`, first enabling the guest controllers the
    /// hierarchy has in the subtree_control of the root and of cairn.slice.
    pub fn create(kind: Kind, name: &str) -> Result<Cgroup> {
        let path = group_path(kind, name)?;
        let root = path
            .parent()
            .and_then(Path::parent)
            .ok_or(CgroupError::NoHierarchy)?
            .to_path_buf();
        let slice = root.join(SLICE);
        match std::fs::create_dir(&slice) {
            Ok(()) => tracing::info!(path = %slice.display(), "made the containers' cgroup"),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err("creating", &slice, e)),
        }
        enable_controllers(&root);
        enable_controllers(&slice);
        match std::fs::create_dir(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(CgroupError::Exists(path));
            }
            Err(e) => return Err(io_err("creating", &path, e)),
        }
        tracing::debug!(path = %path.display(), "cgroup created");
        Ok(Cgroup { path })
    }

    /// The existing group of guest NAME, e.g. after a hostd restart.
    pub fn open(kind: Kind, name: &str) -> Result<Cgroup> {
        let path = group_path(kind, name)?;
        if !path.is_dir() {
            return Err(CgroupError::NotFound(path));
        }
        Ok(Cgroup { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sets the limits that are `Some`, live; the others stay as they are. Every requested
    /// controller is checked before anything is written, so a refused request changes nothing.
    pub fn apply(&self, r: &Resources) -> Result<()> {
        r.validate()
            .map_err(|problems| CgroupError::Invalid(problems.join("; ")))?;
        // (field, controller, file, value)
        let mut writes: Vec<(&'static str, &'static str, &'static str, String)> = Vec::new();
        if let Some(pct) = r.cpu_limit {
            // % of one CPU → a quota per 100 ms period; 200% = 2 CPUs' worth of quota.
            let quota = u64::from(pct) * CPU_PERIOD_USEC / 100;
            writes.push((
                "cpu_limit",
                "cpu",
                "cpu.max",
                format!("{quota} {CPU_PERIOD_USEC}"),
            ));
        }
        if let Some(w) = r.cpu_weight {
            writes.push(("cpu_weight", "cpu", "cpu.weight", w.to_string()));
        }
        if let Some(set) = &r.cpuset {
            writes.push(("cpuset", "cpuset", "cpuset.cpus", set.clone()));
        }
        if let Some(m) = r.memory {
            writes.push(("memory", "memory", "memory.max", m.to_string()));
        }
        if let Some(s) = r.swap {
            writes.push(("swap", "memory", "memory.swap.max", s.to_string()));
        }
        if let Some(p) = r.pids {
            writes.push(("pids", "pids", "pids.max", p.to_string()));
        }
        if let Some(w) = r.io_weight {
            // "default W" sets the group's weight for every device.
            writes.push(("io_weight", "io", "io.weight", format!("default {w}")));
        }
        if writes.is_empty() {
            return Ok(());
        }
        let have = hierarchy::controllers_of(&self.path);
        for (field, controller, _, _) in &writes {
            if !have.iter().any(|h| h == controller) {
                return Err(CgroupError::NoController {
                    field,
                    controller,
                    v1_holds_it: hierarchy::v1_holds(controller),
                });
            }
        }
        for (field, _, file, value) in &writes {
            self.write(file, value)?;
            tracing::debug!(path = %self.path.display(), field, file, value = %value, "limit set");
        }
        Ok(())
    }

    /// Moves a process (all its threads) into the group.
    pub fn add_pid(&self, pid: u32) -> Result<()> {
        self.write("cgroup.procs", &pid.to_string())
    }

    /// Hands the group to the container's root (a host uid/gid in an unprivileged container):
    /// its init (systemd, OpenRC) may then make sub-groups and move its processes into them
    /// inside its cgroup namespace. Only the directory and the files the kernel lists as safe
    /// to delegate change owner; the limits (cpu.max, memory.max, …) stay the host's.
    pub fn delegate(&self, uid: u32, gid: u32) -> Result<()> {
        let listed = std::fs::read_to_string(DELEGATE_LIST).unwrap_or_default();
        let mut files: Vec<&str> = listed.split_whitespace().collect();
        if files.is_empty() {
            // Kernels before 4.15 do not list them: the three every kernel documents.
            files = vec!["cgroup.procs", "cgroup.threads", "cgroup.subtree_control"];
        }
        std::os::unix::fs::chown(&self.path, Some(uid), Some(gid))
            .map_err(|e| io_err("changing the owner of", &self.path, e))?;
        for file in files {
            let path = self.path.join(file);
            match std::os::unix::fs::chown(&path, Some(uid), Some(gid)) {
                Ok(()) => {}
                // Listed for a controller this group does not have.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("changing the owner of", &path, e)),
            }
        }
        Ok(())
    }

    /// Freezes (or thaws) every process in the group and waits until the kernel reports it
    /// done in cgroup.events: a paused container must not run one more instruction after
    /// `pause` answers.
    pub fn freeze(&self, frozen: bool) -> Result<()> {
        self.write("cgroup.freeze", if frozen { "1" } else { "0" })?;
        let want = if frozen { "frozen" } else { "thawed" };
        let wanted = if frozen { 1 } else { 0 };
        self.wait_for(want, |g| Ok(g.event("frozen")? == Some(wanted)))
    }

    /// Asks the kernel to freeze (or thaw) the group without waiting: a process blocked in
    /// the kernel (on a write to a full thin pool) freezes when it leaves it.
    pub fn request_freeze(&self, frozen: bool) -> Result<()> {
        self.write("cgroup.freeze", if frozen { "1" } else { "0" })
    }

    /// What the group used: CPU time, memory, pids, io bytes and OOM kills. Counters whose
    /// controller the hierarchy lacks read as 0 (the group exists anyway for freezing).
    pub fn usage(&self) -> Result<Usage> {
        let cpu = self.read_optional("cpu.stat")?;
        let memory = self.read_optional("memory.current")?;
        let pids = match self.read_optional("pids.current")? {
            Some(text) => parse_u64(&text),
            // No pids controller: count them ourselves.
            None => Some(self.pids()?.len() as u64),
        };
        let (mut rbytes, mut wbytes) = (0u64, 0u64);
        if let Some(io) = self.read_optional("io.stat")? {
            for (key, value) in io.split_whitespace().filter_map(|kv| kv.split_once('=')) {
                let n = value.parse::<u64>().unwrap_or(0);
                match key {
                    "rbytes" => rbytes = rbytes.saturating_add(n),
                    "wbytes" => wbytes = wbytes.saturating_add(n),
                    _ => {}
                }
            }
        }
        let events = self.read_optional("memory.events")?;
        Ok(Usage {
            cpu_usec: cpu
                .as_deref()
                .and_then(|t| keyed(t, "usage_usec"))
                .unwrap_or(0),
            memory_bytes: memory.as_deref().and_then(parse_u64).unwrap_or(0),
            pids: pids.map_or(0, |p| u32::try_from(p).unwrap_or(u32::MAX)),
            io_read_bytes: rbytes,
            io_write_bytes: wbytes,
            oom_kills: events
                .as_deref()
                .and_then(|t| keyed(t, "oom_kill"))
                .unwrap_or(0),
            ..Usage::default()
        })
    }

    /// Every process in the group and in the groups below it (a container's own init may
    /// make sub-groups in its cgroup namespace).
    pub fn pids(&self) -> Result<Vec<u32>> {
        let mut pids = Vec::new();
        for dir in self.subtree()? {
            let file = dir.join("cgroup.procs");
            match std::fs::read_to_string(&file) {
                Ok(text) => pids.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok())),
                // A sub-group removed since we listed it.
                Err(e) if e.kind() == io::ErrorKind::NotFound && dir != self.path => {}
                Err(e) => return Err(io_err("reading", &file, e)),
            }
        }
        Ok(pids)
    }

    /// Sends SIGKILL to every process in the group and below at once (cgroup.kill), without
    /// waiting; a kernel without cgroup.kill gets nothing here (`kill_all` does it pid by pid).
    pub fn kill(&self) -> Result<()> {
        if self.path.join("cgroup.kill").exists() {
            self.write("cgroup.kill", "1")?;
        }
        Ok(())
    }

    /// Kills every process in the group and below, and waits until none is left.
    pub fn kill_all(&self) -> Result<()> {
        let kill_file = self.path.join("cgroup.kill");
        if kill_file.exists() {
            // One write kills the whole subtree atomically, forks in flight included.
            self.write("cgroup.kill", "1")?;
            return self.wait_for("empty", |g| Ok(g.event("populated")? == Some(0)));
        }
        // Kernels before 5.14: SIGKILL what we see until nothing is left; a process forked
        // between our read and our kill is caught on the next round.
        tracing::debug!(path = %self.path.display(), "no cgroup.kill; killing pid by pid");
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            let pids = self.pids()?;
            if pids.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(CgroupError::Timeout {
                    path: self.path.clone(),
                    want: "empty",
                });
            }
            for pid in pids {
                let Ok(raw) = i32::try_from(pid) else {
                    continue;
                };
                match nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(raw),
                    nix::sys::signal::Signal::SIGKILL,
                ) {
                    // Exited since we read the list.
                    Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                    Err(source) => {
                        return Err(CgroupError::Kill {
                            pid,
                            path: self.path.clone(),
                            source,
                        });
                    }
                }
            }
            std::thread::sleep(POLL);
        }
    }

    /// Deletes the group and any sub-groups (deepest first). It must be empty: `kill_all`
    /// first; otherwise the kernel's EBUSY is returned naming the group.
    pub fn remove(self) -> Result<()> {
        let mut dirs = self.subtree()?;
        // subtree() lists parents before children; remove children first.
        dirs.reverse();
        for dir in dirs {
            match std::fs::remove_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("removing", &dir, e)),
            }
        }
        tracing::debug!(path = %self.path.display(), "cgroup removed");
        Ok(())
    }

    /// This group and every group below it, parents first.
    fn subtree(&self) -> Result<Vec<PathBuf>> {
        let mut out = vec![self.path.clone()];
        let mut i = 0;
        while let Some(dir) = out.get(i).cloned() {
            i += 1;
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound && dir != self.path => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(CgroupError::NotFound(dir));
                }
                Err(e) => return Err(io_err("listing", &dir, e)),
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    out.push(entry.path());
                }
            }
        }
        Ok(out)
    }

    /// Writes one interface file with a single write(2), as cgroupfs expects; O_CREAT is not
    /// used so a missing file reports ENOENT rather than a confusing EACCES.
    fn write(&self, file: &str, value: &str) -> Result<()> {
        let path = self.path.join(file);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| f.write_all(value.as_bytes()))
            .map_err(|e| io_err("writing", &path, e))
    }

    /// An interface file's content, or None when the file does not exist (its controller is
    /// not enabled for this group).
    fn read_optional(&self, file: &str) -> Result<Option<String>> {
        let path = self.path.join(file);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("reading", &path, e)),
        }
    }

    /// A `key value` line of cgroup.events.
    fn event(&self, key: &str) -> Result<Option<u64>> {
        let path = self.path.join("cgroup.events");
        let text = std::fs::read_to_string(&path).map_err(|e| io_err("reading", &path, e))?;
        Ok(keyed(&text, key))
    }

    fn wait_for(&self, want: &'static str, done: impl Fn(&Cgroup) -> Result<bool>) -> Result<()> {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            if done(self)? {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(CgroupError::Timeout {
                    path: self.path.clone(),
                    want,
                });
            }
            std::thread::sleep(POLL);
        }
    }
}

fn group_path(kind: Kind, name: &str) -> Result<PathBuf> {
    let ok = (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok {
        return Err(CgroupError::BadName(name.to_string()));
    }
    let root = hierarchy::root().ok_or(CgroupError::NoHierarchy)?;
    Ok(root.join(SLICE).join(format!("{}{name}", kind.prefix())))
}

/// Enables in `group`'s subtree_control each container controller it has. One at a time: a
/// controller the kernel refuses (e.g. EBUSY because the group has processes of its own) must
/// not keep the others off. A refusal is logged, not returned: a limit that needs the
/// controller then fails with a clear error, and a container without limits still works.
fn enable_controllers(group: &Path) {
    let have = hierarchy::controllers_of(group);
    let control = group.join("cgroup.subtree_control");
    let enabled = std::fs::read_to_string(&control).unwrap_or_default();
    for c in CONTROLLERS {
        if !have.iter().any(|h| h == c) || enabled.split_whitespace().any(|e| e == c) {
            continue;
        }
        let result = std::fs::OpenOptions::new()
            .write(true)
            .open(&control)
            .and_then(|mut f| f.write_all(format!("+{c}").as_bytes()));
        match result {
            Ok(()) => {
                tracing::info!(group = %group.display(), controller = c, "controller enabled")
            }
            Err(e) => tracing::warn!(
                group = %group.display(),
                controller = c,
                "cannot enable the controller for containers: {e}"
            ),
        }
    }
}

fn io_err(op: &'static str, path: &Path, source: io::Error) -> CgroupError {
    CgroupError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn parse_u64(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// The value of a `key value` line (cpu.stat, memory.events, cgroup.events).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| parse_u64(v)).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_lines() {
        let stat = "usage_usec 944031\nuser_usec 944031\nsystem_usec 0\n";
        assert_eq!(keyed(stat, "usage_usec"), Some(944_031));
        assert_eq!(keyed(stat, "usage"), None);
        assert_eq!(keyed("populated 1\nfrozen 0\n", "frozen"), Some(0));
    }

    #[test]
    fn names_are_checked() {
        for bad in ["", ".x", "a/b", "a b", &"x".repeat(65), ".."] {
            assert!(
                matches!(group_path(Kind::Vm, bad), Err(CgroupError::BadName(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn missing_controller_message() {
        let e = CgroupError::NoController {
            field: "cpu_limit",
            controller: "cpu",
            v1_holds_it: true,
        };
        assert_eq!(
            e.to_string(),
            "cpu_limit needs the cgroup v2 cpu controller, which this kernel's v2 hierarchy \
             does not offer (cgroup v1 holds it)"
        );
    }
}
