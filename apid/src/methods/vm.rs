//! `vm.*`: virtual machines, served by hostd. A spec is checked here with the same validation
//! hostd applies (`model::vm::VmSpec::validate`), so a bad request is refused (fault 102, every
//! problem named by its field) before anything reaches the host.
//!
//! Time: every API call must answer within the 30 s method limit (docs/api.md), so the calls
//! that wait on the host (stop's grace period, snapshots) have bounded deadlines below it.

use model::vm::{VmSpec, is_vm_name};
use model::xmlrpc::{Struct, Value};

use super::ct::{DISK_TIMEOUT, SLACK, START_TIMEOUT, answer, decode, encode, secs};
use super::{Api, Fault, Method, MethodFuture};
use crate::bus::CALL_TIMEOUT;

/// How long `vm.stop` lets the guest power off before the VMM is killed, when not given.
pub const DEFAULT_STOP_TIMEOUT_S: u32 = 20;
/// The longest grace `vm.stop` accepts: grace + kill + cleanup must fit in the 30 s limit.
pub const MAX_STOP_TIMEOUT_S: u32 = 20;
/// `vm.console` answers the last this many bytes of the console log when not told otherwise.
pub const DEFAULT_CONSOLE_BYTES: u32 = 64 * 1024;
/// The most `vm.console` answers in one call.
pub const MAX_CONSOLE_BYTES: u32 = 1024 * 1024;
/// The most `vm.console_input` sends in one call.
pub const MAX_CONSOLE_INPUT: usize = 64 * 1024;

pub fn methods() -> Vec<Method> {
    vec![
        Method {
            name: "vm.create",
            signature: &["struct", "struct"],
            help: "Creates (does not start) a VM from {name, vcpus? (1-8, default 1), memory_mib, \
                   kernel (host path of an ELF vmlinux or a bzImage), initrd?, cmdline?, \
                   disks?: [{volume | path, read_only?}], nics?: [{network, mac?}], \
                   resources?: {cpu_limit?, cpu_weight?, cpuset?}, autostart?}. Returns the VM \
                   as vm.info shows it.",
            handler: create,
        },
        Method {
            name: "vm.start",
            signature: &["boolean", "string"],
            help: "Starts a created or stopped VM: its jailed VMM process boots the kernel.",
            handler: start,
        },
        Method {
            name: "vm.stop",
            signature: &["boolean", "string", "int?"],
            help: "vm.stop(name[, timeout_s]): asks the guest to power off (Ctrl-Alt-Del), waits \
                   up to timeout_s seconds (0 to 20, default 20; 0 kills at once), then kills \
                   the VMM.",
            handler: stop,
        },
        Method {
            name: "vm.pause",
            signature: &["boolean", "string"],
            help: "Stops a running VM's vCPUs; memory and devices are kept.",
            handler: pause,
        },
        Method {
            name: "vm.resume",
            signature: &["boolean", "string"],
            help: "Lets a paused VM's vCPUs run again.",
            handler: resume,
        },
        Method {
            name: "vm.snapshot",
            signature: &["boolean", "string", "string"],
            help: "vm.snapshot(name, dir): writes the VM's memory, vCPU and device state into \
                   dir, a new directory on the host (absolute path). The VM is paused for the \
                   copy and left as it was. Must finish within 25 s.",
            handler: snapshot,
        },
        Method {
            name: "vm.restore",
            signature: &["boolean", "string", "string"],
            help: "vm.restore(name, dir): runs a stopped (or created) VM from the snapshot in \
                   dir (absolute path on the host) instead of booting it.",
            handler: restore,
        },
        Method {
            name: "vm.delete",
            signature: &["boolean", "string"],
            help: "Deletes a VM that is not running, and everything it had on the host (not \
                   its disk images or volumes).",
            handler: delete,
        },
        Method {
            name: "vm.list",
            signature: &["array"],
            help: "Every VM, as vm.info describes it.",
            handler: list,
        },
        Method {
            name: "vm.info",
            signature: &["struct", "string"],
            help: "One VM: {name, state (created|running|paused|stopped|crashed), pid?, \
                   last_exit?, taps?, macs?, spec}.",
            handler: info,
        },
        Method {
            name: "vm.console",
            signature: &["string", "string", "int?"],
            help: "vm.console(name[, max_bytes]): the last max_bytes (1 to 1048576, default \
                   65536) of the VM's serial console log.",
            handler: console,
        },
        Method {
            name: "vm.console_input",
            signature: &["boolean", "string", "string"],
            help: "vm.console_input(name, data): sends data (1 to 65536 bytes) to the VM's \
                   serial console, as if typed.",
            handler: console_input,
        },
    ]
}

