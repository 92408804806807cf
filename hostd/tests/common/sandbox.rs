//! The real `init --sandbox` (fresh mount/net/UTS namespaces, a private bus) with the real
//! netd and this hostd, for tests that need netd's ports. Stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use model::dbus::{Init1Proxy, ServiceInfo};

use super::TempDir;

pub struct Sandbox {
    pub dir: TempDir,
    pub child: Child,
    pub state: PathBuf,
}

/// The directory holding init and the daemons (`cargo build --workspace --bins`), or why not.
pub fn bin_dir() -> Result<PathBuf, String> {
    let hostd = PathBuf::from(env!("CARGO_BIN_EXE_hostd"));
    let dir = hostd.parent().map(Path::to_path_buf).unwrap_or_default();
    for b in ["init", "netd", "stord", "apid"] {
        if !dir.join(b).exists() {
            return Err(format!(
                "{} is missing: run `cargo build --workspace --bins` first (ci/test does)",
                dir.join(b).display()
            ));
        }
    }
    if !Path::new("/usr/bin/dbus-daemon").exists() {
        return Err("dbus-daemon is not installed (ci/deps installs it)".into());
    }
    Ok(dir)
}

impl Sandbox {
    pub fn start(tag: &str, config: &str, bindir: &Path) -> Sandbox {
        let dir = TempDir::new(&format!("hostd-{tag}"));
        let config_path = dir.0.join("host.toml");
        std::fs::write(&config_path, config).expect("write config");
        let state = dir.0.join("state");
        let out = std::fs::File::create(dir.0.join("init.log")).expect("init log");
        let child = Command::new(bindir.join("init"))
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

    /// init's pid: its namespaces are the sandbox's.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        let mut text = std::fs::read_to_string(self.dir.0.join("init.log")).unwrap_or_default();
        if let Ok(entries) = std::fs::read_dir(self.state.join("log")) {
            for e in entries.flatten() {
                text.push_str(&format!("\n--- {}\n", e.path().display()));
                let t = std::fs::read_to_string(e.path()).unwrap_or_default();
                // The tail is what explains a failure.
                let from = t.len().saturating_sub(20_000);
                text.push_str(t.get(from..).unwrap_or(&t));
            }
        }
        text
    }

    pub async fn connect(&mut self, limit: Duration) -> zbus::Connection {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("init exited with {status}:\n{}", self.log());
            }
            if let Ok(conn) = zbus::connection::Builder::address(self.bus_address().as_str())
                .method_timeout(Duration::from_secs(120))
                .build()
                .await
                && let Ok(init) = Init1Proxy::new(&conn).await
                && init.list_services().await.is_ok()
            {
                return conn;
            }
            assert!(start.elapsed() < limit, "no sandbox bus:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Connects and waits until all four services run; returns the bus and the table.
    pub async fn ready(&mut self) -> (zbus::Connection, Vec<ServiceInfo>) {
        let conn = self.connect(Duration::from_secs(30)).await;
        let table = self
            .wait_services(&conn, Duration::from_secs(30), |t| {
                t.iter().filter(|s| s.state == "running").count() == 4
            })
            .await;
        (conn, table)
    }

    pub async fn services(&self, conn: &zbus::Connection) -> Vec<ServiceInfo> {
        let init = Init1Proxy::new(conn).await.expect("Init1 proxy");
        init.list_services()
            .await
            .map(|l| l.into_iter().map(ServiceInfo::from).collect())
            .unwrap_or_default()
    }

    /// Waits until `done` holds for the service table.
    pub async fn wait_services(
        &self,
        conn: &zbus::Connection,
        limit: Duration,
        done: impl Fn(&[ServiceInfo]) -> bool,
    ) -> Vec<ServiceInfo> {
        let start = Instant::now();
        loop {
            let t = self.services(conn).await;
            if done(&t) {
                return t;
            }
            assert!(
                start.elapsed() < limit,
                "services not as expected: {t:?}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Runs a command in the sandbox's namespaces (net + mount).
    pub fn nsenter(&self, args: &[&str]) -> String {
        let out = Command::new("nsenter")
            .arg(format!("--target={}", self.pid()))
            .args(["--net", "--mount", "--uts"])
            .args(args)
            .output()
            .expect("nsenter");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // For a developer reading timings or a failure after the scratch dir is gone.
        if let Ok(copy) = std::env::var("CAIRN_TEST_LOG_COPY") {
            let _ = std::fs::write(copy, self.log());
        }
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(15) {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
