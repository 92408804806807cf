//! `host.*`: the appliance itself, as init and the daemons report it.

use std::collections::BTreeMap;

use model::api::host::{
    ApplyConfig, ConfigFailure, DaemonReport, DiskInfo, Disks, HostInfo, Info, Install,
    InstallStatus, JobReport, Management, Poweroff, Reboot, RestartService, Rollback, Services,
    Update, UpdateStatus,
};
use model::dbus::ServiceInfo;

use super::{Api, Fault, Method, Serve, answer, method};
use crate::bus::{CALL_TIMEOUT, Daemon};

pub fn methods() -> Vec<Method> {
    vec![
        method::<Info>(),
        method::<Services>(),
        method::<RestartService>(),
        method::<ApplyConfig>(),
        method::<Disks>(),
        method::<Install>(),
        method::<InstallStatus>(),
        method::<Update>(),
        method::<UpdateStatus>(),
        method::<Rollback>(),
        method::<Reboot>(),
        method::<Poweroff>(),
    ]
}

impl Serve for Info {
    /// From what init and the daemons pushed (`crate::state`): no D-Bus call once each has
    /// answered once.
    async fn serve(self, api: &Api) -> Result<HostInfo, Fault> {
        let (bus, state) = (&api.bus, &api.state);
        let (init, netd, stord, hostd) = tokio::join!(
            state.init(bus),
            state.daemon(bus, Daemon::Netd),
            state.daemon(bus, Daemon::Stord),
            state.daemon(bus, Daemon::Hostd),
        );
        let mut info = HostInfo {
            hostname: api.hostname.clone(),
            version: model::VERSION.to_string(),
            ..HostInfo::default()
        };
        match init {
            Ok(init) => {
                info.uptime = Some(init.uptime());
                info.kernel = Some(init.kernel);
                info.services = Some(init.services);
                let (mode, source, problem) = init.boot;
                info.mode = Some(mode);
                info.config_source = Some(source);
                info.config_problem = Some(problem).filter(|p| !p.is_empty());
                info.os = init.os;
            }
            Err(e) => info.init_error = Some(e),
        }
        info.management = match netd
            .as_ref()
            .map_err(String::clone)
            .map(|n| n.management.clone())
        {
            Ok(Some(Ok((interface, address, source)))) => Management {
                interface: Some(interface),
                address: Some(address),
                source: Some(source),
                error: None,
            },
            Ok(Some(Err(e))) | Err(e) => Management {
                error: Some(e),
                ..Management::default()
            },
            Ok(None) => Management::default(),
        };
        for (daemon, view) in Daemon::ALL.into_iter().zip([netd, stord, hostd]) {
            if let Ok(view) = &view {
                info.config_failures
                    .extend(
                        view.config_failures
                            .iter()
                            .map(|(item, reason)| ConfigFailure {
                                daemon: daemon.name().to_string(),
                                item: item.clone(),
                                reason: reason.clone(),
                            }),
                    );
            }
            let report = match view {
                Ok(view) => {
                    let (version, counts) = view.status;
                    DaemonReport {
                        // The version wins over a count that happens to be called "version".
                        counts: counts
                            .into_iter()
                            .filter(|(k, _)| k != "version" && k != "error")
                            .map(|(k, v)| (k, u64::from(v)))
                            .collect::<BTreeMap<_, _>>(),
                        version: Some(version),
                        error: None,
                    }
                }
                Err(e) => DaemonReport {
                    error: Some(e),
                    ..DaemonReport::default()
                },
            };
            info.daemons.insert(daemon.name().to_string(), report);
        }
        Ok(info)
    }
}

impl Serve for Services {
    async fn serve(self, api: &Api) -> Result<Vec<ServiceInfo>, Fault> {
        match api.state.init(&api.bus).await {
            Ok(init) => Ok(init.services),
            // The same fault as asking init directly: busy while it does not answer.
            Err(_) => Ok(api.bus.list_services().await?),
        }
    }
}

impl Serve for RestartService {
    async fn serve(self, api: &Api) -> Result<bool, Fault> {
        tracing::warn!(service = %self.name, "service restart requested through the API");
        api.bus.restart_service(&self.name).await?;
        Ok(true)
    }
}

impl Serve for ApplyConfig {
    async fn serve(self, api: &Api) -> Result<Vec<String>, Fault> {
        let dry_run = self.dry_run.unwrap_or(false);
        let changes = api.bus.apply_config(&self.text, dry_run).await?;
        if !dry_run {
            tracing::warn!(changes = changes.len(), "host.toml applied through the API");
        }
        Ok(changes)
    }
}

impl Serve for Disks {
    async fn serve(self, api: &Api) -> Result<Vec<DiskInfo>, Fault> {
        let list = api
            .bus
            .init_call(CALL_TIMEOUT, |init| async move { init.list_disks().await })
            .await?;
        answer("init", &list)
    }
}

/// Starting an install reads the live system's initramfs (tens of MiB) out of memory first.
const INSTALL_START_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

impl Serve for Install {
    async fn serve(self, api: &Api) -> Result<bool, Fault> {
        tracing::warn!(disk = %self.disk, "install requested through the API");
        let (disk, config) = (self.disk, self.config.unwrap_or_default());
        let force = self.force.unwrap_or(false);
        api.bus
            .init_call(INSTALL_START_TIMEOUT, |init| async move {
                init.install(&disk, &config, force).await
            })
            .await?;
        Ok(true)
    }
}

impl Serve for InstallStatus {
    async fn serve(self, api: &Api) -> Result<JobReport, Fault> {
        let report = api
            .bus
            .init_call(
                CALL_TIMEOUT,
                |init| async move { init.install_status().await },
            )
            .await?;
        answer("init", &report)
    }
}

impl Serve for Update {
    async fn serve(self, api: &Api) -> Result<bool, Fault> {
        tracing::warn!(url = %self.url, "update requested through the API");
        let (mut url, reboot) = (self.url, self.reboot.unwrap_or(false));
        // An uploaded bundle: init takes the file itself, from the state partition.
        if url.starts_with(crate::upload::SCHEME) {
            url = format!(
                "file://{}",
                crate::upload::host_path(api.uploads.as_deref(), &url)?
            );
        }
        api.bus
            .init_call(CALL_TIMEOUT, |init| async move {
                init.update(&url, reboot).await
            })
            .await?;
        Ok(true)
    }
}

impl Serve for UpdateStatus {
    async fn serve(self, api: &Api) -> Result<JobReport, Fault> {
        let report = api
            .bus
            .init_call(
                CALL_TIMEOUT,
                |init| async move { init.update_status().await },
            )
            .await?;
        answer("init", &report)
    }
}

impl Serve for Rollback {
    async fn serve(self, api: &Api) -> Result<String, Fault> {
        tracing::warn!("rollback requested through the API");
        Ok(api
            .bus
            .init_call(CALL_TIMEOUT, |init| async move { init.rollback().await })
            .await?)
    }
}

impl Serve for Reboot {
    async fn serve(self, api: &Api) -> Result<bool, Fault> {
        tracing::warn!("reboot requested through the API");
        api.bus.reboot().await?;
        Ok(true)
    }
}

impl Serve for Poweroff {
    async fn serve(self, api: &Api) -> Result<bool, Fault> {
        tracing::warn!("poweroff requested through the API");
        api.bus.poweroff().await?;
        Ok(true)
    }
}
