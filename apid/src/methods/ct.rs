//! `ct.*` and `template.*`: OS containers and their templates, served by hostd. Specs and limits
//! are checked here with the same validation hostd applies, so a bad request is refused before
//! anything reaches the host.
//!
//! Time: every API call must answer within the 30 s method limit (docs/api.md), so the calls
//! that wait on the host (stop's grace period, exec, unpacking a template) have bounded,
//! documented deadlines below that limit rather than open-ended ones.

use std::time::Duration;

use model::ct::{ContainerSpec, Resources, is_ct_name};
use model::fault::FaultCode;
use model::xmlrpc::Value;
use serde::de::DeserializeOwned;

use super::{Api, Fault, Method, MethodFuture};
use crate::bus::CALL_TIMEOUT;

/// How long `ct.stop`/`ct.restart` let the container's init shut down before it is killed.
pub const DEFAULT_STOP_GRACE_S: u32 = 10;
/// The longest grace `ct.stopTimeout` accepts: grace + kill + cleanup must fit in 30 s.
pub const MAX_STOP_GRACE_S: u32 = 20;
/// `ct.exec`'s deadline for the command; hostd kills it after that.
pub const EXEC_TIMEOUT_S: u32 = 20;
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
        Method {
            name: "template.import",
            signature: &["struct", "string", "string", "string"],
            help: "Imports an OS template: template.import(name, path, sha256) unpacks the rootfs \
                   tarball at path (on the host) once its digest matches sha256 (\"sha256:<hex>\"). \
                   Returns {name, version?, sha256, size_bytes}. Unpacking may take up to 25 s.",
            handler: template_import,
        },
        Method {
            name: "template.list",
            signature: &["array"],
            help: "Every template: {name, version?, sha256, size_bytes}.",
            handler: template_list,
        },
        Method {
            name: "template.delete",
            signature: &["boolean", "string"],
            help: "Deletes a template that no container uses.",
            handler: template_delete,
        },
        Method {
            name: "ct.create",
            signature: &["struct", "struct"],
            help: "Creates (does not start) a container from {name, template, network?, \
                   addresses?, gateway?, hostname?, command?, privileged?, resources?}; \
                   resources: {cpu_limit? (% of one CPU), cpu_weight?, cpuset?, memory? (bytes), \
                   swap?, pids?, io_weight?}. Returns the container as ct.info shows it.",
            handler: create,
        },
        Method {
            name: "ct.start",
            signature: &["boolean", "string"],
            help: "Starts a created or stopped container.",
            handler: start,
        },
        Method {
            name: "ct.stop",
            signature: &["boolean", "string"],
            help: "Stops a container: signals its init, waits up to 10 s, then kills every \
                   process. ct.stopTimeout takes another grace period.",
            handler: stop,
        },
        Method {
            name: "ct.stopTimeout",
            signature: &["boolean", "string", "int"],
            help: "ct.stopTimeout(name, seconds): as ct.stop with a grace period of 0 to 20 \
                   seconds (0 kills at once).",
            handler: stop_timeout,
        },
        Method {
            name: "ct.restart",
            signature: &["boolean", "string"],
            help: "Stops (as ct.stop) and starts a container again.",
            handler: restart,
        },
        Method {
            name: "ct.pause",
            signature: &["boolean", "string"],
            help: "Freezes every process of a running container (cgroup freezer).",
            handler: pause,
        },
        Method {
            name: "ct.resume",
            signature: &["boolean", "string"],
            help: "Thaws a paused container.",
            handler: resume,
        },
        Method {
            name: "ct.delete",
            signature: &["boolean", "string"],
            help: "Deletes a stopped container and everything it had on the host.",
            handler: delete,
        },
        Method {
            name: "ct.list",
            signature: &["array"],
            help: "Every container, as ct.info describes it.",
            handler: list,
        },
        Method {
            name: "ct.info",
            signature: &["struct", "string"],
            help: "One container: {name, template, state (created|running|paused|stopped), pid?, \
                   exit_code?, hostname, addresses, port?, privileged, resources, usage?: \
                   {cpu_usec, memory_bytes, pids, io_read_bytes, io_write_bytes, net_rx_bytes, \
                   net_tx_bytes, oom_kills}, created, started?}, usage read now.",
            handler: info,
        },
        Method {
            name: "ct.set",
            signature: &["boolean", "string", "struct"],
            help: "Changes a container's limits live, without a restart: {cpu_limit?, \
                   cpu_weight?, cpuset?, memory?, swap?, pids?, io_weight?}; only the members \
                   given change.",
            handler: set,
        },
        Method {
            name: "ct.exec",
            signature: &["struct", "string", "array"],
            help: "ct.exec(name, argv): runs argv inside a running container, killed after 20 s. \
                   Returns {exit_code, stdout, stderr}.",
            handler: exec,
        },
        Method {
            name: "ct.console",
            signature: &["string", "string"],
            help: "The last 64 KiB of a container's console log.",
            handler: console,
        },
    ]
}

