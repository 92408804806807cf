//! Programs init runs and waits for itself (the installer's mke2fs). As PID 1 the supervisor
//! reaps every child with `waitpid(-1)`, so a plain `Command::output()` would find its child
//! already gone (ECHILD). Instead the child's pid is registered while it is spawned, and the
//! reaper hands its exit status over here.

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Condvar, Mutex};

use nix::sys::wait::WaitStatus;
use std::os::unix::process::ExitStatusExt;

/// Registered pids, and their exit status once the reaper has collected them.
static OWN: Mutex<BTreeMap<u32, Option<ExitStatus>>> = Mutex::new(BTreeMap::new());
static EXITED: Condvar = Condvar::new();

/// What a program printed on stderr, and how it ended. Stdout is discarded.
pub struct Finished {
    pub status: ExitStatus,
    pub stderr: String,
}

/// Runs `cmd` to its end. As PID 1 through the registry; elsewhere (tests) as usual.
pub fn run(cmd: &mut Command) -> std::io::Result<Finished> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if std::process::id() != 1 {
        let out = cmd.output()?;
        return Ok(Finished {
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    let mut child = {
        // Held across the spawn: the reaper cannot collect the child before it is known.
        let mut own = OWN
            .lock()
            .map_err(|_| std::io::Error::other("child registry poisoned"))?;
        let child = cmd.spawn()?;
        own.insert(child.id(), None);
        child
    };
    let pid = child.id();
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        let mut raw = Vec::new();
        let _ = err.read_to_end(&mut raw);
        stderr = String::from_utf8_lossy(&raw).into_owned();
    }
    let mut own = OWN
        .lock()
        .map_err(|_| std::io::Error::other("child registry poisoned"))?;
    loop {
        if let Some(Some(status)) = own.get(&pid) {
            let status = *status;
            own.remove(&pid);
            return Ok(Finished { status, stderr });
        }
        own = EXITED
            .wait(own)
            .map_err(|_| std::io::Error::other("child registry poisoned"))?;
    }
}

/// Called by the reaper for every child it collected: true when the child is one of ours
/// (its status is then handed to [`run`]).
pub fn claim(pid: u32, status: &WaitStatus) -> bool {
    let Ok(mut own) = OWN.lock() else {
        return false;
    };
    let Some(slot) = own.get_mut(&pid) else {
        return false;
    };
    *slot = Some(match status {
        WaitStatus::Exited(_, code) => ExitStatus::from_raw((*code & 0xff) << 8),
        WaitStatus::Signaled(_, sig, _) => ExitStatus::from_raw(*sig as i32),
        _ => return false,
    });
    EXITED.notify_all();
    true
}
