//! Downloads the appliance makes itself: `template.import` from an `http://` or `https://` URL.
//! apid is the network-facing daemon, so it fetches; the file goes through the same writer as
//! a streamed upload ([`crate::upload::Uploads::receive`]: pieces, sha256 on the way, whole or
//! nothing, the state filesystem's reserve kept) and the method then names its path.
//!
//! Bounded: the upload's size limit and stall timeout, [`CONNECT_TIMEOUT`] for the connection
//! and the answer's head, [`MAX_REDIRECTS`] redirects, a URL of at most [`MAX_URL`] bytes.
//! https is checked against the Mozilla roots (webpki-roots). Progress goes to the task the
//! download runs in, and a cancelled task stops it, its partial file removed.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming};
use hyper_util::rt::TokioIo;
use model::fault::FaultCode;
use rustls_pki_types::ServerName;

use crate::methods::Fault;
use crate::upload::{UploadError, Uploads};

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
pub const MAX_REDIRECTS: usize = 5;
pub use model::url::MAX_URL;
/// The upload slot downloads are counted under (they have no client of their own).
const SELF: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0}")]
    Url(String),
    #[error("{url}: {message}")]
    Net { url: String, message: String },
    #[error("{url}: the server answered {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: {error}")]
    Store { url: String, error: UploadError },
    #[error("the download was cancelled")]
    Cancelled,
}

impl From<FetchError> for Fault {
    fn from(e: FetchError) -> Fault {
        let code = match &e {
            FetchError::Url(_) => FaultCode::BadParams,
            FetchError::Status {
                status: 404 | 410, ..
            } => FaultCode::NotFound,
            FetchError::Net { .. } | FetchError::Status { .. } => FaultCode::Busy,
            FetchError::Store { error, .. } => match error {
                UploadError::Digest { .. } => FaultCode::BadParams,
                UploadError::TooLarge => FaultCode::TooLarge,
                UploadError::Io(_) => FaultCode::Internal,
                _ => FaultCode::Busy,
            },
            FetchError::Cancelled => FaultCode::Conflict,
        };
        Fault::new(code, e.to_string())
    }
}

/// The URL type both downloaders share (init's update bundles, these).
pub use model::url::HttpUrl as Url;

/// Whether `arg` names something to download.
pub fn is_url(arg: &str) -> bool {
    arg.starts_with("http://") || arg.starts_with("https://")
}

fn tls() -> Arc<rustls::ClientConfig> {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|b| b.with_root_certificates(roots).with_no_client_auth())
                // ring's default provider supports the default versions: not reached.
                .unwrap_or_else(|_| {
                    rustls::ClientConfig::builder()
                        .with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth()
                });
            Arc::new(config)
        })
        .clone()
}

/// The answer's head for GET `url`, its body left to read.
async fn get_once(url: &Url) -> Result<hyper::Response<Incoming>, FetchError> {
    let net = |message: String| FetchError::Net {
        url: url.to_string(),
        message,
    };
    let head = async {
        let tcp = tokio::net::TcpStream::connect((url.host.as_str(), url.port))
            .await
            .map_err(|e| net(format!("connect: {e}")))?;
        let request = hyper::Request::builder()
            .uri(url.path.as_str())
            .header(hyper::header::HOST, url.host_header())
            .header(
                hyper::header::USER_AGENT,
                concat!("cairn-apid/", env!("CARGO_PKG_VERSION")),
            )
            .body(http_body_util::Empty::<Bytes>::new())
            .map_err(|e| FetchError::Url(format!("{url}: {e}")))?;
        if url.https {
            let name = ServerName::try_from(url.host.clone())
                .map_err(|_| net("not a valid host name for TLS".into()))?;
            let stream = tokio_rustls::TlsConnector::from(tls())
                .connect(name, tcp)
                .await
                .map_err(|e| net(format!("TLS: {e}")))?;
            send(TokioIo::new(stream), request, &net).await
        } else {
            send(TokioIo::new(tcp), request, &net).await
        }
    };
    tokio::time::timeout(CONNECT_TIMEOUT, head)
        .await
        .map_err(|_| net(format!("no answer within {} s", CONNECT_TIMEOUT.as_secs())))?
}

