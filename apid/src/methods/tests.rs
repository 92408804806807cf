//! Dispatch and the system.* methods, without a bus.

use model::fault::FaultCode;
use model::xmlrpc::{MethodCall, MethodResponse, Value};

use super::{Api, Fault};
use crate::bus::Bus;

fn api() -> Api {
    Api::new("testhost".into(), Bus::default())
}

async fn call(name: &str, params: Vec<Value>) -> Result<Value, Fault> {
    api().call(name, params).await
}

fn code(r: Result<Value, Fault>) -> FaultCode {
    match r {
        Ok(v) => panic!("expected a fault, got {v:?}"),
        Err(f) => f.code,
    }
}

#[tokio::test]
async fn list_methods_is_sorted_and_complete() {
    let v = call("system.listMethods", vec![]).await.unwrap();
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        names,
        [
            "host.info",
            "host.poweroff",
            "host.reboot",
            "host.services",
            "net.create",
            "net.delete",
            "net.info",
            "net.list",
            "net.setLimits",
            "port.attach",
            "port.detach",
            "port.list",
            "system.listMethods",
            "system.methodHelp",
            "system.methodSignature",
            "system.multicall",
        ]
    );
}

#[tokio::test]
async fn every_method_has_help_and_a_signature() {
    let a = api();
    let names: Vec<&str> = a.registry().names().collect();
    for name in names {
        let help = a
            .call("system.methodHelp", vec![name.into()])
            .await
            .unwrap();
        assert!(help.as_str().is_some_and(|h| h.len() > 10), "{name}");
        let sig = a
            .call("system.methodSignature", vec![name.into()])
            .await
            .unwrap();
        let sig = &sig.as_array().unwrap()[0];
        assert!(!sig.as_array().unwrap().is_empty(), "{name}");
    }
    let sig = a
        .call("system.methodSignature", vec!["system.methodHelp".into()])
        .await
        .unwrap();
    assert_eq!(
        sig,
        Value::Array(vec![Value::Array(vec!["string".into(), "string".into()])])
    );
}

#[tokio::test]
async fn unknown_methods_and_bad_params() {
    assert_eq!(code(call("nope", vec![]).await), FaultCode::UnknownMethod);
    assert_eq!(
        code(call("system.methodHelp", vec!["nope".into()]).await),
        FaultCode::UnknownMethod
    );
    assert_eq!(
        code(call("system.methodHelp", vec![]).await),
        FaultCode::BadParams
    );
    assert_eq!(
        code(call("system.methodHelp", vec![Value::Int(1)]).await),
        FaultCode::BadParams
    );
    assert_eq!(
        code(call("system.listMethods", vec![Value::Int(1)]).await),
        FaultCode::BadParams
    );
    assert_eq!(
        code(call("host.info", vec![Value::Nil]).await),
        FaultCode::BadParams
    );
    let err = call("system.methodHelp", vec![Value::Int(1)])
        .await
        .unwrap_err();
    assert_eq!(
        err.message,
        "system.methodHelp: parameter 1 must be string, got int"
    );
}

fn entry(name: &str, params: Vec<Value>) -> Value {
    Value::structure([
        ("methodName", Value::from(name)),
        ("params", Value::Array(params)),
    ])
}

fn fault_code_of(v: &Value) -> Option<i64> {
    v.as_struct()?.get("faultCode")?.as_i64()
}

#[tokio::test]
async fn multicall_wraps_results_and_faults() {
    let calls = Value::Array(vec![
        entry("system.methodHelp", vec!["host.info".into()]),
        entry("nope", vec![]),
        entry("system.multicall", vec![Value::Array(vec![])]),
        Value::Int(3),
        Value::structure([("methodName", Value::from("system.listMethods"))]),
        entry("system.methodHelp", vec![]),
        entry("host.services", vec![]),
    ]);
    let v = call("system.multicall", vec![calls]).await.unwrap();
    let results = v.as_array().unwrap();
    assert_eq!(results.len(), 7);
    let help = results[0].as_array().unwrap();
    assert_eq!(help.len(), 1);
    assert!(help[0].as_str().unwrap().contains("hostname"));
    assert_eq!(fault_code_of(&results[1]), Some(101));
    assert_eq!(fault_code_of(&results[2]), Some(102));
    assert!(
        results[2].as_struct().unwrap()["faultString"]
            .as_str()
            .unwrap()
            .contains("nested")
    );
    assert_eq!(fault_code_of(&results[3]), Some(102));
    assert_eq!(
        results[4].as_array().unwrap()[0].as_array().unwrap().len(),
        16
    );
    assert_eq!(fault_code_of(&results[5]), Some(102));
    assert_eq!(fault_code_of(&results[6]), Some(106));
}

#[tokio::test]
async fn multicall_needs_an_array_and_is_capped() {
    assert_eq!(
        code(call("system.multicall", vec!["x".into()]).await),
        FaultCode::BadParams
    );
    let many = Value::Array(vec![
        entry("system.listMethods", vec![]);
        super::system::MAX_MULTICALL + 1
    ]);
    assert_eq!(
        code(call("system.multicall", vec![many]).await),
        FaultCode::BadParams
    );
}

#[tokio::test]
async fn host_methods_without_a_bus_are_busy() {
    for name in ["host.services", "host.reboot", "host.poweroff"] {
        assert_eq!(code(call(name, vec![]).await), FaultCode::Busy, "{name}");
    }
}

#[tokio::test]
async fn host_info_without_a_bus_still_answers() {
    let v = call("host.info", vec![]).await.unwrap();
    let s = v.as_struct().unwrap();
    assert_eq!(s["hostname"], Value::from("testhost"));
    assert_eq!(s["version"], Value::from(model::VERSION));
    assert!(s["init_error"].as_str().unwrap().contains("not connected"));
    assert!(!s.contains_key("services"));
    let daemons = s["daemons"].as_struct().unwrap();
    for d in ["netd", "stord", "hostd"] {
        assert!(daemons[d].as_struct().unwrap().contains_key("error"), "{d}");
    }
}

#[tokio::test]
async fn handle_turns_faults_into_responses() {
    let r = api()
        .handle(MethodCall {
            name: "nope".into(),
            params: vec![],
        })
        .await;
    assert!(matches!(r, MethodResponse::Fault { code: 101, .. }));
    let r = api()
        .handle(MethodCall {
            name: "system.listMethods".into(),
            params: vec![],
        })
        .await;
    assert!(matches!(r, MethodResponse::Ok(Value::Array(_))));
}
