//! Dispatch and the system.* methods, without a bus.

use model::fault::FaultCode;
use model::xmlrpc::{MethodCall, MethodResponse, Value};

use super::{Api, Fault, MethodResult};
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
            "ct.console",
            "ct.create",
            "ct.delete",
            "ct.exec",
            "ct.info",
            "ct.list",
            "ct.pause",
            "ct.restart",
            "ct.resume",
            "ct.set",
            "ct.start",
            "ct.stop",
            "ct.stopTimeout",
            "event.list",
            "export.create",
            "export.delete",
            "export.info",
            "export.list",
            "host.applyConfig",
            "host.disks",
            "host.info",
            "host.install",
            "host.installStatus",
            "host.log",
            "host.poweroff",
            "host.reboot",
            "host.restartService",
            "host.rollback",
            "host.services",
            "host.update",
            "host.updateStatus",
            "net.create",
            "net.delete",
            "net.info",
            "net.list",
            "net.setLimits",
            "pool.create",
            "pool.delete",
            "pool.info",
            "pool.list",
            "port.attach",
            "port.detach",
            "port.list",
            "system.listMethods",
            "system.methodHelp",
            "system.methodSignature",
            "system.multicall",
            "task.cancel",
            "task.info",
            "task.list",
            "task.start",
            "task.wait",
            "template.delete",
            "template.import",
            "template.list",
            "vm.console",
            "vm.console_input",
            "vm.create",
            "vm.delete",
            "vm.info",
            "vm.list",
            "vm.pause",
            "vm.restore",
            "vm.resume",
            "vm.set",
            "vm.snapshot",
            "vm.start",
            "vm.stop",
            "volume.backup",
            "volume.clone",
            "volume.create",
            "volume.delete",
            "volume.deleteBackup",
            "volume.deleteSnapshot",
            "volume.grow",
            "volume.import",
            "volume.info",
            "volume.list",
            "volume.restore",
            "volume.snapshot",
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
        "system.methodHelp: method must be string, got int"
    );
}

