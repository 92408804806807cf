//! The real server, in-process, over real HTTPS: a hand-rolled hyper client for exact control of
//! what goes on the wire, and Python's xmlrpc.client as an independent peer.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use apid::bus::Bus;
use apid::http::{Limits, Server, Service};
use apid::methods::Api;
use apid::upload::Uploads;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{HeaderMap, StatusCode};
use hyper_util::rt::TokioIo;
use model::config::{HostConfig, Tls};
use model::xmlrpc::{MethodCall, MethodResponse, Value, parse_response, write_call};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

const TOKEN: &str = "s3cret-token";
/// Short, so that the stalled upload below is dropped quickly.
const UPLOAD_STALL: Duration = Duration::from_secs(1);

fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "apid-test-{}-{tag}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn config() -> HostConfig {
    testkit::api_host_config("testhost", "test", TOKEN)
}

struct Running {
    addr: SocketAddr,
    cert: PathBuf,
    state: PathBuf,
    _stop: oneshot::Sender<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

async fn start(bus: Option<zbus::Connection>, limits: Limits) -> Running {
    start_following(bus, None, limits).await
}

/// apid as it runs: requests on `bus`, the daemons' pushed state followed on `watcher`.
async fn start_following(
    bus: Option<zbus::Connection>,
    watcher: Option<zbus::Connection>,
    limits: Limits,
) -> Running {
    let state = temp_dir("state");
    let config = config();
    let tls = apid::tls::server_config(&config, &state).unwrap();
    let server = Server::bind(SocketAddr::new(config.api.listen, 0), tls)
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();
    let service = Service::new(
        Api::new(config.host.hostname.clone(), Bus::new(bus))
            .follow_state(Bus::new(watcher))
            .with_uploads(Uploads::new(&state.join("uploads"), UPLOAD_STALL).unwrap()),
        apid::token_digests(&config),
        limits,
    );
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.serve(service, async move {
        let _ = stopped.await;
    }));
    Running {
        addr,
        cert: apid::tls::generated_dir(&state).join("cert.pem"),
        state,
        _stop: stop,
    }
}

async fn connect(r: &Running) -> SendRequest<Full<Bytes>> {
    connect_from(r, lo(1)).await
}

fn lo(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// A TCP connection from `src` (any address of 127.0.0.0/8 works on `lo`).
async fn try_tcp_from(r: &Running, src: IpAddr) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(src, 0))?;
    socket.connect(r.addr).await
}

async fn tcp_from(r: &Running, src: IpAddr) -> TcpStream {
    try_tcp_from(r, src).await.unwrap()
}

async fn tls_from(r: &Running, src: IpAddr) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&r.cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tcp_from(r, src).await;
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

async fn connect_from(r: &Running, src: IpAddr) -> SendRequest<Full<Bytes>> {
    let tls = tls_from(r, src).await;
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

fn basic(token: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("anyone:{token}"))
    )
}

async fn request(
    send: &mut SendRequest<Full<Bytes>>,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: impl Into<Bytes>,
) -> (StatusCode, HeaderMap, String) {
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost");
    if let Some(token) = auth {
        req = req.header("authorization", basic(token));
    }
    let req = req.body(Full::new(body.into())).unwrap();
    send.ready().await.unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(20), send.send_request(req))
        .await
        .unwrap()
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

async fn rpc(
    send: &mut SendRequest<Full<Bytes>>,
    name: &str,
    params: Vec<Value>,
) -> MethodResponse {
    let body = write_call(&MethodCall {
        name: name.into(),
        params,
    });
    let (status, _, text) = request(send, "POST", "/RPC2", Some(TOKEN), body).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    parse_response(&text).unwrap()
}

async fn raw_fault(send: &mut SendRequest<Full<Bytes>>, body: impl Into<Bytes>) -> (i32, String) {
    let (status, _, text) = request(send, "POST", "/RPC2", Some(TOKEN), body).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    match parse_response(&text).unwrap() {
        MethodResponse::Fault { code, message } => (code, message),
        other => panic!("expected a fault, got {other:?}"),
    }
}

