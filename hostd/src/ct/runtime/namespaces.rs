//! Which namespaces a container gets, and joining them (exec).

use std::fs::File;
use std::os::fd::AsFd;

use nix::sched::{CloneFlags, setns};

use super::{Step, StepError};

/// The namespaces cloned for the container's first process. The cgroup namespace is NOT among
/// them: the child unshares it after the parent has moved it into its cgroup, so that its
/// cgroup root is the container's group.
pub fn clone_flags(privileged: bool) -> CloneFlags {
    let mut f = CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWNET;
    if !privileged {
        f |= CloneFlags::CLONE_NEWUSER;
    }
    f
}

/// The namespaces exec joins, in order: user first (it grants the capabilities the others
/// need), mount last (after it, /proc/PID paths of the host are gone).
const JOIN_ORDER: [(&str, CloneFlags); 7] = [
    ("user", CloneFlags::CLONE_NEWUSER),
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

/// Open namespace files of a running container, opened before any is joined.
pub struct Namespaces {
    files: Vec<(&'static str, CloneFlags, File)>,
}

impl Namespaces {
    /// Opens /proc/PID/ns/*; the user namespace is skipped when it is ours (privileged
    /// container: setns into one's own user namespace is EINVAL).
    pub fn open(pid: u32) -> Result<Namespaces, StepError> {
        let mut files = Vec::new();
        for (name, flag) in JOIN_ORDER {
            let path = format!("/proc/{pid}/ns/{name}");
            if name == "user" {
                let theirs = std::fs::read_link(&path).step(format!("reading {path}"))?;
                let ours = std::fs::read_link("/proc/self/ns/user").step("reading our userns")?;
                if theirs == ours {
                    continue;
                }
            }
            files.push((
                name,
                flag,
                File::open(&path).step(format!("opening {path}"))?,
            ));
        }
        Ok(Namespaces { files })
    }

    /// Joins them all. The pid namespace applies to children forked afterwards.
    pub fn join(&self) -> Result<(), StepError> {
        for (name, flag, file) in &self.files {
            setns(file.as_fd(), *flag).step(format!("joining the {name} namespace"))?;
        }
        Ok(())
    }
}
