//! `system.*`: the introspection and batching methods most XML-RPC clients know.

use crate::xmlrpc::Value;

use super::actions;

/// One call of a `system.multicall` batch: `{methodName, params}`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchCall {
    #[serde(rename = "methodName")]
    pub method_name: String,
    #[serde(default)]
    pub params: Vec<Value>,
}

actions! { ACTIONS;
    ListMethods = "system.listMethods", Apid, () -> Vec<String>,
        "Lists the names of every method this API offers.";
    MethodHelp = "system.methodHelp", Apid, (method: String) -> String,
        "Describes the named method.";
    MethodSignature = "system.methodSignature", Apid, (method: String) -> Vec<Vec<String>>,
        "Returns the named method's signatures: an array of arrays of type names, the return \
         type first, then the parameter types.";
    Multicall = "system.multicall", Apid, (calls: Vec<Value>) -> Vec<Value>,
        "Runs several calls in one request. Takes an array of {methodName, params} structs; \
         returns an array with, for each call, either a one-element array holding its result or \
         a {faultCode, faultString} struct. Calls run in order; a fault does not stop the ones \
         after it. system.multicall cannot be nested.";
}
