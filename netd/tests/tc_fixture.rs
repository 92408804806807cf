//! Fixtures for the shaping tests (included with `#[path]`): a root check that logs skips,
//! network namespaces deleted on drop, running async code inside a namespace, and a plain TCP
//! sender/receiver whose receiver counts bytes over time.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// True when the test may run; otherwise prints `SKIP <test>: <reason>` and appends it to
/// the file named by CAIRN_SKIP_LOG.
pub fn runnable(test: &str) -> bool {
    let reason = if !testkit::is_root() {
        Some("needs root to create network namespaces")
    } else if Command::new("tc").arg("-V").output().is_err() {
        Some("iproute2's tc is not installed")
    } else {
        None
    };
    let Some(reason) = reason else {
        return true;
    };
    testkit::skip(test, reason);
    false
}

pub use testkit::Netns;

/// Host namespace with port `port` (10.77.0.1) and guest namespace with its peer (10.77.0.2),
/// joined by a veth pair.
pub struct Pair {
    pub host: Netns,
    pub guest: Netns,
    pub port: String,
}

pub const HOST_IP: &str = "10.77.0.1";
pub const GUEST_IP: &str = "10.77.0.2";

impl Pair {
    pub fn new(tag: &str, port: &str) -> Pair {
        let host = Netns::new(&format!("tc-{tag}h"));
        let guest = Netns::new(&format!("tc-{tag}g"));
        host.ip(&[
            "link",
            "add",
            port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &guest.name,
        ]);
        host.ip(&["addr", "add", &format!("{HOST_IP}/24"), "dev", port]);
        host.ip(&["link", "set", port, "up"]);
        guest.ip(&["addr", "add", &format!("{GUEST_IP}/24"), "dev", "eth0"]);
        guest.ip(&["link", "set", "eth0", "up"]);
        Pair {
            host,
            guest,
            port: port.to_string(),
        }
    }
}

/// Bytes received over time by a TCP receiver: (seconds since the first byte, total bytes).
pub struct Trace {
    pub samples: Vec<(f64, u64)>,
}

impl Trace {
    /// Goodput in bit/s between two instants (seconds since the first byte).
    pub fn goodput(&self, from: f64, to: f64) -> f64 {
        let at = |t: f64| {
            self.samples
                .iter()
                .find(|(s, _)| *s >= t)
                .or(self.samples.last())
                .copied()
                .unwrap_or((0.0, 0))
        };
        let (t0, b0) = at(from);
        let (t1, b1) = at(to);
        if t1 <= t0 {
            return 0.0;
        }
        (b1 - b0) as f64 * 8.0 / (t1 - t0)
    }
}

/// Full-size TCP segments on a 1500-byte MTU with timestamps: 1448 bytes of payload travel
/// in a 1514-byte frame, which is what tc counts.
pub const L2_PER_PAYLOAD: f64 = 1514.0 / 1448.0;

/// One TCP stream for `secs` seconds from `from` to a receiver in `to` (listening on
/// `to_ip`). `during` runs on the caller's thread while data flows (at `during_at` s) —
/// e.g. a live limit change — without touching the connection.
pub fn stream(
    from: &Netns,
    to: &Netns,
    to_ip: &str,
    secs: f64,
    during: Option<(f64, &(dyn Fn() + Sync))>,
) -> Trace {
    let addr: SocketAddr = format!("{to_ip}:5201").parse().expect("address");
    let stop = Arc::new(AtomicBool::new(false));
    std::thread::scope(|s| {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let receiver = s.spawn(move || {
            to.enter();
            let listener = TcpListener::bind(addr).expect("cannot listen");
            let _ = ready_tx.send(());
            let (mut conn, _) = listener.accept().expect("accept");
            let mut buf = vec![0u8; 1 << 20];
            let mut total = 0u64;
            let mut samples = Vec::new();
            let mut start = None;
            // Read for `secs` from the first byte, then close: closing with data unread
            // resets the connection, which stops the sender without draining its buffer.
            while start.is_none_or(|t0: Instant| t0.elapsed().as_secs_f64() < secs) {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let now = Instant::now();
                        let t0 = *start.get_or_insert(now);
                        total += n as u64;
                        samples.push((now.duration_since(t0).as_secs_f64(), total));
                    }
                }
            }
            Trace { samples }
        });
        ready_rx.recv().expect("receiver did not start");
        let stop2 = stop.clone();
        let sender = s.spawn(move || {
            from.enter();
            let mut conn = TcpStream::connect(addr).expect("connect");
            let buf = vec![0x5au8; 256 * 1024];
            // One connection for the whole run: a write error means the receiver is done.
            while !stop2.load(Ordering::Relaxed) {
                if conn.write_all(&buf).is_err() {
                    break;
                }
            }
        });
        if let Some((at, f)) = during {
            std::thread::sleep(Duration::from_secs_f64(at));
            f();
        }
        let trace = receiver.join().expect("receiver panicked");
        stop.store(true, Ordering::Relaxed);
        sender.join().expect("sender panicked");
        trace
    })
}
