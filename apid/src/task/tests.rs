use super::*;

fn no_undo() -> Call {
    Arc::new(|_, _| Box::pin(async { Ok(Value::Bool(true)) }))
}

type Undone = Arc<Mutex<Vec<(&'static str, Vec<Value>)>>>;

/// An undo that records its calls.
fn recording_undo() -> (Call, Undone) {
    let undone = Undone::default();
    let seen = undone.clone();
    let call: Call = Arc::new(move |m, p| {
        seen.lock().unwrap().push((m, p));
        Box::pin(async { Ok(Value::Bool(true)) })
    });
    (call, undone)
}

/// Work that answers `v` once `go` fires, as a call that cannot be stopped.
fn after(go: tokio::sync::oneshot::Receiver<()>, v: Value) -> impl FnOnce() -> Work {
    move || {
        Box::pin(async move {
            let _ = go.await;
            Ok(v)
        })
    }
}

fn done(v: Value) -> impl FnOnce() -> Work {
    move || Box::pin(async move { Ok(v) })
}

/// Work that runs until it is cancelled, reporting progress on the way.
fn until_cancelled() -> impl FnOnce() -> Work {
    || {
        Box::pin(async {
            let ctx = current().expect("work runs inside its task");
            ctx.progress(5, 10, "bytes");
            assert_eq!(budget(Duration::from_secs(28)), TASK_BUDGET);
            ctx.cancelled().await;
            Err(Fault::internal("stopped"))
        })
    }
}

#[tokio::test]
async fn a_task_runs_to_its_result_and_is_kept() {
    let tasks = Arc::new(Tasks::new());
    assert_eq!(budget(Duration::from_secs(28)), Duration::from_secs(28));
    let id = tasks
        .start("ct.list", &[], done(Value::Int(7)), no_undo())
        .unwrap();
    let info = tasks.wait(&id, Duration::from_secs(5)).await.unwrap();
    assert_eq!(info.state, TaskState::Ok);
    assert_eq!(info.result, Some(Value::Int(7)));
    assert!(info.ended.is_some_and(|e| e >= info.started));
    assert_eq!(info.method, "ct.list");
    // The list leaves results out; info keeps them.
    let list = tasks.list();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].result, None);
    assert_eq!(tasks.info(&id).unwrap().result, Some(Value::Int(7)));
    let other = tasks
        .start("ct.list", &[], done(Value::Nil), no_undo())
        .unwrap();
    assert_ne!(id, other, "ids are unique");
}

#[tokio::test]
async fn ended_results_are_bounded_in_bytes() {
    let tasks = Arc::new(Tasks::new());
    let big = || done(Value::String("x".repeat(10 << 20)));
    let mut ids = Vec::new();
    for _ in 0..10 {
        let id = tasks.start("ct.exec", &[], big(), no_undo()).unwrap();
        tasks.wait(&id, Duration::from_secs(5)).await.unwrap();
        ids.push(id);
    }
    // 100 MiB of answers: the oldest are forgotten until 64 MiB remain.
    let kept: Vec<_> = tasks.list().into_iter().map(|t| t.id).collect();
    assert_eq!(kept, ids[4..], "the newest six are kept");
    assert_eq!(tasks.info(&ids[0]).unwrap_err().code, FaultCode::NotFound);
}

#[tokio::test]
async fn a_failed_method_is_a_failed_task_with_its_fault() {
    let tasks = Arc::new(Tasks::new());
    let id = tasks
        .start(
            "ct.start",
            &[Value::String("web".into())],
            || Box::pin(async { Err(Fault::new(FaultCode::NotFound, "no container web")) }),
            no_undo(),
        )
        .unwrap();
    let info = tasks.wait(&id, Duration::from_secs(5)).await.unwrap();
    assert_eq!(info.state, TaskState::Failed);
    assert_eq!(info.target.as_deref(), Some("web"));
    assert_eq!(
        info.fault,
        Some(TaskFault {
            code: 104,
            message: "no container web".into()
        })
    );
}

#[tokio::test]
async fn wait_returns_after_its_time_with_the_task_still_running() {
    let tasks = Arc::new(Tasks::new());
    let id = tasks
        .start("ct.exec", &[], until_cancelled(), no_undo())
        .unwrap();
    let t = std::time::Instant::now();
    let info = tasks.wait(&id, Duration::from_millis(200)).await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(200));
    assert_eq!(info.state, TaskState::Running);
    assert_eq!(
        info.progress,
        Some(TaskProgress {
            done: 5,
            total: 10,
            unit: "bytes".into()
        })
    );
    assert!(tasks.cancel(&id).unwrap());
    let info = tasks.wait(&id, Duration::from_secs(5)).await.unwrap();
    assert_eq!(info.state, TaskState::Cancelled);
    assert!(
        !tasks.cancel(&id).unwrap(),
        "an ended task is not cancelled again"
    );
}

#[tokio::test]
async fn unknown_ids_are_not_found() {
    let tasks = Arc::new(Tasks::new());
    assert_eq!(tasks.info("nope").unwrap_err().code, FaultCode::NotFound);
    assert_eq!(tasks.cancel("nope").unwrap_err().code, FaultCode::NotFound);
    let wait = tasks.wait("nope", Duration::from_secs(1)).await;
    assert_eq!(wait.unwrap_err().code, FaultCode::NotFound);
}