/// Parameter `i` as a VM name. A malformed name cannot name anything, so it is refused here
/// (102) rather than reported as not found.
fn name_param(params: &[Value], i: usize) -> Result<String, Fault> {
    let name = params.get(i).and_then(Value::as_str).unwrap_or_default();
    if is_vm_name(name) {
        Ok(name.to_string())
    } else {
        Err(Fault::bad_params(format!(
            "name {name:?} is not a valid VM name; expected lowercase letters, digits and \
             hyphens, starting with a letter or digit, at most {} characters",
            model::vm::VM_NAME_MAX
        )))
    }
}

/// An optional int parameter `i` in `lo..=hi`, `default` when left out.
fn int_param(
    params: &[Value],
    i: usize,
    what: &str,
    default: u32,
    lo: u32,
    hi: u32,
    why: &str,
) -> Result<u32, Fault> {
    let Some(v) = params.get(i) else {
        return Ok(default);
    };
    let n = v.as_i64().unwrap_or(-1);
    u32::try_from(n)
        .ok()
        .filter(|n| (lo..=hi).contains(n))
        .ok_or_else(|| Fault::bad_params(format!("{what} = {n} is out of range {lo}..={hi}{why}")))
}

/// A host directory for a snapshot: absolute, not `/` itself, no NUL.
fn dir_param(params: &[Value], i: usize) -> Result<String, Fault> {
    let dir = params.get(i).and_then(Value::as_str).unwrap_or_default();
    if !dir.starts_with('/') || dir.trim_end_matches('/').is_empty() || dir.contains('\0') {
        return Err(Fault::bad_params(format!(
            "dir {dir:?} must be an absolute path of a directory on the host (not /)"
        )));
    }
    Ok(dir.to_string())
}

/// The XML-RPC types of a struct's members, checked before serde sees them so that a wrong
/// type is reported with its member's name (`vcpus must be int, got string`).
fn check_types(prefix: &str, s: &Struct, types: &[(&str, &str)]) -> Vec<String> {
    let mut problems = Vec::new();
    for (key, v) in s {
        let Some((_, want)) = types.iter().find(|(k, _)| k == key) else {
            // Unknown members are refused by serde, with the list of known ones.
            continue;
        };
        let ok = match *want {
            "int" => matches!(v, Value::Int(_) | Value::I8(_)),
            other => v.type_name() == other,
        };
        if !ok {
            problems.push(format!(
                "{prefix}{key} must be {want}, got {}",
                v.type_name()
            ));
        } else if *want == "int" && v.as_i64().is_some_and(|n| n < 0) {
            problems.push(format!(
                "{prefix}{key} = {} must not be negative",
                v.as_i64().unwrap_or_default()
            ));
        }
    }
    problems
}

fn check_spec_types(v: &Value) -> Result<(), Fault> {
    let Some(s) = v.as_struct() else {
        return Err(Fault::bad_params("spec must be a struct"));
    };
    let mut problems = check_types(
        "",
        s,
        &[
            ("name", "string"),
            ("vcpus", "int"),
            ("memory_mib", "int"),
            ("kernel", "string"),
            ("initrd", "string"),
            ("cmdline", "string"),
            ("disks", "array"),
            ("nics", "array"),
            ("resources", "struct"),
            ("autostart", "boolean"),
        ],
    );
    let lists: [(&str, &[(&str, &str)]); 2] = [
        (
            "disks",
            &[
                ("volume", "string"),
                ("path", "string"),
                ("read_only", "boolean"),
            ],
        ),
        ("nics", &[("network", "string"), ("mac", "string")]),
    ];
    for (list, types) in lists {
        for (i, item) in s
            .get(list)
            .and_then(Value::as_array)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            match item.as_struct() {
                Some(m) => problems.extend(check_types(&format!("{list}[{i}]."), m, types)),
                None => problems.push(format!(
                    "{list}[{i}] must be struct, got {}",
                    item.type_name()
                )),
            }
        }
    }
    if let Some(r) = s.get("resources").and_then(Value::as_struct) {
        problems.extend(check_types(
            "resources.",
            r,
            &[
                ("cpu_limit", "int"),
                ("cpu_weight", "int"),
                ("cpuset", "string"),
                ("memory", "int"),
                ("swap", "int"),
                ("pids", "int"),
                ("io_weight", "int"),
            ],
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Fault::bad_params(problems.join("; ")))
    }
}

/// The spec of `vm.create`: types, then unknown members, then `VmSpec::validate`.
pub fn spec_param(v: &Value) -> Result<VmSpec, Fault> {
    check_spec_types(v)?;
    let spec: VmSpec = decode("vm", v)?;
    spec.validate()
        .map_err(|e| Fault::bad_params(e.to_string()))?;
    Ok(spec)
}

fn create(api: &Api, params: Vec<Value>) -> MethodFuture<'_> {
    Box::pin(async move {
        let spec = spec_param(&params[0])?;
        let json = encode(&spec)?;
        let json = api
            .bus
            .hostd_call(START_TIMEOUT, |h| async move { h.create_vm(&json).await })
            .await?;
        answer(&json)
    })
}

