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
