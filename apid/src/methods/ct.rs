//! `ct.*` and `template.*`: OS containers and their templates, served by hostd.
//!
//! Time: every API call must answer within the 30 s method limit (docs/api.md), so the calls
//! that wait on the host (stop's grace period, exec, unpacking a template) have bounded,
//! documented deadlines below that limit rather than open-ended ones.

use std::time::Duration;

use model::api::ct::{
    CtConsole, CtCreate, CtDelete, CtExec, CtInfo, CtList, CtPause, CtRestart, CtResume, CtSet,
    CtStart, CtStop, CtStopTimeout, ExecOutput, TemplateDelete, TemplateImport, TemplateList,
};
use model::ct::{ContainerInfo, TemplateInfo};
use model::fault::FaultCode;

use super::{Api, Fault, Method, Serve, answer, json, method};
use crate::bus::CALL_TIMEOUT;

/// How long `ct.stop`/`ct.restart` let the container's init shut down before it is killed.
pub const DEFAULT_STOP_GRACE_S: u32 = 10;
/// The longest grace `ct.stopTimeout` accepts: grace + kill + cleanup must fit in 30 s.
pub const MAX_STOP_GRACE_S: u32 = 20;
/// `ct.exec`'s deadline for the command; hostd kills it after that.
pub const EXEC_TIMEOUT_S: u32 = 20;
/// `ct.exec`'s deadline when it runs as a task (`task.start`).
pub const TASK_EXEC_TIMEOUT_S: u32 = 3600;
/// `ct.console` answers the last this many bytes of the console log.
pub const CONSOLE_BYTES: u32 = 64 * 1024;

/// Beyond the container's own deadline: hostd's kill, reaping and cleanup.
pub(super) const SLACK: Duration = Duration::from_secs(8);
/// Unpacking a template tarball, removing a container's upper layer: disk-bound work.
pub(super) const DISK_TIMEOUT: Duration = Duration::from_secs(25);
/// Starting (spawning the monitor, attaching the port), pausing (the freezer settles).
pub(super) const START_TIMEOUT: Duration = Duration::from_secs(15);

pub(super) fn secs(s: u32) -> Duration {
    Duration::from_secs(u64::from(s))
}

pub fn methods() -> Vec<Method> {
    vec![
        method::<TemplateImport>(),
        method::<TemplateList>(),
        method::<TemplateDelete>(),
        method::<CtCreate>(),
        method::<CtStart>(),
        method::<CtStop>(),
        method::<CtStopTimeout>(),
        method::<CtRestart>(),
        method::<CtPause>(),
        method::<CtResume>(),
        method::<CtDelete>(),
        method::<CtList>(),
        method::<CtInfo>(),
        method::<CtSet>(),
        method::<CtExec>(),
        method::<CtConsole>(),
    ]
}

impl Serve for TemplateImport {
    async fn serve(self, api: &Api) -> Result<TemplateInfo, Fault> {
        // An http(s) URL is fetched here first (apid is the one on the network); hostd then
        // imports the file as any other, and it goes once imported (Fetched's drop).
        let fetched = fetch_template(api, &self).await?;
        // An uploaded tarball (`upload:NAME`) is consumed by the import that takes it.
        let upload = self.path.starts_with(crate::upload::SCHEME);
        let path = match &fetched {
            Some(f) => f.path.display().to_string(),
            None => crate::upload::host_path(api.uploads.as_deref(), &self.path)?,
        };
        let consumed = upload.then(|| path.clone());
        let info = api
            .bus
            .hostd_call(DISK_TIMEOUT, |h| async move {
                h.import_template_in_pool(
                    &self.name,
                    &path,
                    &self.sha256,
                    self.pool.as_deref().unwrap_or(""),
                )
                .await
            })
            .await?;
        if let Some(consumed) = consumed {
            crate::upload::consume(&consumed);
        }
        answer("hostd", &info)
    }
}

/// `template.import`'s URL, downloaded into the uploads directory (None: not a URL).
async fn fetch_template(
    api: &Api,
    import: &TemplateImport,
) -> Result<Option<crate::fetch::Fetched>, Fault> {
    if !crate::fetch::is_url(&import.path) {
        return Ok(None);
    }
    let hex = import
        .sha256
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| {
            Fault::bad_params("template.import: sha256 must be \"sha256:\" and 64 hex digits")
        })?;
    let uploads = api.uploads.as_ref().ok_or_else(|| {
        Fault::new(
            FaultCode::Conflict,
            "this API keeps no uploads: cannot download",
        )
    })?;
    let fetched = crate::fetch::fetch(uploads, &import.path, hex).await?;
    if crate::task::current().is_some_and(|t| t.is_cancelled()) {
        return Err(Fault::new(FaultCode::Conflict, "cancelled"));
    }
    Ok(Some(fetched))
}

impl Serve for TemplateList {
    async fn serve(self, api: &Api) -> Result<Vec<TemplateInfo>, Fault> {
        let list = api
            .bus
            .hostd_call(CALL_TIMEOUT, |h| async move { h.list_templates().await })
            .await?;
        answer("hostd", &list)
    }
}

impl Serve for TemplateDelete {
    async fn serve(self, api: &Api) -> Result<bool, Fault> {
        api.bus
            .hostd_call(DISK_TIMEOUT, |h| async move {
                h.delete_template(&self.name).await
            })
            .await?;
        Ok(true)
    }
}

impl Serve for CtCreate {
    async fn serve(self, api: &Api) -> Result<ContainerInfo, Fault> {
        let spec = json(&self.spec)?;
        let info = api
            .bus
            .hostd_call(
                START_TIMEOUT,
                |h| async move { h.create_container(&spec).await },
            )
            .await?;
        answer("hostd", &info)
    }
}

