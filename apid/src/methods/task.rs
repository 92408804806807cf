//! `task.*`: methods run in the background (see [`crate::task`]).

use std::sync::Arc;
use std::time::Duration;

use model::api::task::{TaskCancel, TaskInfo, TaskInfoOf, TaskList, TaskStart, TaskWait};

use super::{Api, Fault, Method, Serve, method};
use crate::task::{Call, WAIT_MAX};

pub fn methods() -> Vec<Method> {
    vec![
        method::<TaskStart>(),
        method::<TaskList>(),
        method::<TaskInfoOf>(),
        method::<TaskWait>(),
        method::<TaskCancel>(),
    ]
}

impl Serve for TaskStart {
    async fn serve(self, api: &Api) -> Result<String, Fault> {
        let name = self.method;
        if name.starts_with("task.") || name == "system.multicall" {
            return Err(Fault::bad_params(format!(
                "task.start: {name} cannot run as a task"
            )));
        }
        // Checked now, as the method itself would: a bad call is refused, not a failed task.
        api.check(&name, &self.params)?;
        let runner = api.clone();
        let undoer = api.clone();
        let call: Call = Arc::new(move |m, p| {
            let api = undoer.clone();
            Box::pin(async move { api.call(m, p).await })
        });
        let params = self.params;
        let work_params = params.clone();
        let work_name = name.clone();
        api.tasks.start(
            &name,
            &params,
            move || Box::pin(async move { runner.call(&work_name, work_params).await }),
            call,
        )
    }
}

impl Serve for TaskList {
    async fn serve(self, api: &Api) -> Result<Vec<TaskInfo>, Fault> {
        Ok(api.tasks.list())
    }
}

impl Serve for TaskInfoOf {
    async fn serve(self, api: &Api) -> Result<TaskInfo, Fault> {
        api.tasks.info(&self.id)
    }
}

impl Serve for TaskWait {
    async fn serve(self, api: &Api) -> Result<TaskInfo, Fault> {
        let wait = self
            .seconds
            .map_or(WAIT_MAX, |s| Duration::from_secs(u64::from(s)));
        api.tasks.wait(&self.id, wait).await
    }
}

impl Serve for TaskCancel {
    async fn serve(self, api: &Api) -> Result<bool, Fault> {
        api.tasks.cancel(&self.id)
    }
}
