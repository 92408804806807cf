//! `host.*`: the appliance itself, as init and the daemons report it.

use model::dbus::ServiceInfo;
use model::xmlrpc::{Struct, Value};

use super::{Api, Method, MethodFuture};
use crate::bus::Daemon;

pub fn methods() -> Vec<Method> {
    vec![
        Method {
            name: "host.info",
            signature: &["struct"],
            help: "Describes the host: hostname, version, uptime (seconds), kernel, services \
                   (as host.services) and daemons ({netd, stord, hostd}: each the daemon's \
                   version and object counts, or {error} when it does not answer) and \
                   management ({interface, address, source}: the API's own interface as netd \
                   configured it, source static, dhcp or none; or {error}). When init does not \
                   answer, uptime, kernel and services are left out and init_error says why.",
            handler: info,
        },
        Method {
            name: "host.services",
            signature: &["array"],
            help: "Lists the services init supervises: an array of {name, state, pid, restarts, \
                   since} structs; pid is 0 when the service has no process, since is the Unix \
                   time of the last state change.",
            handler: services,
        },
        Method {
            name: "host.reboot",
            signature: &["boolean"],
            help: "Reboots the host. Returns true once init has accepted the request.",
            handler: reboot,
        },
        Method {
            name: "host.poweroff",
            signature: &["boolean"],
            help: "Powers the host off. Returns true once init has accepted the request.",
            handler: poweroff,
        },
    ]
}

pub fn service_value(s: ServiceInfo) -> Value {
    Value::structure([
        ("name", Value::String(s.name)),
        ("state", Value::String(s.state)),
        ("pid", Value::from_u64(s.pid.into())),
        ("restarts", Value::from_u64(s.restarts.into())),
        ("since", Value::from_u64(s.since)),
    ])
}

fn services_value(list: Vec<ServiceInfo>) -> Value {
    Value::Array(list.into_iter().map(service_value).collect())
}

fn info(api: &Api, _params: Vec<Value>) -> MethodFuture<'_> {
    Box::pin(async move {
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
        let mut out = Struct::new();
        out.insert("hostname".into(), Value::from(api.hostname.as_str()));
        out.insert("version".into(), Value::from(model::VERSION));
        match system.and_then(|s| services.map(|list| (s, list))) {
            Ok(((uptime, kernel), list)) => {
                out.insert("uptime".into(), Value::from_u64(uptime));
                out.insert("kernel".into(), Value::String(kernel));
                out.insert("services".into(), services_value(list));
            }
            Err(e) => {
                out.insert("init_error".into(), Value::String(e.to_string()));
            }
        }
        let mut daemons = Struct::new();
        for (daemon, status) in Daemon::ALL.into_iter().zip([netd, stord, hostd]) {
            let entry = match status {
                Ok((version, counts)) => {
                    let mut s: Struct = counts
                        .into_iter()
                        .map(|(k, v)| (k, Value::from_u64(v.into())))
                        .collect();
                    // The version wins over a count that happens to be called "version".
                    s.insert("version".into(), Value::String(version));
                    s
                }
                Err(e) => Struct::from([("error".to_string(), Value::String(e.to_string()))]),
            };
            daemons.insert(daemon.name().into(), Value::Struct(entry));
        }
        out.insert("daemons".into(), Value::Struct(daemons));
        let management = match mgmt {
            Ok((interface, address, source)) => Value::structure([
                ("interface", Value::String(interface)),
                ("address", Value::String(address)),
                ("source", Value::String(source)),
            ]),
            Err(e) => Value::structure([("error", Value::String(e.to_string()))]),
        };
        out.insert("management".into(), management);
        Ok(Value::Struct(out))
    })
}

fn services(api: &Api, _params: Vec<Value>) -> MethodFuture<'_> {
    Box::pin(async move { Ok(services_value(api.bus.list_services().await?)) })
}

fn reboot(api: &Api, _params: Vec<Value>) -> MethodFuture<'_> {
    Box::pin(async move {
        tracing::warn!("reboot requested through the API");
        api.bus.reboot().await?;
        Ok(Value::Bool(true))
    })
}

fn poweroff(api: &Api, _params: Vec<Value>) -> MethodFuture<'_> {
    Box::pin(async move {
        tracing::warn!("poweroff requested through the API");
        api.bus.poweroff().await?;
        Ok(Value::Bool(true))
    })
}