impl Serve for CtStart {
    async fn serve(self, api: &Api) -> Result<bool, Fault> {
        api.bus
            .hostd_call(START_TIMEOUT, |h| async move {
                h.start_container(&self.name).await
            })
            .await?;
        Ok(true)
    }
}

async fn stop_with(api: &Api, name: String, grace: u32) -> Result<bool, Fault> {
    api.bus
        .hostd_call(secs(grace) + SLACK, |h| async move {
            h.stop_container(&name, grace).await
        })
        .await?;
    Ok(true)
}

impl Serve for CtStop {
    async fn serve(self, api: &Api) -> Result<bool, Fault> {
        stop_with(api, self.name, DEFAULT_STOP_GRACE_S).await
    }
}

impl Serve for CtStopTimeout {
    async fn serve(self, api: &Api) -> Result<bool, Fault> {
        if self.seconds > MAX_STOP_GRACE_S {
            return Err(Fault::bad_params(format!(
                "seconds = {} is out of range 0..={MAX_STOP_GRACE_S} (an API call must answer \
                 within 30 s)",
                self.seconds
            )));
        }
        stop_with(api, self.name, self.seconds).await
    }
}

impl Serve for CtRestart {
    async fn serve(self, api: &Api) -> Result<bool, Fault> {
        // The stop's grace and slack, then a start.
        let bound = secs(DEFAULT_STOP_GRACE_S) + SLACK + Duration::from_secs(7);
        api.bus
            .hostd_call(bound, |h| async move {
                h.restart_container(&self.name, DEFAULT_STOP_GRACE_S).await
            })
            .await?;
        Ok(true)
    }
}

impl Serve for CtPause {
    async fn serve(self, api: &Api) -> Result<bool, Fault> {
        api.bus
            .hostd_call(START_TIMEOUT, |h| async move {
                h.pause_container(&self.name).await
            })
            .await?;
        Ok(true)
    }
}

impl Serve for CtResume {
    async fn serve(self, api: &Api) -> Result<bool, Fault> {
        api.bus
            .hostd_call(START_TIMEOUT, |h| async move {
                h.resume_container(&self.name).await
            })
            .await?;
        Ok(true)
    }
}

impl Serve for CtDelete {
    async fn serve(self, api: &Api) -> Result<bool, Fault> {
        api.bus
            .hostd_call(DISK_TIMEOUT, |h| async move {
                h.delete_container(&self.name).await
            })
            .await?;
        Ok(true)
    }
}

impl Serve for CtList {
    async fn serve(self, api: &Api) -> Result<Vec<ContainerInfo>, Fault> {
        let list = api
            .bus
            .hostd_call(CALL_TIMEOUT, |h| async move { h.list_containers().await })
            .await?;
        answer("hostd", &list)
    }
}

impl Serve for CtInfo {
    async fn serve(self, api: &Api) -> Result<ContainerInfo, Fault> {
        let info = api
            .bus
            .hostd_call(CALL_TIMEOUT, |h| async move {
                h.container_info(&self.name).await
            })
            .await?;
        answer("hostd", &info)
    }
}

impl Serve for CtSet {
    async fn serve(self, api: &Api) -> Result<bool, Fault> {
        let resources = json(&self.resources)?;
        api.bus
            .hostd_call(CALL_TIMEOUT, |h| async move {
                h.set_container(&self.name, &resources).await
            })
            .await?;
        Ok(true)
    }
}

impl Serve for CtExec {
    async fn serve(self, api: &Api) -> Result<ExecOutput, Fault> {
        let (exit_code, stdout, stderr) = match crate::task::current() {
            None => {
                api.bus
                    .hostd_call(secs(EXEC_TIMEOUT_S) + SLACK, |h| async move {
                        h.exec(&self.name, self.argv, EXEC_TIMEOUT_S).await
                    })
                    .await?
            }
            Some(task) => exec_in_task(api, &task, self).await?,
        };
        Ok(ExecOutput {
            exit_code,
            stdout,
            stderr,
        })
    }
}

/// `ct.exec` as a task: [`TASK_EXEC_TIMEOUT_S`] instead of 20 s, tagged with the task's id so
/// that a cancel kills it (and what it started) in hostd.
async fn exec_in_task(
    api: &Api,
    task: &crate::task::Ctx,
    exec: CtExec,
) -> Result<(i32, String, String), Fault> {
    let tag = task.id().to_string();
    let bus = api.bus.clone();
    let kill_tag = tag.clone();
    task.on_cancel(Box::pin(async move {
        let t = kill_tag.clone();
        let killed = bus
            .hostd_call(CALL_TIMEOUT, |h| async move { h.kill_exec(&t).await })
            .await;
        if let Err(e) = killed {
            tracing::warn!(task = %kill_tag, error = %e, "cannot kill a cancelled exec");
        }
    }));
    Ok(api
        .bus
        .hostd_call(secs(TASK_EXEC_TIMEOUT_S) + SLACK, |h| async move {
            h.exec_tagged(&exec.name, exec.argv, TASK_EXEC_TIMEOUT_S, &tag)
                .await
        })
        .await?)
}

impl Serve for CtConsole {
    async fn serve(self, api: &Api) -> Result<String, Fault> {
        Ok(api
            .bus
            .hostd_call(CALL_TIMEOUT, |h| async move {
                h.console_log(&self.name, CONSOLE_BYTES).await
            })
            .await?)
    }
}
