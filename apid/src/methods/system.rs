//! The introspection and batching methods most XML-RPC clients know (`system.*`).

use model::fault::FaultCode;
use model::xmlrpc::Value;

use super::{Api, Fault, Method, MethodFuture};

/// A batch is one HTTP request; this keeps one request from queueing unbounded work.
pub const MAX_MULTICALL: usize = 256;

pub fn methods() -> Vec<Method> {
    vec![
        Method {
            name: "system.listMethods",
            signature: &["array"],
            help: "Lists the names of every method this API offers.",
            handler: list_methods,
        },
        Method {
            name: "system.methodHelp",
            signature: &["string", "string"],
            help: "Describes the named method.",
            handler: method_help,
        },
        Method {
            name: "system.methodSignature",
            signature: &["array", "string"],
            help: "Returns the named method's signatures: an array of arrays of type names, the \
                   return type first, then the parameter types.",
            handler: method_signature,
        },
        Method {
            name: "system.multicall",
            signature: &["array", "array"],
            help: "Runs several calls in one request. Takes an array of {methodName, params} \
                   structs; returns an array with, for each call, either a one-element array \
                   holding its result or a {faultCode, faultString} struct. Calls run in order; \
                   a fault does not stop the ones after it. system.multicall cannot be nested.",
            handler: multicall,
        },
    ]
}

fn find<'a>(api: &'a Api, params: &[Value]) -> Result<&'a Method, Fault> {
    let name = params.first().and_then(Value::as_str).unwrap_or_default();
    api.registry()
        .find(name)
        .ok_or_else(|| Fault::new(FaultCode::UnknownMethod, format!("no method {name:?}")))
}

fn list_methods(api: &Api, _params: Vec<Value>) -> MethodFuture<'_> {
    Box::pin(async move {
        Ok(Value::Array(
            api.registry().names().map(Value::from).collect(),
        ))
    })
}

fn method_help(api: &Api, params: Vec<Value>) -> MethodFuture<'_> {
    Box::pin(async move { Ok(Value::from(find(api, &params)?.help)) })
}

fn method_signature(api: &Api, params: Vec<Value>) -> MethodFuture<'_> {
    Box::pin(async move {
        let sigs = find(api, &params)?
            .signatures()
            .into_iter()
            .map(|sig| Value::Array(sig.into_iter().map(Value::from).collect()))
            .collect();
        Ok(Value::Array(sigs))
    })
}

fn multicall(api: &Api, params: Vec<Value>) -> MethodFuture<'_> {
    Box::pin(async move {
        let Some(Value::Array(calls)) = params.into_iter().next() else {
            return Err(Fault::bad_params(
                "system.multicall takes an array of calls",
            ));
        };
        if calls.len() > MAX_MULTICALL {
            return Err(Fault::bad_params(format!(
                "system.multicall takes at most {MAX_MULTICALL} calls, got {}",
                calls.len()
            )));
        }
        let mut results = Vec::with_capacity(calls.len());
        for (i, call) in calls.into_iter().enumerate() {
            let result = match one_call(i, call) {
                Ok((name, params)) => api.call(&name, params).await,
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
        Ok(Value::Array(results))
    })
}

/// Unpacks one `{methodName, params}` entry of a batch.
fn one_call(index: usize, call: Value) -> Result<(String, Vec<Value>), Fault> {
    let Value::Struct(mut members) = call else {
        return Err(Fault::bad_params(format!(
            "call {index}: expected a {{methodName, params}} struct, got {}",
            call.type_name()
        )));
    };
    let name = match members.remove("methodName") {
        Some(Value::String(s)) => s,
        _ => {
            return Err(Fault::bad_params(format!(
                "call {index}: methodName must be a string"
            )));
        }
    };
    if name == "system.multicall" {
        return Err(Fault::bad_params(format!(
            "call {index}: system.multicall cannot be nested"
        )));
    }
    let params = match members.remove("params") {
        Some(Value::Array(p)) => p,
        None => Vec::new(),
        Some(other) => {
            return Err(Fault::bad_params(format!(
                "call {index}: params must be an array, got {}",
                other.type_name()
            )));
        }
    };
    Ok((name, params))
}
