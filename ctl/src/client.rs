//! One XML-RPC call over HTTPS to apid.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::client::conn::http1;
use hyper::{StatusCode, Uri};
use hyper_util::rt::TokioIo;
use model::fault::FaultCode;
use model::xmlrpc::{self, MethodCall, MethodResponse, Value};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;

use crate::tls::Pin;

/// The whole call — connect, TLS, request, response — must finish within this.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Responses larger than this are not read.
const MAX_RESPONSE: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{name} ({code}): {message}", name = fault_name(*.code))]
    Fault { code: i32, message: String },
    #[error("unauthorized: wrong or missing token")]
    Unauthorized,
    #[error("the server answered HTTP {status}: {body}")]
    Http { status: StatusCode, body: String },
    #[error("bad URL {url:?}: {why}")]
    Url { url: String, why: &'static str },
    #[error("cannot reach {target}: {message}")]
    Connect { target: String, message: String },
    #[error("the server's answer is not XML-RPC: {0}")]
    Response(String),
    #[error("no answer within {} s", CALL_TIMEOUT.as_secs())]
    Timeout,
    /// The server presented another certificate than the pinned one: said loudly, as ssh does,
    /// since it is either an attack or a reinstalled host, and only the user can tell which.
    #[error(
        "THE SERVER'S CERTIFICATE HAS CHANGED ({target})\n  \
         pinned:    {expected}\n  presented: {presented}\n\
         Someone may be intercepting the connection, or the host got a new certificate (a \
         reinstall, a new [api] certificate in host.toml). Compare with the fingerprint the \
         host's console prints; only if it is the host's, pin it again: {hint}"
    )]
    CertificateChanged {
        target: String,
        expected: String,
        presented: String,
        hint: String,
    },
}

fn fault_name(code: i32) -> &'static str {
    FaultCode::from_code(code).map_or("fault", FaultCode::name)
}

/// Where the API is, from `https://host[:port][/path]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Endpoint, CallError> {
        let bad = |why| CallError::Url {
            url: url.to_string(),
            why,
        };
        let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
        match uri.scheme_str() {
            Some("https") => {}
            Some(_) => return Err(bad("the API is served over HTTPS only: use https://")),
            None => return Err(bad("give the scheme: https://HOST[:PORT]")),
        }
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad(
                "pass the token with --token or CAIRN_TOKEN, not in the URL",
            ));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let path = match uri.path() {
            "" | "/" => "/RPC2".to_string(),
            p => p.to_string(),
        };
        Ok(Endpoint {
            host,
            port: uri.port_u16().unwrap_or(443),
            path,
        })
    }
}

pub struct Client {
    endpoint: Endpoint,
    token: String,
    tls: Arc<rustls::ClientConfig>,
    /// The pinned fingerprint `tls` checks, if any, and how to re-pin (for the error).
    pin: Option<(Arc<Pin>, String)>,
}

impl Client {
    pub fn new(endpoint: Endpoint, token: String, tls: Arc<rustls::ClientConfig>) -> Client {
        Client {
            endpoint,
            token,
            tls,
            pin: None,
        }
    }

    /// A client whose `tls` checks `pin`; `hint` tells the user how to pin anew when the
    /// server's certificate changed.
    pub fn with_pin(mut self, pin: Arc<Pin>, hint: String) -> Client {
        self.pin = Some((pin, hint));
        self
    }

    pub async fn call(&self, name: &str, params: Vec<Value>) -> Result<Value, CallError> {
        tokio::time::timeout(CALL_TIMEOUT, self.call_inner(name, params))
            .await
            .unwrap_or(Err(CallError::Timeout))
    }

    /// `HOST:PORT` of the API, for messages.
    pub fn target(&self) -> String {
        format!("{}:{}", self.endpoint.host, self.endpoint.port)
    }

    /// A TLS connection to the API with the server checked as the user asked (for a request
    /// of one's own, e.g. a WebSocket upgrade: see [`Client::request`]).
    pub async fn tls_stream(
        &self,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, CallError> {
        let ep = &self.endpoint;
        let target = format!("{}:{}", ep.host, ep.port);
        let connect_err = |message: String| CallError::Connect {
            target: target.clone(),
            message,
        };
        let tcp = TcpStream::connect((ep.host.as_str(), ep.port))
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        let server_name = ServerName::try_from(ep.host.clone())
            .map_err(|_| connect_err("not a valid host name".into()))?;
        tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(server_name, tcp)
            .await
            .map_err(|e| match &self.pin {
                Some((pin, hint)) => match pin.mismatch() {
                    Some(presented) => CallError::CertificateChanged {
                        target: target.clone(),
                        expected: pin.expected.clone(),
                        presented: presented.clone(),
                        hint: hint.replace("{presented}", &presented),
                    },
                    None => connect_err(format!("TLS: {e}")),
                },
                None => connect_err(format!("TLS: {e}")),
            })
    }

    /// A TLS connection to the API, ready for one request with bodies of type `B`.
    pub(crate) async fn connect<B>(&self) -> Result<http1::SendRequest<B>, CallError>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let ep = &self.endpoint;
        let connect_err = |message: String| CallError::Connect {
            target: format!("{}:{}", ep.host, ep.port),
            message,
        };
        let tls = self.tls_stream().await?;
        let (send, conn) = http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        tokio::spawn(conn);
        Ok(send)
    }

