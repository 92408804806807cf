//! Tasks: an API method run in the background, beyond a request's 30 s budget, followed by an
//! id (`task.start|list|info|wait|cancel`, as Proxmox's UPIDs and Incus's operations).
//!
//! A task runs the method through the normal dispatch inside a task-local [`Ctx`]: the
//! methods' own deadlines, there to fit a request's budget, become [`TASK_BUDGET`] through
//! [`budget`], and work that can say how far it has come reports it ([`Ctx::progress`]).
//!
//! Cancelling leaves nothing behind. Work done in apid (a download) watches
//! [`Ctx::cancelled`] and stops, its partial file removed. Work another daemon does and can
//! stop registers how ([`Ctx::on_cancel`]: an exec is killed). Work that cannot be interrupted
//! is undone when it returns, by the inverse call [`undo_of`] names. A method with none of the
//! three is refused a cancel (105) and runs on.
//!
//! Bounded: at most [`MAX_RUNNING`] tasks run; the last [`KEEP_ENDED`] that ended within
//! [`KEEP_FOR`] are remembered, older ones forgotten. apid keeps tasks in memory only.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use model::api::task::{TaskFault, TaskInfo, TaskProgress, TaskState};
use model::fault::FaultCode;
use model::xmlrpc::Value;
use tokio::sync::{Notify, watch};

use crate::methods::{Fault, MethodResult};

/// Tasks running at once; one more is refused (106).
pub const MAX_RUNNING: usize = 16;
/// Ended tasks remembered, at most, …
pub const KEEP_ENDED: usize = 256;
/// … and for at most this long after they ended.
pub const KEEP_FOR: Duration = Duration::from_secs(3600);
/// … and as long as their results hold no more than this together (an exec answers up to
/// 16 MiB: a few such are kept, not 256).
pub const KEEP_BYTES: usize = 64 << 20;
/// The longest `task.wait` waits (it is a request: within the 30 s budget).
pub const WAIT_MAX: Duration = Duration::from_secs(25);
/// What a method's own deadline becomes inside a task.
pub const TASK_BUDGET: Duration = Duration::from_secs(3600);

tokio::task_local! {
    static CURRENT: Arc<Ctx>;
}

/// What a running method sees of its task.
pub struct Ctx {
    id: String,
    cancelled: AtomicBool,
    cancel_notify: Notify,
    progress: Mutex<Option<TaskProgress>>,
    /// How to stop the work where it runs (another daemon), registered by the method.
    kill: Mutex<Option<BoxFuture<'static, ()>>>,
}

