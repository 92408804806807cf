//! One supervised daemon: its state, process and restart bookkeeping.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use model::dbus::ServiceInfo;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not started yet (boot order) or stopped on request.
    Stopped,
    /// Running, not yet owning its bus name.
    Starting,
    Running,
    /// Crashed; restarts at `restart_at`.
    Backoff,
    /// Asked to stop; waiting for it to exit.
    Stopping,
    /// Crashed too often in a row; no more restarts until RestartService.
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Stopped => "stopped",
            State::Starting => "starting",
            State::Running => "running",
            State::Backoff => "backoff",
            State::Stopping => "stopping",
            State::Failed => "failed",
        }
    }
}

/// A crash within this long after a start counts as a fast crash.
const FAST_CRASH: Duration = Duration::from_secs(10);
/// After this many fast crashes in a row the service is marked failed.
pub const MAX_FAST_CRASHES: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

pub struct Service {
    pub name: &'static str,
    pub bus_name: &'static str,
    pub state: State,
    pub pid: Option<u32>,
    pub restarts: u32,
    /// Wall-clock time of the last state change, for ListServices.
    pub since: SystemTime,
    pub started_at: Option<Instant>,
    pub fast_crashes: u32,
    pub restart_at: Option<Instant>,
    /// Start again once the stop that is under way completes (RestartService).
    pub start_after_stop: bool,
    /// Bumped on every start, so a readiness answer about an older process is ignored.
    pub generation: u64,
    /// Why the service last stopped without being asked to; ListServices reports it.
    pub last_error: String,
    /// Set when init itself kills the process for a reason of its own (not ready in time,
    /// lost its bus name, stopped answering): its exit is then reported with this cause
    /// rather than as "killed by SIGTERM".
    pub kill_reason: Option<String>,
    /// When a process that was sent SIGTERM by the liveness check gets SIGKILL.
    pub kill_at: Option<Instant>,
    /// The task watching this start's bus name and Ping answers, aborted when the process
    /// ends or is being stopped: a watcher must not outlive its process.
    pub liveness: Option<tokio::task::AbortHandle>,
}

impl Service {
    pub fn new(name: &'static str, bus_name: &'static str) -> Self {
        Service {
            name,
            bus_name,
            state: State::Stopped,
            pid: None,
            restarts: 0,
            since: SystemTime::now(),
            started_at: None,
            fast_crashes: 0,
            restart_at: None,
            start_after_stop: false,
            generation: 0,
            last_error: String::new(),
            kill_reason: None,
            kill_at: None,
            liveness: None,
        }
    }

    /// Ends the liveness watch of the current process, if one runs.
    pub fn stop_watching(&mut self) {
        if let Some(task) = self.liveness.take() {
            task.abort();
        }
    }

    pub fn set_state(&mut self, state: State) {
        if self.state != state {
            self.state = state;
            self.since = SystemTime::now();
        }
    }

    /// Records an unexpected exit and decides what comes next: a restart after a back-off
    /// that doubles with each fast crash, or `Failed` after too many of them.
    pub fn crashed(&mut self, now: Instant) {
        self.pid = None;
        let fast = self
            .started_at
            .is_some_and(|t| now.duration_since(t) < FAST_CRASH);
        self.fast_crashes = if fast { self.fast_crashes + 1 } else { 1 };
        if self.fast_crashes > MAX_FAST_CRASHES {
            self.restart_at = None;
            self.set_state(State::Failed);
        } else {
            self.restart_at = Some(now + backoff(self.fast_crashes));
            self.set_state(State::Backoff);
        }
    }

    pub fn info(&self) -> ServiceInfo {
        ServiceInfo {
            name: self.name.to_string(),
            state: self.state.as_str().to_string(),
            pid: self.pid.unwrap_or(0),
            restarts: self.restarts,
            since: self
                .since
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            last_error: self.last_error.clone(),
        }
    }
}

/// 100 ms, 200 ms, 400 ms, … capped at 30 s.
pub fn backoff(crashes: u32) -> Duration {
    let shift = crashes.saturating_sub(1).min(16);
    (FIRST_BACKOFF * (1u32 << shift)).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(4), Duration::from_millis(800));
        assert_eq!(backoff(20), MAX_BACKOFF);
    }

    #[test]
    fn repeated_fast_crashes_end_in_failed() {
        let mut s = Service::new("hostd", "org.cairn.Host1");
        let now = Instant::now();
        for n in 1..=MAX_FAST_CRASHES {
            s.started_at = Some(now);
            s.crashed(now);
            assert_eq!(s.state, State::Backoff, "crash {n}");
            assert_eq!(s.restart_at, Some(now + backoff(n)));
        }
        s.started_at = Some(now);
        s.crashed(now);
        assert_eq!(s.state, State::Failed);
        assert_eq!(s.restart_at, None);
    }

    #[test]
    fn a_slow_crash_resets_the_count() {
        let mut s = Service::new("netd", "org.cairn.Network1");
        let start = Instant::now();
        s.started_at = Some(start);
        s.fast_crashes = 4;
        s.crashed(start + FAST_CRASH + Duration::from_secs(1));
        assert_eq!(s.fast_crashes, 1);
        assert_eq!(s.state, State::Backoff);
    }
}