async fn still_answers(send: &mut SendRequest<Full<Bytes>>) {
    match rpc(send, "system.listMethods", vec![]).await {
        MethodResponse::Ok(Value::Array(names)) => {
            assert!(names.contains(&Value::from("host.info")))
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn auth_paths_and_methods() {
    let r = start(None, Limits::default()).await;
    let mut c = connect(&r).await;
    still_answers(&mut c).await;

    for auth in [None, Some("wrong")] {
        let (status, headers, _) = request(&mut c, "POST", "/RPC2", auth, "<x/>").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(headers["www-authenticate"], "Basic realm=\"cairn\"");
    }
    let (status, _, _) = request(&mut c, "POST", "/other", Some(TOKEN), "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, headers, _) = request(&mut c, "GET", "/RPC2", Some(TOKEN), "").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers["allow"], "POST");
    // A whole answer says its length: HTTP/1.1 clients that do not speak chunked still read it.
    let (status, headers, _) = request(&mut c, "POST", "/RPC2", Some(TOKEN), "<x/>").await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers.contains_key("content-length"), "{headers:?}");
    assert!(!headers.contains_key("transfer-encoding"), "{headers:?}");
    // All of the above on one keep-alive connection, which still works.
    still_answers(&mut c).await;
}

#[tokio::test]
async fn bad_bodies_are_faults_and_the_server_lives_on() {
    let r = start(None, Limits::default()).await;
    let mut c = connect(&r).await;
    let (code, msg) = raw_fault(&mut c, "<methodCall><methodName>x</methodName>").await;
    assert_eq!(code, 100, "{msg}");
    still_answers(&mut c).await;

    let laughs = "<?xml version=\"1.0\"?><!DOCTYPE l [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;\">]><methodCall><methodName>m</methodName><params><param><value>&b;</value></param></params></methodCall>";
    let (code, msg) = raw_fault(&mut c, laughs).await;
    assert_eq!(code, 100);
    assert!(msg.contains("DOCTYPE"), "{msg}");
    still_answers(&mut c).await;

    let (code, _) = raw_fault(&mut c, vec![0xffu8, 0xfe, 0x00]).await;
    assert_eq!(code, 100);

    let mut bomb = String::from("<methodCall><methodName>m</methodName><params><param><value>");
    bomb.push_str(&"<array><data><value>".repeat(50_000));
    let (code, msg) = raw_fault(&mut c, bomb).await;
    assert_eq!(code, 100);
    assert!(msg.contains("nesting"), "{msg}");
    still_answers(&mut c).await;

    let (code, _) = raw_fault(
        &mut c,
        write_call(&MethodCall {
            name: "no.such".into(),
            params: vec![],
        }),
    )
    .await;
    assert_eq!(code, 101);
    let (code, _) = raw_fault(
        &mut c,
        write_call(&MethodCall {
            name: "system.methodHelp".into(),
            params: vec![],
        }),
    )
    .await;
    assert_eq!(code, 102);
    still_answers(&mut c).await;
}

#[tokio::test]
async fn oversized_bodies() {
    let r = start(None, Limits::default()).await;
    let mut c = connect(&r).await;
    // Just over the cap: read, dropped, answered with a fault, connection kept.
    let mut big = String::from("<methodCall><methodName>m</methodName><params><param><value>");
    big.push_str(&"x".repeat(1 << 20));
    big.push_str("</value></param></params></methodCall>");
    let (code, msg) = raw_fault(&mut c, big).await;
    assert_eq!(code, 108, "{msg}");
    still_answers(&mut c).await;

    // Far over: refused outright, connection closed; a new one works.
    let mut c2 = connect(&r).await;
    let (status, headers, _) =
        request(&mut c2, "POST", "/RPC2", Some(TOKEN), vec![b'x'; 17 << 20]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(headers["connection"], "close");
    let mut c3 = connect(&r).await;
    still_answers(&mut c3).await;
}

async fn put(
    send: &mut SendRequest<Full<Bytes>>,
    path: &str,
    sha256: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, String) {
    let mut req = hyper::Request::put(path)
        .header("host", "localhost")
        .header("authorization", basic(TOKEN));
    if let Some(sha) = sha256 {
        req = req.header("x-cairn-sha256", sha);
    }
    send.ready().await.unwrap();
    let resp = send
        .send_request(req.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest as _;
    model::hex(&sha2::Sha256::digest(data))
}

/// Names in the uploads directory, the hidden parts of uploads in progress included.
fn stored(r: &Running) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(r.state.join("uploads"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn uploads_are_stored_whole_or_not_at_all() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let r = start(None, Limits::default()).await;
    let mut c = connect(&r).await;
    // 3 MiB and a bit: several pieces and a short last one.
    let data: Vec<u8> = (0..(3 << 20) + 12345u32)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let sha = sha256_hex(&data);
    let (status, text) = put(&mut c, "/uploads/next.update", Some(&sha), data.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["name"], "next.update");
    assert_eq!(answer["size"], data.len());
    assert_eq!(answer["sha256"], sha);
    assert_eq!(
        std::fs::read(r.state.join("uploads/next.update")).unwrap(),
        data
    );
    still_answers(&mut c).await;

    // A digest that does not match: refused, nothing kept, the old file untouched.
    let (status, text) = put(
        &mut c,
        "/uploads/next.update",
        Some(&"0".repeat(64)),
        vec![1; 10],
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{text}");
    assert!(text.contains(&sha256_hex(&[1; 10])), "{text}");
    assert_eq!(stored(&r), ["next.update"]);
    assert_eq!(
        std::fs::read(r.state.join("uploads/next.update")).unwrap(),
        data
    );
    still_answers(&mut c).await;

    // Names that would leave the directory, or hide; other methods; no token.
    for (path, want) in [
        ("/uploads/..", StatusCode::BAD_REQUEST),
        ("/uploads/.hidden", StatusCode::BAD_REQUEST),
        ("/uploads/a%2Fb", StatusCode::BAD_REQUEST),
        ("/uploads/", StatusCode::BAD_REQUEST),
    ] {
        let mut c = connect(&r).await;
        let (status, text) = put(&mut c, path, None, b"x".to_vec()).await;
        assert_eq!(status, want, "{path}: {text}");
    }
    let mut c = connect(&r).await;
    let (status, headers, _) = request(&mut c, "POST", "/uploads/x", Some(TOKEN), "x").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers["allow"], "PUT");
    let (status, _, _) = request(&mut c, "PUT", "/uploads/x", None, "x").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = request(&mut c, "PUT", "/uploads/x", Some("wrong"), "x").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(stored(&r), ["next.update"]);

    // An upload that stops sending is dropped after the stall time, its part removed.
    let mut tls = tls_from(&r, lo(1)).await;
    let head = format!(
        "PUT /uploads/stalled HTTP/1.1\r\nhost: localhost\r\nauthorization: {}\r\ncontent-length: {}\r\n\r\n",
        basic(TOKEN),
        4 << 20
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(&vec![7u8; 2 << 20]).await.unwrap();
    tls.flush().await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "no answer to a stalled upload");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("the upload stalled"), "{answer}");
    assert_eq!(stored(&r), ["next.update"]);

    // host.update names uploads; one that is not there is a 104 before init is asked.
    let mut c = connect(&r).await;
    match rpc(&mut c, "host.update", vec!["upload:missing.update".into()]).await {
        MethodResponse::Fault { code, message } => {
            assert_eq!(code, 104, "{message}");
            assert!(
                message.contains("no upload named \"missing.update\""),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    match rpc(&mut c, "host.update", vec!["upload:../x".into()]).await {
        MethodResponse::Fault { code, message } => assert_eq!(code, 102, "{message}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn generated_certificate_is_kept_private_and_reused() {
    use std::os::unix::fs::PermissionsExt as _;
    let state = temp_dir("reuse");
    let config = config();
    apid::tls::server_config(&config, &state).unwrap();
    let dir = apid::tls::generated_dir(&state);
    let first = std::fs::read(dir.join("cert.pem")).unwrap();
    for f in ["cert.pem", "key.pem"] {
        let mode = std::fs::metadata(dir.join(f)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    apid::tls::server_config(&config, &state).unwrap();
    assert_eq!(std::fs::read(dir.join("cert.pem")).unwrap(), first);
    let _ = std::fs::remove_dir_all(&state);
}

#[tokio::test]
async fn operator_certificate_files() {
    let dir = temp_dir("files");
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(dir.join("c.pem"), made.cert.pem()).unwrap();
    std::fs::write(dir.join("k.pem"), made.signing_key.serialize_pem()).unwrap();
    let mut config = config();
    config.api.tls = Tls::Files {
        cert: dir.join("c.pem"),
        key: dir.join("k.pem"),
    };
    assert!(apid::tls::server_config(&config, &dir).is_ok());
    config.api.tls = Tls::Files {
        cert: dir.join("k.pem"),
        key: dir.join("k.pem"),
    };
    let err = apid::tls::server_config(&config, &dir).unwrap_err();
    assert!(err.to_string().contains("no PEM certificate"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn python(script: &str, args: &[&str]) -> std::process::Output {
    Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 runs")
}

/// Python's standard client, verifying the certificate, as an independent implementation.
#[tokio::test]
async fn python_xmlrpc_client() {
    let r = start(None, Limits::default()).await;
    let port = r.addr.port().to_string();
    let cert = r.cert.display().to_string();
    let script = r#"
import ssl, sys, xmlrpc.client as x
port, cert, token = sys.argv[1:4]
ctx = ssl.create_default_context(cafile=cert)
url = "https://user:%s@127.0.0.1:%s/RPC2"
p = x.ServerProxy(url % (token, port), context=ctx)
names = p.system.listMethods()
assert "host.info" in names and "system.multicall" in names, names
assert p.system.methodSignature("system.methodHelp") == [["string", "string"]]
info = p.host.info()
assert info["hostname"] == "testhost", info
assert "error" in info["daemons"]["netd"], info
try:
    p.no.such()
    raise SystemExit("no fault")
except x.Fault as f:
    assert f.faultCode == 101, f
mc = x.MultiCall(p)
mc.system.methodHelp("host.info")
mc.host.services()
res = mc.results if hasattr(mc, "results") else None
out = mc()
assert "hostname" in out[0]
try:
    out[1]
    raise SystemExit("no fault in multicall")
except x.Fault as f:
    assert f.faultCode == 106, f
bad = x.ServerProxy(url % ("wrong", port), context=ctx)
try:
    bad.system.listMethods()
    raise SystemExit("no 401")
except x.ProtocolError as e:
    assert e.errcode == 401, e
print("python ok")
"#;
    let out = tokio::task::spawn_blocking(move || python(script, &[&port, &cert, TOKEN]))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("python ok"));
}

/// apid closes a keep-alive connection at the idle deadline; Python's client, which keeps its
/// connection between calls, notices and reconnects by itself.
#[tokio::test]
async fn python_client_reconnects_after_the_idle_deadline() {
    let r = start(
        None,
        Limits {
            idle_timeout: Duration::from_millis(500),
            ..Limits::default()
        },
    )
    .await;
    let port = r.addr.port().to_string();
    let cert = r.cert.display().to_string();
    let script = r#"
import ssl, sys, time, xmlrpc.client as x
port, cert, token = sys.argv[1:4]
ctx = ssl.create_default_context(cafile=cert)
p = x.ServerProxy("https://user:%s@127.0.0.1:%s/RPC2" % (token, port), context=ctx)
for i in range(3):
    assert "host.info" in p.system.listMethods()
    time.sleep(1.0)
print("python ok")
"#;
    let out = tokio::task::spawn_blocking(move || python(script, &[&port, &cert, TOKEN]))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("python ok"),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// --- with a private bus -------------------------------------------------------------------------

struct BusDaemon {
    child: Child,
    address: String,
    dir: Option<PathBuf>,
}

impl Drop for BusDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn private_bus(dir: &Path) -> Option<BusDaemon> {
    // Its only complaint in a container is about raising the fd limit.
    let (child, address) = testkit::start_private_bus(dir, Stdio::null()).ok()?;
    Some(BusDaemon {
        child,
        address,
        dir: Some(dir.to_path_buf()),
    })
}

struct FakeInit;

#[zbus::interface(name = "org.cairn.Init1")]
impl FakeInit {
    fn list_services(&self) -> Vec<model::dbus::ServiceTuple> {
        vec![
            (
                "netd".into(),
                "running".into(),
                12,
                0,
                1_700_000_000,
                "".into(),
            ),
            (
                "hostd".into(),
                "backoff".into(),
                0,
                3,
                1_700_000_100,
                "exited with status 3".into(),
            ),
        ]
    }
    fn system_info(&self) -> (u64, String) {
        (4242, "6.1.0-test".into())
    }
    fn boot_info(&self) -> (String, String, String) {
        ("running".into(), "medium".into(), String::new())
    }
    fn reboot(&self) -> zbus::fdo::Result<()> {
        Err(zbus::fdo::Error::AccessDenied("not in a test".into()))
    }
    fn poweroff(&self) {}
}

struct FakeNetwork;

#[zbus::interface(name = "org.cairn.Network1")]
impl FakeNetwork {
    fn status(&self) -> (String, HashMap<String, u32>) {
        (
            "9.9.9".into(),
            HashMap::from([("bridges".to_string(), 2u32), ("ports".to_string(), 5)]),
        )
    }
}

#[tokio::test]
async fn host_methods_over_a_private_bus() {
    let dir = temp_dir("bus");
    let Some(bus) = private_bus(&dir) else {
        eprintln!("dbus-daemon is not available; skipping");
        return;
    };
    let apid_conn = zbus::connection::Builder::address(bus.address.as_str())
        .name(model::dbus::API_NAME)
        .build()
        .await
        .unwrap();
    let watcher = zbus::connection::Builder::address(bus.address.as_str())
        .build()
        .await
        .unwrap();
    let r = start_following(Some(apid_conn.clone()), Some(watcher), Limits::default()).await;
    let mut c = connect(&r).await;

    // No daemons yet: host.info still answers, with errors where the daemons would be.
    let MethodResponse::Ok(Value::Struct(info)) = rpc(&mut c, "host.info", vec![]).await else {
        panic!()
    };
    assert_eq!(info["hostname"], Value::from("testhost"));
    assert!(info.contains_key("init_error"));
    for d in ["netd", "stord", "hostd"] {
        let e = info["daemons"].as_struct().unwrap()[d].as_struct().unwrap()["error"]
            .as_str()
            .unwrap();
        assert!(e.contains("not running"), "{d}: {e}");
    }
    assert!(matches!(
        rpc(&mut c, "host.services", vec![]).await,
        MethodResponse::Fault { code: 106, .. }
    ));

    // Now fake init and netd join the bus.
    let _fakes = zbus::connection::Builder::address(bus.address.as_str())
        .name(model::dbus::INIT_NAME)
        .serve_at(model::dbus::INIT_PATH, FakeInit)
        .name(model::dbus::NETWORK_NAME)
        .serve_at(model::dbus::NETWORK_PATH, FakeNetwork)
        .build()
        .await
        .unwrap();
    // apid learns of them from the bus (NameOwnerChanged), not by asking on each request: the
    // new state shows up shortly after they own their names.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let info = loop {
        let MethodResponse::Ok(Value::Struct(info)) = rpc(&mut c, "host.info", vec![]).await else {
            panic!()
        };
        let netd_known = info["daemons"].as_struct().unwrap()["netd"]
            .as_struct()
            .is_some_and(|n| n.contains_key("version"));
        if (!info.contains_key("init_error") && netd_known) || std::time::Instant::now() > deadline
        {
            break info;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(info["uptime"], Value::Int(4242));
    assert_eq!(info["kernel"], Value::from("6.1.0-test"));
    assert_eq!(info["mode"], Value::from("running"));
    assert_eq!(info["config_source"], Value::from("medium"));
    assert!(!info.contains_key("config_problem"));
    assert!(!info.contains_key("init_error"));
    let services = info["services"].as_array().unwrap();
    assert_eq!(services.len(), 2);
    let hostd = services[1].as_struct().unwrap();
    assert_eq!(hostd["name"], Value::from("hostd"));
    assert_eq!(hostd["state"], Value::from("backoff"));
    assert_eq!(hostd["restarts"], Value::Int(3));
    assert_eq!(hostd["since"], Value::Int(1_700_000_100));
    assert_eq!(hostd["last_error"], Value::from("exited with status 3"));
    let netd = info["daemons"].as_struct().unwrap()["netd"]
        .as_struct()
        .unwrap();
    assert_eq!(netd["version"], Value::from("9.9.9"));
    assert_eq!(netd["bridges"], Value::Int(2));
    assert!(
        info["daemons"].as_struct().unwrap()["stord"]
            .as_struct()
            .unwrap()
            .contains_key("error")
    );

    let MethodResponse::Ok(Value::Array(list)) = rpc(&mut c, "host.services", vec![]).await else {
        panic!()
    };
    assert_eq!(list.len(), 2);
    assert_eq!(
        rpc(&mut c, "host.poweroff", vec![]).await,
        MethodResponse::Ok(Value::Bool(true))
    );
    // A daemon's own error is not "busy": it is passed on as internal, with its message.
    match rpc(&mut c, "host.reboot", vec![]).await {
        MethodResponse::Fault { code: 107, message } => {
            assert!(message.contains("not in a test"), "{message}")
        }
        other => panic!("{other:?}"),
    }

    // apid holds its name on the bus.
    let dbus = zbus::fdo::DBusProxy::new(&apid_conn).await.unwrap();
    assert!(
        dbus.name_has_owner(model::dbus::API_NAME.try_into().unwrap())
            .await
            .unwrap()
    );
}

// --- hostile input and hostile clients ----------------------------------------------------------

fn call_with(param: &str) -> String {
    format!(
        "<?xml version=\"1.0\"?><methodCall><methodName>system.methodHelp</methodName><params><param><value>{param}</value></param></params></methodCall>"
    )
}

#[tokio::test]
async fn forbidden_characters_nan_and_bad_dates_are_parse_faults() {
    let r = start(None, Limits::default()).await;
    let mut c = connect(&r).await;
    for (param, says) in [
        ("<string>host\u{0}.info</string>", "U+0000 (NUL)"),
        ("<string>host&#0;.info</string>", "&#0;"),
        ("<string>a&#1;b</string>", "&#1;"),
        ("<string>a\u{1b}[31m</string>", "U+001B"),
        ("<string>&#xFFFE;</string>", "U+FFFE"),
        ("a\u{7}b", "U+0007"),
        (
            "<struct><member><name>k\u{0}</name><value>v</value></member></struct>",
            "inside <name>",
        ),
        ("<double>nan</double>", "double"),
        ("<double>NaN</double>", "double"),
        ("<double>inf</double>", "double"),
        ("<double>-inf</double>", "double"),
        ("<double>infinity</double>", "double"),
        ("<double>1e999</double>", "double"),
        ("<dateTime.iso8601>yesterday</dateTime.iso8601>", "dateTime"),
        (
            "<dateTime.iso8601>20251301T00:00:00</dateTime.iso8601>",
            "dateTime",
        ),
        (
            "<dateTime.iso8601>2025-01-01 00:00:00</dateTime.iso8601>",
            "dateTime",
        ),
    ] {
        let (code, msg) = raw_fault(&mut c, call_with(param)).await;
        assert_eq!(code, 100, "{param:?}: {msg}");
        assert!(msg.contains(says), "{param:?}: {msg}");
        assert!(msg.contains("at byte "), "{param:?}: {msg}");
        // The same keep-alive connection still gets answers.
        still_answers(&mut c).await;
    }
    // A NUL in the method name too.
    let (code, msg) = raw_fault(
        &mut c,
        "<methodCall><methodName>host.info\u{0}</methodName></methodCall>",
    )
    .await;
    assert_eq!(code, 100, "{msg}");
    // Well-formed dates and doubles pass the parser (and fail on the method's parameters).
    for param in [
        "<dateTime.iso8601>20250101T00:00:00</dateTime.iso8601>",
        "<dateTime.iso8601>2025-01-01T00:00:00+02:00</dateTime.iso8601>",
        "<double>-1.5e-07</double>",
    ] {
        let (code, msg) = raw_fault(&mut c, call_with(param)).await;
        assert_eq!(code, 102, "{param:?}: {msg}");
    }
    still_answers(&mut c).await;
}

fn curl(args: &[&str]) -> std::process::Output {
    Command::new("curl").args(args).output().expect("curl runs")
}

/// `curl --http1.0` offers only "http/1.0" in ALPN; the handshake must not fail on it.
#[tokio::test]
async fn curl_over_http_1_0_and_1_1() {
    let r = start(None, Limits::default()).await;
    let url = format!("https://127.0.0.1:{}/RPC2", r.addr.port());
    let body = write_call(&MethodCall {
        name: "system.listMethods".into(),
        params: vec![],
    });
    for version in ["--http1.0", "--http1.1"] {
        let args = [
            version,
            "-k",
            "-sS",
            "-u",
            &format!("anyone:{TOKEN}"),
            "-H",
            "Content-Type: text/xml",
            "--data-binary",
            &body,
            "-w",
            "\nHTTP %{http_version} %{http_code}",
            &url,
        ]
        .map(String::from);
        let out = tokio::task::spawn_blocking(move || {
            curl(&args.iter().map(String::as_str).collect::<Vec<_>>())
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{version}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("host.info"), "{version}: {stdout}");
        // curl names HTTP/1.0 "1" (older releases "1.0").
        let want: &[&str] = if version == "--http1.0" {
            &["HTTP 1 200", "HTTP 1.0 200"]
        } else {
            &["HTTP 1.1 200"]
        };
        let tail = stdout
            .get(stdout.len().saturating_sub(40)..)
            .unwrap_or(&stdout);
        assert!(
            want.iter().any(|w| stdout.ends_with(w)),
            "{version}: …{tail:?}"
        );
    }
}

/// A TCP connection from `src` that sends the first byte of a TLS record and then nothing: it
/// gets past the kernel's deferred accept into apid, but never through the handshake.
async fn try_started_from(r: &Running, src: IpAddr) -> std::io::Result<TcpStream> {
    use tokio::io::AsyncWriteExt as _;
    let mut tcp = try_tcp_from(r, src).await?;
    tcp.write_all(&[0x16]).await?;
    Ok(tcp)
}

/// Connects from `src` and tells whether apid closed the connection within `limit` (a reset can
/// already make the connect fail).
async fn refused_within(r: &Running, src: IpAddr, limit: Duration) -> bool {
    match try_started_from(r, src).await {
        Ok(mut tcp) => closed_within(&mut tcp, limit).await.is_some(),
        Err(_) => true,
    }
}

/// Waits until the peer closes `tcp` (EOF or reset); how long that took, or None after `limit`.
async fn closed_within(tcp: &mut TcpStream, limit: Duration) -> Option<Duration> {
    use tokio::io::AsyncReadExt as _;
    let t0 = std::time::Instant::now();
    let mut buf = [0u8; 64];
    loop {
        match tokio::time::timeout(limit.saturating_sub(t0.elapsed()), tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(t0.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_caps_and_deadlines() {
    let limits = Limits {
        handshake_timeout: Duration::from_millis(1500),
        idle_timeout: Duration::from_millis(1500),
        max_connections: 5,
        max_connections_per_client: 3,
        ..Limits::default()
    };
    let r = start(None, limits).await;
    let quick = Duration::from_millis(300);

    // Connections on which nothing is sent wait in the kernel (TCP_DEFER_ACCEPT) and take no
    // slot: these ten do not stop the next three from being served.
    let mut silent = Vec::new();
    for _ in 0..10 {
        silent.push(tcp_from(&r, lo(2)).await);
    }
    // Three TCP connections that start TLS but never finish take 127.0.0.2's whole share...
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(try_started_from(&r, lo(2)).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    // ...so a fourth from there is closed at once...
    assert!(refused_within(&r, lo(2), quick).await);
    // ...while another address is served.
    let mut c = connect_from(&r, lo(3)).await;
    still_answers(&mut c).await;

    // Five in all: one more from a third address fills the server; a fourth address is refused.
    held.push(try_started_from(&r, lo(4)).await.unwrap());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(refused_within(&r, lo(5), quick).await);

    // Connections that never start TLS are closed at the handshake deadline, not before.
    for tcp in &mut held {
        let took = closed_within(tcp, Duration::from_secs(5)).await;
        assert!(took.is_some(), "still open after the handshake deadline");
    }
    assert!(
        started.elapsed() >= Duration::from_millis(1200),
        "{:?}",
        started.elapsed()
    );

    // The keep-alive connection, idle since its call, is closed at the idle deadline.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(
        c.ready().await.is_err(),
        "the idle connection is still open"
    );
    // And the slots are free again.
    let mut again = connect_from(&r, lo(2)).await;
    still_answers(&mut again).await;
}

/// A raw HTTP/1.1 answer: status, lower-case headers, body. Reads until the server closes.
async fn read_answer(
    tls: &mut tokio_rustls::client::TlsStream<TcpStream>,
) -> (u16, HashMap<String, String>, String) {
    use tokio::io::AsyncReadExt as _;
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut raw)).await;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

/// Sends the head of a POST with `length` declared and `send` bytes of its body.
async fn start_upload(
    r: &Running,
    src: IpAddr,
    length: usize,
    send: usize,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    use tokio::io::AsyncWriteExt as _;
    let mut tls = tls_from(r, src).await;
    let head = format!(
        "POST /RPC2 HTTP/1.1\r\nHost: localhost\r\nAuthorization: {}\r\nContent-Length: {length}\r\n\r\n",
        basic(TOKEN)
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(&vec![b'x'; send]).await.unwrap();
    tls.flush().await.unwrap();
    tls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_budget_refuses_at_once_and_spares_small_calls() {
    let limits = Limits {
        body_budget: 3 << 20,
        body_budget_per_client: 2 << 20,
        ..Limits::default()
    };
    let r = start(None, limits).await;
    let mib = 1 << 20;
    // Two stalled uploads of 1 MiB take 127.0.0.4's share, one more the rest of the budget.
    let mut stalled = Vec::new();
    for src in [lo(4), lo(4), lo(5)] {
        stalled.push(start_upload(&r, src, mib, 100_000).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Over the client's share, then over the total: 503 at once, fault 108 inside, closed.
    for src in [lo(4), lo(5), lo(6)] {
        let mut refused = start_upload(&r, src, mib, 0).await;
        let (status, headers, body) = read_answer(&mut refused).await;
        assert_eq!(status, 503, "{src}: {body}");
        assert_eq!(headers.get("retry-after").map(String::as_str), Some("1"));
        assert_eq!(headers.get("connection").map(String::as_str), Some("close"));
        match parse_response(&body) {
            Ok(MethodResponse::Fault { code: 108, message }) => {
                assert!(message.contains("retry"), "{message}")
            }
            other => panic!("{src}: {other:?}"),
        }
    }
    // Python's client sends the whole body before it reads the answer; it still gets the 503
    // (apid reads and drops the rest of the body before it closes), not a reset.
    let port = r.addr.port().to_string();
    let cert = r.cert.display().to_string();
    let script = r#"
import ssl, sys, xmlrpc.client as x
port, cert, token = sys.argv[1:4]
ctx = ssl.create_default_context(cafile=cert)
p = x.ServerProxy("https://user:%s@127.0.0.1:%s/RPC2" % (token, port), context=ctx)
try:
    p.system.methodHelp("x" * 500000)
    raise SystemExit("no refusal")
except x.ProtocolError as e:
    assert e.errcode == 503, e
    assert {k.lower(): v for k, v in e.headers.items()}["retry-after"] == "1", e.headers
print("python ok")
"#;
    let out = tokio::task::spawn_blocking(move || python(script, &[&port, &cert, TOKEN]))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("python ok"),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Ordinary calls take nothing from the budget and still work, from any address.
    let mut c = connect_from(&r, lo(4)).await;
    still_answers(&mut c).await;
    let mut c = connect_from(&r, lo(7)).await;
    still_answers(&mut c).await;

    // Once the stalled uploads are gone, a 1 MiB body is read again.
    drop(stalled);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut big = String::from(
        "<methodCall><methodName>system.methodHelp</methodName><params><param><value>",
    );
    big.push_str(&"x".repeat(mib - 200));
    big.push_str("</value></param></params></methodCall>");
    assert!(big.len() <= mib);
    let (code, msg) = raw_fault(&mut c, big).await;
    assert_eq!(code, 101, "{msg}");
}
