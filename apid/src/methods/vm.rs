//! `vm.*`: virtual machines, served by hostd.
//!
//! Time: every API call must answer within the 30 s method limit (docs/api.md), so the calls
//! that wait on the host (stop's grace period, snapshots) have bounded deadlines below it.

use model::api::vm::{
    VmConsole, VmConsoleInput, VmCreate, VmDelete, VmInfoOf, VmList, VmPause, VmRestore, VmResume,
    VmSet, VmSnapshot, VmStart, VmStop,
};
use model::vm::VmInfo;

use super::ct::{DISK_TIMEOUT, SLACK, START_TIMEOUT, secs};
use super::{Api, Fault, Method, Serve, answer, json, method};
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
        method::<VmCreate>(),
        method::<VmStart>(),
        method::<VmStop>(),
        method::<VmPause>(),
        method::<VmResume>(),
        method::<VmSnapshot>(),
        method::<VmRestore>(),
        method::<VmSet>(),
        method::<VmDelete>(),
        method::<VmList>(),
        method::<VmInfoOf>(),
        method::<VmConsole>(),
        method::<VmConsoleInput>(),
    ]
}

/// An optional int in `lo..=hi`, `default` when left out.
fn in_range(
    what: &str,
    v: Option<u32>,
    default: u32,
    lo: u32,
    hi: u32,
    why: &str,
) -> Result<u32, Fault> {
    let n = v.unwrap_or(default);
    if (lo..=hi).contains(&n) {
        Ok(n)
    } else {
        Err(Fault::bad_params(format!(
            "{what} = {n} is out of range {lo}..={hi}{why}"
        )))
    }
}

impl Serve for VmCreate {
    async fn serve(mut self, api: &Api) -> Result<VmInfo, Fault> {
        // Uploaded files (`upload:NAME`) are used where they are: the VM reads them from there.
        let uploads = api.uploads.as_deref();
        let spec = &mut self.spec;
        spec.kernel = crate::upload::host_path(uploads, &spec.kernel)?;
        if let Some(initrd) = &spec.initrd {
            spec.initrd = Some(crate::upload::host_path(uploads, initrd)?);
        }
        for disk in &mut spec.disks {
            if let Some(path) = &disk.path {
                disk.path = Some(crate::upload::host_path(uploads, path)?);
            }
        }
        let spec = json(&self.spec)?;
        let info = api
            .bus
            .hostd_call(START_TIMEOUT, |h| async move { h.create_vm(&spec).await })
            .await?;
        answer("hostd", &info)
    }
}

/// The VM actions that take a name and answer true, each with its deadline and hostd call.
macro_rules! name_only {
    ($($action:ty => $timeout:expr, $call:ident;)*) => {$(
        impl Serve for $action {
            async fn serve(self, api: &Api) -> Result<bool, Fault> {
                api.bus
                    .hostd_call($timeout, |h| async move { h.$call(&self.name).await })
                    .await?;
                Ok(true)
            }
        }
    )*};
}

name_only! {
    VmStart => START_TIMEOUT, start_vm;
    VmPause => START_TIMEOUT, pause_vm;
    VmResume => START_TIMEOUT, resume_vm;
    VmDelete => DISK_TIMEOUT, delete_vm;
}

impl Serve for VmStop {
    async fn serve(self, api: &Api) -> Result<bool, Fault> {
        let grace = in_range(
            "timeout_s",
            self.timeout_s,
            DEFAULT_STOP_TIMEOUT_S,
            0,
            MAX_STOP_TIMEOUT_S,
            " (an API call must answer within 30 s)",
        )?;
        api.bus
            .hostd_call(secs(grace) + SLACK, |h| async move {
                h.stop_vm(&self.name, grace).await
            })
            .await?;
        Ok(true)
    }
}

impl Serve for VmSnapshot {
    async fn serve(self, api: &Api) -> Result<bool, Fault> {
        api.bus
            .hostd_call(DISK_TIMEOUT, |h| async move {
                h.snapshot_vm(&self.name, &self.dir).await
            })
            .await?;
        Ok(true)
    }
}

impl Serve for VmRestore {
    async fn serve(self, api: &Api) -> Result<bool, Fault> {
        api.bus
            .hostd_call(DISK_TIMEOUT, |h| async move {
                h.restore_vm(&self.name, &self.dir).await
            })
            .await?;
        Ok(true)
    }
}

impl Serve for VmList {
    async fn serve(self, api: &Api) -> Result<Vec<VmInfo>, Fault> {
        let list = api
            .bus
            .hostd_call(CALL_TIMEOUT, |h| async move { h.list_vms().await })
            .await?;
        answer("hostd", &list)
    }
}

impl Serve for VmInfoOf {
    async fn serve(self, api: &Api) -> Result<VmInfo, Fault> {
        let info = api
            .bus
            .hostd_call(CALL_TIMEOUT, |h| async move { h.vm_info(&self.name).await })
            .await?;
        answer("hostd", &info)
    }
}

impl Serve for VmSet {
    async fn serve(self, api: &Api) -> Result<VmInfo, Fault> {
        let changes = json(&self.changes)?;
        let info = api
            .bus
            .hostd_call(CALL_TIMEOUT, |h| async move {
                h.set_vm(&self.name, &changes).await
            })
            .await?;
        answer("hostd", &info)
    }
}

impl Serve for VmConsole {
    async fn serve(self, api: &Api) -> Result<String, Fault> {
        let max = in_range(
            "max_bytes",
            self.max_bytes,
            DEFAULT_CONSOLE_BYTES,
            1,
            MAX_CONSOLE_BYTES,
            "",
        )?;
        Ok(api
            .bus
            .hostd_call(CALL_TIMEOUT, |h| async move {
                h.vm_console(&self.name, max).await
            })
            .await?)
    }
}

impl Serve for VmConsoleInput {
    async fn serve(self, api: &Api) -> Result<bool, Fault> {
        if self.data.is_empty() || self.data.len() > MAX_CONSOLE_INPUT {
            return Err(Fault::bad_params(format!(
                "data is {} bytes; expected 1 to {MAX_CONSOLE_INPUT}",
                self.data.len()
            )));
        }
        api.bus
            .hostd_call(CALL_TIMEOUT, |h| async move {
                h.vm_console_input(&self.name, &self.data).await
            })
            .await?;
        Ok(true)
    }
}
