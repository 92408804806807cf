//! `cairnctl task list|info|wait|cancel`, and long commands run as tasks (`task.start`) with a
//! progress bar: a template import from a URL, a volume backup, a VM snapshot.

use clap::Subcommand;
use model::api::task::{TaskCancel, TaskInfoOf, TaskList, TaskStart, TaskWait};
use model::xmlrpc::{EncodeError, Value};

use crate::call::{Call, call};
use crate::client::Client;
use crate::output::{member, table, text, utc};

#[derive(Subcommand)]
pub enum TaskCommand {
    /// Tasks running and recently ended.
    List,
    /// One task: its state, progress, result or fault.
    Info {
        /// The task's id, as task.start or `task list` gave it.
        id: String,
    },
    /// Waits until the task ends (polling the API), drawing its progress on a terminal.
    Wait {
        /// The task's id.
        id: String,
    },
    /// Cancels a running task; what it made is removed (see docs/api.md, Tasks).
    Cancel {
        /// The task's id.
        id: String,
    },
}

pub fn task_call(command: &TaskCommand) -> Result<Call, EncodeError> {
    match command {
        TaskCommand::List => call(TaskList {}),
        TaskCommand::Info { id } => call(TaskInfoOf { id: id.clone() }),
        // One short wait here; `follow` waits out the rest.
        TaskCommand::Wait { id } => call(TaskWait {
            id: id.clone(),
            seconds: Some(0),
        }),
        TaskCommand::Cancel { id } => call(TaskCancel { id: id.clone() }),
    }
}

fn int(v: Option<&Value>) -> u64 {
    v.and_then(Value::as_i64)
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(0)
}

pub fn tasks_table(value: &Value) -> String {
    let rows: Vec<Vec<String>> = value
        .as_array()
        .unwrap_or_default()
        .iter()
        .map(|t| {
            let s = t.as_struct();
            let progress = member(s, "progress").map_or(String::new(), |p| {
                let (done, total) = (
                    int(member(p.as_struct(), "done")),
                    int(member(p.as_struct(), "total")),
                );
                match (done * 100).checked_div(total) {
                    Some(pct) => format!("{pct}%"),
                    None => format!("{done} {}", text(member(p.as_struct(), "unit"))),
                }
            });
            vec![
                text(member(s, "id")),
                text(member(s, "method")),
                text(member(s, "target")),
                text(member(s, "state")),
                utc(member(s, "started").and_then(Value::as_i64).unwrap_or(0)),
                progress,
            ]
        })
        .collect();
    table(
        &["ID", "METHOD", "TARGET", "STATE", "STARTED", "PROGRESS"],
        &rows,
    )
}

/// Waits for task `id` to end, drawing its progress on stderr when that is a terminal; its
/// result, or an error with its fault.
pub async fn follow(client: &Client, id: &str, label: &str) -> anyhow::Result<Value> {
    let mut progress = crate::progress::Progress::new();
    let info = loop {
        let (method, params) = call(TaskWait {
            id: id.to_string(),
            seconds: Some(1),
        })?;
        let info = client.call(method, params).await?;
        let s = info.as_struct();
        if text(member(s, "state")) != "running" {
            break info;
        }
        if let Some(p) = member(s, "progress") {
            let p = p.as_struct();
            progress.update(int(member(p, "done")), int(member(p, "total")), label);
        }
    };
    progress.finish();
    let s = info.as_struct();
    match text(member(s, "state")).as_str() {
        "ok" => Ok(member(s, "result").cloned().unwrap_or(Value::Bool(true))),
        state => {
            let fault = member(s, "fault").map(Value::as_struct);
            Err(anyhow::anyhow!(
                "task {id} {state}: {} (fault {})",
                text(fault.and_then(|f| member(f, "message"))),
                int(fault.and_then(|f| member(f, "code"))),
            ))
        }
    }
}

/// Runs `method(params)` as a task and follows it to its end.
pub async fn run(
    client: &Client,
    method: &str,
    params: Vec<Value>,
    label: &str,
) -> anyhow::Result<Value> {
    let (start, start_params) = call(TaskStart {
        method: method.to_string(),
        params,
    })?;
    let id = client.call(start, start_params).await?;
    let id = id
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("task.start answered no id"))?
        .to_string();
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!("task {id} (Ctrl-C cancels it)");
    }
    // Ctrl-C cancels the task (as with incus), then follows it to its end: what it made is
    // removed before cairnctl exits. A task that cannot be cancelled is left running.
    let follow_it = follow(client, &id, label);
    tokio::pin!(follow_it);
    tokio::select! {
        result = &mut follow_it => return result,
        _ = tokio::signal::ctrl_c() => {}
    }
    eprintln!("\ncancelling task {id}");
    let (cancel, params) = call(TaskCancel { id: id.clone() })?;
    if let Err(e) = client.call(cancel, params).await {
        anyhow::bail!("task {id} runs on: {e}");
    }
    follow(client, &id, label).await
}
