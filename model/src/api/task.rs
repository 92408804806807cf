//! `task.*`: any API method run in the background, beyond a request's 30 s budget (Proxmox's
//! UPIDs, Incus's operations). apid keeps the tasks; nothing survives its restart.

use serde::{Deserialize, Serialize};

use super::{actions, rpc_type};
use crate::xmlrpc::Value;

/// A task's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    Running,
    Ok,
    Failed,
    Cancelled,
}

impl TaskState {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Running => "running",
            TaskState::Ok => "ok",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
        }
    }
}

/// How far a task has come, where its work says: `done` of `total` `unit`s (total 0: unknown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskProgress {
    pub done: u64,
    pub total: u64,
    pub unit: String,
}

/// Why a task failed: the fault its method answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskFault {
    pub code: i32,
    pub message: String,
}

/// One task, as task.info answers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskInfo {
    pub id: String,
    pub method: String,
    /// What it works on (the method's first parameter when that is a name), for lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub state: TaskState,
    /// Unix seconds.
    pub started: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<TaskProgress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<TaskFault>,
}

rpc_type!("struct": TaskInfo);

actions! { ACTIONS;
    TaskStart = "task.start", Apid, (method: String, params: Vec<Value>) -> String,
        "Runs method(params...) as a task, without the 30 s budget of a request (a long \
         exec, a large backup, snapshot or template import, a download), and answers its id \
         at once; task.info and task.wait follow it. The call is checked (method known, \
         parameters decoded) before the task starts: a bad one is refused as the method \
         itself would refuse it. At most 16 tasks run at once (-> 106). task.* and \
         system.multicall cannot be tasks (102).";
    TaskList = "task.list", Apid, () -> Vec<TaskInfo>,
        "Every task running and the last 256 that ended within the last hour (fewer when their \
         results hold more than 64 MiB together), oldest first, as task.info describes them \
         (result left out).";
    TaskInfoOf = "task.info", Apid, (id: String) -> TaskInfo,
        "One task: {id, method, target?, state (running|ok|failed|cancelled), started, ended? \
         (unix seconds), progress? ({done, total, unit}: bytes of a download or backup copy), \
         result? (the method's answer), fault? ({code, message}: why it failed)}. An unknown \
         or forgotten id -> 104.";
    TaskWait = "task.wait", Apid, (id: String, seconds: Option<u32>) -> TaskInfo,
        "Waits until the task ends or min(seconds, 25) pass (default 25), then answers as \
         task.info.";
    TaskCancel = "task.cancel", Apid, (id: String) -> bool,
        "Cancels a running task so that it leaves nothing: a download stops and its partial \
         file goes; an exec is killed (its whole process group); work that cannot be \
         interrupted is undone when it returns (template.import's template, the volume of \
         volume.create/clone/restore/import, volume.backup's backup, volume.snapshot's snapshot, \
         ct.create's and vm.create's guest deleted). A method \
         that can be neither -> 105, and it runs on. true when the task was running (it ends \
         as cancelled), false when it had already ended.";
}