    /// A request to `path` with the token, Host and User-Agent set.
    pub fn request(&self, method: hyper::Method, path: &str) -> hyper::http::request::Builder {
        let ep = &self.endpoint;
        let auth =
            base64::engine::general_purpose::STANDARD.encode(format!("cairnctl:{}", self.token));
        let host_header = if ep.host.contains(':') {
            format!("[{}]:{}", ep.host, ep.port)
        } else {
            format!("{}:{}", ep.host, ep.port)
        };
        hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, host_header)
            .header(hyper::header::AUTHORIZATION, format!("Basic {auth}"))
            .header(
                hyper::header::USER_AGENT,
                concat!("cairnctl/", env!("CARGO_PKG_VERSION")),
            )
    }

    /// `PUT /uploads/NAME` with `body` (`len` bytes); the server's answer (JSON) on 201.
    /// No overall deadline: an upload takes as long as its size needs, and the server drops
    /// one that stalls.
    pub async fn upload<B>(&self, name: &str, body: B, len: u64) -> Result<String, CallError>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let mut send = tokio::time::timeout(CALL_TIMEOUT, self.connect())
            .await
            .unwrap_or(Err(CallError::Timeout))?;
        let req = self
            .request(hyper::Method::PUT, &format!("/uploads/{name}"))
            .header(hyper::header::CONTENT_TYPE, "application/octet-stream")
            .header(hyper::header::CONTENT_LENGTH, len)
            .body(body)
            .map_err(|e| CallError::Response(e.to_string()))?;
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| CallError::Response(format!("sending the upload: {e}")))?;
        let status = resp.status();
        let bytes = Limited::new(resp.into_body(), 64 << 10)
            .collect()
            .await
            .map_err(|e| CallError::Response(format!("reading the answer: {e}")))?
            .to_bytes();
        let text = String::from_utf8_lossy(&bytes).trim().to_string();
        match status {
            StatusCode::CREATED => Ok(text),
            StatusCode::UNAUTHORIZED => Err(CallError::Unauthorized),
            status => Err(CallError::Http { status, body: text }),
        }
    }

    async fn call_inner(&self, name: &str, params: Vec<Value>) -> Result<Value, CallError> {
        let ep = &self.endpoint;
        let connect_err = |message: String| CallError::Connect {
            target: format!("{}:{}", ep.host, ep.port),
            message,
        };
        let mut send = self.connect().await?;
        let body = xmlrpc::write_call(&MethodCall {
            name: name.to_string(),
            params,
        });
        let req = self
            .request(hyper::Method::POST, &ep.path)
            .header(hyper::header::CONTENT_TYPE, "text/xml")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| connect_err(e.to_string()))?;
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        let status = resp.status();
        let bytes = Limited::new(resp.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| CallError::Response(format!("reading the body: {e}")))?
            .to_bytes();
        if status == StatusCode::UNAUTHORIZED {
            return Err(CallError::Unauthorized);
        }
        let text = String::from_utf8_lossy(&bytes);
        if status != StatusCode::OK {
            let body = text.trim().chars().take(200).collect();
            return Err(CallError::Http { status, body });
        }
        let limits = xmlrpc::Limits {
            max_depth: 64,
            max_elements: 4_000_000,
        };
        match xmlrpc::parse_response_with(&text, &limits)
            .map_err(|e| CallError::Response(e.to_string()))?
        {
            MethodResponse::Ok(v) => Ok(v),
            MethodResponse::Fault { code, message } => Err(CallError::Fault { code, message }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let e = Endpoint::parse("https://host.example:8443").unwrap();
        assert_eq!(
            e,
            Endpoint {
                host: "host.example".into(),
                port: 8443,
                path: "/RPC2".into()
            }
        );
        let e = Endpoint::parse("https://[::1]/api").unwrap();
        assert_eq!(
            e,
            Endpoint {
                host: "::1".into(),
                port: 443,
                path: "/api".into()
            }
        );
        assert!(Endpoint::parse("http://host").is_err());
        assert!(Endpoint::parse("host:8443").is_err());
        assert!(Endpoint::parse("https://u:p@host").is_err());
    }

    #[test]
    fn fault_display() {
        let e = CallError::Fault {
            code: 106,
            message: "netd is restarting".into(),
        };
        assert_eq!(e.to_string(), "busy (106): netd is restarting");
        let e = CallError::Fault {
            code: 7,
            message: "x".into(),
        };
        assert_eq!(e.to_string(), "fault (7): x");
    }
}
