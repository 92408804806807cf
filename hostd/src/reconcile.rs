//! Applies host.toml's `[[template]]` and `[[container]]` sections at start (each daemon
//! reconciles its own section of the config). Idempotent: what exists is left as it is, so a
//! restarted hostd changes nothing. Failures are logged per entry and counted in Status
//! (`config_failed`); they never stop the daemon.

use std::sync::Arc;

use model::config::{Container, HostConfig, Template};
use model::ct::{ContainerSpec, Resources};
use tokio::sync::Mutex;

use crate::ct::manager::Manager;
use crate::error::HostError;
use crate::vm::manager::VmManager;

/// Tells netd which containers and VMs run, so that the ports of guests that ended while
/// hostd was away (a VMM killed, a container whose start a killed hostd never finished) are
/// detached. Holds both managers' locks meanwhile (in their usual order), so no guest starts
/// or stops between the look and netd's sweep. Tried until netd answers: it may come up
/// after hostd.
pub async fn release_stale_ports(
    manager: &Arc<Mutex<Manager>>,
    vms: &Arc<Mutex<VmManager>>,
    bus: &zbus::Connection,
) {
    until_answered("stale ports", || async {
        let m = manager.lock().await;
        let v = vms.lock().await;
        let mut owners = m.port_owners();
        owners.extend(v.port_owners());
        crate::netd::keep_owners(Some(bus), &owners).await
    })
    .await;
}

/// Tells stord which guests exist, so that the volume holds of guests deleted while hostd was away
/// (a crash between the delete and the release) are released. Tried until stord answers.
pub async fn release_stale_volume_holds(
    manager: &Arc<Mutex<Manager>>,
    vms: &Arc<Mutex<VmManager>>,
    bus: &zbus::Connection,
) {
    until_answered("stale volume holds", || async {
        let m = manager.lock().await;
        let v = vms.lock().await;
        let mut gone = crate::stord::keep_holders(Some(bus), "vm:", &v.volume_holders()).await?;
        gone.extend(crate::stord::keep_holders(Some(bus), "ct:", &m.volume_holders()).await?);
        Ok(gone)
    })
    .await;
}

