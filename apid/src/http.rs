//! HTTPS front: TLS, HTTP/1.1 keep-alive, `POST /RPC2` and `PUT /uploads/NAME`, Basic auth with API tokens, and the
//! limits that keep one bad or hostile client from hurting the daemon or other clients.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use futures_util::FutureExt as _;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use model::fault::FaultCode;
use model::xmlrpc::{self, MethodResponse};
use tokio::io::unix::AsyncFd;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::MissedTickBehavior;
use tokio_rustls::TlsAcceptor;

use crate::admission::{Held, LogLimiter, Refusal, Shares};
use crate::methods::Api;

pub const RPC_PATH: &str = "/RPC2";
pub const REALM: &str = "cairn";

/// The accept queue the kernel keeps for us (capped by net.core.somaxconn). Deep enough that a
/// storm of connections from one client, each refused at once, does not fill it ahead of the
/// connection attempts of others, whose SYNs would otherwise be dropped and retried only a
/// second or more later.
const LISTEN_BACKLOG: u32 = 4096;

/// How long the kernel keeps a connection on which the client has sent nothing before handing
/// it to us anyway (see [`crate::sys::defer_accept`]).
const DEFER_ACCEPT: Duration = Duration::from_secs(5);

/// Refusals (connections over a cap, requests without a token, bodies without room) are logged
/// at most this many lines a second per kind; the rest are counted...
const REFUSAL_LINES_PER_SECOND: u32 = 3;
/// ...and the count is logged this often.
const REFUSAL_SUMMARY_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request body that is parsed.
    pub max_body: usize,
    /// Bodies up to this size are read and dropped so the client gets fault 108 (too_large) on
    /// a connection that stays usable; anything larger gets HTTP 413 and the connection closes.
    pub max_drain: usize,
    /// Reading the body, and separately running the method, must each finish within this.
    pub request_timeout: Duration,
    /// The TLS handshake must finish within this after the TCP connection is accepted, so that
    /// connections which never start TLS cannot hold slots for long.
    pub handshake_timeout: Duration,
    /// A connection waiting for a request — the first after the handshake, or the next one on a
    /// keep-alive connection — is closed when that request's headers are not all in within this.
    pub idle_timeout: Duration,
    /// Connections served at once, in all; more are closed (reset) right after accept.
    pub max_connections: usize,
    /// Connections served at once from one client address (IPv6: one /64).
    pub max_connections_per_client: usize,
    /// Memory for request bodies being read, in all: a body whose declared length does not fit
    /// in what is left (or that outgrows it, when sent chunked) is answered at once with HTTP 503
    /// carrying fault 108, and the connection is closed.
    pub body_budget: usize,
    /// The part of `body_budget` one client address may hold.
    pub body_budget_per_client: usize,
    /// Bodies up to this size (every ordinary call) take nothing from `body_budget`, so that
    /// uploads filling the budget do not shut out ordinary calls. What they hold is bounded by
    /// the connection caps instead (`max_connections` times this).
    pub small_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: 1 << 20,
            max_drain: 16 << 20,
            request_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(10),
            // Under the usual soft limit of 1024 open files, with room for the bus and the rest.
            max_connections: 512,
            max_connections_per_client: 64,
            body_budget: 64 << 20,
            body_budget_per_client: 16 << 20,
            small_body: 64 << 10,
        }
    }
}

/// The request-level state shared by every connection.
pub struct Service {
    api: Api,
    tokens: Vec<[u8; 32]>,
    limits: Limits,
    bodies: Arc<Shares>,
    refused_connections: LogLimiter,
    refused_requests: LogLimiter,
}

impl Service {
    pub fn new(api: Api, tokens: Vec<[u8; 32]>, limits: Limits) -> Service {
        Service {
            api,
            tokens,
            limits,
            bodies: Shares::new(limits.body_budget, limits.body_budget_per_client),
            refused_connections: LogLimiter::new("refused connections", REFUSAL_LINES_PER_SECOND),
            refused_requests: LogLimiter::new("refused requests", REFUSAL_LINES_PER_SECOND),
        }
    }

    fn flush_logs(&self) {
        self.refused_connections.flush();
        self.refused_requests.flush();
    }
}