/// Reads an XML-RPC struct as the serde type hostd expects; unknown or mistyped members are
/// refused with the member's name.
pub(super) fn decode<T: DeserializeOwned>(what: &str, v: &Value) -> Result<T, Fault> {
    serde_json::from_value(v.to_json()).map_err(|e| Fault::bad_params(format!("{what}: {e}")))
}

pub(super) fn encode<T: serde::Serialize>(t: &T) -> Result<String, Fault> {
    serde_json::to_string(t).map_err(|e| Fault::new(FaultCode::Internal, e.to_string()))
}

pub(super) fn answer(json: &str) -> Result<Value, Fault> {
    serde_json::from_str::<serde_json::Value>(json)
        .map(|j| Value::from_json(&j))
        .map_err(|e| Fault::new(FaultCode::Internal, format!("hostd answered: {e}")))
}

/// Parameter `i` as a container or template name. A malformed name cannot name anything, so
/// it is refused here (102) rather than reported as not found.
fn name_param(params: &[Value], i: usize, what: &str) -> Result<String, Fault> {
    let name = params.get(i).and_then(Value::as_str).unwrap_or_default();
    if is_ct_name(name) {
        Ok(name.to_string())
    } else {
        Err(Fault::bad_params(format!(
            "{what} {name:?} is not a valid name; expected lowercase letters, digits and \
             hyphens, starting with a letter or digit"
        )))
    }
}

fn resources_param(v: &Value) -> Result<Resources, Fault> {
    let r: Resources = decode("resources", v)?;
    r.validate()
        .map_err(|problems| Fault::bad_params(problems.join("; ")))?;
    Ok(r)
}

fn is_digest(s: &str) -> bool {
    s.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn template_import(api: &Api, params: Vec<Value>) -> MethodFuture<'_> {
    Box::pin(async move {
        let name = name_param(&params, 0, "template")?;
        let path = params[1].as_str().unwrap_or_default().to_string();
        let digest = params[2].as_str().unwrap_or_default().to_ascii_lowercase();
        if !path.starts_with('/') {
            return Err(Fault::bad_params(format!(
                "path {path:?} must be an absolute path on the host"
            )));
        }
        if !is_digest(&digest) {
            return Err(Fault::bad_params(format!(
                "sha256 {digest:?} must be \"sha256:\" and 64 hex digits"
            )));
        }
        let json = api
            .bus
            .hostd_call(DISK_TIMEOUT, |h| async move {
                h.import_template(&name, &path, &digest).await
            })
            .await?;
        answer(&json)
    })
}

fn template_list(api: &Api, _params: Vec<Value>) -> MethodFuture<'_> {
    Box::pin(async move {
        let json = api
            .bus
            .hostd_call(CALL_TIMEOUT, |h| async move { h.list_templates().await })
            .await?;
        answer(&json)
    })
}

fn template_delete(api: &Api, params: Vec<Value>) -> MethodFuture<'_> {
    Box::pin(async move {
        let name = name_param(&params, 0, "template")?;
        api.bus
            .hostd_call(
                DISK_TIMEOUT,
                |h| async move { h.delete_template(&name).await },
            )
            .await?;
        Ok(Value::Bool(true))
    })
}

fn create(api: &Api, params: Vec<Value>) -> MethodFuture<'_> {
    Box::pin(async move {
        let spec: ContainerSpec = decode("container", &params[0])?;
        spec.validate()
            .map_err(|e| Fault::bad_params(e.to_string()))?;
        let json = encode(&spec)?;
        let json = api
            .bus
            .hostd_call(
                START_TIMEOUT,
                |h| async move { h.create_container(&json).await },
            )
            .await?;
        answer(&json)
    })
}

fn start(api: &Api, params: Vec<Value>) -> MethodFuture<'_> {
    Box::pin(async move {
        let name = name_param(&params, 0, "container")?;
        api.bus
            .hostd_call(
                START_TIMEOUT,
                |h| async move { h.start_container(&name).await },
            )
            .await?;
        Ok(Value::Bool(true))
    })
}

async fn stop_with(api: &Api, name: String, grace: u32) -> Result<Value, Fault> {
    api.bus
        .hostd_call(secs(grace) + SLACK, |h| async move {
            h.stop_container(&name, grace).await
        })
        .await?;
    Ok(Value::Bool(true))
}

fn stop(api: &Api, params: Vec<Value>) -> MethodFuture<'_> {
    Box::pin(async move {
        let name = name_param(&params, 0, "container")?;
        stop_with(api, name, DEFAULT_STOP_GRACE_S).await
    })
}