/// Runs a sweep (`what`) once a second until its daemon answers, logging what it released.
async fn until_answered<F, Fut>(what: &str, mut sweep: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Vec<String>, HostError>>,
{
    let mut tries = 0u32;
    loop {
        match sweep().await {
            Ok(gone) => {
                if !gone.is_empty() {
                    tracing::info!(released = ?gone, "swept {what}");
                }
                return;
            }
            Err(e) => {
                tries += 1;
                if tries == 1 || tries.is_multiple_of(60) {
                    tracing::warn!(error = %e, tries, "cannot sweep {what} yet; retrying");
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
}

/// Applies `config`: templates first (containers need them), then containers. Created
/// containers get their D-Bus object on `server`.
pub async fn apply(
    manager: &Arc<Mutex<Manager>>,
    server: &zbus::ObjectServer,
    config: &HostConfig,
) {
    for t in &config.templates {
        let what = format!("template {}", t.name);
        let result = template(manager, t).await;
        if let Err(e) = &result {
            tracing::error!(template = %t.name, error = %e, "cannot apply host.toml's [[template]]");
        }
        manager
            .lock()
            .await
            .set_config_failed(&what, result.err().map(|e| e.to_string()));
    }
    for c in &config.containers {
        let what = format!("container {}", c.name);
        let result = container(manager, server, c).await;
        if let Err(e) = &result {
            tracing::error!(ct = %c.name, error = %e, "cannot apply host.toml's [[container]]");
        }
        manager
            .lock()
            .await
            .set_config_failed(&what, result.err().map(|e| e.to_string()));
    }
}

async fn template(manager: &Arc<Mutex<Manager>>, t: &Template) -> Result<(), HostError> {
    let templates = manager.lock().await.templates_handle();
    if templates.get(&t.name).is_ok() {
        return Ok(());
    }
    let Some(source) = &t.source else {
        return Err(HostError::InvalidArgs(format!(
            "template {:?} is not imported and has no source to import it from",
            t.name
        )));
    };
    let given = t.sha256.map(|d| format!("sha256:{}", model::hex(&d)));
    // The import resolves bundled:NAME to the image's tarball and the digest beside it.
    let (tarball, sha256) = match model::ct::bundled_name(source) {
        Some(_) => (std::path::PathBuf::from(source), given.unwrap_or_default()),
        None => {
            if !source.starts_with('/') {
                return Err(HostError::Failed(format!(
                    "template {:?}: source {source:?}: downloading templates from URLs is not \
                     supported yet; download the tarball and give its absolute path",
                    t.name
                )));
            }
            let Some(sha256) = given else {
                return Err(HostError::InvalidArgs(format!(
                    "template {:?}: sha256 is required to import {source:?}",
                    t.name
                )));
            };
            (std::path::PathBuf::from(source), sha256)
        }
    };
    let pool = match &t.pool {
        Some(pool) => {
            let bus = manager.lock().await.bus();
            Some(crate::ct::template::PoolDir::of(bus.as_ref(), pool).await?)
        }
        None => None,
    };
    let name = t.name.clone();
    let info = tokio::task::spawn_blocking(move || {
        templates.import_into(&name, &tarball, &sha256, pool.as_ref())
    })
    .await
    .map_err(|e| HostError::Failed(format!("template import task: {e}")))??;
    tracing::info!(template = %info.name, "imported host.toml's template");
    Ok(())
}

/// The spec a `[[container]]` entry asks for.
pub fn spec(c: &Container) -> ContainerSpec {
    ContainerSpec {
        name: c.name.clone(),
        template: c.template.clone(),
        network: c.network.clone(),
        addresses: c.addresses.iter().map(ToString::to_string).collect(),
        gateway: c.gateway.map(|g| g.to_string()),
        hostname: c.hostname.clone(),
        command: None,
        privileged: false,
        autostart: c.autostart,
        pool: c.pool.clone(),
        disk: c.disk,
        resources: Resources {
            cpu_limit: c.cpu_limit,
            cpu_weight: c.cpu_weight,
            memory: c.memory,
            ..Resources::default()
        },
    }
}

async fn container(
    manager: &Arc<Mutex<Manager>>,
    server: &zbus::ObjectServer,
    c: &Container,
) -> Result<(), HostError> {
    let mut m = manager.lock().await;
    if !m.exists(&c.name) {
        let json = serde_json::to_string(&spec(c)).map_err(|e| HostError::Failed(e.to_string()))?;
        m.create(&json).await?;
        crate::dbus::export_container(server, manager, &c.name).await;
    }
    if !c.autostart {
        return Ok(());
    }
    let info = m.info(&c.name).await?;
    match info.state {
        model::ct::ContainerState::Created | model::ct::ContainerState::Stopped => {
            m.start(&c.name).await?;
            tracing::info!(ct = %c.name, "started host.toml's container");
        }
        // Running or paused: left alone (re-adopted).
        _ => {}
    }
    Ok(())
}

/// Where hostd notes the boot whose autostart pass it has done.
const AUTOSTARTED: &str = "autostarted-boot";

/// Starts every container and VM marked `autostart` that is not running — those made through
/// the API as well as host.toml's — once per boot of the host, as Proxmox's onboot does: a
/// hostd restarted later in the same boot leaves one a user stopped alone. The boot is told
/// by the kernel's boot id, noted in the state directory after the pass.
pub async fn autostart_at_boot(
    manager: &Arc<Mutex<Manager>>,
    vms: &Arc<Mutex<crate::vm::manager::VmManager>>,
    state: &std::path::Path,
) {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let marker = state.join(AUTOSTARTED);
    if !boot.is_empty() && std::fs::read_to_string(&marker).ok().as_deref() == Some(&boot) {
        return;
    }
    let cts = manager.lock().await.list().await;
    for c in cts.iter().filter(|c| c.autostart) {
        if matches!(
            c.state,
            model::ct::ContainerState::Created | model::ct::ContainerState::Stopped
        ) {
            match manager.lock().await.start(&c.name).await {
                Ok(()) => tracing::info!(ct = %c.name, "autostarted"),
                Err(e) => tracing::error!(ct = %c.name, error = %e, "cannot autostart"),
            }
        }
    }
    let list = vms.lock().await.list();
    for v in list.iter().filter(|v| v.spec.autostart) {
        if !matches!(
            v.state,
            model::vm::VmState::Running | model::vm::VmState::Paused
        ) {
            match vms.lock().await.start(&v.name).await {
                Ok(()) => tracing::info!(vm = %v.name, "autostarted"),
                Err(e) => tracing::error!(vm = %v.name, error = %e, "cannot autostart"),
            }
        }
    }
    if let Err(e) = vmm::launcher::write_atomic(&marker, boot.as_bytes()) {
        tracing::warn!(error = %e, "cannot note the autostart pass; the next hostd start repeats it");
    }
}

/// Creates host.toml's `[[vm]]`s that do not exist yet and starts those with `autostart`
/// that are not running. A VM that exists is left as it is (host.toml does not rewrite it).
pub async fn apply_vms(
    vms: &Arc<Mutex<crate::vm::manager::VmManager>>,
    manager: &Arc<Mutex<Manager>>,
    config: &HostConfig,
) {
    for spec in config.vm_specs() {
        let what = format!("vm {}", spec.name);
        let result = async {
            let mut m = vms.lock().await;
            if m.info(&spec.name).is_err() {
                let json =
                    serde_json::to_string(&spec).map_err(|e| HostError::Failed(e.to_string()))?;
                m.create(&json).await?;
            }
            let info = m.info(&spec.name)?;
            if spec.autostart
                && !matches!(
                    info.state,
                    model::vm::VmState::Running | model::vm::VmState::Paused
                )
            {
                m.start(&spec.name).await?;
            }
            Ok::<(), HostError>(())
        }
        .await;
        if let Err(e) = &result {
            tracing::error!(vm = %spec.name, error = %e, "cannot apply host.toml's [[vm]]");
        }
        manager
            .lock()
            .await
            .set_config_failed(&what, result.err().map(|e| e.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_container_entry_becomes_its_spec() {
        let text = r#"
[host]
hostname = "h"
[host.management]
interface = "eth0"
dhcp = true
[[network]]
name = "lan"
kind = "bridged"
subnet = "10.10.0.0/24"
[[template]]
name = "busybox"
[[container]]
name = "web-1"
template = "busybox"
network = "lan"
addresses = ["10.10.0.5/24"]
gateway = "10.10.0.1"
hostname = "web"
memory = "64M"
cpu_limit = 50
cpu_weight = 200
"#;
        let config = model::config::parse("host.toml", text).unwrap();
        let c = &config.containers[0];
        assert!(c.autostart);
        let s = spec(c);
        assert_eq!(s.validate(), Ok(()));
        assert_eq!(s.addresses, vec!["10.10.0.5/24".to_string()]);
        assert_eq!(s.gateway.as_deref(), Some("10.10.0.1"));
        assert_eq!(s.hostname(), "web");
        assert_eq!(s.network.as_deref(), Some("lan"));
        assert_eq!(
            (
                s.resources.memory,
                s.resources.cpu_limit,
                s.resources.cpu_weight
            ),
            (Some(64 << 20), Some(50), Some(200))
        );
        assert!(!s.privileged);
    }
}