fn start(api: &Api, params: Vec<Value>) -> MethodFuture<'_> {
    Box::pin(async move {
        let name = name_param(&params, 0)?;
        api.bus
            .hostd_call(START_TIMEOUT, |h| async move { h.start_vm(&name).await })
            .await?;
        Ok(Value::Bool(true))
    })
}

fn stop(api: &Api, params: Vec<Value>) -> MethodFuture<'_> {
    Box::pin(async move {
        let name = name_param(&params, 0)?;
        let grace = int_param(
            &params,
            1,
            "timeout_s",
            DEFAULT_STOP_TIMEOUT_S,
            0,
            MAX_STOP_TIMEOUT_S,
            " (an API call must answer within 30 s)",
        )?;
        api.bus
            .hostd_call(secs(grace) + SLACK, |h| async move {
                h.stop_vm(&name, grace).await
            })
            .await?;
        Ok(Value::Bool(true))
    })
}

fn pause(api: &Api, params: Vec<Value>) -> MethodFuture<'_> {
    Box::pin(async move {
        let name = name_param(&params, 0)?;
        api.bus
            .hostd_call(START_TIMEOUT, |h| async move { h.pause_vm(&name).await })
            .await?;
        Ok(Value::Bool(true))
    })
}

fn resume(api: &Api, params: Vec<Value>) -> MethodFuture<'_> {
    Box::pin(async move {
        let name = name_param(&params, 0)?;
        api.bus
            .hostd_call(START_TIMEOUT, |h| async move { h.resume_vm(&name).await })
            .await?;
        Ok(Value::Bool(true))
    })
}

fn snapshot(api: &Api, params: Vec<Value>) -> MethodFuture<'_> {
    Box::pin(async move {
        let name = name_param(&params, 0)?;
        let dir = dir_param(&params, 1)?;
        api.bus
            .hostd_call(
                DISK_TIMEOUT,
                |h| async move { h.snapshot_vm(&name, &dir).await },
            )
            .await?;
        Ok(Value::Bool(true))
    })
}

fn restore(api: &Api, params: Vec<Value>) -> MethodFuture<'_> {
    Box::pin(async move {
        let name = name_param(&params, 0)?;
        let dir = dir_param(&params, 1)?;
        api.bus
            .hostd_call(
                DISK_TIMEOUT,
                |h| async move { h.restore_vm(&name, &dir).await },
            )
            .await?;
        Ok(Value::Bool(true))
    })
}

fn delete(api: &Api, params: Vec<Value>) -> MethodFuture<'_> {
    Box::pin(async move {
        let name = name_param(&params, 0)?;
        api.bus
            .hostd_call(DISK_TIMEOUT, |h| async move { h.delete_vm(&name).await })
            .await?;
        Ok(Value::Bool(true))
    })
}

fn list(api: &Api, _params: Vec<Value>) -> MethodFuture<'_> {
    Box::pin(async move {
        let json = api
            .bus
            .hostd_call(CALL_TIMEOUT, |h| async move { h.list_vms().await })
            .await?;
        answer(&json)
    })
}

fn info(api: &Api, params: Vec<Value>) -> MethodFuture<'_> {
    Box::pin(async move {
        let name = name_param(&params, 0)?;
        let json = api
            .bus
            .hostd_call(CALL_TIMEOUT, |h| async move { h.vm_info(&name).await })
            .await?;
        answer(&json)
    })
}

fn console(api: &Api, params: Vec<Value>) -> MethodFuture<'_> {
    Box::pin(async move {
        let name = name_param(&params, 0)?;
        let max = int_param(
            &params,
            1,
            "max_bytes",
            DEFAULT_CONSOLE_BYTES,
            1,
            MAX_CONSOLE_BYTES,
            "",
        )?;
        let log = api
            .bus
            .hostd_call(
                CALL_TIMEOUT,
                |h| async move { h.vm_console(&name, max).await },
            )
            .await?;
        Ok(Value::String(log))
    })
}

fn console_input(api: &Api, params: Vec<Value>) -> MethodFuture<'_> {
    Box::pin(async move {
        let name = name_param(&params, 0)?;
        let data = params[1].as_str().unwrap_or_default().to_string();
        if data.is_empty() || data.len() > MAX_CONSOLE_INPUT {
            return Err(Fault::bad_params(format!(
                "data is {} bytes; expected 1 to {MAX_CONSOLE_INPUT}",
                data.len()
            )));
        }
        api.bus
            .hostd_call(CALL_TIMEOUT, |h| async move {
                h.vm_console_input(&name, &data).await
            })
            .await?;
        Ok(Value::Bool(true))
    })
}