fn stop_timeout(api: &Api, params: Vec<Value>) -> MethodFuture<'_> {
    Box::pin(async move {
        let name = name_param(&params, 0, "container")?;
        let grace = params[1]
            .as_i64()
            .and_then(|s| u32::try_from(s).ok())
            .filter(|s| *s <= MAX_STOP_GRACE_S)
            .ok_or_else(|| {
                Fault::bad_params(format!(
                    "seconds = {} is out of range 0..={MAX_STOP_GRACE_S} (an API call must \
                     answer within 30 s)",
                    params[1].as_i64().unwrap_or_default()
                ))
            })?;
        stop_with(api, name, grace).await
    })
}

fn restart(api: &Api, params: Vec<Value>) -> MethodFuture<'_> {
    Box::pin(async move {
        let name = name_param(&params, 0, "container")?;
        // The stop's grace and slack, then a start.
        let bound = secs(DEFAULT_STOP_GRACE_S) + SLACK + Duration::from_secs(7);
        api.bus
            .hostd_call(bound, |h| async move {
                h.restart_container(&name, DEFAULT_STOP_GRACE_S).await
            })
            .await?;
        Ok(Value::Bool(true))
    })
}

fn pause(api: &Api, params: Vec<Value>) -> MethodFuture<'_> {
    Box::pin(async move {
        let name = name_param(&params, 0, "container")?;
        api.bus
            .hostd_call(
                START_TIMEOUT,
                |h| async move { h.pause_container(&name).await },
            )
            .await?;
        Ok(Value::Bool(true))
    })
}

fn resume(api: &Api, params: Vec<Value>) -> MethodFuture<'_> {
    Box::pin(async move {
        let name = name_param(&params, 0, "container")?;
        api.bus
            .hostd_call(
                START_TIMEOUT,
                |h| async move { h.resume_container(&name).await },
            )
            .await?;
        Ok(Value::Bool(true))
    })
}

fn delete(api: &Api, params: Vec<Value>) -> MethodFuture<'_> {
    Box::pin(async move {
        let name = name_param(&params, 0, "container")?;
        api.bus
            .hostd_call(
                DISK_TIMEOUT,
                |h| async move { h.delete_container(&name).await },
            )
            .await?;
        Ok(Value::Bool(true))
    })
}

fn list(api: &Api, _params: Vec<Value>) -> MethodFuture<'_> {
    Box::pin(async move {
        let json = api
            .bus
            .hostd_call(CALL_TIMEOUT, |h| async move { h.list_containers().await })
            .await?;
        answer(&json)
    })
}

fn info(api: &Api, params: Vec<Value>) -> MethodFuture<'_> {
    Box::pin(async move {
        let name = name_param(&params, 0, "container")?;
        let json = api
            .bus
            .hostd_call(
                CALL_TIMEOUT,
                |h| async move { h.container_info(&name).await },
            )
            .await?;
        answer(&json)
    })
}

fn set(api: &Api, params: Vec<Value>) -> MethodFuture<'_> {
    Box::pin(async move {
        let name = name_param(&params, 0, "container")?;
        let resources = resources_param(&params[1])?;
        if resources == Resources::default() {
            return Err(Fault::bad_params(
                "resources: give at least one of cpu_limit, cpu_weight, cpuset, memory, swap, \
                 pids, io_weight",
            ));
        }
        let json = encode(&resources)?;
        api.bus
            .hostd_call(CALL_TIMEOUT, |h| async move {
                h.set_container(&name, &json).await
            })
            .await?;
        Ok(Value::Bool(true))
    })
}

fn exec(api: &Api, params: Vec<Value>) -> MethodFuture<'_> {
    Box::pin(async move {
        let name = name_param(&params, 0, "container")?;
        let items = params[1].as_array().unwrap_or_default();
        let argv: Vec<String> = items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str().map(str::to_string).ok_or_else(|| {
                    Fault::bad_params(format!("argv[{i}] must be a string, got {}", v.type_name()))
                })
            })
            .collect::<Result<_, _>>()?;
        if argv.first().is_none_or(String::is_empty) {
            return Err(Fault::bad_params(
                "argv must hold the command to run and its arguments",
            ));
        }
        let (code, stdout, stderr) = api
            .bus
            .hostd_call(secs(EXEC_TIMEOUT_S) + SLACK, |h| async move {
                h.exec(&name, argv, EXEC_TIMEOUT_S).await
            })
            .await?;
        Ok(Value::structure([
            ("exit_code", Value::Int(code)),
            ("stdout", Value::String(stdout)),
            ("stderr", Value::String(stderr)),
        ]))
    })
}

fn console(api: &Api, params: Vec<Value>) -> MethodFuture<'_> {
    Box::pin(async move {
        let name = name_param(&params, 0, "container")?;
        let log = api
            .bus
            .hostd_call(CALL_TIMEOUT, |h| async move {
                h.console_log(&name, CONSOLE_BYTES).await
            })
            .await?;
        Ok(Value::String(log))
    })
}
