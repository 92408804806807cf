//! Helpers shared by hostd's kernel tests: skips, scratch dirs, a busybox template tarball.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// Records a skipped test where ci/test counts it, and says why.
pub fn skip(test: &str, why: &str) {
    eprintln!("SKIP {test}: {why}");
    if let Ok(log) = std::env::var("CAIRN_SKIP_LOG") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
        {
            // One write(2) per line: tests in parallel threads append to the same file.
            let _ = f.write_all(format!("{test}: {why}\n").as_bytes());
        }
    }
}

/// Whether this machine can run container tests; records the skip when not.
pub fn containers_possible(test: &str) -> bool {
    if !nix::unistd::geteuid().is_root() {
        skip(
            test,
            "containers need root (namespaces, overlayfs, cgroups)",
        );
        return false;
    }
    if !Path::new(hostd::ct::template::BUSYBOX).exists() {
        skip(
            test,
            "no /bin/busybox (Debian's busybox-static) to build the test template",
        );
        return false;
    }
    true
}

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("cairn-hostd-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("cannot create a temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Builds the busybox rootfs in `dir/bb` and tars it to `dir/busybox.tar`; returns the
/// tarball and its `sha256:` digest.
pub fn busybox_tarball(dir: &Path) -> (PathBuf, String) {
    let root = dir.join("bb");
    hostd::ct::template::busybox_rootfs(&root).expect("cannot build the busybox rootfs");
    let tarball = dir.join("busybox.tar");
    let digest = hostd::ct::template::tar_dir(&root, &tarball).expect("cannot tar the rootfs");
    let _ = std::fs::remove_dir_all(&root);
    (tarball, digest)
}
pub mod sandbox;