/// A bound HTTPS listener, not yet serving.
pub struct Server {
    /// A std listener watched by tokio: a connection accepted from it is not registered with
    /// tokio until it is admitted, so refusing one costs an accept, a setsockopt and a close,
    /// and a storm of refused connections is worked off quickly.
    listener: AsyncFd<std::net::TcpListener>,
    acceptor: TlsAcceptor,
}

impl Server {
    pub async fn bind(addr: SocketAddr, tls: Arc<rustls::ServerConfig>) -> std::io::Result<Server> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        // As TcpListener::bind does: a restarted apid can bind while old connections linger.
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(LISTEN_BACKLOG)?;
        if let Err(e) = crate::sys::defer_accept(&listener, DEFER_ACCEPT) {
            tracing::warn!(error = %e, "cannot set TCP_DEFER_ACCEPT; idle connections will queue");
        }
        // Non-blocking still, as tokio made it.
        let listener = listener.into_std()?;
        // SAFETY: the std listener owns its descriptor and the AsyncFd owns the listener, which
        // is only ever lent out (`get_ref`), so the descriptor stays open and the same for as
        // long as the registration lives.
        let listener =
            unsafe { AsyncFd::register_with_interest(listener, tokio::io::Interest::READABLE) }?;
        Ok(Server {
            listener,
            acceptor: TlsAcceptor::from(tls),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.get_ref().local_addr()
    }

    /// Serves until `shutdown` completes. Connections in flight are left to finish on their own
    /// tasks; the process exiting ends them.
    pub async fn serve(self, service: Service, shutdown: impl Future<Output = ()>) {
        let service = Arc::new(service);
        let limits = service.limits;
        let slots = Shares::new(limits.max_connections, limits.max_connections_per_client);
        let mut summary = tokio::time::interval(REFUSAL_SUMMARY_EVERY);
        summary.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                _ = &mut shutdown => break,
                _ = summary.tick() => {
                    service.flush_logs();
                    // Bodies and connection buffers freed since the last tick go back to the
                    // kernel, so memory returns to where it was once a flood is over.
                    crate::sys::release_free_memory();
                    continue;
                }
                accepted = accept(&self.listener) => match accepted {
                    Ok(a) => a,
                    Err(e) if out_of_resources(&e) => {
                        // EMFILE and friends: back off instead of spinning.
                        if service.refused_connections.allow() {
                            tracing::warn!(error = %e, "accept failed");
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                    Err(e) => {
                        // A connection the client reset while it waited (ECONNABORTED) and the
                        // like: about that connection only, so no pause, which a client could
                        // otherwise cause at will.
                        tracing::debug!(error = %e, "accept failed");
                        continue;
                    }
                },
            };
            let slot = match slots.hold(peer.ip(), 1) {
                Ok(slot) => slot,
                Err(why) => {
                    // A reset rather than a FIN: the client learns at once, and a storm of
                    // refused connections leaves no TIME_WAIT entries behind on our side.
                    let _ = crate::sys::reset_on_close(&tcp);
                    drop(tcp);
                    if service.refused_connections.allow() {
                        let cap = match why {
                            Refusal::Total => slots.total(),
                            Refusal::Client => slots.per_client(),
                        };
                        tracing::warn!(%peer, reason = %why, cap, "refusing a connection");
                    }
                    continue;
                }
            };
            let tcp = match tcp
                .set_nonblocking(true)
                .and_then(|()| TcpStream::from_std(tcp))
            {
                Ok(tcp) => tcp,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "cannot take on an accepted connection");
                    continue;
                }
            };
            let acceptor = self.acceptor.clone();
            let service = service.clone();
            // A panic inside stays inside this task: tokio reports it and the daemon serves on.
            tokio::spawn(async move {
                connection(tcp, peer, acceptor, service).await;
                drop(slot);
            });
        }
        service.flush_logs();
    }
}

