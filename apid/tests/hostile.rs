//! The real `apid` binary, on a private bus, under hostile traffic from several loopback
//! addresses (all of 127.0.0.0/8 reaches `lo`, so each test picks its own): a reconnect storm
//! of idle TCP connections from one address while a client from another keeps working, and a
//! crowd of stalled uploads whose memory must be bounded while they last and given back after;
//! a file upload far larger than apid's memory, from Python's stock http.client.
//!
//! apid runs as a child process so that its memory (VmRSS) and its log are its own.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Apid, basic, http_from, list_methods, lo, tcp_from, tls_from};
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// The tests here run one at a time: each loads the machine on purpose, and the storm test
/// measures latencies that another flood running beside it would distort.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Connects again and again from `src` without ever completing TLS: each connection waits idle
/// until apid closes it (at once when refused, after the handshake deadline otherwise).
/// With `one_byte` it first sends the first byte of a TLS record, which gets the connection past
/// the kernel's deferred accept and into apid; without, it sends nothing at all.
async fn idle_reconnector(
    src: IpAddr,
    to: SocketAddr,
    one_byte: bool,
    stop: Arc<AtomicBool>,
    connects: Arc<AtomicU64>,
) {
    while !stop.load(Ordering::Relaxed) {
        match tokio::time::timeout(Duration::from_secs(2), tcp_from(src, to)).await {
            Ok(Ok(mut tcp)) => {
                connects.fetch_add(1, Ordering::Relaxed);
                if one_byte {
                    let _ = tcp.write_all(&[0x16]).await;
                }
                let mut byte = [0u8; 1];
                let _ = tcp.read(&mut byte).await;
            }
            // Out of ports or a full queue: a short pause, then again.
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// What the well-behaved client saw: how long each answer took, or what went wrong.
#[derive(Debug)]
struct Sample {
    fresh_connection: bool,
    took: Duration,
    /// For a new connection: until TCP was connected, then until TLS was up.
    connect: Option<(Duration, Duration)>,
    result: Result<(), String>,
}

/// Calls apid from `src` every 100 ms for `run_for`: on one keep-alive connection, and every
/// fifth time on a new connection (TCP + TLS + call counted together).
async fn good_client(
    src: IpAddr,
    to: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    run_for: Duration,
) -> Vec<Sample> {
    let limit = Duration::from_secs(5);
    let mut samples = Vec::new();
    let mut kept: Option<SendRequest<Full<Bytes>>> = None;
    let started = Instant::now();
    let mut i = 0u32;
    while started.elapsed() < run_for {
        let fresh = i.is_multiple_of(5) || kept.is_none();
        let t0 = Instant::now();
        let mut connect = None;
        let result = tokio::time::timeout(limit, async {
            if fresh {
                let tcp = tcp_from(src, to).await.map_err(|e| e.to_string())?;
                let tcp_up = t0.elapsed();
                let stream = tokio_rustls::TlsConnector::from(tls.clone())
                    .connect(ServerName::try_from("localhost").unwrap(), tcp)
                    .await
                    .map_err(|e| e.to_string())?;
                connect = Some((tcp_up, t0.elapsed()));
                let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| e.to_string())?;
                tokio::spawn(conn);
                list_methods(&mut send).await?;
                kept = Some(send);
                Ok(())
            } else if let Some(send) = kept.as_mut() {
                list_methods(send).await
            } else {
                Err("no connection".to_string())
            }
        })
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {limit:?}")));
        if result.is_err() {
            kept = None;
        }
        samples.push(Sample {
            fresh_connection: fresh,
            took: t0.elapsed(),
            connect,
            result,
        });
        i += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    samples
}

#[test]
fn reconnect_storm_from_one_address_does_not_lock_out_another() {
    let _alone = one_at_a_time();
    let mut apid = Apid::start("storm");
    let hostile = lo(2);
    let good = lo(3);
    let storm = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let connects = Arc::new(AtomicU64::new(0));
    // Half send nothing (they wait in the kernel's deferred accept), half send one byte and
    // then nothing (they reach apid, which resets all but its per-client cap of them at once,
    // and closes those at the handshake deadline).
    for i in 0..2000 {
        storm.spawn(idle_reconnector(
            hostile,
            apid.addr,
            i % 2 == 0,
            stop.clone(),
            connects.clone(),
        ));
    }
    // Let the storm build up: every one of the 2 000 has connected at least once.
    let started = Instant::now();
    while connects.load(Ordering::Relaxed) < 2000 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the storm does not get going"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let storm_started = Instant::now();
    let connects_before = connects.load(Ordering::Relaxed);

    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let samples = client.block_on(good_client(
        good,
        apid.addr,
        apid.tls_config(),
        Duration::from_secs(7),
    ));
    let storm_for = storm_started.elapsed();
    let reconnects = connects.load(Ordering::Relaxed) - connects_before;
    stop.store(true, Ordering::Relaxed);
    storm.shutdown_timeout(Duration::from_secs(2));
    drop(client);

    let mut took: Vec<Duration> = samples.iter().map(|s| s.took).collect();
    took.sort();
    let fresh: Vec<Duration> = samples
        .iter()
        .filter(|s| s.fresh_connection)
        .map(|s| s.took)
        .collect();
    eprintln!(
        "storm: {reconnects} idle connections from {hostile} in {storm_for:.1?} ({:.0}/s); good client from {good}: {} calls ({} on new connections), median {:?}, max {:?}, max on a new connection {:?}",
        reconnects as f64 / storm_for.as_secs_f64(),
        samples.len(),
        fresh.len(),
        took[took.len() / 2],
        took.last().unwrap(),
        fresh.iter().max().unwrap(),
    );
    // Where a new connection's time goes: the TCP handshake is the kernel's; the TLS handshake
    // waits for apid to accept, behind whatever else is in its accept queue.
    let (tcp_max, tls_max) = samples
        .iter()
        .filter_map(|s| s.connect)
        .fold((Duration::ZERO, Duration::ZERO), |(a, b), (tcp, tls)| {
            (a.max(tcp), b.max(tls - tcp))
        });
    eprintln!(
        "new connections: TCP connect at most {tcp_max:?}, TLS handshake at most {tls_max:?}"
    );
    let failed: Vec<&Sample> = samples.iter().filter(|s| s.result.is_err()).collect();
    assert!(
        failed.is_empty(),
        "calls failed during the storm: {failed:#?}"
    );
    let slow: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.took >= Duration::from_secs(1))
        .collect();
    assert!(slow.is_empty(), "answers took 1 s or more: {slow:#?}");
    assert!(samples.len() >= 40, "only {} calls", samples.len());
    // The refused connections were closed at once, so the 2 000 kept reconnecting.
    assert!(reconnects > 2000, "only {reconnects} reconnections");
    assert!(apid.alive(), "apid died:\n{}", apid.log_text());

    // Refusals are logged a few lines a second, plus a line that counts the rest.
    let log = apid.log.lock().unwrap().clone();
    let refusal_lines: Vec<&(Instant, String)> = log
        .iter()
        .filter(|(_, l)| l.contains("refusing a connection"))
        .collect();
    let secs = storm_for.as_secs() + 5;
    assert!(
        (refusal_lines.len() as u64) <= 3 * (secs + 1),
        "{} refusal lines in about {secs} s",
        refusal_lines.len()
    );
    assert!(
        log.iter()
            .any(|(_, l)| l.contains("more refused connections not logged")),
        "no summary line in:\n{}",
        apid.log_text()
    );
    eprintln!(
        "apid logged {} refusal lines, the first:\n  {}\nand these summaries:\n{}",
        refusal_lines.len(),
        refusal_lines.first().map(|(_, l)| l.as_str()).unwrap_or(""),
        log.iter()
            .filter(|(_, l)| l.contains("not logged"))
            .map(|(_, l)| format!("  {l}\n"))
            .collect::<String>()
    );
}

/// How a stalled upload ended up.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Upload {
    /// apid took the body and is waiting for the rest.
    Stalled,
    /// apid answered HTTP 503 at once.
    Refused503,
    /// The connection was closed or reset before an answer could be read.
    Closed,
}

/// Sends the head of a 1 MiB upload and all but the last KiB of its body, then stops.
async fn stalled_upload(
    src: IpAddr,
    to: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    body: Bytes,
) -> (Upload, Option<TlsStream<TcpStream>>) {
    let declared = 1usize << 20;
    let Ok(mut stream) = tls_from(src, to, tls).await else {
        return (Upload::Closed, None);
    };
    let head = format!(
        "POST /RPC2 HTTP/1.1\r\nHost: localhost\r\nAuthorization: {}\r\nContent-Type: text/xml\r\nContent-Length: {declared}\r\n\r\n",
        basic()
    );
    let send = async {
        stream.write_all(head.as_bytes()).await?;
        for chunk in body.chunks(64 << 10) {
            stream.write_all(chunk).await?;
        }
        stream.flush().await
    };
    let sent = tokio::time::timeout(Duration::from_secs(5), send).await;
    let mut answer = [0u8; 64];
    // Generous: on a busy machine a 503 can take a while, and a late one is still a refusal.
    match tokio::time::timeout(Duration::from_secs(2), stream.read(&mut answer)).await {
        Err(_) if matches!(sent, Ok(Ok(()))) => (Upload::Stalled, Some(stream)),
        Ok(Ok(n)) if answer[..n].starts_with(b"HTTP/1.1 503") => (Upload::Refused503, None),
        _ => (Upload::Closed, None),
    }
}

#[test]
fn stalled_uploads_are_bounded_and_their_memory_comes_back() {
    let _alone = one_at_a_time();
    let mut apid = Apid::start("uploads");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let tls = apid.tls_config();
    // Warm up: a few calls, so that what is measured is not apid's first allocations.
    rt.block_on(async {
        let mut send = http_from(lo(1), apid.addr, tls.clone()).await.unwrap();
        for _ in 0..5 {
            list_methods(&mut send).await.unwrap();
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    let before = apid.rss_kib();

    // 250 uploads from five addresses (50 each, under the per-address connection cap).
    let body = Bytes::from(vec![b'x'; (1 << 20) - 1024]);
    let uploads = rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..250u8 {
            set.spawn(stalled_upload(
                lo(20 + i % 5),
                apid.addr,
                tls.clone(),
                body.clone(),
            ));
        }
        let mut uploads = set.join_all().await;
        // Once more for those that look held, now that all are in: whatever apid answered by
        // now counts as answered.
        let recheck = uploads.iter_mut().map(|(kind, stream)| async move {
            if let Some(s) = stream.as_mut() {
                let mut answer = [0u8; 64];
                match tokio::time::timeout(Duration::from_millis(300), s.read(&mut answer)).await {
                    Err(_) => {}
                    Ok(Ok(n)) if answer[..n].starts_with(b"HTTP/1.1 503") => {
                        *kind = Upload::Refused503
                    }
                    Ok(_) => *kind = Upload::Closed,
                }
            }
        });
        futures_util::future::join_all(recheck).await;
        uploads
    });
    std::thread::sleep(Duration::from_millis(300));
    let during = apid.rss_kib();
    let count = |kind| uploads.iter().filter(|(u, _)| *u == kind).count();
    let (stalled, refused, closed) = (
        count(Upload::Stalled),
        count(Upload::Refused503),
        count(Upload::Closed),
    );

    // Close them all, then wait for the memory to come back.
    drop(uploads);
    let closed_at = Instant::now();
    let mut after = apid.rss_kib();
    while after > before + 32 * 1024 && closed_at.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
        after = apid.rss_kib();
    }
    eprintln!(
        "250 stalled 1 MiB uploads: {stalled} held, {refused} answered 503 at once, {closed} closed; apid VmRSS {} MiB before, {} MiB while they stalled (+{}), {} MiB {:.1?} after they closed (+{})",
        before / 1024,
        during / 1024,
        during.saturating_sub(before) / 1024,
        after / 1024,
        closed_at.elapsed(),
        after.saturating_sub(before) / 1024,
    );
    // The 64 MiB budget holds 64 bodies of 1 MiB; the rest are refused at once.
    assert!((1..=64).contains(&stalled), "{stalled} uploads held");
    assert!(refused > 0, "no upload got its 503");
    assert_eq!(stalled + refused + closed, 250);
    assert!(
        during <= before + 112 * 1024,
        "VmRSS grew by {} MiB while the uploads stalled",
        (during - before) / 1024
    );
    assert!(
        after <= before + 32 * 1024,
        "VmRSS is {} MiB above where it started after the uploads closed",
        (after - before) / 1024
    );

    // And apid answers as before.
    rt.block_on(async {
        let mut send = http_from(lo(21), apid.addr, tls.clone()).await.unwrap();
        list_methods(&mut send).await.unwrap();
    });
    assert!(apid.alive(), "apid died:\n{}", apid.log_text());
    assert!(apid.logged("no room for a request body"));
}

/// `PUT /uploads/NAME` of 256 MiB from Python's http.client, generated and hashed on the fly:
/// stored whole with the client's sha256, while apid's memory stays where it was.
#[test]
fn a_large_upload_is_streamed_to_disk() {
    let _one = one_at_a_time();
    let apid = Apid::start("upload");
    let before = apid.rss_kib();
    let script = r#"
import hashlib, http.client, json, ssl, sys, base64
port, cert, token = sys.argv[1:4]
size = 256 << 20
ctx = ssl.create_default_context(cafile=cert)
c = http.client.HTTPSConnection("localhost", int(port), context=ctx)
h = hashlib.sha256()
def pieces():
    for i in range(size >> 20):
        piece = bytes([i % 251]) * (1 << 20)
        h.update(piece)
        yield piece
auth = base64.b64encode(("x:" + token).encode()).decode()
c.request("PUT", "/uploads/big.img", body=pieces(), encode_chunked=False,
          headers={"Authorization": "Basic " + auth, "Content-Length": str(size)})
r = c.getresponse()
body = r.read().decode()
assert r.status == 201, (r.status, body)
answer = json.loads(body)
assert answer == {"name": "big.img", "size": size, "sha256": h.hexdigest()}, answer
print(h.hexdigest())
"#;
    let port = apid.addr.port().to_string();
    let cert = apid.cert.display().to_string();
    let peak = Arc::new(AtomicU64::new(before));
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (peak, done) = (peak.clone(), done.clone());
        let pid_status = format!("/proc/{}/status", apid.pid());
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                if let Some(rss) = common::rss_kib_of(&pid_status) {
                    peak.fetch_max(rss, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let out = std::process::Command::new("python3")
        .args(["-c", script, &port, &cert, common::TOKEN])
        .output()
        .expect("python3 runs");
    done.store(true, Ordering::SeqCst);
    let _ = watcher.join();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        apid.log_text()
    );
    let stored = apid.state.join("uploads/big.img");
    assert_eq!(std::fs::metadata(&stored).unwrap().len(), 256 << 20);
    let peak = peak.load(Ordering::SeqCst);
    eprintln!(
        "256 MiB upload: apid VmRSS {} MiB before, peak {} MiB",
        before / 1024,
        peak / 1024
    );
    assert!(
        peak <= before + 16 * 1024,
        "VmRSS grew by {} MiB during a streamed upload",
        (peak - before) / 1024
    );
    let _ = std::fs::remove_file(stored);
}
