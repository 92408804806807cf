//! How a VM ends, and the one-shot signal that carries it from whichever thread saw it (a
//! vCPU, the i8042's reset line) to the VMM's event loop.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vmm_sys_util::eventfd::EventFd;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmExit {
    /// The guest reset the machine (i8042 reset line, triple fault): a reboot ends the VM.
    Reset(String),
    /// The guest powered off.
    PowerOff,
    /// The test guest wrote this to the debug-exit port.
    DebugExit(u8),
    /// The VMM stopped it (stop deadline passed, kill).
    Stopped,
    /// Something broke: KVM refused to run it, an unhandled exit.
    Crash(String),
}

impl std::fmt::Display for VmExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VmExit::Reset(why) => write!(f, "guest reset ({why})"),
            VmExit::PowerOff => f.write_str("guest powered off"),
            VmExit::DebugExit(code) => write!(f, "guest debug exit {code}"),
            VmExit::Stopped => f.write_str("stopped"),
            VmExit::Crash(why) => write!(f, "crashed: {why}"),
        }
    }
}

/// Set once; the eventfd wakes an epoll loop, the condvar a waiting thread.
pub struct ExitSignal {
    reason: Mutex<Option<VmExit>>,
    cond: Condvar,
    pub evt: EventFd,
}

impl ExitSignal {
    pub fn new() -> std::io::Result<ExitSignal> {
        Ok(ExitSignal {
            reason: Mutex::new(None),
            cond: Condvar::new(),
            evt: EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)?,
        })
    }

    /// Records `exit` unless an earlier one is there.
    pub fn signal(&self, exit: VmExit) {
        if let Ok(mut r) = self.reason.lock() {
            if r.is_none() {
                *r = Some(exit);
            }
            self.cond.notify_all();
        }
        let _ = self.evt.write(1);
    }

    pub fn is_set(&self) -> bool {
        self.reason.lock().map(|r| r.is_some()).unwrap_or(true)
    }

    pub fn get(&self) -> Option<VmExit> {
        self.reason.lock().ok().and_then(|r| r.clone())
    }

    /// Waits up to `timeout` for the exit.
    pub fn wait(&self, timeout: Duration) -> Option<VmExit> {
        let guard = self.reason.lock().ok()?;
        let (guard, _) = self
            .cond
            .wait_timeout_while(guard, timeout, |r| r.is_none())
            .ok()?;
        guard.clone()
    }
}
