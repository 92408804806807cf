//! Files into and out of containers on the API's HTTPS port (`cairnctl ct push|pull`):
//! `PUT /ct/NAME/files?path=/abs/path[&mode=0644][&uid=0][&gid=0]` with the file as its body,
//! and `GET /ct/NAME/files?path=/abs/path`, whose answer carries `X-Cairn-Mode: 0644`.
//!
//! apid never resolves a container path: hostd opens the file inside the container's root and
//! hands over the descriptor (`Host1.FileOpenRead`/`FileOpenWrite`), and apid only moves bytes
//! between it and the connection, a piece at a time in both directions. A written file shows
//! in the container only once all of it arrived (`FileCommit`); anything else aborts it.
//! Streams take one of the uploads' slots (`crate::upload`: 4 at once, 2 per client) and are
//! dropped when they stall as long as an upload may.
//!
//! Refusals are plain text with the fault code of model/src/fault.rs in `X-Cairn-Fault`
//! (104: no such container or file; 102: a bad path, a directory, a path that leaves the
//! container's root filesystem).

use std::convert::Infallible;
use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use model::fault::FaultCode;
use sha2::{Digest, Sha256};

use crate::bus::{Bus, BusError, CALL_TIMEOUT};
use crate::methods::Api;

pub const PATH_PREFIX: &str = "/ct/";
/// The answer's header with the file's permission bits (octal), and the fault's code.
pub const MODE_HEADER: &str = "x-cairn-mode";
pub const FAULT_HEADER: &str = "x-cairn-fault";
/// Bytes gathered before one write to the file, and the size of each piece read from it.
const PIECE: usize = 1 << 20;
const READ_PIECE: usize = 256 << 10;
/// Syncing and renaming a large file into place.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(25);

/// Any answer's body: whole (`Full`) or streamed from a file.
pub type AnyBody = UnsyncBoxBody<Bytes, std::io::Error>;

pub fn full(body: Full<Bytes>) -> AnyBody {
    body.map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

/// `body`, holding `guard` until it is dropped: the connection counts as busy until the last
/// byte of a streamed answer is out, not just until the answer began.
pub fn guarded<G: Send + Unpin + 'static>(body: AnyBody, guard: G) -> AnyBody {
    Guarded {
        body,
        _guard: guard,
    }
    .boxed_unsync()
}

/// A body and what it holds. Unlike `map_frame`, it keeps the body's size hint, so a whole
/// answer still goes out with its Content-Length rather than chunked.
struct Guarded<G> {
    body: AnyBody,
    _guard: G,
}

impl<G: Unpin> hyper::body::Body for Guarded<G> {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// A refusal: status, fault code, message.
#[derive(Debug)]
struct Refused(StatusCode, FaultCode, String);

impl Refused {
    fn bad(message: impl Into<String>) -> Refused {
        Refused(
            StatusCode::BAD_REQUEST,
            FaultCode::BadParams,
            message.into(),
        )
    }

