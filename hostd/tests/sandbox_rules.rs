//! hostd refuses what host.toml refuses, through the same rules (`model::rules`), against what
//! exists on the host: one namespace for containers and VMs, a container's addresses inside its
//! network's subnet and held once; and parallel imports of one template: one succeeds whole,
//! the others get a conflict. Real init --sandbox, netd and hostd over the bus.

mod common;

use common::{TempDir, busybox_tarball, containers_possible, skip};
use futures_util::future::join_all;
use model::dbus::{CairnError, Host1Proxy};
use testkit::sandbox::{Sandbox, bin_dir};

const TEST: &str = "sandbox_rules::creates_follow_host_toml_rules_and_imports_do_not_tear";

#[tokio::test(flavor = "current_thread")]
async fn creates_follow_host_toml_rules_and_imports_do_not_tear() {
    if !containers_possible(TEST) {
        return;
    }
    let bins = match bin_dir() {
        Ok(b) => b,
        Err(why) => return skip(TEST, &why),
    };
    let scratch = TempDir::new("hostd-rules-tpl");
    let (tarball, digest) = busybox_tarball(&scratch.0);
    let config = testkit::sandbox_config("rules-sandbox", Some("10.61.0"));
    let mut sb = Sandbox::start("rules", &config, &bins);
    let (conn, _) = sb.ready().await;
    let host = Host1Proxy::new(&conn).await.expect("Host1 proxy");

    // Ten imports of one name at once: one whole template, nine conflicts (105), none torn.
    let tarball = tarball.to_str().expect("utf-8 path").to_string();
    let imports = join_all(
        (0..10).map(|_| async { host.import_template("busybox", &tarball, &digest).await }),
    )
    .await;
    let ok = imports.iter().filter(|r| r.is_ok()).count();
    let conflicts = imports
        .iter()
        .filter(|r| matches!(r, Err(CairnError::Conflict(_))))
        .count();
    assert_eq!((ok, conflicts), (1, 9), "{imports:?}");
    let listed = host.list_templates().await.expect("list templates");
    assert!(listed.contains("\"busybox\""), "{listed}");

    // A container whose address another container holds, or the host, or outside the subnet.
    host.create_container(
        r#"{"name":"a","template":"busybox","network":"lan","addresses":["10.61.0.5/24"]}"#,
    )
    .await
    .unwrap_or_else(|e| panic!("create a: {e}\n{}", sb.log()));
    let e = host
        .create_container(
            r#"{"name":"b","template":"busybox","network":"lan","addresses":["10.61.0.5/24"]}"#,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, CairnError::Conflict(ref m)
            if m == "addresses[0] \"10.61.0.5/24\" is already held by container \"a\"; \
                     expected each address once on a network"),
        "{e}"
    );
    let e = host
        .create_container(
            r#"{"name":"b","template":"busybox","network":"lan","addresses":["10.61.0.1/24"]}"#,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, CairnError::Conflict(ref m) if m.contains("held by the host")),
        "{e}"
    );
    let e = host
        .create_container(
            r#"{"name":"b","template":"busybox","network":"lan","addresses":["10.9.0.5/24"]}"#,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, CairnError::InvalidArgs(ref m)
            if m == "addresses[0] \"10.9.0.5/24\" lies outside subnet 10.61.0.0/24 of network \
                     \"lan\""),
        "{e}"
    );

    // One namespace: a VM may not take a container's name, nor a container a VM's.
    let e = host
        .create_vm(r#"{"name":"a","memory_mib":64,"kernel":"/nonexistent"}"#)
        .await
        .unwrap_err();
    assert!(
        matches!(e, CairnError::Conflict(ref m)
            if m == "vm \"a\" has the same name as container \"a\"; containers and vms share \
                     one namespace"),
        "{e}"
    );
    let names = host.list_containers().await.expect("list containers");
    assert!(
        !names.contains("\"b\""),
        "a refused create left a container: {names}"
    );
    host.delete_container("a").await.expect("delete a");
    sb.stop();
}
