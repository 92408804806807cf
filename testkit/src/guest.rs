//! The VMM's freestanding test guest (`vmm/guest/`), for the VMM's own tests and hostd's VM
//! tests: building it, and reading what it prints on its console.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `vmm/guest/build.sh`, found from this crate's place in the workspace (testkit/ and vmm/
/// are siblings), so every crate's tests build the same guest.
pub fn build_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../vmm/guest/build.sh")
}

/// Builds the test guest into `dir/cairn-test-guest`; Err says why not.
pub fn build_test_guest(dir: &Path) -> Result<PathBuf, String> {
    let script = build_script();
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
    within: Duration,
    want: &str,
    mut read: impl FnMut() -> String,
) -> (bool, String) {
    let deadline = Instant::now() + within;
    loop {
        let text = read();
        if text.contains(want) {
            return (true, text);
        }
        if Instant::now() > deadline {
            return (false, text);
        }
        std::thread::sleep(Duration::from_millis(20));
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
