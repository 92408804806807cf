//! `system.*`: introspection from the declarations, and batches.

use model::api::Declaration;
use model::api::system::{BatchCall, ListMethods, MethodHelp, MethodSignature, Multicall};
use model::fault::FaultCode;
use model::xmlrpc::{Value, from_value};

use super::{Api, Fault, Method, Serve, method};

/// A batch is one HTTP request; this keeps one request from queueing unbounded work.
pub const MAX_MULTICALL: usize = 256;

pub fn methods() -> Vec<Method> {
    vec![
        method::<ListMethods>(),
        method::<MethodHelp>(),
        method::<MethodSignature>(),
        method::<Multicall>(),
    ]
}

fn find(api: &Api, name: &str) -> Result<&'static Declaration, Fault> {
    api.registry()
        .find(name)
        .map(|m| m.decl)
        .ok_or_else(|| Fault::new(FaultCode::UnknownMethod, format!("no method {name:?}")))
}

impl Serve for ListMethods {
    async fn serve(self, api: &Api) -> Result<Vec<String>, Fault> {
        Ok(api.registry().names().map(String::from).collect())
    }
}

impl Serve for MethodHelp {
    async fn serve(self, api: &Api) -> Result<String, Fault> {
        Ok(find(api, &self.method)?.help.to_string())
    }
}

impl Serve for MethodSignature {
    async fn serve(self, api: &Api) -> Result<Vec<Vec<String>>, Fault> {
        let sigs = find(api, &self.method)?.signatures();
        Ok(sigs
            .into_iter()
            .map(|sig| sig.into_iter().map(String::from).collect())
            .collect())
    }
}

impl Serve for Multicall {
    async fn serve(self, api: &Api) -> Result<Vec<Value>, Fault> {
        if self.calls.len() > MAX_MULTICALL {
            return Err(Fault::bad_params(format!(
                "system.multicall takes at most {MAX_MULTICALL} calls, got {}",
                self.calls.len()
            )));
        }
        let mut results = Vec::with_capacity(self.calls.len());
        for (i, call) in self.calls.into_iter().enumerate() {
            let result = match one_call(i, call) {
                // Boxed: a batch entry runs through the same dispatch as a plain call.
                Ok(c) => Box::pin(api.call(&c.method_name, c.params)).await,
                Err(fault) => Err(fault),
            };
            results.push(match result {
                Ok(v) => Value::Array(vec![v]),
                Err(f) => Value::structure([
                    ("faultCode", Value::Int(f.code.code())),
                    ("faultString", Value::String(f.message)),
                ]),
            });
        }
        Ok(results)
    }
}

/// Unpacks one `{methodName, params}` entry of a batch.
fn one_call(index: usize, call: Value) -> Result<BatchCall, Fault> {
    let call: BatchCall =
        from_value(call).map_err(|e| Fault::bad_params(format!("call {index}: {e}")))?;
    if call.method_name == "system.multicall" {
        return Err(Fault::bad_params(format!(
            "call {index}: system.multicall cannot be nested"
        )));
    }
    Ok(call)
}
