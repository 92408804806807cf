use super::*;
use crate::xmlrpc::{Value, from_value, to_value};

#[test]
fn names_are_unique_and_every_action_is_declared_once() {
    let all = declarations();
    let mut names: Vec<_> = all.iter().map(|d| d.name).collect();
    names.dedup();
    assert_eq!(names.len(), all.len(), "a name is declared twice");
    assert_eq!(all.len(), 80);
    assert!(find("vm.create").is_some());
    assert!(find("vm.nope").is_none());
}

#[test]
fn optional_parameters_come_last() {
    for d in declarations() {
        let first_optional = d.params.iter().position(|p| p.optional);
        if let Some(i) = first_optional {
            assert!(d.params[i..].iter().all(|p| p.optional), "{}", d.name);
        }
        assert!(d.help.len() > 10, "{}", d.name);
    }
}

#[test]
fn signatures_follow_the_parameter_types() {
    let d = <vm::VmStop as Action>::DECL;
    assert_eq!(
        d.signatures(),
        vec![vec!["boolean", "string"], vec!["boolean", "string", "int"]]
    );
    assert_eq!(d.synopsis(), "vm.stop(name[, timeout_s])");
    assert_eq!(
        <ct::CtExec as Action>::DECL.signatures(),
        vec![vec!["struct", "string", "array"]]
    );
    assert_eq!(
        <system::ListMethods as Action>::DECL.signatures(),
        vec![vec!["array"]]
    );
}

#[test]
fn parameters_decode_by_position_and_errors_name_them() {
    let stop = vm::VmStop::from_params(vec![Value::from("web")]).unwrap();
    assert_eq!((stop.name.as_str(), stop.timeout_s), ("web", None));
    let stop = vm::VmStop::from_params(vec![Value::from("web"), Value::Int(3)]).unwrap();
    assert_eq!(stop.timeout_s, Some(3));

    let e = vm::VmStop::from_params(vec![]).unwrap_err();
    assert_eq!(
        e,
        "vm.stop takes 1 to 2 parameters (string name, int timeout_s?), got 0"
    );
    let e = vm::VmStart::from_params(vec![Value::from("a"), Value::from("b")]).unwrap_err();
    assert_eq!(e, "vm.start takes 1 parameter (string name), got 2");
    let e = vm::VmStop::from_params(vec![Value::from("web"), Value::from("3")]).unwrap_err();
    assert_eq!(e, "vm.stop: timeout_s must be int, got string");
    let e = vm::VmStop::from_params(vec![Value::from("web"), Value::Int(-1)]).unwrap_err();
    assert_eq!(e, "vm.stop: timeout_s: -1 must not be negative");
}

fn vm_spec(extra: &[(&str, Value)]) -> Value {
    let mut s = crate::xmlrpc::Struct::from([
        ("name".to_string(), Value::from("web")),
        ("memory_mib".to_string(), Value::Int(128)),
        ("kernel".to_string(), Value::from("/k")),
    ]);
    for (k, v) in extra {
        s.insert(k.to_string(), v.clone());
    }
    Value::Struct(s)
}

#[test]
fn struct_members_are_checked_by_path() {
    let call = |v: Value| vm::VmCreate::from_params(vec![v]).map(|c| c.spec);
    let spec = call(vm_spec(&[("vcpus", Value::Int(2))])).unwrap();
    assert_eq!((spec.vcpus, spec.memory_mib), (2, 128));

    let e = call(vm_spec(&[("vcpus", Value::from("2"))])).unwrap_err();
    assert_eq!(e, "vm.create: spec.vcpus must be int, got string");
    let disks = Value::Array(vec![Value::structure([
        ("path", Value::from("/d")),
        ("read_only", Value::from("yes")),
    ])]);
    let e = call(vm_spec(&[("disks", disks)])).unwrap_err();
    assert_eq!(
        e,
        "vm.create: spec.disks[0].read_only must be boolean, got string"
    );
    let e = call(vm_spec(&[("memory", Value::Int(1))])).unwrap_err();
    assert!(
        e.starts_with("vm.create: spec: unknown member `memory`; known members: name, vcpus"),
        "{e}"
    );
    let mut missing = vm_spec(&[]);
    if let Value::Struct(s) = &mut missing {
        s.remove("kernel");
    }
    assert_eq!(
        call(missing).unwrap_err(),
        "vm.create: spec: missing member `kernel`"
    );
    let e = call(Value::from("web")).unwrap_err();
    assert_eq!(e, "vm.create: spec must be struct, got string");
}

#[test]
fn doubles_must_be_finite_and_ints_are_not_doubles() {
    let limits = |burst: Value| {
        net::NetSetLimits::from_params(vec![
            Value::from("p1"),
            Value::structure([(
                "egress",
                Value::structure([("rate_bps", Value::Int(1000)), ("burst_bytes", burst)]),
            )]),
        ])
    };
    let e = limits(Value::Double(f64::NAN)).unwrap_err();
    assert_eq!(
        e,
        "net.setLimits: limits.egress.burst_bytes must be int, got double"
    );
    assert!(limits(Value::Int(1500)).is_ok());
    assert!(from_value::<f64>(Value::Double(f64::INFINITY)).is_err());
    assert_eq!(from_value::<f64>(Value::Int(2)).unwrap(), 2.0);
}