async fn send<S>(
    io: S,
    request: hyper::Request<http_body_util::Empty<Bytes>>,
    net: &impl Fn(String) -> FetchError,
) -> Result<hyper::Response<Incoming>, FetchError>
where
    S: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| net(e.to_string()))?;
    // The connection is driven here; it ends when the response's body is dropped.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
        .send_request(request)
        .await
        .map_err(|e| net(e.to_string()))
}

/// GETs `url`, following up to [`MAX_REDIRECTS`] redirects, to a 200 answer.
async fn get(url: &str) -> Result<(Url, hyper::Response<Incoming>), FetchError> {
    let mut url = Url::parse(url).map_err(FetchError::Url)?;
    for _ in 0..=MAX_REDIRECTS {
        let resp = get_once(&url).await?;
        let status = resp.status().as_u16();
        if matches!(status, 301 | 302 | 303 | 307 | 308) {
            let location = resp
                .headers()
                .get(hyper::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .ok_or(FetchError::Status {
                    url: url.to_string(),
                    status,
                })?;
            url = url.join(location).map_err(FetchError::Url)?;
            continue;
        }
        if status != 200 {
            return Err(FetchError::Status {
                url: url.to_string(),
                status,
            });
        }
        return Ok((url, resp));
    }
    Err(FetchError::Net {
        url: url.to_string(),
        message: format!("more than {MAX_REDIRECTS} redirects"),
    })
}

/// A body that counts what passes through it into the task's progress.
struct Counted<B> {
    inner: B,
    done: Arc<AtomicU64>,
}

impl<B: Body<Data = Bytes> + Unpin> Body for Counted<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.done.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        polled
    }
}

/// A downloaded file, removed when dropped (the method that asked for it has used it).
pub struct Fetched {
    pub path: PathBuf,
    pub size: u64,
    pub sha256: String,
}

