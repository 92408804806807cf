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
    if !Path::new(hostd::ct::template::BUSYBOX).exists() {
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
    hostd::ct::template::busybox_rootfs(&root).expect("cannot build the busybox rootfs");
    let tarball = dir.join("busybox.tar");
    let digest = hostd::ct::template::tar_dir(&root, &tarball).expect("cannot tar the rootfs");
    let _ = std::fs::remove_dir_all(&root);
    (tarball, digest)
}

/// The sandbox harness is testkit's; this path stays only for test files that name it so and
/// are being moved to the vmm crate (bench_vm.rs). New tests use `testkit::sandbox` directly.
pub mod sandbox {
    pub use testkit::sandbox::{Sandbox, bin_dir};
}

/// Why this machine cannot run VMs, if it cannot.
pub fn kvm_unusable() -> Option<String> {
    match kvm_ioctls::Kvm::new() {
        Err(e) => Some(format!("/dev/kvm not usable: {e}")),
        Ok(kvm) => kvm
            .create_vm()
            .err()
            .map(|e| format!("KVM_CREATE_VM failed: {e}")),
    }
}

/// Builds the test guest (hostd/guest/build.sh) into `dir`; Err says why not.
pub fn build_test_guest(dir: &Path) -> Result<PathBuf, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("guest/build.sh");
    let out = dir.join("cairn-test-guest");
    let status = std::process::Command::new("sh")
        .arg(&script)
        .arg(&out)
        .status()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !status.success() {
        return Err(format!("{} failed: {status}", script.display()));
    }
    Ok(out)
}

/// Polls `read` until its text contains `want` or `within` passes; returns the last text.
pub fn wait_for_text(
    within: std::time::Duration,
    want: &str,
    mut read: impl FnMut() -> String,
) -> (bool, String) {
    let deadline = std::time::Instant::now() + within;
    loop {
        let text = read();
        if text.contains(want) {
            return (true, text);
        }
        if std::time::Instant::now() > deadline {
            return (false, text);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The highest `tick N` in a console text.
pub fn last_tick(text: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("tick "))
        .filter_map(|n| n.trim().parse().ok())
        .max()
        .unwrap_or(0)
}

/// A `NAME:   N kB` field of /proc/PID/status, in KiB (0 when absent).
pub fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