#[test]
fn enums_are_strings() {
    let e = net::NetCreate::from_params(vec![Value::structure([
        ("name", Value::from("lan")),
        ("kind", Value::from("bridge")),
    ])])
    .unwrap_err();
    assert!(
        e.starts_with("net.create: spec.kind: unknown value \"bridge\"; expected one of: bridged"),
        "{e}"
    );
}

#[test]
fn results_encode_without_nulls_and_round_trip() {
    let info = host::HostInfo {
        hostname: "h".into(),
        version: "1".into(),
        uptime: Some(5_000_000_000),
        daemons: [(
            "netd".to_string(),
            host::DaemonReport {
                version: Some("1".into()),
                error: None,
                counts: [("networks".to_string(), 2)].into(),
            },
        )]
        .into(),
        ..Default::default()
    };
    let v = to_value(&info).unwrap();
    let s = v.as_struct().unwrap();
    assert_eq!(s["uptime"], Value::I8(5_000_000_000));
    assert!(!s.contains_key("kernel"));
    let netd = s["daemons"].as_struct().unwrap()["netd"]
        .as_struct()
        .unwrap();
    assert_eq!(netd["networks"], Value::Int(2));
    assert_eq!(netd["version"], Value::from("1"));
    let back: host::HostInfo = from_value(v).unwrap();
    assert_eq!(back, info);
}

#[test]
fn params_encode_in_declaration_order() {
    let call = vm::VmStop {
        name: "web".into(),
        timeout_s: None,
    };
    assert_eq!(call.to_params().unwrap(), vec![Value::from("web")]);
    let call = net::NetSetLimits {
        target: "p".into(),
        limits: crate::net::LimitsChange::default(),
    };
    let params = call.to_params().unwrap();
    assert_eq!(params.len(), 2);
    assert_eq!(params[0], Value::from("p"));
    assert!(net::NetSetLimits::from_params(params).is_ok());
}

#[test]
fn any_value_passes_through() {
    let v = Value::structure([
        ("methodName", Value::from("x")),
        (
            "params",
            Value::Array(vec![Value::Int(1), Value::Base64(vec![1, 2])]),
        ),
    ]);
    let back: Value = from_value(v.clone()).unwrap();
    assert_eq!(back, v);
    let call: system::BatchCall = from_value(v).unwrap();
    assert_eq!(call.method_name, "x");
}

#[test]
fn the_visitor_reaches_every_declared_action_once() {
    struct Names(Vec<&'static str>);
    impl ActionVisitor for Names {
        fn visit<A: Action>(&mut self) {
            self.0.push(A::DECL.name);
        }
    }
    let mut seen = Names(Vec::new());
    visit_actions(&mut seen);
    seen.0.sort_unstable();
    let declared: Vec<&str> = declarations().iter().map(|d| d.name).collect();
    assert_eq!(seen.0, declared);
}

/// Found by apid/tests/fuzz.rs: a call inside system.multicall went through `Value`'s own
/// decoding first, which read a small `<i8>` as `<int>` and a dateTime as a string, so a batched
/// call was refused with the wrong type, or accepted where the same call alone is refused.
#[test]
fn values_decode_exactly_as_they_came() {
    let v = Value::structure([
        ("methodName", Value::I8(1)),
        (
            "params",
            Value::Array(vec![
                Value::DateTime("19980717T14:08:55".into()),
                Value::I8(7),
                Value::Int(7),
            ]),
        ),
    ]);
    let back: Value = from_value(v.clone()).unwrap();
    assert_eq!(back, v);
    let e = from_value::<system::BatchCall>(v).unwrap_err();
    assert_eq!(e.to_string(), "methodName must be string, got i8");
    let call: system::BatchCall = from_value(Value::structure([
        ("methodName", Value::from("vm.start")),
        (
            "params",
            Value::Array(vec![Value::DateTime("19980717T14:08:55".into())]),
        ),
    ]))
    .unwrap();
    let e = vm::VmStart::from_params(call.params).unwrap_err();
    assert_eq!(e, "vm.start: name must be string, got dateTime.iso8601");
    // Other formats still read a Value as what they hold.
    let from_json: Value = serde_json::from_str(r#"{"a": [1, "x", true]}"#).unwrap();
    assert_eq!(
        from_json,
        Value::structure([(
            "a",
            Value::Array(vec![Value::Int(1), Value::from("x"), Value::Bool(true)])
        )])
    );
}

/// Found by tests/fuzz_xmlrpc.rs: an unknown member named with a backtick was quoted in
/// backticks as it was (``unknown member ```), which reads back as something else.
#[test]
fn odd_unknown_member_names_are_quoted_unambiguously() {
    let e = |name: &str| {
        net::NetCreate::from_params(vec![Value::structure([
            ("name", Value::from("lan")),
            ("kind", Value::from("bridged")),
            (name, Value::from("x")),
        ])])
        .unwrap_err()
    };
    assert!(e("colour").starts_with("net.create: spec: unknown member `colour`; known"));
    assert!(e("`").starts_with("net.create: spec: unknown member \"`\"; known"));
    assert!(e("").starts_with("net.create: spec: unknown member \"\"; known"));
    assert!(e("a\nb").starts_with("net.create: spec: unknown member \"a\\nb\"; known"));
}
