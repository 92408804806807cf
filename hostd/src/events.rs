//! Guests' lifecycle as events: hostd compares each guest's state with the one it last saw —
//! after every request that may change it and at every housekeeping tick (a guest that ends on
//! its own, a VMM killed with -9) — and signals each change as Host1's `Event(what, kind, name,
//! detail)` (`model::dbus::EVENT_SIGNAL`), which apid keeps for `event.list`. One lock orders
//! the comparisons, so the events of one guest leave in the order they happened.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{LazyLock, OnceLock};

use model::ct::ContainerState;
use model::vm::VmState;
use tokio::sync::Mutex;

use crate::ct::manager::Manager;
use crate::vm::manager::VmManager;

/// A guest's state as events tell it apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Created,
    Running {
        pid: u32,
    },
    Paused {
        pid: u32,
    },
    /// Ended; the detail says how (an exit code, the VMM's last exit), empty when unknown.
    Stopped {
        detail: String,
        clean: bool,
    },
    Crashed {
        detail: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Ct,
    Vm,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Ct => "ct",
            Kind::Vm => "vm",
        }
    }
}

type Key = (Kind, String);

#[derive(Default)]
struct Watch {
    known: BTreeMap<Key, Seen>,
    /// Guests a request is stopping: their end is a stop, whatever their exit code.
    stopping: BTreeSet<Key>,
}

static WATCH: LazyLock<Mutex<Watch>> = LazyLock::new(|| Mutex::new(Watch::default()));
static BUS: OnceLock<zbus::Connection> = OnceLock::new();

/// The connection events leave on (hostd's own, which owns org.cairn.Host1).
pub fn set_bus(conn: zbus::Connection) {
    let _ = BUS.set(conn);
}

/// What happened between two looks at one guest, in order: (kind, detail).
pub fn transitions(
    before: Option<&Seen>,
    after: Option<&Seen>,
    asked_stop: bool,
) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let before = match (before, after) {
        (None, None) => return out,
        (Some(_), None) => {
            out.push(("deleted", String::new()));
            return out;
        }
        (None, Some(_)) => {
            out.push(("created", String::new()));
            &Seen::Created
        }
        (Some(b), Some(_)) => b,
    };
    let Some(after) = after else { return out };
    let up = |s: &Seen| match s {
        Seen::Running { pid } | Seen::Paused { pid } => Some(*pid),
        _ => None,
    };
    match (up(before), up(after)) {
        (None, Some(_)) => out.push(("started", String::new())),
        (Some(old), Some(new)) if old != new => {
            // Ended and started again between two looks (a restart, a reboot inside).
            out.push(("stopped", String::new()));
            out.push(("started", String::new()));
        }
        (Some(_), None) => match after {
            Seen::Crashed { detail } => out.push(("crashed", detail.clone())),
            Seen::Stopped { detail, clean } if *clean || asked_stop => {
                out.push(("stopped", detail.clone()))
            }
            Seen::Stopped { detail, .. } => out.push(("crashed", detail.clone())),
            _ => {}
        },
        _ => {
            if let (Seen::Stopped { .. }, Seen::Crashed { detail }) = (before, after) {
                out.push(("crashed", detail.clone()));
            }
        }
    }
    match (before, after) {
        (Seen::Running { .. }, Seen::Paused { .. }) => out.push(("paused", String::new())),
        (Seen::Paused { .. }, Seen::Running { .. }) => out.push(("resumed", String::new())),
        (b, Seen::Paused { .. }) if up(b).is_none() => out.push(("paused", String::new())),
        _ => {}
    }
    out
}

/// How a container's last run ended, in words; whether that was a clean end (status 0).
fn exit_detail(code: Option<i32>) -> (String, bool) {
    match code {
        None => (String::new(), true),
        Some(0) => ("exit code 0".into(), true),
        Some(c) if c > 128 => (format!("killed by signal {}", c - 128), false),
        Some(c) => (format!("exit code {c}"), false),
    }
}

fn container_seen(m: &Manager, name: &str) -> Option<Seen> {
    let (state, pid, code) = m.state_of(name)?;
    Some(match state {
        ContainerState::Created => Seen::Created,
        ContainerState::Running => Seen::Running {
            pid: pid.unwrap_or(0),
        },
        ContainerState::Paused => Seen::Paused {
            pid: pid.unwrap_or(0),
        },
        ContainerState::Stopped => {
            let (detail, clean) = exit_detail(code);
            Seen::Stopped { detail, clean }
        }
    })
}

fn vm_seen(v: &VmManager, name: &str) -> Option<Seen> {
    let info = v.info(name).ok()?;
    let detail = info.last_exit.unwrap_or_default();
    Some(match info.state {
        VmState::Created => Seen::Created,
        VmState::Running => Seen::Running {
            pid: info.pid.unwrap_or(0),
        },
        VmState::Paused => Seen::Paused {
            pid: info.pid.unwrap_or(0),
        },
        VmState::Stopped => Seen::Stopped {
            detail,
            clean: true,
        },
        VmState::Crashed => Seen::Crashed { detail },
    })
}

/// Every guest as it is now.
async fn look_all(manager: &Mutex<Manager>, vms: &Mutex<VmManager>) -> Vec<(Key, Seen)> {
    let mut out = Vec::new();
    {
        let m = manager.lock().await;
        for name in m.names() {
            if let Some(s) = container_seen(&m, &name) {
                out.push(((Kind::Ct, name), s));
            }
        }
    }
    let v = vms.lock().await;
    for name in v.names() {
        if let Some(s) = vm_seen(&v, &name) {
            out.push(((Kind::Vm, name), s));
        }
    }
    out
}

