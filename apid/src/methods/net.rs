//! `net.*` and `port.*`: networks and ports, served by netd. Specs are checked here with the same
//! validation netd applies, so a bad request is refused before anything reaches the host.

use model::net::{Limits, NetworkSpec, PortSpec};
use model::xmlrpc::Value;
use serde::de::DeserializeOwned;

use super::{Api, Fault, Method, MethodFuture};

pub fn methods() -> Vec<Method> {
    vec![
        Method {
            name: "net.create",
            signature: &["boolean", "struct"],
            help: "Creates a network from {name, kind: bridged|routed|vlan, uplink?, vlan?, \
                   vlan_aware?, bond?, bond_mode?, subnet?, address?, limits?}; the same \
                   fields as a [[network]] table in host.toml. Returns true once the kernel has it.",
            handler: create,
        },
        Method {
            name: "net.delete",
            signature: &["boolean", "string"],
            help: "Deletes a network that has no ports left.",
            handler: delete,
        },
        Method {
            name: "net.list",
            signature: &["array"],
            help: "Every network, as net.info describes it.",
            handler: list,
        },
        Method {
            name: "net.info",
            signature: &["struct", "string"],
            help: "One network as read back from the kernel: links, VLAN table, addresses, \
                   routes and qdiscs.",
            handler: info,
        },
        Method {
            name: "net.setLimits",
            signature: &["boolean", "string", "struct"],
            help: "Sets the limits of a port (by its name) or the aggregate of a network (by its \
                   name), live: {egress?: {rate_bps, burst_bytes?}, ingress?: {…}}, from the \
                   guest's view. A direction left out is unlimited.",
            handler: set_limits,
        },
        Method {
            name: "port.attach",
            signature: &["struct", "struct"],
            help: "Attaches a port: {network, owner, kind: veth|tap, netns? (a network \
                   namespace file for the veth's guest end), guest_ifname?, mac?, vlan?, \
                   tagged_vlans?, addresses?, limits?}. Returns the port as port.list shows it. \
                   hostd attaches its guests' ports itself; this is for automation and tests.",
            handler: port_attach,
        },
        Method {
            name: "port.detach",
            signature: &["boolean", "string"],
            help: "Detaches (deletes) a port by its name.",
            handler: port_detach,
        },
        Method {
            name: "port.list",
            signature: &["array"],
            help: "Every port: {name, network, owner, kind, guest_ifname, mac, vlan, \
                   tagged_vlans, addresses, limits}.",
            handler: port_list,
        },
    ]
}

/// Reads an XML-RPC struct as the serde type netd expects; unknown or mistyped fields are
/// refused with the field's name.
fn decode<T: DeserializeOwned>(what: &str, v: &Value) -> Result<(T, String), Fault> {
    let json = v.to_json();
    let text = json.to_string();
    serde_json::from_value(json)
        .map(|t| (t, text))
        .map_err(|e| Fault::bad_params(format!("{what}: {e}")))
}

fn answer(json: &str) -> Result<Value, Fault> {
    serde_json::from_str::<serde_json::Value>(json)
        .map(|j| Value::from_json(&j))
        .map_err(|e| {
            Fault::new(
                model::fault::FaultCode::Internal,
                format!("netd answered: {e}"),
            )
        })
}

fn string_param(params: &[Value]) -> String {
    params
        .first()
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn create(api: &Api, params: Vec<Value>) -> MethodFuture<'_> {
    Box::pin(async move {
        let (spec, json): (NetworkSpec, String) = decode("network", &params[0])?;
        spec.validate()
            .map_err(|e| Fault::bad_params(e.to_string()))?;
        api.bus
            .netd_call(|n| async move { n.create_network(&json).await })
            .await?;
        Ok(Value::Bool(true))
    })
}

fn delete(api: &Api, params: Vec<Value>) -> MethodFuture<'_> {
    Box::pin(async move {
        let name = string_param(&params);
        api.bus
            .netd_call(|n| async move { n.delete_network(&name).await })
            .await?;
        Ok(Value::Bool(true))
    })
}

fn list(api: &Api, _params: Vec<Value>) -> MethodFuture<'_> {
    Box::pin(async move {
        let json = api
            .bus
            .netd_call(|n| async move { n.list_networks().await })
            .await?;
        answer(&json)
    })
}

fn info(api: &Api, params: Vec<Value>) -> MethodFuture<'_> {
    Box::pin(async move {
        let name = string_param(&params);
        let json = api
            .bus
            .netd_call(|n| async move { n.network_info(&name).await })
            .await?;
        answer(&json)
    })
}

fn set_limits(api: &Api, params: Vec<Value>) -> MethodFuture<'_> {
    Box::pin(async move {
        let target = string_param(&params);
        let (limits, json): (Limits, String) = decode("limits", &params[1])?;
        limits.validate().map_err(Fault::bad_params)?;
        api.bus
            .netd_call(|n| async move { n.set_limits(&target, &json).await })
            .await?;
        Ok(Value::Bool(true))
    })
}

fn port_list(api: &Api, _params: Vec<Value>) -> MethodFuture<'_> {
    Box::pin(async move {
        let json = api
            .bus
            .netd_call(|n| async move { n.list_ports().await })
            .await?;
        answer(&json)
    })
}

fn port_attach(api: &Api, params: Vec<Value>) -> MethodFuture<'_> {
    Box::pin(async move {
        let (spec, json): (PortSpec, String) = decode("port", &params[0])?;
        spec.validate()
            .map_err(|e| Fault::bad_params(e.to_string()))?;
        let json = api
            .bus
            .netd_call(|n| async move { n.attach_port(&json).await })
            .await?;
        answer(&json)
    })
}

fn port_detach(api: &Api, params: Vec<Value>) -> MethodFuture<'_> {
    Box::pin(async move {
        let name = string_param(&params);
        api.bus
            .netd_call(|n| async move { n.detach_port(&name).await })
            .await?;
        Ok(Value::Bool(true))
    })
}
