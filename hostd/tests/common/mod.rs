//! Helpers shared by hostd's kernel tests: skips, scratch dirs, a busybox template tarball.

// Each test file is its own crate and uses a different part of this module (and of what it
// re-exports).
#![allow(dead_code, unused_imports)]

use std::path::{Path, PathBuf};

pub use testkit::{TempDir, skip};

/// Whether this machine can run container tests; records the skip when not.
pub fn containers_possible(test: &str) -> bool {
    if !testkit::is_root() {
        skip(
            test,
            "containers need root (namespaces, overlayfs, cgroups)",
        );
        return false;
    }
    if !Path::new(testkit::template::BUSYBOX).exists() {
        skip(
            test,
            "no /bin/busybox (Debian's busybox-static) to build the test template",
        );
        return false;
    }
    true
}

/// Builds the busybox rootfs in `dir/bb` and tars it to `dir/busybox.tar`; returns the
/// tarball and its `sha256:` digest.
pub fn busybox_tarball(dir: &Path) -> (PathBuf, String) {
    let root = dir.join("bb");
    testkit::template::busybox_rootfs(&root).expect("cannot build the busybox rootfs");
    let tarball = dir.join("busybox.tar");
    let digest = testkit::template::tar_dir(&root, &tarball).expect("cannot tar the rootfs");
    let _ = std::fs::remove_dir_all(&root);
    (tarball, digest)
}

/// The real `init --sandbox` (hostname TAG-sandbox, guests on SUBNET.0/24) with every service
/// up and `template` imported from `tarball`: the sandbox and hostd's proxy on its bus.
pub async fn sandbox_with_template(
    tag: &str,
    subnet: &str,
    bins: &Path,
    template: &str,
    tarball: &Path,
    digest: &str,
) -> (testkit::sandbox::Sandbox, model::dbus::Host1Proxy<'static>) {
    let mut sb = testkit::sandbox::Sandbox::start(
        &format!("{tag}-sbx"),
        &testkit::sandbox_config(&format!("{tag}-sandbox"), Some(subnet)),
        bins,
    );
    let (conn, _) = sb.ready().await;
    let host = model::dbus::Host1Proxy::new(&conn)
        .await
        .expect("a proxy for hostd");
    host.import_template(template, &tarball.display().to_string(), digest)
        .await
        .unwrap_or_else(|e| panic!("import: {e}\n{}", sb.log()));
    (sb, host)
}

/// Creates the container of JSON `spec` (and starts `start`, its name, when given); any
/// failure panics with the sandbox's log.
pub async fn make_container(
    sb: &testkit::sandbox::Sandbox,
    host: &model::dbus::Host1Proxy<'_>,
    spec: &str,
    start: Option<&str>,
) {
    host.create_container(spec)
        .await
        .unwrap_or_else(|e| panic!("create: {e}\n{}", sb.log()));
    if let Some(name) = start {
        host.start_container(name)
            .await
            .unwrap_or_else(|e| panic!("start: {e}\n{}", sb.log()));
    }
}
