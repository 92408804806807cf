//! `host.*`: the appliance itself, as init and the daemons report it.

use std::collections::BTreeMap;

use model::api::host::{
    DaemonReport, HostInfo, Info, Management, Poweroff, Reboot, RestartService, Services,
};
use model::dbus::ServiceInfo;

use super::{Api, Fault, Method, Serve, method};
use crate::bus::Daemon;

pub fn methods() -> Vec<Method> {
    vec![
        method::<Info>(),
        method::<Services>(),
        method::<RestartService>(),
        method::<Reboot>(),
        method::<Poweroff>(),
    ]
}

impl Serve for Info {
    async fn serve(self, api: &Api) -> Result<HostInfo, Fault> {
        let bus = &api.bus;
        // Every question goes out at once: a daemon that hangs costs one timeout, not three.
        let (system, services, netd, stord, hostd, mgmt) = tokio::join!(
            bus.system_info(),
            bus.list_services(),
            bus.status(Daemon::Netd),
            bus.status(Daemon::Stord),
            bus.status(Daemon::Hostd),
            bus.management_address(),
        );
        let mut info = HostInfo {
            hostname: api.hostname.clone(),
            version: model::VERSION.to_string(),
            ..HostInfo::default()
        };
        match system.and_then(|s| services.map(|list| (s, list))) {
            Ok(((uptime, kernel), list)) => {
                info.uptime = Some(uptime);
                info.kernel = Some(kernel);
                info.services = Some(list);
            }
            Err(e) => info.init_error = Some(e.to_string()),
        }
        for (daemon, status) in Daemon::ALL.into_iter().zip([netd, stord, hostd]) {
            let report = match status {
                Ok((version, counts)) => DaemonReport {
                    // The version wins over a count that happens to be called "version".
                    counts: counts
                        .into_iter()
                        .filter(|(k, _)| k != "version" && k != "error")
                        .map(|(k, v)| (k, u64::from(v)))
                        .collect::<BTreeMap<_, _>>(),
                    version: Some(version),
                    error: None,
                },
                Err(e) => DaemonReport {
                    error: Some(e.to_string()),
                    ..DaemonReport::default()
                },
            };
            info.daemons.insert(daemon.name().to_string(), report);
        }
        info.management = match mgmt {
            Ok((interface, address, source)) => Management {
                interface: Some(interface),
                address: Some(address),
                source: Some(source),
                error: None,
            },
            Err(e) => Management {
                error: Some(e.to_string()),
                ..Management::default()
            },
        };
        Ok(info)
    }
}

impl Serve for Services {
    async fn serve(self, api: &Api) -> Result<Vec<ServiceInfo>, Fault> {
        Ok(api.bus.list_services().await?)
    }
}

impl Serve for RestartService {
    async fn serve(self, api: &Api) -> Result<bool, Fault> {
        tracing::warn!(service = %self.name, "service restart requested through the API");
        api.bus.restart_service(&self.name).await?;
        Ok(true)
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