impl Drop for Fetched {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Downloads `url` into `uploads` when its bytes have `sha256` (hex); reports progress to the
/// calling task and stops (nothing kept) when it is cancelled.
pub async fn fetch(uploads: &Uploads, url: &str, sha256: &str) -> Result<Fetched, FetchError> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "fetch-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let task = crate::task::current();
    let work = async {
        let (url, resp) = get(url).await?;
        let total = resp
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let done = Arc::new(AtomicU64::new(0));
        let body = Counted {
            inner: resp.into_body(),
            done: done.clone(),
        };
        let store = uploads.receive(&name, SELF, total, Some(sha256), body);
        let report = async {
            let Some(task) = &task else {
                return std::future::pending().await;
            };
            loop {
                task.progress(done.load(Ordering::Relaxed), total.unwrap_or(0), "bytes");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        };
        let stored = tokio::select! {
            stored = store => stored,
            () = report => unreachable!("reports until the download ends"),
        };
        let stored = stored.map_err(|error| FetchError::Store {
            url: url.to_string(),
            error,
        })?;
        if let Some(task) = &task {
            task.progress(stored.size, stored.size, "bytes");
        }
        let path = uploads
            .resolve(&format!("{}{}", crate::upload::SCHEME, stored.name))
            .and_then(Result::ok)
            .ok_or_else(|| FetchError::Store {
                url: url.to_string(),
                error: UploadError::Missing(stored.name.clone()),
            })?;
        tracing::info!(%url, size = stored.size, "downloaded");
        Ok(Fetched {
            path,
            size: stored.size,
            sha256: stored.sha256,
        })
    };
    match &task {
        // Dropping the download removes its partial file (the writer's part).
        Some(task) => tokio::select! {
            fetched = work => fetched,
            () = task.cancelled() => Err(FetchError::Cancelled),
        },
        None => work.await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-connection-at-a-time HTTP/1.1 server on loopback: `/file` answers `body` in
    /// 64 KiB pieces `pause` apart, `/moved` redirects to it, `/loop` to itself, anything
    /// else 404. Answers its base URL.
    async fn serve(body: Vec<u8>, pause: Duration) -> String {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let body = Arc::new(body);
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let body = body.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if sock.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&head).to_string();
                    let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                    let answer = match path.as_str() {
                        "/file" => {
                            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len())
                        }
                        "/moved" => {
                            "HTTP/1.1 302 Found\r\nLocation: /file\r\nContent-Length: 0\r\n\r\n"
                                .into()
                        }
                        "/loop" => {
                            "HTTP/1.1 301 Moved\r\nLocation: /loop\r\nContent-Length: 0\r\n\r\n"
                                .into()
                        }
                        _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".into(),
                    };
                    if sock.write_all(answer.as_bytes()).await.is_err() || path != "/file" {
                        return;
                    }
                    for piece in body.chunks(64 << 10) {
                        if sock.write_all(piece).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(pause).await;
                    }
                });
            }
        });
        format!("http://{addr}")
    }

    fn scratch(tag: &str) -> (PathBuf, Uploads) {
        let dir = std::env::temp_dir().join(format!("cairn-fetch-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let uploads = Uploads::new(&dir, Duration::from_secs(10)).unwrap();
        (dir, uploads)
    }

    fn files(dir: &std::path::Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect()
    }

    fn sha(data: &[u8]) -> String {
        use sha2::Digest as _;
        model::hex(&sha2::Sha256::digest(data))
    }

    #[tokio::test]
    async fn a_download_is_stored_whole_checked_and_removed_after_use() {
        let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let base = serve(body.clone(), Duration::ZERO).await;
        let (dir, uploads) = scratch("ok");
        let fetched = fetch(&uploads, &format!("{base}/moved"), &sha(&body))
            .await
            .unwrap();
        assert_eq!(std::fs::read(&fetched.path).unwrap(), body);
        assert_eq!(
            (fetched.size, fetched.sha256.clone()),
            (300_000, sha(&body))
        );
        drop(fetched);
        assert!(files(&dir).is_empty(), "used, then removed");

        let wrong = fetch(&uploads, &format!("{base}/file"), &"0".repeat(64)).await;
        let e = wrong.err().unwrap();
        assert!(
            matches!(
                &e,
                FetchError::Store {
                    error: UploadError::Digest { .. },
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(Fault::from(e).code, FaultCode::BadParams);
        assert!(files(&dir).is_empty(), "nothing kept of a mismatch");

        let missing = fetch(&uploads, &format!("{base}/nope"), &sha(&body)).await;
        assert_eq!(
            Fault::from(missing.err().unwrap()).code,
            FaultCode::NotFound
        );
        let looped = fetch(&uploads, &format!("{base}/loop"), &sha(&body)).await;
        let e = looped.err().unwrap();
        assert!(e.to_string().contains("redirects"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_cancelled_download_stops_and_leaves_nothing() {
        // 64 KiB every 100 ms: 6 s for the whole, cancelled long before.
        let body = vec![7u8; 60 * (64 << 10)];
        let base = serve(body.clone(), Duration::from_millis(100)).await;
        let (dir, uploads) = scratch("cancel");
        let uploads = Arc::new(uploads);
        let tasks = Arc::new(crate::task::Tasks::new());
        let (u, url, want) = (uploads.clone(), format!("{base}/file"), sha(&body));
        let id = tasks
            .start(
                "template.import",
                &[model::xmlrpc::Value::String("t".into())],
                move || {
                    Box::pin(async move {
                        fetch(&u, &url, &want).await?;
                        Ok(model::xmlrpc::Value::Bool(true))
                    })
                },
                Arc::new(|_, _| Box::pin(async { Ok(model::xmlrpc::Value::Bool(true)) })),
            )
            .unwrap();
        let mut progress = None;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            progress = tasks.info(&id).unwrap().progress;
            if progress.as_ref().is_some_and(|p| p.done > 0) {
                break;
            }
        }
        let progress = progress.expect("the download reports progress");
        assert_eq!(
            (progress.total, progress.unit.as_str()),
            (body.len() as u64, "bytes")
        );
        assert!(!files(&dir).is_empty(), "a partial file while it downloads");
        assert!(tasks.cancel(&id).unwrap());
        let info = tasks.wait(&id, Duration::from_secs(5)).await.unwrap();
        assert_eq!(info.state, model::api::task::TaskState::Cancelled);
        assert!(
            files(&dir).is_empty(),
            "the partial file went: {:?}",
            files(&dir)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_mozilla_roots_make_a_client() {
        let config = tls();
        assert!(!webpki_roots::TLS_SERVER_ROOTS.is_empty());
        assert!(Arc::strong_count(&config) >= 2);
    }
}
