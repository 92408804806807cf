//! org.cairn.Host1: the D-Bus face of hostd, and one org.cairn.Container1 object per container
//! (`model::dbus::container_path`). Structured values travel as JSON of the `model::ct` types;
//! errors as `model::dbus::CairnError` kinds. Both interfaces delegate to the one `Manager`.

use std::collections::HashMap;
use std::sync::Arc;

use model::dbus::{CairnError, StatusTuple, container_path};
use tokio::sync::Mutex;

use crate::addresses::Others;
use crate::ct::manager::{self, Manager};
use crate::ct::template::{PoolDir, Templates};
use crate::events::{self, Kind};
use crate::vm::manager::VmManager;

pub struct Host1 {
    pub manager: Arc<Mutex<Manager>>,
    pub vms: Arc<Mutex<VmManager>>,
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, CairnError> {
    serde_json::to_string(v).map_err(|e| CairnError::Failed(format!("encoding the answer: {e}")))
}

/// Container `name`'s object: its own view of the same `Manager`.
pub struct Container1 {
    pub name: String,
    pub manager: Arc<Mutex<Manager>>,
}

/// Serves container `name`'s object (idempotent: an object already there is replaced).
pub async fn export_container(
    server: &zbus::ObjectServer,
    manager: &Arc<Mutex<Manager>>,
    name: &str,
) {
    let obj = Container1 {
        name: name.to_string(),
        manager: manager.clone(),
    };
    if let Err(e) = server.at(container_path(name), obj).await {
        tracing::warn!(ct = name, error = %e, "cannot export the container's D-Bus object");
    }
}

pub async fn unexport_container(server: &zbus::ObjectServer, name: &str) {
    if let Err(e) = server.remove::<Container1, _>(container_path(name)).await {
        tracing::warn!(ct = name, error = %e, "cannot remove the container's D-Bus object");
    }
}

/// Stop, with the manager's lock released while the init shuts down, so that other requests
/// (and other stops) go on.
async fn stop(manager: &Mutex<Manager>, name: &str, timeout_s: u32) -> Result<(), CairnError> {
    events::expect_stop(Kind::Ct, name).await;
    let plan = manager.lock().await.stop_begin(name).await;
    let plan = match plan {
        Ok(plan) => plan,
        Err(e) => {
            events::after_ct(manager, name).await;
            return Err(e.into());
        }
    };
    manager::wait_stopped(&plan, timeout_s).await;
    let result = manager.lock().await.stop_finish(name).await;
    events::after_ct(manager, name).await;
    Ok(result?)
}

/// Start, then the event it makes.
async fn start(manager: &Mutex<Manager>, name: &str) -> Result<(), CairnError> {
    let result = manager.lock().await.start(name).await;
    events::after_ct(manager, name).await;
    Ok(result?)
}

/// Restart: a stop that releases the lock as [`stop`] does, then a start. A start by another
/// request in between wins, and this one answers that the container runs already.
async fn restart(manager: &Mutex<Manager>, name: &str, timeout_s: u32) -> Result<(), CairnError> {
    if manager.lock().await.is_up(name).await? {
        stop(manager, name, timeout_s).await?;
    }
    start(manager, name).await
}

#[zbus::interface(name = "org.cairn.Container1")]
impl Container1 {
    #[zbus(property(emits_changed_signal = "false"))]
    async fn name(&self) -> String {
        self.name.clone()
    }

    #[zbus(property(emits_changed_signal = "false"))]
    async fn state(&self) -> zbus::fdo::Result<String> {
        let info = self.manager.lock().await.info(&self.name).await;
        info.map(|i| i.state.as_str().to_string())
            .map_err(|e| zbus::fdo::Error::Failed(e.to_string()))
    }

    #[zbus(property(emits_changed_signal = "false"))]
    async fn pid(&self) -> zbus::fdo::Result<u32> {
        let info = self.manager.lock().await.info(&self.name).await;
        info.map(|i| i.pid.unwrap_or(0))
            .map_err(|e| zbus::fdo::Error::Failed(e.to_string()))
    }

    async fn start(&self) -> Result<(), CairnError> {
        start(&self.manager, &self.name).await
    }

    async fn stop(&self, timeout_s: u32) -> Result<(), CairnError> {
        stop(&self.manager, &self.name, timeout_s).await
    }