/// Takes the guests as they are at hostd's start as known: what changed while hostd was away
/// is no event of this run.
pub async fn prime(manager: &Mutex<Manager>, vms: &Mutex<VmManager>) {
    let now = look_all(manager, vms).await;
    let mut w = WATCH.lock().await;
    w.known = now.into_iter().collect();
}

/// A request is about to stop guest `name`: its end is reported as stopped.
pub async fn expect_stop(kind: Kind, name: &str) {
    WATCH.lock().await.stopping.insert((kind, name.to_string()));
}

/// Looks at container `name` after a request that may have changed it.
pub async fn after_ct(manager: &Mutex<Manager>, name: &str) {
    let mut w = WATCH.lock().await;
    let now = container_seen(&*manager.lock().await, name);
    record(&mut w, (Kind::Ct, name.to_string()), now).await;
}

/// Looks at VM `name` after a request that may have changed it.
pub async fn after_vm(vms: &Mutex<VmManager>, name: &str) {
    let mut w = WATCH.lock().await;
    let now = vm_seen(&*vms.lock().await, name);
    record(&mut w, (Kind::Vm, name.to_string()), now).await;
}

/// Looks at every guest (housekeeping): ends nobody asked for, guests made by host.toml.
pub async fn scan(manager: &Mutex<Manager>, vms: &Mutex<VmManager>) {
    let mut w = WATCH.lock().await;
    let mut now: BTreeMap<Key, Seen> = look_all(manager, vms).await.into_iter().collect();
    let keys: BTreeSet<Key> = w.known.keys().chain(now.keys()).cloned().collect();
    for key in keys {
        let seen = now.remove(&key);
        record(&mut w, key, seen).await;
    }
}

async fn record(w: &mut Watch, key: Key, now: Option<Seen>) {
    let before = w.known.get(&key);
    if before == now.as_ref() {
        return;
    }
    let asked = w.stopping.contains(&key);
    let events = transitions(before, now.as_ref(), asked);
    if events
        .iter()
        .any(|(k, _)| matches!(*k, "stopped" | "crashed" | "deleted"))
    {
        w.stopping.remove(&key);
    }
    for (kind, detail) in events {
        emit(key.0.as_str(), kind, &key.1, &detail).await;
    }
    match now {
        Some(s) => w.known.insert(key, s),
        None => w.known.remove(&key),
    };
}

async fn emit(what: &str, kind: &str, name: &str, detail: &str) {
    tracing::info!(what, kind, name, detail, "event");
    let Some(conn) = BUS.get() else {
        return;
    };
    if let Err(e) = conn
        .emit_signal(
            None::<()>,
            model::dbus::HOST_PATH,
            model::dbus::HOST_NAME,
            model::dbus::EVENT_SIGNAL,
            &(what, kind, name, detail),
        )
        .await
    {
        tracing::debug!(error = %e, "cannot signal an event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(v: Vec<(&'static str, String)>) -> Vec<&'static str> {
        v.into_iter().map(|(k, _)| k).collect()
    }

    #[test]
    fn a_lifecycle_gives_its_events_in_order() {
        let running = Seen::Running { pid: 7 };
        let stopped = Seen::Stopped {
            detail: "exit code 0".into(),
            clean: true,
        };
        assert_eq!(
            kinds(transitions(None, Some(&Seen::Created), false)),
            ["created"]
        );
        assert_eq!(
            kinds(transitions(None, Some(&running), false)),
            ["created", "started"]
        );
        assert_eq!(
            kinds(transitions(Some(&Seen::Created), Some(&running), false)),
            ["started"]
        );
        let paused = Seen::Paused { pid: 7 };
        assert_eq!(
            kinds(transitions(Some(&running), Some(&paused), false)),
            ["paused"]
        );
        assert_eq!(
            kinds(transitions(Some(&paused), Some(&running), false)),
            ["resumed"]
        );
        assert_eq!(
            kinds(transitions(Some(&running), Some(&stopped), false)),
            ["stopped"]
        );
        assert_eq!(kinds(transitions(Some(&stopped), None, false)), ["deleted"]);
        assert_eq!(
            kinds(transitions(
                Some(&running),
                Some(&Seen::Running { pid: 9 }),
                false
            )),
            ["stopped", "started"]
        );
    }

    #[test]
    fn an_end_nobody_asked_for_is_a_crash() {
        let running = Seen::Running { pid: 7 };
        let killed = Seen::Stopped {
            detail: "killed by signal 9".into(),
            clean: false,
        };
        assert_eq!(
            transitions(Some(&running), Some(&killed), false),
            [("crashed", "killed by signal 9".to_string())]
        );
        assert_eq!(
            kinds(transitions(Some(&running), Some(&killed), true)),
            ["stopped"]
        );
        let vmm = Seen::Crashed {
            detail: "VMM killed by SIGKILL".into(),
        };
        assert_eq!(
            kinds(transitions(Some(&running), Some(&vmm), false)),
            ["crashed"]
        );
        assert!(transitions(Some(&vmm), Some(&vmm), false).is_empty());
        assert_eq!(exit_detail(Some(137)), ("killed by signal 9".into(), false));
        assert!(exit_detail(Some(0)).1);
    }
}