/// Whether a failed accept means the process or system is out of something (descriptors,
/// buffers, memory), as opposed to a problem with the one connection.
fn out_of_resources(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// The next connection in the accept queue, as a std socket (blocking, not registered).
async fn accept(
    listener: &AsyncFd<std::net::TcpListener>,
) -> std::io::Result<(std::net::TcpStream, SocketAddr)> {
    loop {
        let mut ready = listener.readable().await?;
        match ready.try_io(|l| l.get_ref().accept()) {
            Ok(result) => return result,
            // Readiness was stale: try_io cleared it; wait again.
            Err(_would_block) => continue,
        }
    }
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    service: Arc<Service>,
) {
    let limits = service.limits;
    let tls = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let activity = Arc::new(Activity::new());
    let requests = activity.clone();
    let linger_bytes = limits.max_body;
    // Set when a request was answered with 101: the stream then takes the connection over.
    let upgrade = crate::stream::Upgrade::default();
    let upgraded = upgrade.clone();
    let streams_bus = service.api.bus.clone();
    let svc = hyper::service::service_fn(move |req| {
        let service = service.clone();
        let busy = requests.begin();
        let upgrade = upgrade.clone();
        // Boxed, so that the connection is Unpin and can hand its stream back at the end.
        Box::pin(async move {
            let response = service.respond_files(req, peer, &upgrade).await;
            // A streamed answer keeps the connection busy until its last byte is out.
            Ok::<_, Infallible>(response.map(|body| crate::files::guarded(body, busy)))
        })
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    // hyper starts this timer when it begins waiting for a request, so it bounds both the idle
    // time of a keep-alive connection and how long a request's headers may take. It closes
    // without a TLS close_notify, though, so the idle case is ours (below) and this one, a
    // second later, is only the backstop for headers that trickle in.
    http.timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(limits.idle_timeout + Duration::from_secs(1))
        .max_buf_size(64 * 1024);
    let mut conn = http.serve_connection(TokioIo::new(tls), svc);
    let mut check = tokio::time::Instant::now() + limits.idle_timeout;
    let mut closing = false;
    let ended = loop {
        tokio::select! {
            ended = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)) => break ended,
            _ = tokio::time::sleep_until(check) => {
                let now = tokio::time::Instant::now();
                if closing {
                    tracing::debug!(%peer, "an idle connection did not close in time; dropped");
                    return;
                }
                match activity.idle_until(limits.idle_timeout) {
                    Some(deadline) if deadline <= now => {
                        // Idle for too long: hyper stops waiting for a request and hands the
                        // stream back for the close below.
                        std::pin::Pin::new(&mut conn).graceful_shutdown();
                        closing = true;
                        check = now + CLOSE_GRACE;
                    }
                    Some(deadline) => check = deadline,
                    // A request is being served; its own deadlines apply. Look again later.
                    None => check = now + limits.idle_timeout,
                }
            }
        }
    };
    match ended {
        Ok(()) => {
            let parts = conn.into_parts();
            if let Some(kind) = upgraded.take() {
                let (io, read) = (parts.io.into_inner(), parts.read_buf.to_vec());
                crate::stream::serve(kind, io, read, streams_bus).await;
                return;
            }
            linger_close(parts.io.into_inner(), linger_bytes).await
        }
        Err(e) => tracing::debug!(%peer, error = %e, "connection ended with an error"),
    }
}

/// How long closing a connection may take before it is simply dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Ends a connection the way clients can read: TLS close_notify and a FIN, then whatever the
/// client still sends is read and dropped (up to `max_bytes`, for up to [`CLOSE_GRACE`]) until
/// it closes too. Closing at once would let its next bytes — a request sent just as an idle
/// connection was closed, or the rest of a body refused with 503 — draw a TCP reset, which
/// destroys our close_notify or answer before the client reads it: Python's xmlrpc.client then
/// fails with SSLEOFError or a reset instead of reading the answer, or reconnecting.
async fn linger_close(mut tls: tokio_rustls::server::TlsStream<TcpStream>, max_bytes: usize) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        tls.shutdown().await?;
        let mut buf = [0u8; 8192];
        let mut drained = 0usize;
        while drained <= max_bytes {
            match tls.read(&mut buf).await? {
                0 => break,
                n => drained += n,
            }
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// Whether a connection has a request in flight, and since when it has had none.
struct Activity {
    state: std::sync::Mutex<(usize, tokio::time::Instant)>,
}

/// One request in flight; the connection counts as active until it is dropped.
struct Busy(Arc<Activity>);

impl Activity {
    fn new() -> Activity {
        Activity {
            state: std::sync::Mutex::new((0, tokio::time::Instant::now())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (usize, tokio::time::Instant)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.lock().0 += 1;
        Busy(self.clone())
    }

    /// When the connection will have been idle for `idle`, or None while a request is served.
    fn idle_until(&self, idle: Duration) -> Option<tokio::time::Instant> {
        let (in_flight, since) = *self.lock();
        (in_flight == 0).then(|| since + idle)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.0 = state.0.saturating_sub(1);
        state.1 = tokio::time::Instant::now();
    }
}

fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(format!("{text}\n"))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn closing(mut resp: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

fn xml(response: &MethodResponse) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(xmlrpc::write_response(response))));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml"));
    resp
}

fn fault(code: FaultCode, message: impl Into<String>) -> Response<Full<Bytes>> {
    xml(&MethodResponse::Fault {
        code: code.code(),
        message: message.into(),
    })
}

/// The password of a Basic `Authorization` header; the user name is ignored.
fn basic_password(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    text.split_once(':')
        .map(|(_, password)| password.to_string())
}

enum BodyError {
    /// Larger than `max_body`; `drained` tells whether all of it was read (connection reusable).
    TooLarge {
        drained: bool,
    },
    /// A chunked body outgrew the room left in the body budget.
    NoRoom(Refusal),
    Read(hyper::Error),
}

/// Reads a body of at most `expected` bytes (its Content-Length, else `max_body`) into a buffer
/// that grows with what has arrived, not with what the client announced: a client that declares
/// 1 MiB and then stalls costs what it sent. `room` always covers the buffer's capacity.
/// `expected == 0` with a non-empty body means "announced as too large": nothing is kept.
/// Bodies up to `small_body` take no room (see [`Limits::small_body`]).
async fn read_body(
    mut body: Incoming,
    limits: &Limits,
    expected: usize,
    room: &mut Held,
) -> Result<Bytes, BodyError> {
    let mut buf = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(BodyError::Read)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total = total.saturating_add(data.len());
        if total > limits.max_drain {
            return Err(BodyError::TooLarge { drained: false });
        }
        if total > limits.max_body || expected == 0 {
            // Past the cap nothing is kept: the rest is only counted, then answered with 108.
            buf = Vec::new();
            continue;
        }
        if buf.capacity() - buf.len() < data.len() {
            // Half again rather than double, and never past what is expected, so the buffer
            // stays within 1.5 times what has arrived.
            let want = (buf.len() + data.len())
                .max(buf.capacity() + buf.capacity() / 2)
                .min(expected.max(buf.len() + data.len()));
            if want > limits.small_body {
                room.grow_to(want).map_err(BodyError::NoRoom)?;
            }
            buf.reserve_exact(want - buf.len());
        }
        buf.extend_from_slice(&data);
    }
    if total > limits.max_body {
        return Err(BodyError::TooLarge { drained: true });
    }
    Ok(Bytes::from(buf))
}

impl Service {
    /// HTTP 503 with fault 108 as its body, and the connection closed (the body is not read).
    fn no_room(&self, peer: SocketAddr, bytes: usize, why: Refusal) -> Response<Full<Bytes>> {
        let (total, per_client) = (self.bodies.total(), self.bodies.per_client());
        if self.refused_requests.allow() {
            let (in_use, by_client) = self.bodies.in_use(peer.ip());
            tracing::warn!(%peer, bytes, reason = %why, in_use, by_client, "no room for a request body");
        }
        let mut resp = closing(fault(
            FaultCode::TooLarge,
            format!(
                "no room now for a request body of {bytes} bytes: {why} (request bodies being read may hold {} MiB in all, {} MiB per client); retry shortly",
                total >> 20,
                per_client >> 20
            ),
        ));
        *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        resp
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(password) = basic_password(headers) else {
            return false;
        };
        // Check every token, not just until the first match, so timing says nothing about which.
        self.tokens
            .iter()
            .fold(false, |ok, t| model::token::matches(&password, t) | ok)
    }

    /// `PUT|GET /ct/NAME/files` (see [`crate::files`]), whose answers may stream; the rest is
    /// [`Service::respond_upgrading`]'s.
    pub async fn respond_files(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        upgrade: &crate::stream::Upgrade,
    ) -> Response<crate::files::AnyBody> {
        if !req.uri().path().starts_with(crate::files::PATH_PREFIX) {
            return self
                .respond_upgrading(req, peer, upgrade)
                .await
                .map(crate::files::full);
        }
        if !self.authorized(req.headers()) {
            return self.unauthorized(peer).map(crate::files::full);
        }
        crate::files::serve(&self.api, req, peer).await
    }

    /// `GET /streams/…` (see [`crate::stream`]): authorized as every request, then answered
    /// with 101 and noted in `upgrade` for the connection to hand over; the rest is
    /// [`Service::respond`]'s.
    pub async fn respond_upgrading(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        upgrade: &crate::stream::Upgrade,
    ) -> Response<Full<Bytes>> {
        if !req.uri().path().starts_with(model::stream::PATH_PREFIX) {
            return self.respond(req, peer).await;
        }
        let Some(kind) = crate::stream::Kind::from_path(req.uri().path()) else {
            return plain(
                StatusCode::NOT_FOUND,
                &format!("not found: the streams are {}", crate::stream::Kind::PATHS),
            );
        };
        if !self.authorized(req.headers()) {
            return self.unauthorized(peer);
        }
        match crate::stream::ws::check_upgrade(req.method(), req.headers()) {
            Ok(accept) => {
                upgrade.set(kind);
                crate::stream::ws::switching(&accept)
            }
            Err(crate::stream::ws::Refused(status, why)) => closing(plain(status, &why)),
        }
    }

    fn unauthorized(&self, peer: SocketAddr) -> Response<Full<Bytes>> {
        if self.refused_requests.allow() {
            tracing::info!(%peer, "request without a valid token");
        }
        let mut resp = plain(
            StatusCode::UNAUTHORIZED,
            "unauthorized: wrong or missing API token",
        );
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"cairn\""),
        );
        resp
    }

    pub async fn respond(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
        let path = req.uri().path();
        let upload = path
            .strip_prefix(crate::upload::PATH_PREFIX)
            .map(str::to_string);
        if path != RPC_PATH && upload.is_none() {
            return plain(
                StatusCode::NOT_FOUND,
                "not found: the API is at POST /RPC2, uploads at PUT /uploads/NAME",
            );
        }
        let allowed = if upload.is_some() {
            Method::PUT
        } else {
            Method::POST
        };
        if req.method() != allowed {
            let mut resp = plain(
                StatusCode::METHOD_NOT_ALLOWED,
                &format!("method not allowed: use {allowed}"),
            );
            if let Ok(v) = HeaderValue::from_str(allowed.as_str()) {
                resp.headers_mut().insert(header::ALLOW, v);
            }
            return resp;
        }
        if !self.authorized(req.headers()) {
            return self.unauthorized(peer);
        }
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        match upload {
            Some(name) => self.upload(req, &name, declared, peer).await,
            None => self.rpc(req, declared, peer).await,
        }
    }

    /// `PUT /uploads/NAME` (see [`crate::upload`]).
    async fn upload(
        &self,
        req: Request<Incoming>,
        name: &str,
        declared: Option<u64>,
        peer: SocketAddr,
    ) -> Response<Full<Bytes>> {
        use crate::upload::UploadError;
        let Some(uploads) = &self.api.uploads else {
            return plain(StatusCode::NOT_FOUND, "this API keeps no uploads");
        };
        let want = req
            .headers()
            .get(crate::upload::SHA256_HEADER)
            .map(|v| v.to_str().unwrap_or("").to_string());
        let result = uploads
            .receive(name, peer.ip(), declared, want.as_deref(), req.into_body())
            .await;
        let e = match result {
            Ok(stored) => {
                let mut resp = Response::new(Full::new(Bytes::from(stored.to_json() + "\n")));
                *resp.status_mut() = StatusCode::CREATED;
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                return resp;
            }
            Err(e) => e,
        };
        tracing::info!(%peer, name, error = %e, "upload refused");
        let status = match e {
            UploadError::Name(_) | UploadError::BadDigestHeader | UploadError::Missing(_) => {
                StatusCode::BAD_REQUEST
            }
            UploadError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            UploadError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            UploadError::NoSpace { .. } => StatusCode::INSUFFICIENT_STORAGE,
            UploadError::Stalled(_) => StatusCode::REQUEST_TIMEOUT,
            UploadError::Digest { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            UploadError::Read(_) => StatusCode::BAD_REQUEST,
            UploadError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let resp = plain(status, &e.to_string());
        // What the client still sends of a refused body is not read: the connection ends.
        if matches!(e, UploadError::Digest { .. }) {
            resp
        } else {
            closing(resp)
        }
    }

    /// `POST /RPC2`: one XML-RPC call.
    async fn rpc(
        &self,
        req: Request<Incoming>,
        declared: Option<u64>,
        peer: SocketAddr,
    ) -> Response<Full<Bytes>> {
        let limits = &self.limits;
        if declared.is_some_and(|n| n > limits.max_drain as u64) {
            return closing(plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large",
            ));
        }
        // Room for the body is taken from the shared budget before any of it is read, so a
        // request that cannot have it is answered at once instead of after an upload.
        let mut room = self.bodies.nothing_held(peer.ip());
        let expected = match declared {
            Some(n) if n <= limits.max_body as u64 => {
                let n = usize::try_from(n).unwrap_or(limits.max_body);
                if n > limits.small_body
                    && let Err(why) = room.grow_to(n)
                {
                    return self.no_room(peer, n, why);
                }
                n
            }
            // Announced as too large: read and dropped, nothing kept, so no room is needed.
            Some(_) => 0,
            None => limits.max_body,
        };
        let read = read_body(req.into_body(), limits, expected, &mut room);
        let body = match tokio::time::timeout(limits.request_timeout, read).await {
            Ok(Ok(body)) => body,
            Ok(Err(BodyError::NoRoom(why))) => {
                return self.no_room(peer, room.amount(), why);
            }
            Ok(Err(BodyError::TooLarge { drained: true })) => {
                return fault(
                    FaultCode::TooLarge,
                    format!("the request body is larger than {} bytes", limits.max_body),
                );
            }
            Ok(Err(BodyError::TooLarge { drained: false })) => {
                return closing(plain(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "request body too large",
                ));
            }
            Ok(Err(BodyError::Read(e))) => {
                tracing::debug!(%peer, error = %e, "reading the request body failed");
                return closing(plain(
                    StatusCode::BAD_REQUEST,
                    "cannot read the request body",
                ));
            }
            Err(_) => {
                return closing(plain(
                    StatusCode::REQUEST_TIMEOUT,
                    "the request body arrived too slowly",
                ));
            }
        };
        let Ok(text) = std::str::from_utf8(&body) else {
            return fault(FaultCode::Parse, "the request body is not UTF-8");
        };
        let call = match xmlrpc::parse_call(text) {
            Ok(call) => call,
            Err(e) => {
                tracing::info!(%peer, error = %e, "unparsable request");
                return fault(e.fault_code(), e.to_string());
            }
        };
        // The body's room is given back once it is parsed, before the method runs.
        drop(body);
        drop(room);
        let method = call.name.clone();
        let started = Instant::now();
        let run = AssertUnwindSafe(self.api.handle(call)).catch_unwind();
        let response = match tokio::time::timeout(limits.request_timeout, run).await {
            Ok(Ok(response)) => response,
            Ok(Err(_panic)) => {
                tracing::error!(%peer, %method, "method handler panicked");
                return fault(
                    FaultCode::Internal,
                    format!("{method} failed unexpectedly; see the host's log"),
                );
            }
            Err(_) => {
                tracing::warn!(%peer, %method, "method timed out");
                return fault(
                    FaultCode::Busy,
                    format!(
                        "{method} did not finish within {} s",
                        limits.request_timeout.as_secs()
                    ),
                );
            }
        };
        tracing::debug!(%peer, %method, elapsed_ms = started.elapsed().as_millis() as u64, "call");
        xml(&response)
    }
}