    async fn info(&self) -> Result<String, CairnError> {
        json(&self.manager.lock().await.info(&self.name).await?)
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

async fn counts(manager: &Mutex<Manager>, vms: &Mutex<VmManager>) -> HashMap<String, u32> {
    let (containers, running, templates, config_failed) = {
        let m = manager.lock().await;
        let (containers, running, templates) = m.counts();
        (containers, running, templates, m.config_failed())
    };
    HashMap::from([
        ("config_failed".to_string(), count(config_failed)),
        ("containers".to_string(), count(containers)),
        ("running".to_string(), count(running)),
        ("templates".to_string(), count(templates)),
        ("vms".to_string(), count(vms.lock().await.counts().0)),
    ])
}

/// Signals Host1's `Counts` when they differ from `last`: containers also end on their own, so
/// hostd compares each housekeeping tick rather than after each request.
pub async fn push_counts(server: &zbus::ObjectServer, last: &mut HashMap<String, u32>) {
    let Ok(iface) = server.interface::<_, Host1>(model::dbus::HOST_PATH).await else {
        return;
    };
    let host = iface.get().await;
    let now = counts(&host.manager, &host.vms).await;
    if now != *last {
        if let Err(e) = host.counts_changed(iface.signal_emitter()).await {
            tracing::debug!(error = %e, "cannot signal the new counts");
        }
        *last = now;
    }
}

#[zbus::interface(name = "org.cairn.Host1")]
impl Host1 {
    /// Version and counts: containers, running (containers), templates, vms, config_failed
    /// (host.toml entries hostd could not apply; see its log).
    async fn status(&self) -> StatusTuple {
        (
            model::VERSION.to_string(),
            counts(&self.manager, &self.vms).await,
        )
    }

    /// host.toml's items hostd could not apply: (item, why).
    async fn config_failures(&self) -> Vec<(String, String)> {
        self.manager.lock().await.config_failures()
    }

    /// The counts of `Status`, as a property whose changes are signalled (hostd looks each
    /// housekeeping tick), so that a client (apid's host.info) keeps them without asking.
    #[zbus(property)]
    async fn counts(&self) -> HashMap<String, u32> {
        counts(&self.manager, &self.vms).await
    }

    async fn import_template(
        &self,
        name: &str,
        tarball: &str,
        sha256: &str,
    ) -> Result<String, CairnError> {
        self.import_template_in_pool(name, tarball, sha256, "")
            .await
    }

    async fn import_template_in_pool(
        &self,
        name: &str,
        tarball: &str,
        sha256: &str,
        pool: &str,
    ) -> Result<String, CairnError> {
        let tarball = std::path::PathBuf::from(tarball);
        Templates::check(name, &tarball, sha256)?;
        let (templates, bus) = {
            let m = self.manager.lock().await;
            (m.templates_handle(), m.bus())
        };
        let pool = match pool {
            "" => None,
            pool => Some(PoolDir::of(bus.as_ref(), pool).await?),
        };
        // Unpacking takes seconds for a distribution: done on a blocking thread and without
        // the manager's lock. Import unpacks under a temporary name and renames, so a
        // concurrent list never sees half a template.
        let (name, sha256) = (name.to_string(), sha256.to_string());
        let info = tokio::task::spawn_blocking(move || {
            templates.import_into(&name, &tarball, &sha256, pool.as_ref())
        })
        .await
        .map_err(|e| CairnError::Failed(format!("template import task: {e}")))??;
        json(&info)
    }

    async fn list_templates(&self) -> Result<String, CairnError> {
        json(&self.manager.lock().await.list_templates())
    }

    async fn delete_template(&self, name: &str) -> Result<(), CairnError> {
        Ok(self.manager.lock().await.delete_template(name)?)
    }

    async fn create_container(
        &self,
        #[zbus(object_server)] server: &zbus::ObjectServer,
        spec_json: &str,
    ) -> Result<String, CairnError> {
        // The other kind's names and addresses first, without holding both locks (status
        // takes them in the other order).
        let vms = {
            let v = self.vms.lock().await;
            Others {
                names: v.names(),
                held: v.held_addresses(),
            }
        };
        let info = self
            .manager
            .lock()
            .await
            .create_among(spec_json, &vms)
            .await?;
        export_container(server, &self.manager, &info.name).await;
        events::after_ct(&self.manager, &info.name).await;
        json(&info)
    }

    async fn start_container(&self, name: &str) -> Result<(), CairnError> {
        start(&self.manager, name).await
    }

    async fn stop_container(&self, name: &str, timeout_s: u32) -> Result<(), CairnError> {
        stop(&self.manager, name, timeout_s).await
    }

    async fn restart_container(&self, name: &str, timeout_s: u32) -> Result<(), CairnError> {
        restart(&self.manager, name, timeout_s).await
    }

    async fn quiesce(&self, holder: &str, freeze: bool) -> Result<bool, CairnError> {
        match holder.split_once(':') {
            Some(("ct", name)) => Ok(self.manager.lock().await.quiesce(name, freeze).await?),
            Some(("vm", name)) => Ok(self.vms.lock().await.quiesce(name, freeze).await?),
            _ => Err(CairnError::InvalidArgs(format!(
                "holder {holder:?} is not ct:NAME or vm:NAME"
            ))),
        }
    }

    async fn hold(&self, holder: &str, hold: bool) -> Result<bool, CairnError> {
        match holder.split_once(':') {
            Some(("ct", name)) => Ok(self.manager.lock().await.hold(name, hold).await?),
            Some(("vm", name)) => {
                let mut vms = self.vms.lock().await;
                let r = if hold {
                    vms.pause(name).await
                } else {
                    vms.resume(name).await
                };
                Ok(r.is_ok())
            }
            _ => Err(CairnError::InvalidArgs(format!(
                "holder {holder:?} is not ct:NAME or vm:NAME"
            ))),
        }
    }

    async fn pause_container(&self, name: &str) -> Result<(), CairnError> {
        let result = self.manager.lock().await.pause(name).await;
        events::after_ct(&self.manager, name).await;
        Ok(result?)
    }

    async fn resume_container(&self, name: &str) -> Result<(), CairnError> {
        let result = self.manager.lock().await.resume(name).await;
        events::after_ct(&self.manager, name).await;
        Ok(result?)
    }

    async fn delete_container(
        &self,
        #[zbus(object_server)] server: &zbus::ObjectServer,
        name: &str,
    ) -> Result<(), CairnError> {
        self.manager.lock().await.delete(name).await?;
        unexport_container(server, name).await;
        events::after_ct(&self.manager, name).await;
        Ok(())
    }

    async fn list_containers(&self) -> Result<String, CairnError> {
        json(&self.manager.lock().await.list().await)
    }

    async fn container_info(&self, name: &str) -> Result<String, CairnError> {
        json(&self.manager.lock().await.info(name).await?)
    }

    async fn set_container(&self, name: &str, resources_json: &str) -> Result<(), CairnError> {
        Ok(self.manager.lock().await.set(name, resources_json).await?)
    }

    async fn exec(
        &self,
        name: &str,
        argv: Vec<String>,
        timeout_s: u32,
    ) -> Result<(i32, String, String), CairnError> {
        if argv.first().is_none_or(String::is_empty) {
            return Err(CairnError::InvalidArgs(
                "argv must hold the command to run and its arguments".into(),
            ));
        }
        // The lock is held only to find the container: a long command must not block others.
        let (pid, exe) = self.manager.lock().await.exec_target(name).await?;
        Ok(manager::exec(&exe, name, pid, &argv, timeout_s).await?)
    }

    async fn exec_tagged(
        &self,
        name: &str,
        argv: Vec<String>,
        timeout_s: u32,
        tag: &str,
    ) -> Result<(i32, String, String), CairnError> {
        if argv.first().is_none_or(String::is_empty) || tag.is_empty() || tag.len() > 128 {
            return Err(CairnError::InvalidArgs(
                "argv must hold the command to run, and tag 1 to 128 bytes".into(),
            ));
        }
        let (pid, exe) = self.manager.lock().await.exec_target(name).await?;
        Ok(manager::exec_tagged(&exe, name, pid, &argv, timeout_s, Some(tag)).await?)
    }

    async fn kill_exec(&self, tag: &str) -> Result<bool, CairnError> {
        Ok(crate::ct::exec::kill(tag))
    }

    /// A connected socket to the console of guest `name` (`kind` "ct" or "vm"): what it reads
    /// is the console's output from now on, what is written to it the console's input. One
    /// attached client per guest: a newer one takes over.
    async fn console_attach(&self, kind: &str, name: &str) -> Result<zbus::OwnedFd, CairnError> {
        let stream = match kind {
            "ct" => self.manager.lock().await.console_attach(name).await?,
            "vm" => self.vms.lock().await.console_attach(name).await?,
            _ => {
                return Err(CairnError::InvalidArgs(format!(
                    "kind {kind:?} is not a guest kind; expected \"ct\" or \"vm\""
                )));
            }
        };
        Ok(std::os::fd::OwnedFd::from(stream).into())
    }

    /// Container `name`'s regular file `path`, opened inside its root: (fd, mode, size).
    async fn file_open_read(
        &self,
        name: &str,
        path: &str,
    ) -> Result<(zbus::OwnedFd, u32, u64), CairnError> {
        crate::ct::files::bus::open_read(&self.manager, name, path).await
    }

    /// A new file for container `name`'s `path` (committed by `file_commit`): (fd, token).
    async fn file_open_write(
        &self,
        name: &str,
        path: &str,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<(zbus::OwnedFd, String), CairnError> {
        crate::ct::files::bus::open_write(&self.manager, name, path, mode, uid, gid).await
    }

    async fn file_commit(&self, token: &str) -> Result<u64, CairnError> {
        crate::ct::files::bus::commit(token).await
    }

    async fn file_abort(&self, token: &str) -> Result<bool, CairnError> {
        crate::ct::files::bus::abort(token).await
    }

    /// A command on a new pty in running container `name`: (exec id, the pty's master).
    async fn exec_tty(
        &self,
        name: &str,
        argv: Vec<String>,
        env_json: &str,
        rows: u16,
        cols: u16,
    ) -> Result<(u64, zbus::OwnedFd), CairnError> {
        let env = crate::ct::exec_tty::check(&argv, env_json, rows, cols)?;
        let (pid, exe) = self.manager.lock().await.exec_target(name).await?;
        let (id, master) =
            crate::ct::exec_tty::start(&exe, name, pid, &argv, &env, rows, cols).await?;
        Ok((id, master.into()))
    }

    async fn exec_wait(&self, id: u64) -> Result<i32, CairnError> {
        Ok(crate::ct::exec_tty::wait(id).await?)
    }

    async fn exec_signal(&self, id: u64, signal: i32) -> Result<(), CairnError> {
        Ok(crate::ct::exec_tty::signal(id, signal)?)
    }

    async fn console_log(&self, name: &str, max_bytes: u32) -> Result<String, CairnError> {
        Ok(self.manager.lock().await.console_log(name, max_bytes)?)
    }

    // ---- VMs: one lock for now, so a long stop delays other VM calls (not containers) ----

    async fn create_vm(&self, spec_json: &str) -> Result<String, CairnError> {
        let containers = {
            let m = self.manager.lock().await;
            Others {
                names: m.names(),
                held: m.held_addresses(),
            }
        };
        let info = self
            .vms
            .lock()
            .await
            .create_among(spec_json, &containers)
            .await?;
        events::after_vm(&self.vms, &info.name).await;
        json(&info)
    }

    async fn start_vm(&self, name: &str) -> Result<(), CairnError> {
        let result = self.vms.lock().await.start(name).await;
        events::after_vm(&self.vms, name).await;
        Ok(result?)
    }

    async fn stop_vm(&self, name: &str, timeout_s: u32) -> Result<(), CairnError> {
        events::expect_stop(Kind::Vm, name).await;
        let result = self.vms.lock().await.stop(name, timeout_s).await;
        events::after_vm(&self.vms, name).await;
        Ok(result?)
    }

    async fn pause_vm(&self, name: &str) -> Result<(), CairnError> {
        let result = self.vms.lock().await.pause(name).await;
        events::after_vm(&self.vms, name).await;
        Ok(result?)
    }

    async fn resume_vm(&self, name: &str) -> Result<(), CairnError> {
        let result = self.vms.lock().await.resume(name).await;
        events::after_vm(&self.vms, name).await;
        Ok(result?)
    }

    async fn snapshot_vm(&self, name: &str, dir: &str) -> Result<(), CairnError> {
        Ok(self.vms.lock().await.snapshot(name, dir).await?)
    }

    async fn restore_vm(&self, name: &str, dir: &str) -> Result<(), CairnError> {
        let result = self.vms.lock().await.restore(name, dir).await;
        events::after_vm(&self.vms, name).await;
        Ok(result?)
    }

    async fn set_vm(&self, name: &str, changes_json: &str) -> Result<String, CairnError> {
        json(&self.vms.lock().await.set(name, changes_json)?)
    }

    async fn delete_vm(&self, name: &str) -> Result<(), CairnError> {
        let result = self.vms.lock().await.delete(name).await;
        events::after_vm(&self.vms, name).await;
        Ok(result?)
    }

    async fn list_vms(&self) -> Result<String, CairnError> {
        json(&self.vms.lock().await.list())
    }

    async fn vm_info(&self, name: &str) -> Result<String, CairnError> {
        json(&self.vms.lock().await.info(name)?)
    }

    async fn vm_console(&self, name: &str, max_bytes: u32) -> Result<String, CairnError> {
        Ok(self.vms.lock().await.console(name, max_bytes)?)
    }

    async fn vm_console_input(&self, name: &str, data: &str) -> Result<(), CairnError> {
        Ok(self.vms.lock().await.console_input(name, data).await?)
    }
}
