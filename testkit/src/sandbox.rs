//! The real `init --sandbox` (fresh mount/net/UTS namespaces, a private bus) with the real
//! daemons from `cargo build --workspace --bins`: the one harness every crate's sandbox tests
//! use. Stopped (SIGTERM, then SIGKILL) when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use model::dbus::{Init1Proxy, ServiceInfo};

use crate::{TempDir, is_root, skip};

/// The binaries a sandbox runs: init and the daemons it supervises.
const BINARIES: [&str; 5] = ["init", "netd", "stord", "hostd", "apid"];

/// Whether this machine can run a sandbox at all; records the skip when not.
pub fn sandbox_possible(test: &str) -> bool {
    if !is_root() {
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

/// The directory holding init and the daemons, or why they cannot be run. It is the profile
/// directory of the running test binary (`target/debug` for `target/debug/deps/sandbox-…`),
/// where `cargo build --workspace --bins` puts them: a test crate only knows its own
/// package's binaries by `CARGO_BIN_EXE_*`.
pub fn bin_dir() -> Result<PathBuf, String> {
    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot find the test binary's own path: {e}"))?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .ok_or_else(|| format!("{} is not under target/<profile>/deps", exe.display()))?;
    for b in BINARIES {
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

/// Four daemons, no networks: what most sandbox checks need.
pub fn minimal_config() -> String {
    crate::sandbox_config("sandbox-host", None)
}

/// A running `init --sandbox`.
pub struct Sandbox {
    pub dir: TempDir,
    pub child: Child,
    pub state: PathBuf,
}

impl Sandbox {
    /// Starts `bindir/init --sandbox` with `config`, supervising the daemons in `bindir`. A
    /// test that wants other daemons (a crashing stand-in) links init into its own bindir.
    pub fn start(tag: &str, config: &str, bindir: &Path) -> Sandbox {
        let dir = TempDir::new(&format!("sandbox-{tag}"));
        std::fs::write(dir.0.join("host.toml"), config).expect("write config");
        let state = dir.0.join("state");
        let child = spawn_init(&dir.0, &state, bindir);
        Sandbox { dir, child, state }
    }

    /// Starts a new init on this sandbox's config and state once the last one has ended
    /// (killed by a test): what a host's next boot finds.
    pub fn respawn(&mut self, bindir: &Path) {
        assert!(
            matches!(self.child.try_wait(), Ok(Some(_))),
            "the sandbox's init still runs"
        );
        self.child = spawn_init(&self.dir.0, &self.state, bindir);
    }

    pub fn bus_address(&self) -> String {
        format!("unix:path={}", self.state.join("bus/bus.sock").display())
    }

    /// init's pid: its namespaces are the sandbox's.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// init's output, then the tail of each daemon's log.
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
                // Guest creation (template unpacking, VM boot) answers slowly under load.
                .method_timeout(Duration::from_secs(120))
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

    /// The service table now (empty if init does not answer).
    pub async fn services(&self, conn: &zbus::Connection) -> Vec<ServiceInfo> {
        let init = Init1Proxy::new(conn).await.expect("Init1 proxy");
        init.list_services()
            .await
            .map(|l| l.into_iter().map(ServiceInfo::from).collect())
            .unwrap_or_default()
    }

    /// Waits until `done` holds for the service table; panics with the log if it does not.
    pub async fn wait_services(
        &self,
        conn: &zbus::Connection,
        limit: Duration,
        done: impl Fn(&[ServiceInfo]) -> bool,
    ) -> Vec<ServiceInfo> {
        wait_for(conn, limit, done).await.unwrap_or_else(|last| {
            panic!(
                "services not as expected within {limit:?}: {last:?}\n{}",
                self.log()
            )
        })
    }

    /// Waits until every service is in `state`; returns the table.
    pub async fn wait_all(
        &self,
        conn: &zbus::Connection,
        state: &str,
        limit: Duration,
    ) -> Vec<ServiceInfo> {
        self.wait_services(conn, limit, |services| {
            services.iter().all(|s| s.state == state)
        })
        .await
    }

    /// Stops init with SIGTERM and returns its exit status (None if it outlived 15 s).
    pub fn stop(&mut self) -> Option<ExitStatus> {
        kill(self.child.id(), libc_signal::SIGTERM);
        wait_exit(&mut self.child, Duration::from_secs(15))
    }

    /// Runs a command in the sandbox's namespaces (net + mount + UTS); returns its stdout.
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

impl Sandbox {
    /// Runs `python3 -c script ARGS` in the sandbox's network namespace (the API is on its
    /// loopback) and asserts it succeeded, showing its output and the sandbox's log if not;
    /// its stdout.
    pub fn python(&self, script: &str, args: &[&str]) -> String {
        let out = Command::new("nsenter")
            .arg(format!("--net=/proc/{}/ns/net", self.pid()))
            .args(["python3", "-c", script])
            .args(args)
            .output()
            .expect("run python3 in the sandbox's network namespace");
        assert!(
            out.status.success(),
            "{}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// netd's ports as ListPorts answers — which must answer whole, whatever one port's state.
pub async fn ports(conn: &zbus::Connection) -> Vec<model::net::PortInfo> {
    let net = model::dbus::Network1Proxy::new(conn)
        .await
        .expect("Network1 proxy");
    let json = net
        .list_ports()
        .await
        .expect("ListPorts never fails as a whole");
    serde_json::from_str(&json).expect("PortInfo JSON")
}

/// `bindir/init --sandbox` on DIR/host.toml with `state`, its output appended to DIR/init.log.
fn spawn_init(dir: &Path, state: &Path, bindir: &Path) -> Child {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("init.log"))
        .expect("init log");
    Command::new(bindir.join("init"))
        .arg("--sandbox")
        .arg("--config")
        .arg(dir.join("host.toml"))
        .arg("--state")
        .arg(state)
        .arg("--bindir")
        .arg(bindir)
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup log"))
        .stderr(out)
        .spawn()
        .expect("spawn init --sandbox")
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // For a developer reading timings or a failure after the scratch dir is gone.
        if let Ok(copy) = std::env::var("CAIRN_TEST_LOG_COPY") {
            let _ = std::fs::write(copy, self.log());
        }
        if let Ok(None) = self.child.try_wait()
            && self.stop().is_none()
        {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Signal numbers for [`kill`], so tests need not depend on libc.
pub mod libc_signal {
    pub const SIGKILL: i32 = 9;
    pub const SIGTERM: i32 = 15;
}

/// kill(2) of `pid` (a child of the test, or a pid read from init's service table); an
/// unknown signal number or a pid that is gone is ignored, as the caller checks the outcome.
pub fn kill(pid: u32, sig: i32) {
    if let (Ok(pid), Ok(sig)) = (i32::try_from(pid), nix::sys::signal::Signal::try_from(sig)) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
    }
}

/// Waits up to `limit` for `child` to exit.
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
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

/// The row of service `name`; panics with the table if there is none.
pub fn service<'a>(table: &'a [ServiceInfo], name: &str) -> &'a ServiceInfo {
    table
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no service {name} in {table:?}"))
}