#[tokio::test]
async fn running_tasks_are_bounded() {
    let tasks = Arc::new(Tasks::new());
    let ids: Vec<_> = (0..MAX_RUNNING)
        .map(|_| {
            tasks
                .start("ct.exec", &[], until_cancelled(), no_undo())
                .unwrap()
        })
        .collect();
    let refused = tasks.start("ct.exec", &[], until_cancelled(), no_undo());
    assert_eq!(refused.unwrap_err().code, FaultCode::Busy);
    tasks.cancel(&ids[0]).unwrap();
    tasks.wait(&ids[0], Duration::from_secs(5)).await.unwrap();
    tasks
        .start("ct.list", &[], done(Value::Nil), no_undo())
        .expect("room again once one ended");
    for id in &ids[1..] {
        tasks.cancel(id).unwrap();
    }
}

#[tokio::test]
async fn ended_tasks_are_bounded() {
    let tasks = Arc::new(Tasks::new());
    let mut last = String::new();
    for _ in 0..KEEP_ENDED + 10 {
        last = tasks
            .start("ct.list", &[], done(Value::Nil), no_undo())
            .unwrap();
        tasks.wait(&last, Duration::from_secs(5)).await.unwrap();
    }
    assert_eq!(tasks.list().len(), KEEP_ENDED);
    assert!(tasks.info(&last).is_ok(), "the newest are kept");
}

#[tokio::test]
async fn a_method_that_can_neither_stop_nor_be_undone_is_not_cancelled() {
    let tasks = Arc::new(Tasks::new());
    let params = [Value::String("deb".into()), Value::String("/x".into())];
    let id = tasks
        .start("vm.snapshot", &params, until_cancelled(), no_undo())
        .unwrap();
    assert_eq!(tasks.cancel(&id).unwrap_err().code, FaultCode::Conflict);
    assert_eq!(tasks.info(&id).unwrap().state, TaskState::Running);
    // Stopped here only so the test ends: the registry's own handle on the work.
    tasks.lock().entries[0].ctx.cancel();
}

/// Starts `method(params)` as work that cannot be stopped, cancels it, lets it end with
/// `answer`: the task's last info and the undo calls made.
async fn cancel_before_it_ends(
    method: &str,
    params: &[Value],
    answer: Value,
) -> (TaskInfo, Undone) {
    let tasks = Arc::new(Tasks::new());
    let (call, undone) = recording_undo();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let id = tasks
        .start(method, params, after(go_rx, answer), call)
        .unwrap();
    assert!(tasks.cancel(&id).unwrap());
    go_tx.send(()).unwrap();
    let info = tasks.wait(&id, Duration::from_secs(5)).await.unwrap();
    (info, undone)
}

#[tokio::test]
async fn cancelled_work_that_finished_is_undone_by_its_inverse() {
    let params = [
        Value::String("debian".into()),
        Value::String("/x.tar".into()),
        Value::String("sha256:00".into()),
    ];
    // An import that cannot be stopped: it ends with success after the cancel.
    let (info, undone) = cancel_before_it_ends("template.import", &params, Value::Bool(true)).await;
    assert_eq!(info.state, TaskState::Cancelled);
    assert_eq!(info.result, None);
    assert_eq!(
        *undone.lock().unwrap(),
        vec![("template.delete", vec![Value::String("debian".into())])]
    );
}

#[tokio::test]
async fn a_cancelled_backup_is_deleted_by_the_name_in_its_answer() {
    let answer: model::xmlrpc::Struct = [(
        "backup".to_string(),
        Value::String("/p/backups/v-1.raw".into()),
    )]
    .into_iter()
    .collect();
    let params = [Value::String("p/v".into()), Value::String("p".into())];
    let (info, undone) =
        cancel_before_it_ends("volume.backup", &params, Value::Struct(answer)).await;
    assert_eq!(info.state, TaskState::Cancelled);
    assert_eq!(
        *undone.lock().unwrap(),
        vec![(
            "volume.deleteBackup",
            vec![Value::String("/p/backups/v-1.raw".into())]
        )]
    );
}

#[tokio::test]
async fn a_kill_registered_by_the_work_runs_on_cancel() {
    let tasks = Arc::new(Tasks::new());
    let (killed_tx, killed_rx) = tokio::sync::oneshot::channel::<()>();
    let id = tasks
        .start(
            "ct.exec",
            &[],
            move || {
                Box::pin(async move {
                    let ctx = current().unwrap();
                    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
                    ctx.on_cancel(Box::pin(async move {
                        let _ = tx.send(());
                        let _ = killed_tx.send(());
                    }));
                    // As an exec: it returns once its process is killed.
                    let _ = rx.await;
                    Ok(Value::Int(137))
                })
            },
            no_undo(),
        )
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(tasks.cancel(&id).unwrap());
    tokio::time::timeout(Duration::from_secs(5), killed_rx)
        .await
        .expect("the kill ran")
        .unwrap();
    let info = tasks.wait(&id, Duration::from_secs(5)).await.unwrap();
    assert_eq!(info.state, TaskState::Cancelled);
}

#[test]
fn undo_calls_follow_the_parameters() {
    let spec = |k: &str, v: &str| {
        Value::Struct(
            [(k.to_string(), Value::String(v.into()))]
                .into_iter()
                .collect(),
        )
    };
    assert_eq!(
        undo_of("ct.create", &[spec("name", "web")]),
        Cancel::Undo("ct.delete", vec![Value::String("web".into())])
    );
    assert_eq!(
        undo_of("volume.create", &[spec("volume", "p/v")]),
        Cancel::Undo("volume.delete", vec![Value::String("p/v".into())])
    );
    assert_eq!(
        undo_of(
            "volume.clone",
            &[Value::String("p/a".into()), Value::String("p/b".into())]
        ),
        Cancel::Undo("volume.delete", vec![Value::String("p/b".into())])
    );
    assert_eq!(undo_of("ct.exec", &[]), Cancel::Stops);
    assert_eq!(undo_of("vm.snapshot", &[]), Cancel::Refused);
    assert_eq!(undo_of("ct.create", &[]), Cancel::Refused);
}
