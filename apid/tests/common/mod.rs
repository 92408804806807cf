//! The real `apid` binary as a child process on a private bus, and a client for it over
//! HTTPS from a loopback address of the test's choosing: shared by the hostile-traffic and
//! the fuzzing tests. Not every test file uses every part.
#![allow(dead_code)]

use std::io::{BufRead as _, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use model::xmlrpc::{MethodCall, MethodResponse, Value, parse_response, write_call};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};
use testkit::TempDir;
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;

/// The API token every test here sends.
pub const TOKEN: &str = "hostile-test-token";

/// A loopback address of its own for each client: all of 127.0.0.0/8 reaches `lo`.
pub fn lo(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// A running apid child with its bus; both are killed and reaped on drop.
pub struct Apid {
    pub child: Child,
    bus: Child,
    /// The private bus apid is on (`unix:path=…`).
    pub bus_address: String,
    pub addr: SocketAddr,
    pub cert: PathBuf,
    /// apid's --state.
    pub state: PathBuf,
    /// apid's stderr, line by line, with when each line arrived.
    pub log: Arc<Mutex<Vec<(Instant, String)>>>,
    _dir: TempDir,
}

impl Drop for Apid {
    fn drop(&mut self) {
        for child in [&mut self.child, &mut self.bus] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Apid {
    pub fn start(tag: &str) -> Apid {
        let dir = TempDir::new(&format!("apid-hostile-{tag}"));
        let (bus, address) = testkit::start_private_bus(dir.path(), Stdio::null())
            .unwrap_or_else(|e| panic!("a private bus is needed to run apid: {e}"));
        // A free port: the kernel picks one, we let go of it and apid takes it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let config = dir.path().join("host.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[host]
hostname = "testhost"

[host.management]
interface = "lo"
dhcp = true

[api]
listen = "127.0.0.1"
port = {port}
tls = "generate"

[[api.token]]
name = "test"
sha256 = "{}"
"#,
                model::token::digest(TOKEN)
            ),
        )
        .unwrap();
        let state = dir.path().join("state");
        let mut child = Command::new(env!("CARGO_BIN_EXE_apid"))
            .arg("--config")
            .arg(&config)
            .arg("--state")
            .arg(&state)
            .env(model::dbus::BUS_ADDRESS_ENV, &address)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        // Drained all the time, so apid never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push((Instant::now(), line));
            }
        });
        let apid = Apid {
            child,
            bus,
            bus_address: address,
            addr: SocketAddr::new(lo(1), port),
            cert: apid::tls::generated_dir(&state).join("cert.pem"),
            state,
            log,
            _dir: dir,
        };
        let started = Instant::now();
        while !apid.logged("ready") {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "apid did not get ready:\n{}",
                apid.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        apid
    }

    pub fn logged(&self, what: &str) -> bool {
        self.log
            .lock()
            .unwrap()
            .iter()
            .any(|(_, l)| l.contains(what))
    }

    pub fn log_text(&self) -> String {
        let log = self.log.lock().unwrap();
        log.iter().map(|(_, l)| format!("{l}\n")).collect()
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// apid's resident memory in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib_of(&format!("/proc/{}/status", self.pid())).unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn tls_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(&self.cert).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }
}

/// VmRSS in KiB from a `/proc/PID/status` file.
pub fn rss_kib_of(status: &str) -> Option<u64> {
    std::fs::read_to_string(status)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

pub async fn tcp_from(src: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(src, 0))?;
    socket.connect(to).await
}

pub async fn tls_from(
    src: IpAddr,
    to: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = tcp_from(src, to).await?;
    tokio_rustls::TlsConnector::from(tls)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

pub async fn http_from(
    src: IpAddr,
    to: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
) -> Result<SendRequest<Full<Bytes>>, String> {
    let stream = tls_from(src, to, tls).await.map_err(|e| e.to_string())?;
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(send)
}

pub fn basic() -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("anyone:{TOKEN}"))
    )
}

/// One `system.listMethods` call; Ok when the answer is the method list.
pub async fn list_methods(send: &mut SendRequest<Full<Bytes>>) -> Result<(), String> {
    let body = write_call(&MethodCall {
        name: "system.listMethods".into(),
        params: vec![],
    });
    let req = hyper::Request::builder()
        .method("POST")
        .uri("/RPC2")
        .header("host", "localhost")
        .header("authorization", basic())
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    send.ready().await.map_err(|e| e.to_string())?;
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let text = String::from_utf8_lossy(&body);
    match parse_response(&text) {
        Ok(MethodResponse::Ok(Value::Array(names)))
            if names.contains(&Value::from("host.info")) =>
        {
            Ok(())
        }
        other => Err(format!("HTTP {status}: {other:?}")),
    }
}
