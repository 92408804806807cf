//! Fixtures shared by the tests of init, netd, hostd, vmm, apid and cairnctl: recording skips,
//! the root check, scratch directories and named network namespaces removed on drop, a private
//! dbus-daemon, the `init --sandbox` harness (`sandbox`), the host.toml fixtures, the VMM's test
//! guest (`guest`), the busybox container template (`template`) and the fuzzers' mutators and
//! driver (`fuzz`). Never a dependency of a binary the appliance ships; the image builder
//! (which runs on the build host) uses `template` for the debug image's busybox template.

pub mod fuzz;
pub mod sandbox;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Records a skipped test where ci/test counts it: prints `SKIP <test>: <why>` to stderr and
/// appends `<test>: <why>` to the file named by `CAIRN_SKIP_LOG` (one line per skip).
pub fn skip(test: &str, why: &str) {
    eprintln!("SKIP {test}: {why}");
    if let Ok(log) = std::env::var("CAIRN_SKIP_LOG")
        && let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
    {
        // One write(2) per line: tests in parallel threads append to the same file.
        let _ = f.write_all(format!("{test}: {why}\n").as_bytes());
    }
}

/// Whether the test runs with an effective uid of 0.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A scratch directory, emptied when made and removed on drop (also when the test panics).
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// `$TMPDIR/cairn-<name>-<pid>`.
    pub fn new(name: &str) -> TempDir {
        TempDir::at(std::env::temp_dir().join(format!("cairn-{name}-{}", std::process::id())))
    }

    /// Exactly `path`, removed first if a previous run left it behind.
    pub fn at(path: PathBuf) -> TempDir {
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("cannot create a temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts a private dbus-daemon (config from [`model::dbus::bus_config`], written to
/// `dir/bus.conf`, socket under `dir/bus`) and returns it with the address it printed.
/// The caller owns the child: kill and reap it when done. `stderr` is the daemon's stderr.
pub fn start_private_bus(dir: &Path, stderr: Stdio) -> Result<(Child, String), String> {
    let conf = dir.join("bus.conf");
    std::fs::write(&conf, model::dbus::bus_config(&dir.join("bus")))
        .map_err(|e| format!("cannot write the bus config: {e}"))?;
    let mut child = Command::new("dbus-daemon")
        .arg(format!("--config-file={}", conf.display()))
        .args(["--nofork", "--print-address=1"])
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("cannot start dbus-daemon: {e}"))?;
    let mut address = String::new();
    let read = match child.stdout.take() {
        Some(stdout) => BufReader::new(stdout)
            .read_line(&mut address)
            .map_err(|e| format!("cannot read the bus address: {e}")),
        None => Err("dbus-daemon's stdout is not piped".to_string()),
    };
    if let Err(e) = read {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    Ok((child, address.trim().to_string()))
}

/// Runs `ip ARGS`, panicking with its stderr on failure; returns stdout.
pub fn ip(args: &[&str]) -> String {
    run("ip", args)
}

/// Runs `cmd ARGS`, panicking with its stderr on failure; returns stdout.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A named network namespace, `cairn-<name>-<pid>`, with `lo` up; deleted on drop (also when
/// the test panics), which deletes every device inside it.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: &str) -> Netns {
        let name = format!("cairn-{name}-{}", std::process::id());
        // A namespace left over from a crashed run of the same pid would make `add` fail.
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        ip(&["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// `ip -n NS ARGS`.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// `ip netns exec NS CMD ARGS`.
    pub fn exec(&self, cmd: &str, args: &[&str]) -> String {
        let mut all = vec!["netns", "exec", self.name.as_str(), cmd];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// Joins the namespace on the calling thread (sockets opened afterwards live there).
    pub fn enter(&self) {
        let fd = std::fs::File::open(self.path()).expect("cannot open the namespace");
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("cannot join the namespace");
    }

    /// Runs `f` on a thread that has joined this namespace, inside a fresh current-thread tokio
    /// runtime: every socket `f` opens belongs to the namespace. A panic in `f` is re-raised.
    pub fn run<T: Send>(&self, f: impl AsyncFnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                self.enter();
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("cannot build a tokio runtime");
                rt.block_on(f())
            })
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }

    /// The ifindex of `dev` inside the namespace.
    pub fn ifindex(&self, dev: &str) -> u32 {
        let out = self.ip(&["-o", "link", "show", "dev", dev]);
        out.split(':')
            .next()
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no ifindex in {out:?}"))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// The `[api]` section of examples/dev.toml: all addresses, port 8443, a generated certificate,
/// and the token "admin" whose secret is "cairn-dev-token". For tests that run a daemon on a
/// host.toml of their own.
pub const DEV_API_TOML: &str = r#"
[api]
listen = "0.0.0.0"
port = 8443
tls = "generate"

[[api.token]]
name = "admin"
sha256 = "sha256:cea49af368c525fcb6c735bfa051c110338cee9033df78dcd59da91c5294b3cd"
"#;

/// The typed config of a host that only serves the API (no networks or guests), for tests
/// that run apid in-process: DHCP on eth0, 127.0.0.1 on a port of the kernel's choosing,
/// a generated certificate, and one token `token_name` whose secret is `token`.
pub fn api_host_config(hostname: &str, token_name: &str, token: &str) -> model::config::HostConfig {
    use model::config::{Api, ApiToken, Host, HostConfig, Management, MgmtAddress, Tls};
    HostConfig {
        host: Host {
            hostname: hostname.into(),
            timezone: "UTC".into(),
            dns: vec![],
            management: Management {
                interface: "eth0".into(),
                address: MgmtAddress::Dhcp,
            },
        },
        api: Api {
            listen: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            port: 0,
            tls: Tls::Generate,
            tokens: vec![ApiToken {
                name: token_name.into(),
                sha256: model::token::parse_digest(&model::token::digest(token))
                    .expect("digest() makes what parse_digest() reads"),
            }],
        },
        networks: vec![],
        pools: vec![],
        templates: vec![],
        containers: vec![],
        vms: vec![],
        update: Default::default(),
    }
}

/// A host.toml for `init --sandbox` tests: management address on `lo`, the API on
/// 127.0.0.1:8443 with the token "secret", and — with `lan_prefix` such as "10.50.0" — a
/// bridged network "lan" on PREFIX.0/24 with the host at PREFIX.1. Tests append their own
/// `[[template]]`/`[[container]]` tables.
pub fn sandbox_config(hostname: &str, lan_prefix: Option<&str>) -> String {
    let mut config = format!(
        r#"
[host]
hostname = "{hostname}"

[host.management]
interface = "lo"
address = "192.0.2.10/24"

[api]
listen = "127.0.0.1"
port = 8443
[[api.token]]
name = "test"
sha256 = "{}"
"#,
        model::token::digest("secret")
    );
    if let Some(p) = lan_prefix {
        config.push_str(&format!(
            r#"
[[network]]
name = "lan"
kind = "bridged"
subnet = "{p}.0/24"
address = "{p}.1/24"
"#
        ));
    }
    config
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

pub mod guest;
pub mod template;

#[cfg(test)]
mod tests {
    /// The fixtures are valid host.toml, and the dev token's digest is the one the docs give.
    #[test]
    fn fixtures_parse() {
        let dev = format!(
            "[host]\nhostname = \"h\"\n[host.management]\ninterface = \"eth0\"\ndhcp = true\n{}",
            super::DEV_API_TOML
        );
        let c = model::config::parse("dev", &dev).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            model::token::parse_digest(&model::token::digest("cairn-dev-token")),
            Some(c.api.tokens[0].sha256)
        );
        let sandbox = super::sandbox_config("h", Some("10.50.0"));
        let c = model::config::parse("sandbox", &sandbox).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.networks[0].name, "lan");
    }
}
