//! `net.*` and `port.*`: networks and ports, served by netd.

use model::api::net::{
    NetCreate, NetDelete, NetInfo, NetList, NetSetLimits, PortAttach, PortDetach, PortList,
};
use model::net::{NetworkInfo, PortInfo};

use super::{Api, Fault, Method, Serve, answer, json, method};

pub fn methods() -> Vec<Method> {
    vec![
        method::<NetCreate>(),
        method::<NetDelete>(),
        method::<NetList>(),
        method::<NetInfo>(),
        method::<NetSetLimits>(),
        method::<PortAttach>(),
        method::<PortDetach>(),
        method::<PortList>(),
    ]
}

impl Serve for NetCreate {
    async fn serve(self, api: &Api) -> Result<bool, Fault> {
        let spec = json(&self.spec)?;
        api.bus
            .netd_call(|n| async move { n.create_network(&spec).await })
            .await?;
        Ok(true)
    }
}

impl Serve for NetDelete {
    async fn serve(self, api: &Api) -> Result<bool, Fault> {
        api.bus
            .netd_call(|n| async move { n.delete_network(&self.name).await })
            .await?;
        Ok(true)
    }
}

impl Serve for NetList {
    async fn serve(self, api: &Api) -> Result<Vec<NetworkInfo>, Fault> {
        let list = api
            .bus
            .netd_call(|n| async move { n.list_networks().await })
            .await?;
        answer("netd", &list)
    }
}

impl Serve for NetInfo {
    async fn serve(self, api: &Api) -> Result<NetworkInfo, Fault> {
        let info = api
            .bus
            .netd_call(|n| async move { n.network_info(&self.name).await })
            .await?;
        answer("netd", &info)
    }
}

impl Serve for NetSetLimits {
    async fn serve(self, api: &Api) -> Result<bool, Fault> {
        let limits = json(&self.limits)?;
        api.bus
            .netd_call(|n| async move { n.set_limits(&self.target, &limits).await })
            .await?;
        Ok(true)
    }
}

impl Serve for PortAttach {
    async fn serve(self, api: &Api) -> Result<PortInfo, Fault> {
        let spec = json(&self.spec)?;
        let port = api
            .bus
            .netd_call(|n| async move { n.attach_port(&spec).await })
            .await?;
        answer("netd", &port)
    }
}

impl Serve for PortDetach {
    async fn serve(self, api: &Api) -> Result<bool, Fault> {
        api.bus
            .netd_call(|n| async move { n.detach_port(&self.name).await })
            .await?;
        Ok(true)
    }
}

impl Serve for PortList {
    async fn serve(self, api: &Api) -> Result<Vec<PortInfo>, Fault> {
        let list = api
            .bus
            .netd_call(|n| async move { n.list_ports().await })
            .await?;
        answer("netd", &list)
    }
}