impl Ctx {
    fn new(id: String) -> Ctx {
        Ctx {
            id,
            cancelled: AtomicBool::new(false),
            cancel_notify: Notify::new(),
            progress: Mutex::new(None),
            kill: Mutex::new(None),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// Resolves once the task is cancelled (at once if it is already).
    pub async fn cancelled(&self) {
        loop {
            let notified = self.cancel_notify.notified();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }

    /// Reports how far the work has come.
    pub fn progress(&self, done: u64, total: u64, unit: &str) {
        if let Ok(mut p) = self.progress.lock() {
            *p = Some(TaskProgress {
                done,
                total,
                unit: unit.to_string(),
            });
        }
    }

    /// Registers how a cancel stops the work (run once, when the task is cancelled; at once
    /// when it already is).
    pub fn on_cancel(&self, kill: BoxFuture<'static, ()>) {
        if self.is_cancelled() {
            tokio::spawn(kill);
        } else if let Ok(mut k) = self.kill.lock() {
            *k = Some(kill);
        }
    }

    fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        self.cancel_notify.notify_waiters();
        let kill = self.kill.lock().ok().and_then(|mut k| k.take());
        if let Some(kill) = kill {
            tokio::spawn(kill);
        }
    }
}

/// The task the calling code runs in, if any.
pub fn current() -> Option<Arc<Ctx>> {
    CURRENT.try_with(Arc::clone).ok()
}

/// A method's deadline: `normal` in a request, [`TASK_BUDGET`] in a task.
pub fn budget(normal: Duration) -> Duration {
    if current().is_some() {
        TASK_BUDGET.max(normal)
    } else {
        normal
    }
}

/// How a cancel ends a task running `method`.
#[derive(Debug, Clone, PartialEq)]
pub enum Cancel {
    /// The method watches [`Ctx::cancelled`] or registers [`Ctx::on_cancel`].
    Stops,
    /// The method runs to its end; then this call undoes what it made.
    Undo(&'static str, Vec<Value>),
    /// The method stops where it can, and what it made by then is undone by this call.
    StopsThenUndo(&'static str, Vec<Value>),
    /// The method runs to its end; then this call, given the result's member of that name
    /// (what it made is named only in its answer), undoes it.
    UndoResult(&'static str, &'static str),
    Refused,
}

fn member(v: Option<&Value>, name: &str) -> Option<String> {
    match v? {
        Value::Struct(m) => m.get(name)?.as_str().map(str::to_string),
        _ => None,
    }
}

fn string(v: Option<&Value>) -> Option<String> {
    v?.as_str().map(str::to_string)
}

/// How a cancel of `method(params)` leaves nothing (see docs/api.md's "Tasks").
pub fn undo_of(method: &str, params: &[Value]) -> Cancel {
    let one = |m: &'static str, arg: Option<String>| match arg {
        Some(a) => Cancel::Undo(m, vec![Value::String(a)]),
        None => Cancel::Refused,
    };
    match method {
        "ct.exec" => Cancel::Stops,
        "template.import" => match one("template.delete", string(params.first())) {
            Cancel::Undo(m, p) => Cancel::StopsThenUndo(m, p),
            other => other,
        },
        "volume.create" => one("volume.delete", member(params.first(), "volume")),
        "volume.import" => one("volume.delete", string(params.first())),
        "volume.snapshot" => one(
            "volume.deleteSnapshot",
            string(params.first())
                .zip(string(params.get(1)))
                .map(|(v, s)| format!("{v}@{s}")),
        ),
        "volume.backup" => Cancel::UndoResult("volume.deleteBackup", "backup"),
        "volume.clone" | "volume.restore" => one("volume.delete", string(params.get(1))),
        "ct.create" => one("ct.delete", member(params.first(), "name")),
        "vm.create" => one("vm.delete", member(params.first(), "name")),
        _ => Cancel::Refused,
    }
}

/// What a task works on, for lists: its first parameter when that is a name.
fn target_of(params: &[Value]) -> Option<String> {
    string(params.first())
        .or_else(|| member(params.first(), "name"))
        .or_else(|| member(params.first(), "volume"))
        .map(|t| t.chars().take(256).collect())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

struct Entry {
    info: TaskInfo,
    ctx: Arc<Ctx>,
    cancel: Cancel,
    ended: watch::Receiver<bool>,
    ended_at: Option<std::time::Instant>,
    /// About how much memory its result holds.
    bytes: usize,
}

/// About how many bytes `v` holds (its strings and bytes, and a little for each value).
fn size_of_value(v: &Value) -> usize {
    16 + match v {
        Value::String(s) | Value::DateTime(s) => s.len(),
        Value::Base64(b) => b.len(),
        Value::Struct(m) => m.iter().map(|(k, v)| k.len() + size_of_value(v)).sum(),
        Value::Array(a) => a.iter().map(size_of_value).sum(),
        _ => 0,
    }
}

impl Entry {
    fn view(&self, with_result: bool) -> TaskInfo {
        let mut info = self.info.clone();
        if info.state == TaskState::Running {
            info.progress = self.ctx.progress.lock().ok().and_then(|p| p.clone());
        }
        if !with_result {
            info.result = None;
        }
        info
    }
}

#[derive(Default)]
struct Inner {
    seq: u64,
    entries: VecDeque<Entry>,
}

/// Every task apid knows.
pub struct Tasks {
    inner: Mutex<Inner>,
    /// Tells ids of this apid from those of an earlier one.
    epoch: u64,
}

impl Default for Tasks {
    fn default() -> Tasks {
        Tasks::new()
    }
}

/// What a task runs: the method's call, made inside the task's [`Ctx`].
pub type Work = BoxFuture<'static, MethodResult>;
/// How a task's undo call is made.
pub type Call = Arc<dyn Fn(&'static str, Vec<Value>) -> Work + Send + Sync>;

impl Tasks {
    pub fn new() -> Tasks {
        Tasks {
            inner: Mutex::new(Inner::default()),
            epoch: now(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind: still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets ended tasks, oldest first, beyond [`KEEP_ENDED`], [`KEEP_FOR`] and
    /// [`KEEP_BYTES`] of results.
    fn prune(inner: &mut Inner) {
        let ended = inner
            .entries
            .iter()
            .filter(|e| e.ended_at.is_some())
            .count();
        let mut extra = ended.saturating_sub(KEEP_ENDED);
        let mut bytes: usize = inner.entries.iter().map(|e| e.bytes).sum();
        inner.entries.retain(|e| match e.ended_at {
            None => true,
            Some(at) => {
                let keep = extra == 0 && bytes <= KEEP_BYTES && at.elapsed() < KEEP_FOR;
                if !keep {
                    extra = extra.saturating_sub(1);
                    bytes -= e.bytes;
                }
                keep
            }
        });
    }

    /// Starts `work` (`method(params)`) as a task; `call` makes its undo call should it be
    /// cancelled. Answers the task's id.
    pub fn start(
        self: &Arc<Self>,
        method: &str,
        params: &[Value],
        work: impl FnOnce() -> Work,
        call: Call,
    ) -> Result<String, Fault> {
        let (ctx, id, ended_tx) = {
            let mut inner = self.lock();
            Self::prune(&mut inner);
            let running = inner
                .entries
                .iter()
                .filter(|e| e.ended_at.is_none())
                .count();
            if running >= MAX_RUNNING {
                return Err(Fault::new(
                    FaultCode::Busy,
                    format!(
                        "{running} tasks are running, the most there may be; retry when one has ended"
                    ),
                ));
            }
            inner.seq += 1;
            let id = format!("{:x}-{}", self.epoch, inner.seq);
            let ctx = Arc::new(Ctx::new(id.clone()));
            let (tx, rx) = watch::channel(false);
            inner.entries.push_back(Entry {
                info: TaskInfo {
                    id: id.clone(),
                    method: method.to_string(),
                    target: target_of(params),
                    state: TaskState::Running,
                    started: now(),
                    ended: None,
                    progress: None,
                    result: None,
                    fault: None,
                },
                ctx: ctx.clone(),
                cancel: undo_of(method, params),
                ended: rx,
                ended_at: None,
                bytes: 0,
            });
            (ctx, id, tx)
        };
        let fut = CURRENT.scope(ctx.clone(), work());
        let tasks = self.clone();
        let method = method.to_string();
        tokio::spawn(async move {
            let result = match AssertUnwindSafe(fut).catch_unwind().await {
                Ok(r) => r,
                Err(_) => Err(Fault::internal(format!(
                    "{method} failed unexpectedly; see the host's log"
                ))),
            };
            let result = tasks.finish_cancelled(&ctx, result, &call).await;
            tasks.end(ctx.id(), result);
            let _ = ended_tx.send(true);
        });
        tracing::info!(task = %id, "task started");
        Ok(id)
    }

    /// A cancelled task's answer: what it made is undone first.
    async fn finish_cancelled(&self, ctx: &Ctx, result: MethodResult, call: &Call) -> MethodResult {
        if !ctx.is_cancelled() {
            return result;
        }
        let undo = self
            .lock()
            .entries
            .iter()
            .find(|e| e.ctx.id() == ctx.id())
            .map(|e| e.cancel.clone());
        let undo = match (undo, &result) {
            (Some(Cancel::UndoResult(m, key)), Ok(v)) => {
                member(Some(v), key).map(|arg| (m, vec![Value::String(arg)]))
            }
            (Some(Cancel::Undo(m, p) | Cancel::StopsThenUndo(m, p)), _) => Some((m, p)),
            _ => None,
        };
        if let Some((m, p)) = undo {
            // Undone also when the method failed: it may have made part of it (a template
            // unpacked when its answer was lost); an undo that finds nothing is not an error.
            let undone = call(m, p).await;
            if let Err(e) = &undone
                && e.code != FaultCode::NotFound
                && result.is_ok()
            {
                tracing::warn!(
                    task = ctx.id(),
                    undo = m,
                    "undoing a cancelled task failed: {}",
                    e.message
                );
                return Err(Fault::new(
                    e.code,
                    format!("cancelled, but undoing it with {m} failed: {}", e.message),
                ));
            }
        }
        Err(Fault::new(FaultCode::Conflict, "cancelled"))
    }

    fn end(&self, id: &str, result: MethodResult) {
        let mut inner = self.lock();
        let Some(e) = inner.entries.iter_mut().find(|e| e.ctx.id() == id) else {
            return;
        };
        e.info.ended = Some(now());
        e.info.progress = e.ctx.progress.lock().ok().and_then(|p| p.clone());
        e.ended_at = Some(std::time::Instant::now());
        let cancelled = e.ctx.is_cancelled();
        match result {
            Ok(v) => {
                e.info.state = TaskState::Ok;
                e.bytes = size_of_value(&v);
                e.info.result = Some(v);
            }
            Err(f) => {
                e.info.state = if cancelled {
                    TaskState::Cancelled
                } else {
                    TaskState::Failed
                };
                e.info.fault = Some(TaskFault {
                    code: f.code.code(),
                    message: f.message,
                });
            }
        }
        tracing::info!(task = id, state = e.info.state.as_str(), "task ended");
        Self::prune(&mut inner);
    }

    pub fn list(&self) -> Vec<TaskInfo> {
        let mut inner = self.lock();
        Self::prune(&mut inner);
        inner.entries.iter().map(|e| e.view(false)).collect()
    }

    fn unknown(id: &str) -> Fault {
        Fault::new(
            FaultCode::NotFound,
            format!(
                "no task {id:?} (tasks are forgotten an hour after they end, and when apid restarts)"
            ),
        )
    }

    /// `f` of task `id`'s entry, under the lock; 104 when there is none.
    fn with<T>(&self, id: &str, f: impl FnOnce(&Entry) -> Result<T, Fault>) -> Result<T, Fault> {
        let inner = self.lock();
        let e = inner.entries.iter().find(|e| e.info.id == id);
        f(e.ok_or_else(|| Self::unknown(id))?)
    }

    pub fn info(&self, id: &str) -> Result<TaskInfo, Fault> {
        self.with(id, |e| Ok(e.view(true)))
    }

    /// Waits until the task ends or `wait` (at most [`WAIT_MAX`]) passes.
    pub async fn wait(&self, id: &str, wait: Duration) -> Result<TaskInfo, Fault> {
        let mut rx = self.with(id, |e| Ok(e.ended.clone()))?;
        let _ = tokio::time::timeout(wait.min(WAIT_MAX), rx.wait_for(|ended| *ended)).await;
        self.info(id)
    }

    /// Cancels a running task: true when it was running, false when it had ended.
    pub fn cancel(&self, id: &str) -> Result<bool, Fault> {
        self.with(id, |e| Self::cancel_entry(id, e))
    }

    fn cancel_entry(id: &str, e: &Entry) -> Result<bool, Fault> {
        if e.ended_at.is_some() {
            return Ok(false);
        }
        if e.cancel == Cancel::Refused {
            return Err(Fault::new(
                FaultCode::Conflict,
                format!(
                    "{} can be neither interrupted nor undone: the task runs on (docs/api.md, Tasks)",
                    e.info.method
                ),
            ));
        }
        e.ctx.cancel();
        tracing::info!(task = id, "task cancelled");
        Ok(true)
    }
}

#[cfg(test)]
mod tests;
