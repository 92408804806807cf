//! HTTPS front: TLS, HTTP/1.1 keep-alive, `POST /RPC2` only, Basic auth with API tokens, and the
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
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::methods::Api;

pub const RPC_PATH: &str = "/RPC2";
pub const REALM: &str = "cairn";

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request body that is parsed.
    pub max_body: usize,
    /// Bodies up to this size are read and dropped so the client gets fault 108 (too_large) on
    /// a connection that stays usable; anything larger gets HTTP 413 and the connection closes.
    pub max_drain: usize,
    /// Reading the body, and separately running the method, must each finish within this.
    pub request_timeout: Duration,
    /// The TLS handshake and each request's headers must arrive within this.
    pub handshake_timeout: Duration,
    /// Connections served at once; more are closed right after accept.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: 1 << 20,
            max_drain: 16 << 20,
            request_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            max_connections: 256,
        }
    }
}

/// The request-level state shared by every connection.
pub struct Service {
    api: Api,
    tokens: Vec<[u8; 32]>,
    limits: Limits,
}

impl Service {
    pub fn new(api: Api, tokens: Vec<[u8; 32]>, limits: Limits) -> Service {
        Service {
            api,
            tokens,
            limits,
        }
    }
}

/// A bound HTTPS listener, not yet serving.
pub struct Server {
    listener: TcpListener,
    acceptor: TlsAcceptor,
}

impl Server {
    pub async fn bind(addr: SocketAddr, tls: Arc<rustls::ServerConfig>) -> std::io::Result<Server> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Server {
            listener,
            acceptor: TlsAcceptor::from(tls),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes. Connections in flight are left to finish on their own
    /// tasks; the process exiting ends them.
    pub async fn serve(self, service: Service, shutdown: impl Future<Output = ()>) {
        let service = Arc::new(service);
        let slots = Arc::new(Semaphore::new(service.limits.max_connections));
        tokio::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                _ = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::warn!(%peer, "too many connections; closing this one");
                continue;
            };
            let acceptor = self.acceptor.clone();
            let service = service.clone();
            // A panic inside stays inside this task: tokio reports it and the daemon serves on.
            tokio::spawn(async move {
                connection(tcp, peer, acceptor, service).await;
                drop(slot);
            });
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
    let svc = hyper::service::service_fn(move |req| {
        let service = service.clone();
        async move { Ok::<_, Infallible>(service.respond(req, peer).await) }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(limits.handshake_timeout)
        .max_buf_size(64 * 1024);
    if let Err(e) = http.serve_connection(TokioIo::new(tls), svc).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
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
    Read(hyper::Error),
}

async fn read_body(mut body: Incoming, limits: &Limits) -> Result<Bytes, BodyError> {
    let mut buf = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(BodyError::Read)?;
        if let Ok(data) = frame.into_data() {
            total = total.saturating_add(data.len());
            if total > limits.max_drain {
                return Err(BodyError::TooLarge { drained: false });
            }
            if total <= limits.max_body {
                buf.extend_from_slice(&data);
            }
        }
    }
    if total > limits.max_body {
        return Err(BodyError::TooLarge { drained: true });
    }
    Ok(Bytes::from(buf))
}

impl Service {
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(password) = basic_password(headers) else {
            return false;
        };
        // Check every token, not just until the first match, so timing says nothing about which.
        self.tokens
            .iter()
            .fold(false, |ok, t| model::token::matches(&password, t) | ok)
    }

    pub async fn respond(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
        if req.uri().path() != RPC_PATH {
            return plain(StatusCode::NOT_FOUND, "not found: the API is at POST /RPC2");
        }
        if req.method() != Method::POST {
            let mut resp = plain(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed: use POST",
            );
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return resp;
        }
        if !self.authorized(req.headers()) {
            tracing::info!(%peer, "request without a valid token");
            let mut resp = plain(
                StatusCode::UNAUTHORIZED,
                "unauthorized: wrong or missing API token",
            );
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"cairn\""),
            );
            return resp;
        }
        let limits = &self.limits;
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limits.max_drain as u64) {
            return closing(plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large",
            ));
        }
        let body =
            match tokio::time::timeout(limits.request_timeout, read_body(req.into_body(), limits))
                .await
            {
                Ok(Ok(body)) => body,
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