    fn response(self) -> Response<AnyBody> {
        let Refused(status, code, message) = self;
        let mut resp = Response::new(full(Full::new(Bytes::from(format!("{message}\n")))));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if let Ok(v) = HeaderValue::from_str(&code.code().to_string()) {
            h.insert(FAULT_HEADER, v);
        }
        // What the client still sends of a refused body is not read: the connection ends.
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        resp
    }
}

impl From<BusError> for Refused {
    fn from(e: BusError) -> Refused {
        let code = e.fault_code();
        let status = match code {
            FaultCode::NotFound => StatusCode::NOT_FOUND,
            FaultCode::BadParams => StatusCode::BAD_REQUEST,
            FaultCode::Conflict => StatusCode::CONFLICT,
            FaultCode::Busy => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Refused(status, code, e.to_string())
    }
}

impl From<crate::upload::UploadError> for Refused {
    fn from(e: crate::upload::UploadError) -> Refused {
        Refused(
            StatusCode::SERVICE_UNAVAILABLE,
            FaultCode::Busy,
            e.to_string(),
        )
    }
}

/// `%XX` and `+` decoded; None when not UTF-8 or a `%` is not followed by two hex digits.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// What a request asks for.
#[derive(Debug, PartialEq)]
pub struct FileRequest {
    pub ct: String,
    pub path: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Parses `/ct/NAME/files` and its query.
pub fn parse(uri_path: &str, query: Option<&str>) -> Result<FileRequest, String> {
    let usage = "expected /ct/NAME/files?path=/abs/path[&mode=0644&uid=0&gid=0]";
    let ct = uri_path
        .strip_prefix(PATH_PREFIX)
        .and_then(|r| r.strip_suffix("/files"))
        .filter(|n| model::ct::is_ct_name(n))
        .ok_or_else(|| format!("not a container's files: {uri_path:?}; {usage}"))?;
    let mut req = FileRequest {
        ct: ct.to_string(),
        path: String::new(),
        mode: 0o644,
        uid: 0,
        gid: 0,
    };
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value =
            percent_decode(value).ok_or_else(|| format!("{key}: not percent-encoded UTF-8"))?;
        let number = |radix| {
            u32::from_str_radix(&value, radix)
                .map_err(|_| format!("{key}={value:?}: not a number (base {radix})"))
        };
        match key {
            "path" => req.path = value,
            "mode" => req.mode = number(8)?,
            "uid" => req.uid = number(10)?,
            "gid" => req.gid = number(10)?,
            _ => return Err(format!("unknown parameter {key:?}; {usage}")),
        }
    }
    if req.path.is_empty() {
        return Err(format!("path is missing; {usage}"));
    }
    if req.mode > 0o7777 {
        return Err(format!(
            "mode {:o}: permission bits only (0 to 7777)",
            req.mode
        ));
    }
    Ok(req)
}

/// `PUT|GET /ct/NAME/files` of an authorized client.
pub async fn serve(api: &Api, req: Request<Incoming>, peer: SocketAddr) -> Response<AnyBody> {
    let result = match parse(req.uri().path(), req.uri().query()) {
        Err(e) => Err(Refused::bad(e)),
        Ok(file) => match *req.method() {
            Method::PUT => push(api, file, req.into_body(), peer).await,
            Method::GET => pull(api, file, peer).await,
            _ => Err(Refused(
                StatusCode::METHOD_NOT_ALLOWED,
                FaultCode::BadParams,
                "method not allowed: PUT a file into a container, GET it out".into(),
            )),
        },
    };
    result.unwrap_or_else(|refused| {
        tracing::info!(%peer, error = %refused.2, "file transfer refused");
        refused.response()
    })
}

fn uploads(api: &Api) -> Result<&crate::upload::Uploads, Refused> {
    api.uploads.as_deref().ok_or_else(|| {
        Refused(
            StatusCode::NOT_FOUND,
            FaultCode::NotFound,
            "this API keeps no uploads, so it moves no files".into(),
        )
    })
}

/// An open write at hostd: aborted when dropped before its commit (a client that went away
/// mid-body drops the request's future).
struct Pending {
    bus: Bus,
    token: Option<String>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(token) = self.token.take() {
            let bus = self.bus.clone();
            tokio::spawn(async move {
                let t = token.clone();
                let aborted = bus
                    .hostd_call(CALL_TIMEOUT, |h| async move { h.file_abort(&t).await })
                    .await;
                if let Err(e) = aborted {
                    tracing::warn!(token, error = %e, "cannot abort a file write");
                }
            });
        }
    }
}

/// Writes `piece` to `file` off the async threads; gives the buffer back, emptied.
async fn write_piece(file: &Arc<std::fs::File>, mut piece: Vec<u8>) -> Result<Vec<u8>, Refused> {
    let file = file.clone();
    tokio::task::spawn_blocking(move || {
        (&*file).write_all(&piece)?;
        piece.clear();
        Ok(piece)
    })
    .await
    .map_err(|e| {
        Refused(
            StatusCode::INTERNAL_SERVER_ERROR,
            FaultCode::Internal,
            e.to_string(),
        )
    })?
    .map_err(|e: std::io::Error| {
        let (status, code) = match e.raw_os_error() {
            Some(libc::ENOSPC | libc::EDQUOT) => {
                (StatusCode::INSUFFICIENT_STORAGE, FaultCode::Internal)
            }
            _ => (StatusCode::INTERNAL_SERVER_ERROR, FaultCode::Internal),
        };
        Refused(status, code, format!("writing the file: {e}"))
    })
}

async fn push(
    api: &Api,
    file: FileRequest,
    mut body: Incoming,
    peer: SocketAddr,
) -> Result<Response<AnyBody>, Refused> {
    let uploads = uploads(api)?;
    let _slot = uploads.hold_stream(peer.ip())?;
    let stall = uploads.stall();
    let (ct, path) = (file.ct.clone(), file.path.clone());
    let (fd, token) = api
        .bus
        .hostd_call(CALL_TIMEOUT, |h| async move {
            h.file_open_write(&file.ct, &file.path, file.mode, file.uid, file.gid)
                .await
        })
        .await?;
    let mut pending = Pending {
        bus: api.bus.clone(),
        token: Some(token.clone()),
    };
    let out = Arc::new(std::fs::File::from(std::os::fd::OwnedFd::from(fd)));
    let mut hash = Sha256::new();
    let mut piece = Vec::with_capacity(PIECE);
    let mut size = 0u64;
    loop {
        let frame = match tokio::time::timeout(stall, body.frame()).await {
            Err(_) => {
                return Err(Refused(
                    StatusCode::REQUEST_TIMEOUT,
                    FaultCode::BadParams,
                    format!(
                        "the file stalled: nothing arrived for {} s",
                        stall.as_secs()
                    ),
                ));
            }
            Ok(None) => break,
            Ok(Some(frame)) => frame.map_err(|e| Refused::bad(format!("reading the file: {e}")))?,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        size += data.len() as u64;
        hash.update(&data);
        piece.extend_from_slice(&data);
        if piece.len() >= PIECE {
            piece = write_piece(&out, piece).await?;
        }
    }
    if !piece.is_empty() {
        write_piece(&out, piece).await?;
    }
    drop(out);
    let t = token.clone();
    let committed = api
        .bus
        .hostd_call(COMMIT_TIMEOUT, |h| async move { h.file_commit(&t).await })
        .await;
    // Committed or refused, hostd no longer holds it: nothing to abort.
    pending.token = None;
    let committed = committed?;
    let sha256 = model::hex(&hash.finalize());
    tracing::info!(ct = %ct, path = %path, size, %sha256, %peer, "file pushed");
    if committed != size {
        tracing::warn!(ct = %ct, path = %path, size, committed, "the file's size differs from what arrived");
    }
    let json = serde_json::json!({ "path": path, "size": size, "sha256": sha256 });
    let mut resp = Response::new(full(Full::new(Bytes::from(json.to_string() + "\n"))));
    *resp.status_mut() = StatusCode::CREATED;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

async fn pull(
    api: &Api,
    file: FileRequest,
    peer: SocketAddr,
) -> Result<Response<AnyBody>, Refused> {
    let uploads = uploads(api)?;
    let slot = uploads.hold_stream(peer.ip())?;
    let stall = uploads.stall();
    let (ct, path) = (file.ct.clone(), file.path.clone());
    let (fd, mode, size) = api
        .bus
        .hostd_call(CALL_TIMEOUT, |h| async move {
            h.file_open_read(&file.ct, &file.path).await
        })
        .await?;
    let src = Arc::new(std::fs::File::from(std::os::fd::OwnedFd::from(fd)));
    // A producer reads ahead by one piece; a client that takes nothing for `stall` loses it
    // (and its slot), so a reader that stops costs one connection, not a stream.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1);
    tokio::spawn(async move {
        let _slot = slot;
        let mut left = size;
        while left > 0 {
            let want = READ_PIECE.min(usize::try_from(left).unwrap_or(READ_PIECE));
            let src = src.clone();
            let read = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; want];
                let n = (&*src).read(&mut buf)?;
                buf.truncate(n);
                Ok::<_, std::io::Error>(buf)
            })
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
            let frame = match read {
                Ok(buf) if buf.is_empty() => {
                    Err(std::io::Error::other("the file shrank while it was read"))
                }
                Ok(buf) => {
                    left -= buf.len() as u64;
                    Ok(Frame::data(Bytes::from(buf)))
                }
                Err(e) => Err(e),
            };
            let failed = frame.is_err();
            if tx.send_timeout(frame, stall).await.is_err() || failed {
                tracing::info!(ct = %ct, path = %path, %peer, left, "file pull ended early");
                return;
            }
        }
        tracing::info!(ct = %ct, path = %path, size, %peer, "file pulled");
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut resp = Response::new(StreamBody::new(stream).boxed_unsync());
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    if let Ok(v) = HeaderValue::from_str(&format!("{mode:04o}")) {
        h.insert(MODE_HEADER, v);
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_name_a_container_and_an_absolute_path() {
        let r = parse(
            "/ct/web1/files",
            Some("path=%2Fusr%2Fbin%2Fx&mode=0751&uid=1000"),
        )
        .unwrap();
        assert_eq!(
            r,
            FileRequest {
                ct: "web1".into(),
                path: "/usr/bin/x".into(),
                mode: 0o751,
                uid: 1000,
                gid: 0
            }
        );
        assert_eq!(
            parse("/ct/a/files", Some("path=/a+b")).unwrap().path,
            "/a b"
        );
        assert_eq!(parse("/ct/a/files", Some("path=/x")).unwrap().mode, 0o644);
        for (p, q) in [
            ("/ct/a/files", None),
            ("/ct/a/files", Some("mode=0644")),
            ("/ct/A_B/files", Some("path=/x")),
            ("/ct/a/b/files", Some("path=/x")),
            ("/ct/a/file", Some("path=/x")),
            ("/ct/a/files", Some("path=/x&mode=9")),
            ("/ct/a/files", Some("path=/x&mode=17777")),
            ("/ct/a/files", Some("path=/x&uid=-1")),
            ("/ct/a/files", Some("path=%zz")),
            ("/ct/a/files", Some("path=/x&owner=me")),
        ] {
            assert!(parse(p, q).is_err(), "{p} {q:?}");
        }
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("%2Fa%20b+c").as_deref(), Some("/a b c"));
        assert_eq!(percent_decode("%e2%82%ac").as_deref(), Some("€"));
        assert!(percent_decode("%2").is_none());
        assert!(percent_decode("%ff").is_none());
    }
}