#[tokio::test]
async fn volume_import_takes_only_uploads() {
    // A host path never reaches stord: the API reaches no file it did not receive.
    let err = call("volume.import", vec!["p/disk".into(), "/etc/shadow".into()])
        .await
        .unwrap_err();
    assert_eq!(err.code, FaultCode::BadParams);
    assert!(err.message.contains("upload:NAME"), "{}", err.message);
    // An API without an uploads directory has no upload to give.
    assert_eq!(
        code(
            call(
                "volume.import",
                vec!["p/disk".into(), "upload:disk.raw".into()]
            )
            .await
        ),
        FaultCode::Conflict
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
        api().registry().names().count()
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
    assert_eq!(
        code(call("host.restartService", vec![Value::from("netd")]).await),
        FaultCode::Busy
    );
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

fn ct_spec(members: &[(&str, Value)]) -> Value {
    Value::structure(members.iter().cloned())
}

fn bad_params(r: Result<Value, Fault>) -> String {
    match r {
        Ok(v) => panic!("expected a fault, got {v:?}"),
        Err(f) => {
            assert_eq!(f.code, FaultCode::BadParams, "{}", f.message);
            f.message
        }
    }
}

/// apid checks the shape of a call (and its own time limits); the rules of the domain are the
/// owning daemon's (hostd, netd), so a call that breaks only those reaches the daemon: without
/// a bus, 106.
async fn reaches_the_daemon(name: &str, params: Vec<Value>) {
    let f = call(name, params).await.unwrap_err();
    assert_eq!(f.code, FaultCode::Busy, "{name}: {}", f.message);
}

#[tokio::test]
async fn ct_calls_are_checked_for_shape_and_passed_on() {
    let m = bad_params(
        call(
            "ct.set",
            vec!["web1".into(), ct_spec(&[("cpu", Value::Int(5))])],
        )
        .await,
    );
    assert!(m.contains("resources: unknown member `cpu`"), "{m}");
    bad_params(call("ct.create", vec![ct_spec(&[("name", "a".into())])]).await);
    let m = bad_params(
        call(
            "ct.exec",
            vec!["web1".into(), Value::Array(vec![Value::Int(1)])],
        )
        .await,
    );
    assert!(m.contains("argv[0] must be string, got int"), "{m}");
    // stopTimeout's grace must fit the 30 s method limit: the API's own rule.
    let m = bad_params(call("ct.stopTimeout", vec!["web1".into(), Value::Int(21)]).await);
    assert!(m.contains("seconds = 21 is out of range 0..=20"), "{m}");
    bad_params(call("ct.stopTimeout", vec!["web1".into(), Value::Int(-1)]).await);

    // Well-shaped calls that break hostd's rules go to hostd, which answers 102 itself.
    let limits = ct_spec(&[
        ("cpu_limit", Value::Int(0)),
        ("cpu_weight", Value::Int(20_000)),
    ]);
    reaches_the_daemon("ct.set", vec!["web1".into(), limits]).await;
    reaches_the_daemon("ct.set", vec!["web1".into(), ct_spec(&[])]).await;
    reaches_the_daemon("ct.start", vec!["../etc".into()]).await;
    let spec = ct_spec(&[("name", "Bad_Name".into()), ("template", "busybox".into())]);
    reaches_the_daemon("ct.create", vec![spec]).await;
    reaches_the_daemon("ct.exec", vec!["web1".into(), Value::Array(vec![])]).await;
    reaches_the_daemon(
        "template.import",
        vec!["bb".into(), "x.tar".into(), "abc".into()],
    )
    .await;
}

#[tokio::test]
async fn ct_methods_without_a_bus_are_busy() {
    let digest = format!("sha256:{}", "a".repeat(64));
    let good = ct_spec(&[("name", "web1".into()), ("template", "busybox".into())]);
    let calls: Vec<(&str, Vec<Value>)> = vec![
        (
            "template.import",
            vec!["bb".into(), "/x.tar".into(), digest.into()],
        ),
        ("template.list", vec![]),
        ("template.delete", vec!["bb".into()]),
        ("ct.create", vec![good]),
        ("ct.start", vec!["web1".into()]),
        ("ct.stop", vec!["web1".into()]),
        ("ct.stopTimeout", vec!["web1".into(), Value::Int(0)]),
        ("ct.restart", vec!["web1".into()]),
        ("ct.pause", vec!["web1".into()]),
        ("ct.resume", vec!["web1".into()]),
        ("ct.delete", vec!["web1".into()]),
        ("ct.list", vec![]),
        ("ct.info", vec!["web1".into()]),
        (
            "ct.set",
            vec!["web1".into(), ct_spec(&[("cpu_limit", Value::Int(50))])],
        ),
        (
            "ct.exec",
            vec!["web1".into(), Value::Array(vec!["true".into()])],
        ),
        ("ct.console", vec!["web1".into()]),
    ];
    for (name, params) in calls {
        assert_eq!(code(call(name, params).await), FaultCode::Busy, "{name}");
    }
}

fn vm_spec(extra: &[(&str, Value)]) -> Value {
    let mut members: Vec<(&str, Value)> = vec![
        ("name", "deb".into()),
        ("memory_mib", Value::Int(512)),
        ("kernel", "/var/lib/cairn/kernels/vmlinux".into()),
    ];
    for (k, v) in extra {
        members.retain(|(m, _)| m != k);
        members.push((k, v.clone()));
    }
    Value::structure(members)
}

#[tokio::test]
async fn vm_calls_are_checked_for_shape_and_passed_on() {
    let bad = bad_params;
    // Unknown members, at any level.
    let m = bad(call("vm.create", vec![vm_spec(&[("memory", Value::Int(1))])]).await);
    assert!(m.contains("spec: unknown member `memory`"), "{m}");
    let nic = Value::Array(vec![Value::structure([
        ("network", Value::from("lan")),
        ("ip", Value::from("10.0.0.2")),
    ])]);
    let m = bad(call("vm.create", vec![vm_spec(&[("nics", nic)])]).await);
    assert!(m.contains("spec.nics[0]: unknown member `ip`"), "{m}");
    // Wrong types name their member.
    let m = bad(call("vm.create", vec![vm_spec(&[("vcpus", "2".into())])]).await);
    assert_eq!(m, "vm.create: spec.vcpus must be int, got string");
    let disks = Value::Array(vec![Value::structure([
        ("path", Value::from("/d")),
        ("read_only", Value::from("yes")),
    ])]);
    let m = bad(call("vm.create", vec![vm_spec(&[("disks", disks)])]).await);
    assert_eq!(
        m,
        "vm.create: spec.disks[0].read_only must be boolean, got string"
    );
    let m = bad(call(
        "vm.create",
        vec![vm_spec(&[("memory_mib", Value::Int(-1))])],
    )
    .await);
    assert_eq!(m, "vm.create: spec.memory_mib: -1 must not be negative");
    // Missing members.
    let m = bad(call(
        "vm.create",
        vec![Value::structure([("name", Value::from("deb"))])],
    )
    .await);
    assert!(m.contains("missing member"), "{m}");
    // The API's own limits: timeouts within the 30 s budget, sizes of one answer.
    let m = bad(call("vm.stop", vec!["deb".into(), Value::Int(21)]).await);
    assert!(m.contains("timeout_s = 21 is out of range 0..=20"), "{m}");
    bad(call("vm.stop", vec!["deb".into(), Value::Int(-1)]).await);
    bad(call("vm.stop", vec!["deb".into(), "5".into()]).await);
    bad(call("vm.stop", vec!["deb".into(), Value::Int(1), Value::Int(1)]).await);
    bad(call("vm.console", vec!["deb".into(), Value::Int(0)]).await);
    bad(call("vm.console", vec!["deb".into(), Value::Int((1 << 20) + 1)]).await);
    bad(call("vm.console_input", vec!["deb".into(), "".into()]).await);
    bad(call(
        "vm.console_input",
        vec!["deb".into(), "x".repeat(64 * 1024 + 1).into()],
    )
    .await);

    // Well-shaped calls that break hostd's rules (the ones host.toml's [[vm]] follows) go to
    // hostd, which answers 102 with the same words `config check` uses.
    let spec = vm_spec(&[
        ("name", "Deb".into()),
        ("vcpus", Value::Int(9)),
        ("memory_mib", Value::Int(0)),
        ("kernel", "vmlinux".into()),
    ]);
    reaches_the_daemon("vm.create", vec![spec]).await;
    reaches_the_daemon("vm.start", vec!["../etc".into()]).await;
    reaches_the_daemon("vm.snapshot", vec!["deb".into(), "snap".into()]).await;
}

#[tokio::test]
async fn vm_methods_without_a_bus_are_busy() {
    let calls: Vec<(&str, Vec<Value>)> = vec![
        ("vm.create", vec![vm_spec(&[])]),
        ("vm.start", vec!["deb".into()]),
        ("vm.stop", vec!["deb".into()]),
        ("vm.stop", vec!["deb".into(), Value::Int(0)]),
        ("vm.pause", vec!["deb".into()]),
        ("vm.resume", vec!["deb".into()]),
        (
            "vm.set",
            vec!["deb".into(), Value::structure([("vcpus", Value::Int(2))])],
        ),
        ("vm.snapshot", vec!["deb".into(), "/var/lib/snap".into()]),
        ("vm.restore", vec!["deb".into(), "/var/lib/snap".into()]),
        ("vm.delete", vec!["deb".into()]),
        ("vm.list", vec![]),
        ("vm.info", vec!["deb".into()]),
        ("vm.console", vec!["deb".into()]),
        ("vm.console", vec!["deb".into(), Value::Int(100)]),
        ("vm.console_input", vec!["deb".into(), "root\n".into()]),
    ];
    for (name, params) in calls {
        assert_eq!(code(call(name, params).await), FaultCode::Busy, "{name}");
    }
}

#[tokio::test]
async fn optional_parameters_have_one_signature_per_arity() {
    let sig = call("system.methodSignature", vec!["vm.stop".into()])
        .await
        .unwrap();
    let strs = |v: &[&str]| Value::Array(v.iter().map(|s| Value::from(*s)).collect());
    assert_eq!(
        sig,
        Value::Array(vec![
            strs(&["boolean", "string"]),
            strs(&["boolean", "string", "int"]),
        ])
    );
    let f = call("vm.stop", vec![]).await.unwrap_err();
    assert_eq!(f.code, FaultCode::BadParams);
    assert_eq!(
        f.message,
        "vm.stop takes 1 to 2 parameters (string name, int timeout_s?), got 0"
    );
    let f = call("vm.start", vec![]).await.unwrap_err();
    assert_eq!(f.message, "vm.start takes 1 parameter (string name), got 0");
}

// --- ct.* against a fake hostd on a private bus ---------------------------------------------------

mod over_a_bus {
    use std::process::{Child, Command, Stdio};
    use std::sync::{Arc, Mutex};

    use model::dbus::CairnError;
    use model::xmlrpc::Value;

    use super::super::Api;
    use crate::bus::Bus;

    struct BusDaemon {
        child: Child,
        address: String,
        dir: std::path::PathBuf,
    }

    impl Drop for BusDaemon {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn private_bus(tag: &str) -> Option<BusDaemon> {
        let dir = std::env::temp_dir().join(format!("apid-{tag}-bus-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).ok()?;
        let conf = dir.join("bus.conf");
        std::fs::write(&conf, model::dbus::bus_config(&dir.join("bus"))).ok()?;
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", conf.display()))
            .args(["--nofork", "--print-address=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let mut line = String::new();
        let stdout = child.stdout.take()?;
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).ok()?;
        Some(BusDaemon {
            child,
            address: line.trim().to_string(),
            dir,
        })
    }

    /// hostd as apid sees it: records what it was asked; no template methods (so they answer
    /// UnknownMethod, as a hostd without containers does).
    #[derive(Clone, Default)]
    struct FakeHost {
        seen: Arc<Mutex<Vec<String>>>,
    }

    #[zbus::interface(name = "org.cairn.Host1")]
    impl FakeHost {
        fn create_container(&self, spec_json: &str) -> Result<String, CairnError> {
            self.seen
                .lock()
                .unwrap()
                .push(format!("create {spec_json}"));
            Ok(
                r#"{"name":"web1","template":"busybox","state":"created","hostname":"web1",
                   "addresses":[],"privileged":false,"resources":{"cpu_limit":50},"created":1}"#
                    .into(),
            )
        }
        fn stop_container(&self, name: &str, timeout_s: u32) -> Result<(), CairnError> {
            self.seen
                .lock()
                .unwrap()
                .push(format!("stop {name} {timeout_s}"));
            Ok(())
        }
        fn container_info(&self, name: &str) -> Result<String, CairnError> {
            Err(CairnError::NotFound(format!("no container {name:?}")))
        }
        fn set_container(&self, name: &str, resources_json: &str) -> Result<(), CairnError> {
            self.seen
                .lock()
                .unwrap()
                .push(format!("set {name} {resources_json}"));
            Ok(())
        }
        fn exec(
            &self,
            name: &str,
            argv: Vec<String>,
            timeout_s: u32,
        ) -> Result<(i32, String, String), CairnError> {
            if argv.first().is_some_and(|a| a == "yes") {
                return Err(CairnError::TooLarge(
                    "the command wrote 41943040 bytes; the cap is 16777216".into(),
                ));
            }
            Ok((
                3,
                format!("{name}: {}", argv.join(" ")),
                format!("{timeout_s}"),
            ))
        }
        fn start_container(&self, _name: &str) -> Result<(), CairnError> {
            Err(CairnError::Conflict("web1 is running".into()))
        }
        fn create_vm(&self, spec_json: &str) -> Result<String, CairnError> {
            self.seen
                .lock()
                .unwrap()
                .push(format!("create_vm {spec_json}"));
            let spec: serde_json::Value = serde_json::from_str(spec_json)
                .map_err(|e| CairnError::InvalidArgs(e.to_string()))?;
            Ok(
                serde_json::json!({"name": spec["name"], "state": "created", "spec": spec})
                    .to_string(),
            )
        }
        fn start_vm(&self, name: &str) -> Result<(), CairnError> {
            Err(CairnError::Conflict(format!("vm {name:?} is running")))
        }
        fn stop_vm(&self, name: &str, timeout_s: u32) -> Result<(), CairnError> {
            self.seen
                .lock()
                .unwrap()
                .push(format!("stop_vm {name} {timeout_s}"));
            Ok(())
        }
        fn pause_vm(&self, _name: &str) -> Result<(), CairnError> {
            Err(CairnError::Busy("the VMM is starting".into()))
        }
        fn resume_vm(&self, _name: &str) -> Result<(), CairnError> {
            Err(CairnError::InvalidArgs("vm is not paused".into()))
        }
        fn snapshot_vm(&self, name: &str, dir: &str) -> Result<(), CairnError> {
            Err(CairnError::Failed(format!(
                "snapshot of {name} into {dir}: disk full"
            )))
        }
        fn list_vms(&self) -> Result<String, CairnError> {
            Ok(
                r#"[{"name":"deb","state":"running","pid":42,"taps":["vmdeb0"],
                    "spec":{"name":"deb","vcpus":2,"memory_mib":512,"kernel":"/k"}}]"#
                    .into(),
            )
        }
        fn vm_info(&self, name: &str) -> Result<String, CairnError> {
            Err(CairnError::NotFound(format!("no vm {name:?}")))
        }
        fn vm_console(&self, name: &str, max_bytes: u32) -> Result<String, CairnError> {
            Ok(format!("{name} {max_bytes}"))
        }
        fn vm_console_input(&self, name: &str, data: &str) -> Result<(), CairnError> {
            self.seen
                .lock()
                .unwrap()
                .push(format!("input {name} {data:?}"));
            Ok(())
        }
    }

    #[tokio::test]
    async fn ct_methods_reach_hostd_and_map_its_errors() {
        let Some(bus) = private_bus("ct") else {
            eprintln!("dbus-daemon is not available; skipping");
            return;
        };
        let fake = FakeHost::default();
        let _hostd = zbus::connection::Builder::address(bus.address.as_str())
            .name(model::dbus::HOST_NAME)
            .serve_at(model::dbus::HOST_PATH, fake.clone())
            .build()
            .await
            .unwrap();
        let conn = zbus::connection::Builder::address(bus.address.as_str())
            .build()
            .await
            .unwrap();
        let api = Api::new("testhost".into(), Bus::new(Some(conn)));
        let s = |v: &str| Value::from(v);

        let spec = Value::structure([
            ("name", s("web1")),
            ("template", s("busybox")),
            (
                "resources",
                Value::structure([("cpu_limit", Value::Int(50))]),
            ),
        ]);
        let info = api.call("ct.create", vec![spec]).await.unwrap();
        let info = info.as_struct().unwrap();
        assert_eq!(info["state"], s("created"));
        assert_eq!(
            info["resources"].as_struct().unwrap()["cpu_limit"],
            Value::Int(50)
        );

        api.call("ct.stop", vec![s("web1")]).await.unwrap();
        api.call("ct.stopTimeout", vec![s("web1"), Value::Int(0)])
            .await
            .unwrap();
        let limits = Value::structure([("memory", Value::Int(64 << 20))]);
        api.call("ct.set", vec![s("web1"), limits]).await.unwrap();
        assert_eq!(
            *fake.seen.lock().unwrap(),
            [
                r#"create {"name":"web1","template":"busybox","resources":{"cpu_limit":50}}"#,
                "stop web1 10",
                "stop web1 0",
                r#"set web1 {"memory":67108864}"#,
            ]
        );

        let r = api
            .call(
                "ct.exec",
                vec![s("web1"), Value::Array(vec![s("echo"), s("hi")])],
            )
            .await
            .unwrap();
        let r = r.as_struct().unwrap();
        assert_eq!(r["exit_code"], Value::Int(3));
        assert_eq!(r["stdout"], s("web1: echo hi"));
        assert_eq!(r["stderr"], s("20"), "exec's deadline");
        // Output over hostd's cap: its TooLarge verdict is 108, with hostd's message.
        let f = api
            .call("ct.exec", vec![s("web1"), Value::Array(vec![s("yes")])])
            .await
            .unwrap_err();
        assert_eq!(f.code, FaultCode::TooLarge);
        assert!(f.message.contains("the cap is"), "{}", f.message);

        let f = api.call("ct.info", vec![s("nope")]).await.unwrap_err();
        assert_eq!(f.code, FaultCode::NotFound);
        assert_eq!(f.message, "no container \"nope\"");
        let f = api.call("ct.start", vec![s("web1")]).await.unwrap_err();
        assert_eq!(f.code, FaultCode::Conflict);
        // A hostd without the method: 107 naming UnknownMethod (ci/e2e/test_ct.py skips on it).
        let f = api.call("template.list", vec![]).await.unwrap_err();
        assert_eq!(f.code, FaultCode::Internal);
        assert!(f.message.contains("UnknownMethod"), "{}", f.message);
    }

    #[tokio::test]
    async fn vm_methods_reach_hostd_and_map_its_errors() {
        let Some(bus) = private_bus("vm") else {
            eprintln!("dbus-daemon is not available; skipping");
            return;
        };
        let fake = FakeHost::default();
        let _hostd = zbus::connection::Builder::address(bus.address.as_str())
            .name(model::dbus::HOST_NAME)
            .serve_at(model::dbus::HOST_PATH, fake.clone())
            .build()
            .await
            .unwrap();
        let conn = zbus::connection::Builder::address(bus.address.as_str())
            .build()
            .await
            .unwrap();
        let api = Api::new("testhost".into(), Bus::new(Some(conn)));
        let s = |v: &str| Value::from(v);

        let spec = Value::structure([
            ("name", s("deb")),
            ("vcpus", Value::Int(2)),
            ("memory_mib", Value::Int(512)),
            ("kernel", s("/k")),
            (
                "nics",
                Value::Array(vec![Value::structure([("network", s("lan"))])]),
            ),
        ]);
        let info = api.call("vm.create", vec![spec]).await.unwrap();
        let info = info.as_struct().unwrap();
        assert_eq!(info["state"], s("created"));
        assert_eq!(info["spec"].as_struct().unwrap()["vcpus"], Value::Int(2));

        api.call("vm.stop", vec![s("deb")]).await.unwrap();
        api.call("vm.stop", vec![s("deb"), Value::Int(0)])
            .await
            .unwrap();
        api.call("vm.console_input", vec![s("deb"), s("root\n")])
            .await
            .unwrap();
        assert_eq!(
            *fake.seen.lock().unwrap(),
            [
                r#"create_vm {"name":"deb","vcpus":2,"memory_mib":512,"kernel":"/k","nics":[{"network":"lan"}]}"#,
                "stop_vm deb 20",
                "stop_vm deb 0",
                r#"input deb "root\n""#,
            ]
        );
        assert_eq!(
            api.call("vm.console", vec![s("deb")]).await.unwrap(),
            s("deb 65536")
        );
        assert_eq!(
            api.call("vm.console", vec![s("deb"), Value::Int(10)])
                .await
                .unwrap(),
            s("deb 10")
        );
        let list = api.call("vm.list", vec![]).await.unwrap();
        let first = list.as_array().unwrap()[0].as_struct().unwrap();
        assert_eq!(first["pid"], Value::Int(42));

        // CairnError kinds map to faults as for ct.*.
        let f = api.call("vm.info", vec![s("nope")]).await.unwrap_err();
        assert_eq!(
            (f.code, f.message.as_str()),
            (FaultCode::NotFound, "no vm \"nope\"")
        );
        let f = api.call("vm.start", vec![s("deb")]).await.unwrap_err();
        assert_eq!(f.code, FaultCode::Conflict);
        let f = api.call("vm.pause", vec![s("deb")]).await.unwrap_err();
        assert_eq!(f.code, FaultCode::Busy);
        let f = api.call("vm.resume", vec![s("deb")]).await.unwrap_err();
        assert_eq!(f.code, FaultCode::BadParams);
        let f = api
            .call("vm.snapshot", vec![s("deb"), s("/var/snap")])
            .await
            .unwrap_err();
        assert_eq!(f.code, FaultCode::Internal);
        assert!(f.message.contains("disk full"), "{}", f.message);
        // A hostd without the method: 107 naming UnknownMethod.
        let f = api.call("vm.delete", vec![s("deb")]).await.unwrap_err();
        assert_eq!(f.code, FaultCode::Internal);
        assert!(f.message.contains("UnknownMethod"), "{}", f.message);
    }

    /// init as apid sees it: RestartService knows two services, and says NotFound otherwise.
    #[derive(Clone, Default)]
    struct FakeInit {
        restarted: Arc<Mutex<Vec<String>>>,
    }

    #[zbus::interface(name = "org.cairn.Init1")]
    impl FakeInit {
        fn restart_service(&self, name: &str) -> Result<(), CairnError> {
            match name {
                "netd" | "hostd" => {
                    self.restarted.lock().unwrap().push(name.to_string());
                    Ok(())
                }
                "stord" => Err(CairnError::Busy("init is shutting down".into())),
                _ => Err(CairnError::NotFound(format!("no service named {name:?}"))),
            }
        }
    }

    #[tokio::test]
    async fn restart_service_reaches_init_and_maps_its_errors() {
        let Some(bus) = private_bus("init") else {
            eprintln!("dbus-daemon is not available; skipping");
            return;
        };
        let fake = FakeInit::default();
        let _init = zbus::connection::Builder::address(bus.address.as_str())
            .name(model::dbus::INIT_NAME)
            .serve_at(model::dbus::INIT_PATH, fake.clone())
            .build()
            .await
            .unwrap();
        let conn = zbus::connection::Builder::address(bus.address.as_str())
            .build()
            .await
            .unwrap();
        let api = Api::new("testhost".into(), Bus::new(Some(conn)));
        let s = |v: &str| Value::from(v);

        let r = api.call("host.restartService", vec![s("hostd")]).await;
        assert_eq!(r, Ok(Value::Bool(true)));
        assert_eq!(*fake.restarted.lock().unwrap(), ["hostd"]);
        let f = api
            .call("host.restartService", vec![s("nosuchd")])
            .await
            .unwrap_err();
        assert_eq!(f.code, FaultCode::NotFound);
        assert!(f.message.contains("nosuchd"), "{}", f.message);
        let f = api
            .call("host.restartService", vec![s("stord")])
            .await
            .unwrap_err();
        assert_eq!(f.code, FaultCode::Busy);
        let f = api.call("host.restartService", vec![]).await.unwrap_err();
        assert_eq!(f.code, FaultCode::BadParams);
    }

    use model::fault::FaultCode;
}

/// A value of XML-RPC type `ty` that decodes as that type's empty case.
fn sample(ty: &str) -> Value {
    match ty {
        "string" => Value::from("x"),
        "int" => Value::Int(1),
        "boolean" => Value::Bool(true),
        "array" => Value::Array(vec![]),
        "struct" => Value::Struct(Default::default()),
        other => panic!("no sample for {other}"),
    }
}

/// A value of another type than `ty`.
fn mistyped(ty: &str) -> Value {
    if ty == "string" {
        Value::Int(7)
    } else {
        Value::from("7")
    }
}

#[tokio::test]
async fn every_declared_action_is_served_and_checked_by_its_declaration() {
    let api = api();
    let declared: Vec<&str> = model::api::declarations().iter().map(|d| d.name).collect();
    let served: Vec<&str> = api.registry().names().collect();
    assert_eq!(served, declared, "apid serves exactly the declared actions");

    for d in model::api::declarations() {
        let name = d.name;
        // Introspection answers from the declaration.
        let help = api
            .call("system.methodHelp", vec![name.into()])
            .await
            .unwrap();
        assert_eq!(help, Value::from(d.help), "{name}");
        let sigs = api
            .call("system.methodSignature", vec![name.into()])
            .await
            .unwrap();
        let want: Vec<Value> = d
            .signatures()
            .into_iter()
            .map(|s| Value::Array(s.into_iter().map(Value::from).collect()))
            .collect();
        assert_eq!(sigs, Value::Array(want), "{name}");

        let full: Vec<Value> = d.params.iter().map(|p| sample(p.ty)).collect();
        let required = d.params.iter().filter(|p| !p.optional).count();
        let bad = |r: MethodResult, what: &str| -> String {
            match r {
                Err(f) if f.code == FaultCode::BadParams => f.message,
                other => panic!("{name} with {what}: expected fault 102, got {other:?}"),
            }
        };
        // Missing and extra parameters: the answer says what the action takes.
        if required > 0 {
            let m = bad(
                api.call(name, full[..required - 1].to_vec()).await,
                "a parameter missing",
            );
            assert!(m.contains(d.params[required - 1].name), "{name}: {m}");
        }
        let mut extra = full.clone();
        extra.push(Value::Int(1));
        let m = bad(api.call(name, extra).await, "an extra parameter");
        assert!(
            m.contains(&format!("got {}", d.params.len() + 1)),
            "{name}: {m}"
        );
        // Each parameter mistyped, and each struct given an unknown member: named.
        for (i, p) in d.params.iter().enumerate() {
            let mut params = full.clone();
            params[i] = mistyped(p.ty);
            let m = bad(api.call(name, params).await, p.name);
            assert!(
                m.contains(&format!("{} must be {}", p.name, p.ty)),
                "{name} {}: {m}",
                p.name
            );
            if p.ty == "struct" {
                let mut params = full.clone();
                params[i] = Value::structure([("bogus", Value::Int(1))]);
                let m = bad(api.call(name, params).await, "an unknown member");
                assert!(
                    m.contains(&format!("{}: unknown member `bogus`", p.name)),
                    "{name}: {m}"
                );
            }
        }
    }
}
