//! Finding the cgroup v2 hierarchy and what it offers.
//!
//! The appliance mounts cgroup2 at /sys/fs/cgroup with every controller; a dev machine may run a
//! hybrid layout (v1 holds cpu/memory/pids, the v2 mount at /sys/fs/cgroup/unified has no
//! controllers). Both are found the same way: the `cgroup2` line of /proc/self/mountinfo.

use std::path::{Path, PathBuf};

/// Overrides the root under which `cairn.slice` is made (tests point it at a scratch group).
pub const ROOT_ENV: &str = "CAIRN_CGROUP_ROOT";

const MOUNTINFO: &str = "/proc/self/mountinfo";

/// One cgroup mount from mountinfo: where it is, and whether it is v2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    pub mount_point: PathBuf,
    pub v2: bool,
    /// v1 only: the controllers this hierarchy holds (from the super options, e.g. `cpu,cpuacct`).
    pub v1_controllers: Vec<String>,
}

/// The cgroup mounts in a mountinfo text. Lines that do not parse are skipped: mountinfo is the
/// kernel's, and one odd line must not hide the hierarchy we need.
pub fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    let mut mounts = Vec::new();
    for line in text.lines() {
        // "ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTS"
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount_point) = left.split(' ').nth(4) else {
            continue;
        };
        let mut right = right.split(' ');
        let fstype = right.next().unwrap_or_default();
        let super_opts = right.nth(1).unwrap_or_default();
        let v2 = match fstype {
            "cgroup2" => true,
            "cgroup" => false,
            _ => continue,
        };
        let v1_controllers = if v2 {
            Vec::new()
        } else {
            super_opts
                .split(',')
                .filter(|o| !o.contains('=') && !matches!(*o, "rw" | "ro"))
                .map(str::to_string)
                .collect()
        };
        mounts.push(CgroupMount {
            mount_point: PathBuf::from(vmm::jail::root::unescape_mountinfo(mount_point)),
            v2,
            v1_controllers,
        });
    }
    mounts
}

fn mounts() -> Vec<CgroupMount> {
    match std::fs::read_to_string(MOUNTINFO) {
        Ok(text) => parse_mountinfo(&text),
        Err(e) => {
            tracing::warn!("cannot read {MOUNTINFO}: {e}");
            Vec::new()
        }
    }
}

/// The cgroup2 mount point, if one is mounted.
pub fn v2_mount() -> Option<PathBuf> {
    mounts().into_iter().find(|m| m.v2).map(|m| m.mount_point)
}

/// True when a cgroup v1 hierarchy holds `controller`: then the error for a missing v2
/// controller can say where it went.
pub fn v1_holds(controller: &str) -> bool {
    mounts()
        .iter()
        .any(|m| !m.v2 && m.v1_controllers.iter().any(|c| c == controller))
}

/// The root under which Cairn makes its groups: `$CAIRN_CGROUP_ROOT`, else the cgroup2 mount.
pub fn root() -> Option<PathBuf> {
    match std::env::var_os(ROOT_ENV) {
        Some(r) if !r.is_empty() => Some(PathBuf::from(r)),
        _ => v2_mount(),
    }
}

/// The controllers a group may use: its `cgroup.controllers` (what its parent enabled for it,
/// or at the root, what the hierarchy has). Unreadable → none.
pub fn controllers_of(group: &Path) -> Vec<String> {
    std::fs::read_to_string(group.join("cgroup.controllers"))
        .map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_v2_and_v1_mounts() {
        let text = "\
25 30 0:22 / /sys rw,nosuid - sysfs sysfs rw
31 25 0:26 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
42 31 0:39 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:11 - cgroup cgroup rw,cpu,cpuacct
43 31 0:40 / /sys/fs/cgroup/name\\040x rw - cgroup cgroup rw,name=systemd
garbage line
";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 3);
        assert!(m[0].v2);
        assert_eq!(m[0].mount_point, PathBuf::from("/sys/fs/cgroup/unified"));
        assert_eq!(m[1].v1_controllers, ["cpu", "cpuacct"]);
        assert_eq!(m[2].mount_point, PathBuf::from("/sys/fs/cgroup/name x"));
        assert!(m[2].v1_controllers.is_empty());
    }
}
