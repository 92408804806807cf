//! A sandbox harness: runs the real `init --sandbox` with the real daemons on a private bus.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use model::dbus::{Init1Proxy, ServiceInfo};

pub use testkit::{TempDir, skip};

/// None (after recording a skip) when this machine cannot run a sandbox.
pub fn sandbox_possible(test: &str) -> bool {
    if !testkit::is_root() {
        skip(
            test,
            "a sandbox needs root to unshare mount and network namespaces",
        );
        return false;
    }
    if !Path::new("/usr/bin/dbus-daemon").exists() {
        skip(test, "dbus-daemon is not installed (ci/deps installs it)");
        return false;
    }
    true
}

pub fn bin_dir() -> PathBuf {
    let init = PathBuf::from(env!("CARGO_BIN_EXE_init"));
    let dir = init.parent().map(Path::to_path_buf).unwrap_or_default();
    for daemon in ["netd", "stord", "hostd", "apid"] {
        assert!(
            dir.join(daemon).exists(),
            "{} is missing: run `cargo build --workspace --bins` first (ci/test does)",
            dir.join(daemon).display()
        );
    }
    dir
}

/// A scratch directory unique to this process and moment, removed on drop.
pub fn temp_dir(tag: &str) -> TempDir {
    TempDir::at(std::env::temp_dir().join(format!(
        "cairn-{tag}-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    )))
}

/// A running `init --sandbox`; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Sandbox {
    pub dir: TempDir,
    pub child: Child,
    pub state: PathBuf,
}

/// Four daemons, no networks: what most sandbox checks need.
pub fn minimal_config() -> String {
    testkit::sandbox_config("sandbox-host", None)
}

impl Sandbox {
    /// Starts init with `config`, using daemons from `bindir`.
    pub fn start(tag: &str, config: &str, bindir: &Path) -> Sandbox {
        let dir = temp_dir(tag);
        let config_path = dir.0.join("host.toml");
        std::fs::write(&config_path, config).expect("write config");
        let state = dir.0.join("state");
        let out = std::fs::File::create(dir.0.join("init.log")).expect("init log");
        let child = Command::new(env!("CARGO_BIN_EXE_init"))
            .arg("--sandbox")
            .arg("--config")
            .arg(&config_path)
            .arg("--state")
            .arg(&state)
            .arg("--bindir")
            .arg(bindir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup log"))
            .stderr(out)
            .spawn()
            .expect("spawn init --sandbox");
        Sandbox { dir, child, state }
    }

    pub fn bus_address(&self) -> String {
        format!("unix:path={}", self.state.join("bus/bus.sock").display())
    }

    pub fn log(&self) -> String {
        let mut text = std::fs::read_to_string(self.dir.0.join("init.log")).unwrap_or_default();
        if let Ok(entries) = std::fs::read_dir(self.state.join("log")) {
            for e in entries.flatten() {
                text.push_str(&format!("\n--- {}\n", e.path().display()));
                text.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
        text
    }

    /// Connects to the sandbox's bus once init serves Init1 on it.
    pub async fn connect(&mut self, limit: Duration) -> zbus::Connection {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "init exited with {status} before its bus came up:\n{}",
                    self.log()
                );
            }
            if let Ok(conn) = zbus::connection::Builder::address(self.bus_address().as_str())
                .build()
                .await
                && let Ok(init) = Init1Proxy::new(&conn).await
                && init.list_services().await.is_ok()
            {
                return conn;
            }
            assert!(
                start.elapsed() < limit,
                "the sandbox bus did not come up in {limit:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every service is in `state`; returns the table.
    pub async fn wait_all(
        &self,
        conn: &zbus::Connection,
        state: &str,
        limit: Duration,
    ) -> Vec<ServiceInfo> {
        wait_for(conn, limit, |services| {
            services.iter().all(|s| s.state == state)
        })
        .await
        .unwrap_or_else(|last| {
            panic!(
                "not all services {state} within {limit:?}: {last:?}\n{}",
                self.log()
            )
        })
    }

    /// Stops init with SIGTERM and returns its exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let pid = self.child.id() as i32;
        // SAFETY: kill(2) on our own child.
        unsafe { libc_kill(pid, 15) };
        wait_exit(&mut self.child, Duration::from_secs(15))
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

pub fn kill(pid: u32, sig: i32) {
    // SAFETY: kill(2) with a pid we read from init's service table.
    unsafe { libc_kill(pid as i32, sig) };
}

pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait()
            && self.stop().is_none()
        {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls ListServices until `done` holds; Err carries the last table seen.
pub async fn wait_for(
    conn: &zbus::Connection,
    limit: Duration,
    done: impl Fn(&[ServiceInfo]) -> bool,
) -> Result<Vec<ServiceInfo>, Vec<ServiceInfo>> {
    let init = Init1Proxy::new(conn).await.expect("Init1 proxy");
    let start = Instant::now();
    let mut last = Vec::new();
    while start.elapsed() < limit {
        if let Ok(list) = init.list_services().await {
            last = list.into_iter().map(ServiceInfo::from).collect();
            if done(&last) {
                return Ok(last);
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(last)
}

pub fn service<'a>(table: &'a [ServiceInfo], name: &str) -> &'a ServiceInfo {
    table
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no service {name} in {table:?}"))
}
