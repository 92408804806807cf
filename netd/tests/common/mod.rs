//! Fixture helpers shared by the sandbox tests: namespaces, child processes, scratch dirs.
//! Everything here cleans up on drop, so a failed assertion leaves nothing behind.

#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use nix::sched::{CloneFlags, setns};

pub fn root_or_skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipping {test}: needs root to create network namespaces");
    false
}

/// Runs `ip ARGS`, panicking with its stderr on failure; returns stdout.
pub fn ip(args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("cannot run ip");
    assert!(
        out.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A named network namespace, deleted on drop (also when the test panics).
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!("cairn-netd-{tag}-{}", std::process::id());
        // A namespace left over from a crashed run of the same pid would make `add` fail.
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        ip(&["netns", "add", &name]);
        let ns = Netns { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
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

    /// Runs `f` on a thread that has joined this namespace, inside a fresh tokio runtime: every
    /// socket `f` opens (rtnetlink, the DHCP client's UDP socket) belongs to the namespace.
    pub fn run<T: Send>(&self, f: impl AsyncFnOnce() -> T + Send) -> T {
        let path = self.path();
        std::thread::scope(|s| {
            s.spawn(move || {
                let fd = File::open(&path).expect("cannot open the namespace");
                setns(&fd, CloneFlags::CLONE_NEWNET).expect("cannot join the namespace");
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
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A child process killed and reaped on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("cairn-netd-{tag}-{}", std::process::id()));
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

/// A veth pair from `a_if` in `a` to `b_if` in `b`, with `b_cidr` on `b_if` and both ends' far
/// side up (the near side is left for the code under test to bring up).
pub fn veth_between(a: &Netns, a_if: &str, b: &Netns, b_if: &str, b_cidr: &str) {
    ip(&[
        "link", "add", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if, "netns",
        &b.name,
    ]);
    b.ip(&["addr", "add", b_cidr, "dev", b_if]);
    b.ip(&["link", "set", b_if, "up"]);
}

/// Whether `busybox udhcpd` can run here.
pub fn have_udhcpd() -> bool {
    Command::new("busybox")
        .args(["udhcpd", "--help"])
        .output()
        .is_ok()
}

/// busybox udhcpd serving `NET.100`–`NET.110`/24 on `iface` in `ns`, with `NET.1` as router and
/// `NET.53`, `NET.54` as DNS servers, logging to `dir/udhcpd.log`.
pub fn start_udhcpd(ns: &Netns, iface: &str, net: &str, lease_secs: u32, dir: &TempDir) -> Proc {
    let conf = dir.0.join("udhcpd.conf");
    std::fs::write(
        &conf,
        format!(
            "interface {iface}\nstart {net}.100\nend {net}.110\n\
             lease_file {d}/leases\npidfile {d}/udhcpd.pid\n\
             option subnet 255.255.255.0\noption router {net}.1\n\
             option dns {net}.53 {net}.54\noption lease {lease_secs}\n",
            d = dir.0.display()
        ),
    )
    .expect("cannot write udhcpd.conf");
    std::fs::write(dir.0.join("leases"), b"").expect("cannot create the lease file");
    let log = File::create(dir.0.join("udhcpd.log")).expect("cannot create the udhcpd log");
    let log2 = log.try_clone().expect("cannot clone the log fd");
    // -a 100: a short ARP probe of the address before offering it, to keep the tests fast.
    Proc(
        Command::new("ip")
            .args([
                "netns", "exec", &ns.name, "busybox", "udhcpd", "-f", "-a", "100",
            ])
            .arg(&conf)
            .stdout(log)
            .stderr(log2)
            .spawn()
            .expect("cannot start udhcpd"),
    )
}

pub fn udhcpd_log(dir: &TempDir) -> String {
    let mut s = String::new();
    let _ = File::open(dir.0.join("udhcpd.log")).and_then(|mut f| f.read_to_string(&mut s));
    s
}

/// A private dbus-daemon listening on `dir/bus`; returns it and its address.
pub fn start_bus(dir: &TempDir) -> (Proc, String) {
    let conf = dir.0.join("bus.conf");
    std::fs::write(&conf, model::dbus::bus_config(&dir.0.join("bus")))
        .expect("cannot write the bus config");
    let mut child = Command::new("dbus-daemon")
        .arg(format!("--config-file={}", conf.display()))
        .args(["--nofork", "--print-address=1"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("cannot start dbus-daemon");
    let stdout = child.stdout.take().expect("piped stdout");
    let proc = Proc(child);
    let mut address = String::new();
    BufReader::new(stdout)
        .read_line(&mut address)
        .expect("cannot read the bus address");
    assert!(!address.trim().is_empty(), "dbus-daemon printed no address");
    (proc, address.trim().to_string())
}
