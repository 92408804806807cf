//! Templates kept in a stord pool: template.import into a dir pool made through stord on the
//! sandbox's bus puts the tarball and the rootfs under the pool's directory, a container made
//! from it overlays that copy and runs, template.list names the pool, bad pools are refused with
//! nothing made, the pool cannot be deleted while it keeps the template, and template.delete
//! takes the pool's copy away. Real init --sandbox, stord and hostd over the bus.

mod common;

use std::time::{Duration, Instant};

use common::{TempDir, busybox_tarball, containers_possible, skip};
use hostd::ct::template::sha256_file;
use model::ct::{ContainerInfo, ContainerState, TemplateInfo};
use model::dbus::{CairnError, Host1Proxy, Storage1Proxy};
use testkit::sandbox::{Sandbox, bin_dir};

const TEST: &str = "sandbox_templates::a_template_in_a_dir_pool_serves_containers_and_goes_whole";

#[tokio::test(flavor = "current_thread")]
async fn a_template_in_a_dir_pool_serves_containers_and_goes_whole() {
    if !containers_possible(TEST) {
        return;
    }
    let bins = match bin_dir() {
        Ok(b) => b,
        Err(why) => return skip(TEST, &why),
    };
    let scratch = TempDir::new("hostd-sbx-tpl-pool");
    let (tarball, digest) = busybox_tarball(&scratch.0);
    let tarball = tarball.to_str().expect("utf-8 path").to_string();
    let config = testkit::sandbox_config("tpl-pool-sandbox", None);
    let mut sb = Sandbox::start("tpl-pool", &config, &bins);
    let (conn, _) = sb.ready().await;
    let host = Host1Proxy::new(&conn).await.expect("Host1 proxy");
    let storage = Storage1Proxy::new(&conn).await.expect("Storage1 proxy");
    let pool_dir = scratch.0.join("pool");
    let pool = serde_json::json!({"name": "p", "kind": "dir", "path": pool_dir});
    storage
        .create_pool(&pool.to_string())
        .await
        .unwrap_or_else(|e| panic!("pool: {e}\n{}", sb.log()));
    let templates_dir = pool_dir.join("templates");

    // Refused with nothing made: an unknown pool, a malformed pool name, a wrong digest.
    let e = host
        .import_template_in_pool("bb", &tarball, &digest, "nopool")
        .await
        .unwrap_err();
    assert!(
        matches!(e, CairnError::NotFound(ref m) if m.contains("nopool")),
        "{e}"
    );
    let e = host
        .import_template_in_pool("bb", &tarball, &digest, "../p")
        .await
        .unwrap_err();
    assert!(
        matches!(e, CairnError::InvalidArgs(ref m) if m.contains("not a valid pool name")),
        "{e}"
    );
    let zero = format!("sha256:{}", "0".repeat(64));
    let e = host
        .import_template_in_pool("bb", &tarball, &zero, "p")
        .await
        .unwrap_err();
    assert!(
        matches!(e, CairnError::InvalidArgs(ref m) if m.contains("sha256")),
        "{e}"
    );
    assert_eq!(list(&host).await, vec![], "a refused import is listed");
    assert!(
        !templates_dir.exists(),
        "a refused import left files in the pool"
    );

    // Into the pool: the tarball and the rootfs are under the pool's directory.
    let info: TemplateInfo = serde_json::from_str(
        &host
            .import_template_in_pool("bb", &tarball, &digest, "p")
            .await
            .unwrap_or_else(|e| panic!("import: {e}\n{}", sb.log())),
    )
    .expect("TemplateInfo");
    assert_eq!(info.pool.as_deref(), Some("p"));
    assert_eq!(info.sha256, digest);
    let copy = templates_dir.join("bb");
    assert!(
        copy.join("rootfs/bin/busybox").exists(),
        "no rootfs in the pool"
    );
    assert_eq!(
        sha256_file(&copy.join("busybox.tar")).expect("the pool's tarball"),
        digest,
        "the pool's tarball is not the one imported"
    );
    assert_eq!(list(&host).await, vec![info.clone()]);
    let e = host
        .import_template_in_pool("bb", &tarball, &digest, "p")
        .await
        .unwrap_err();
    assert!(matches!(e, CairnError::Conflict(_)), "{e}");

    // A container overlays the pool's copy: a file put there after the import is what it sees.
    std::fs::write(copy.join("rootfs/from-the-pool"), "pool copy\n").expect("marker");
    host.create_container(r#"{"name":"c","template":"bb"}"#)
        .await
        .unwrap_or_else(|e| panic!("create: {e}\n{}", sb.log()));
    host.start_container("c")
        .await
        .unwrap_or_else(|e| panic!("start: {e}\n{}", sb.log()));
    wait_running(&sb, &host, "c").await;
    let (code, out, err) = host
        .exec("c", vec!["cat".into(), "/from-the-pool".into()], 10)
        .await
        .unwrap_or_else(|e| panic!("exec: {e}\n{}", sb.log()));
    assert_eq!((code, out.as_str()), (0, "pool copy\n"), "{err}");

    // The template in use stays: template.delete and stord's pool.delete both refuse.
    let e = host.delete_template("bb").await.unwrap_err();
    assert!(
        matches!(e, CairnError::Conflict(ref m) if m.contains("used by")),
        "{e}"
    );
    let e = storage.delete_pool("p").await.unwrap_err();
    assert!(
        matches!(e, CairnError::Conflict(ref m) if m.contains("keeps template(s) bb")),
        "{e}"
    );
    assert!(copy.join("rootfs/bin/busybox").exists());

    // Once no container uses it, template.delete takes the pool's copy; then the pool goes.
    host.stop_container("c", 5).await.expect("stop");
    host.delete_container("c").await.expect("delete container");
    host.delete_template("bb")
        .await
        .unwrap_or_else(|e| panic!("delete template: {e}\n{}", sb.log()));
    assert_eq!(list(&host).await, vec![]);
    assert!(
        !templates_dir.exists(),
        "template.delete left files in the pool"
    );
    storage
        .delete_pool("p")
        .await
        .unwrap_or_else(|e| panic!("pool.delete: {e}\n{}", sb.log()));
}

async fn list(host: &Host1Proxy<'_>) -> Vec<TemplateInfo> {
    serde_json::from_str(&host.list_templates().await.expect("list")).expect("TemplateInfo[]")
}

async fn wait_running(sb: &Sandbox, host: &Host1Proxy<'_>, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(json) = host.container_info(name).await {
            let info: ContainerInfo = serde_json::from_str(&json).expect("ContainerInfo");
            if info.state == ContainerState::Running {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{name} is not running:\n{}",
            sb.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const CONFIG_TEST: &str = "sandbox_templates::a_host_toml_template_goes_into_its_pool";

/// host.toml's `[[template]] pool = "…"`: hostd imports it into the declared dir pool at start
/// and the declared container made from it runs on the pool's copy.
#[tokio::test(flavor = "current_thread")]
async fn a_host_toml_template_goes_into_its_pool() {
    if !containers_possible(CONFIG_TEST) {
        return;
    }
    let bins = match bin_dir() {
        Ok(b) => b,
        Err(why) => return skip(CONFIG_TEST, &why),
    };
    let scratch = TempDir::new("hostd-sbx-tpl-pool-cfg");
    let (tarball, digest) = busybox_tarball(&scratch.0);
    let pool_dir = scratch.0.join("pool");
    std::fs::create_dir_all(&pool_dir).expect("pool dir");
    let config = testkit::sandbox_config("tpl-pool-cfg", None)
        + &format!(
            r#"
[[pool]]
name = "p"
kind = "dir"
path = "{}"

[[template]]
name = "bb"
source = "{}"
sha256 = "{digest}"
pool = "p"

[[container]]
name = "cfg-c"
template = "bb"
"#,
            pool_dir.display(),
            tarball.display()
        );
    let mut sb = Sandbox::start("tpl-pool-cfg", &config, &bins);
    let (conn, _) = sb.ready().await;
    let host = Host1Proxy::new(&conn).await.expect("Host1 proxy");
    wait_running(&sb, &host, "cfg-c").await;
    let listed = list(&host).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].pool.as_deref(), Some("p"), "{listed:?}");
    assert_eq!(listed[0].sha256, digest);
    assert!(
        pool_dir.join("templates/bb/rootfs/bin/busybox").exists(),
        "the template is not in the pool:\n{}",
        sb.log()
    );
    let (code, out, err) = host
        .exec("cfg-c", vec!["ls".into(), "/bin/busybox".into()], 10)
        .await
        .unwrap_or_else(|e| panic!("exec: {e}\n{}", sb.log()));
    assert_eq!(code, 0, "{out}{err}");
}
