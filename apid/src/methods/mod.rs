//! The API's methods and their dispatch.

mod ct;
mod event;
mod host;
mod net;
mod registry;
mod storage;
mod system;
mod task;
mod vm;

pub use registry::{Fault, Method, MethodFuture, MethodResult, Registry, Serve, method};

use model::fault::FaultCode;
use model::xmlrpc::{MethodCall, MethodResponse, Value};

use crate::bus::Bus;
use crate::state::HostState;

/// Everything a method handler may use. Cheap to clone (a task holds its own).
#[derive(Clone)]
pub struct Api {
    registry: Registry,
    pub hostname: String,
    pub bus: Bus,
    /// What init and the daemons pushed: `host.info` and `host.services` answer from it.
    pub state: HostState,
    /// Where `PUT /uploads/NAME` stores files, which `upload:NAME` arguments name.
    pub uploads: Option<std::sync::Arc<crate::upload::Uploads>>,
    /// The methods running in the background (`task.*`).
    pub tasks: std::sync::Arc<crate::task::Tasks>,
    /// The host's recent events (`event.list`).
    pub events: std::sync::Arc<crate::events::Events>,
}

impl Api {
    pub fn new(hostname: String, bus: Bus) -> Api {
        let mut methods = system::methods();
        methods.extend(host::methods());
        methods.extend(net::methods());
        methods.extend(storage::methods());
        methods.extend(ct::methods());
        methods.extend(vm::methods());
        methods.extend(task::methods());
        methods.extend(event::methods());
        Api {
            registry: Registry::new(methods),
            hostname,
            state: HostState::default(),
            bus,
            uploads: None,
            tasks: std::sync::Arc::new(crate::task::Tasks::new()),
            events: Default::default(),
        }
    }

    /// Takes uploads (`PUT /uploads/NAME`) into `uploads`.
    pub fn with_uploads(mut self, uploads: crate::upload::Uploads) -> Api {
        self.uploads = Some(std::sync::Arc::new(uploads));
        self
    }

    /// Answers host.info and host.services from what the daemons push, followed over
    /// `watcher`'s own connection (see `crate::state`); without it every request asks.
    pub fn follow_state(mut self, watcher: Bus) -> Api {
        if let Some(conn) = watcher.connection().cloned() {
            tokio::spawn(crate::events::follow(conn, self.events.clone()));
        }
        self.state = HostState::follow(watcher, self.events.clone());
        self
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Runs one method: looks it up, checks its parameters, calls its handler.
    pub async fn call(&self, name: &str, params: Vec<Value>) -> MethodResult {
        let Some(method) = self.registry.find(name) else {
            return Err(Fault::new(
                FaultCode::UnknownMethod,
                format!("no method {name:?}; system.listMethods lists them"),
            ));
        };
        method.call(self, params).await
    }

    /// Checks a call as `call` would before serving it: the method is known, its parameters
    /// decode.
    pub fn check(&self, name: &str, params: &[Value]) -> Result<(), Fault> {
        match self.registry.find(name) {
            Some(method) => method.check(params),
            None => Err(Fault::new(
                FaultCode::UnknownMethod,
                format!("no method {name:?}; system.listMethods lists them"),
            )),
        }
    }

    pub async fn handle(&self, call: MethodCall) -> MethodResponse {
        let name = call.name;
        match self.call(&name, call.params).await {
            Ok(v) => MethodResponse::Ok(v),
            Err(fault) => {
                tracing::info!(method = %name, code = fault.code.code(), "fault: {}", fault.message);
                fault.into_response()
            }
        }
    }
}

/// A spec or other structured argument as the daemons take it over D-Bus (JSON).
fn json<T: serde::Serialize>(t: &T) -> Result<String, Fault> {
    serde_json::to_string(t).map_err(|e| Fault::internal(e.to_string()))
}

/// A daemon's JSON answer as the action's typed result.
fn answer<T: serde::de::DeserializeOwned>(daemon: &str, json: &str) -> Result<T, Fault> {
    serde_json::from_str(json).map_err(|e| Fault::internal(format!("{daemon} answered: {e}")))
}

#[cfg(test)]
mod tests;
