//! Fixture helpers shared by the sandbox tests: namespaces, child processes, scratch dirs.
//! Everything here cleans up on drop, so a failed assertion leaves nothing behind.

#![allow(dead_code)]

use std::fs::File;
use std::io::Read;
use std::process::{Child, Command, Stdio};

pub fn root_or_skip(test: &str) -> bool {
    if testkit::is_root() {
        return true;
    }
    testkit::skip(test, "needs root to create network namespaces");
    false
}

pub use testkit::{Netns, TempDir, ip};

/// A child process killed and reaped on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
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
    let (child, address) =
        testkit::start_private_bus(&dir.0, Stdio::inherit()).unwrap_or_else(|e| panic!("{e}"));
    let proc = Proc(child);
    assert!(!address.is_empty(), "dbus-daemon printed no address");
    (proc, address)
}
