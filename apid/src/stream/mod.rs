//! WebSocket streams on the HTTPS port (docs/api.md, "Streams"): `GET /streams/exec` (a
//! command on a pty in a container) and `GET /streams/console` (a guest's console). http.rs
//! authenticates the request and answers the upgrade; the connection then comes here. A stream
//! is a WebSocket bridged to a file descriptor a daemon handed apid over D-Bus ([`bridge`]):
//! BINARY frames carry bytes both ways, TEXT frames JSON control (`model::stream`).

pub mod console;
pub mod exec;
pub mod ws;

use std::future::Future;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures_util::StreamExt as _;
use model::fault::FaultCode;
use model::stream::{CHUNK, Control};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::bus::Bus;

/// The streams served, by path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Exec,
    Console,
}

impl Kind {
    /// For the answer to an unknown `/streams/…` path.
    pub const PATHS: &str = "GET /streams/exec, GET /streams/console";

    pub fn from_path(path: &str) -> Option<Kind> {
        match path {
            model::stream::EXEC_PATH => Some(Kind::Exec),
            model::stream::CONSOLE_PATH => Some(Kind::Console),
            _ => None,
        }
    }
}

/// A stream's first message must arrive within this after the upgrade.
const FIRST_MESSAGE_WITHIN: Duration = Duration::from_secs(10);

/// Reads a stream's first message, a TEXT frame holding `what` (pings before it skipped).
async fn first_text<S>(ws: &mut WebSocketStream<S>, what: &str) -> Result<String, Fault>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let bad = |m: String| Fault::new(FaultCode::BadParams, m);
    loop {
        let msg = tokio::time::timeout(FIRST_MESSAGE_WITHIN, ws.next())
            .await
            .map_err(|_| {
                bad(format!(
                    "the first message (a TEXT frame with {what}) did not come within 10 s"
                ))
            })?;
        match msg {
            Some(Ok(Message::Text(text))) => return Ok(text.as_str().to_string()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(_)) => {
                return Err(bad(format!(
                    "the first message must be a TEXT frame with {what}"
                )));
            }
            Some(Err(_)) | None => {
                return Err(bad(format!("the connection ended before {what}")));
            }
        }
    }
}

/// A connection's note that its request was answered with 101 (set by the request's handler,
/// taken by the connection once hyper hands the stream back).
#[derive(Debug, Clone, Default)]
pub struct Upgrade(std::sync::Arc<std::sync::Mutex<Option<Kind>>>);

impl Upgrade {
    pub fn set(&self, kind: Kind) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(kind);
    }

    pub fn take(&self) -> Option<Kind> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Serves one stream on an upgraded connection (`read`: bytes hyper had read past the
/// request). Returns when the stream is over; the connection is then dropped.
pub async fn serve<S>(kind: Kind, io: S, read: Vec<u8>, bus: Bus)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut socket = ws::server(io, read).await;
    match kind {
        Kind::Exec => exec::serve(&mut socket, &bus).await,
        Kind::Console => console::serve(&mut socket, &bus).await,
    }
}

/// A refusal sent to the client as `{"error":{code,message}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub code: FaultCode,
    pub message: String,
}

impl Fault {
    pub fn new(code: FaultCode, message: impl Into<String>) -> Fault {
        Fault {
            code,
            message: message.into(),
        }
    }
}

/// What a control message does, as a future owning what it needs.
pub type ControlFuture = Pin<Box<dyn Future<Output = Result<(), Fault>> + Send>>;

/// How a [`bridge`] ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended<T> {
    /// `finished` resolved, and the output that followed was sent.
    Finished(T),
    /// The descriptor reached its end (a pty master whose slave side is all closed, a socket
    /// the daemon shut).
    FdClosed,
    /// The client closed, went away, or stayed silent past [`ws::IDLE_LIMIT`].
    ClientGone,
    /// The client sent something wrong, or a control message failed: the caller sends it as
    /// `{"error":…}` and closes.
    Refused(Fault),
}

/// How long output is still forwarded after `finished` resolved: what the command wrote just
/// before it ended is in the pty already; a background child holding the pty open must not
/// hold the stream.
const DRAIN_AFTER_FINISH: Duration = Duration::from_millis(100);

/// Bridges `ws` and `fd` until one side ends: BINARY frames from the client are written to
/// `fd` (the next frame is read only once the last is written, so a guest that does not read
/// holds the client, not apid's memory), what `fd` yields goes out in BINARY frames of at most
/// [`CHUNK`] bytes, TEXT frames are parsed as [`Control`] and given to `on_control` with the
/// descriptor (e.g. to resize a pty). `finished` is the other side's end (exec: the command's
/// exit code); it may never resolve (`std::future::pending()`).
///
/// The descriptor is made non-blocking and closed on return.
pub async fn bridge<S, C, F, T>(
    ws: &mut WebSocketStream<S>,
    fd: OwnedFd,
    mut on_control: C,
    finished: F,
) -> Ended<T>
where
    S: AsyncRead + AsyncWrite + Unpin,
    C: FnMut(Control, BorrowedFd<'_>) -> ControlFuture,
    F: Future<Output = T>,
{
    if let Err(e) = set_nonblocking(&fd) {
        return Ended::Refused(Fault::new(
            FaultCode::Internal,
            format!("preparing the stream's descriptor: {e}"),
        ));
    }
    // SAFETY: the OwnedFd owns its descriptor and the AsyncFd owns the OwnedFd, lending it out
    // only by reference, so the descriptor stays open and the same while it is registered.
    let fd = match unsafe { AsyncFd::register(fd) } {
        Ok(fd) => fd,
        Err(e) => {
            return Ended::Refused(Fault::new(
                FaultCode::Internal,
                format!("watching the stream's descriptor: {e}"),
            ));
        }
    };
    let mut finished = std::pin::pin!(finished);
    let mut result: Option<T> = None;
    let mut fd_open = true;
    // Input taken from the client and not yet written to fd.
    let mut input = Bytes::new();
    let mut buf = vec![0u8; CHUNK];
    let mut heard = tokio::time::Instant::now();
    let mut ping = tokio::time::interval_at(heard + ws::PING_EVERY, ws::PING_EVERY);
    let drain = tokio::time::sleep(Duration::MAX / 4);
    let mut drain = std::pin::pin!(drain);
    loop {
        tokio::select! {
            msg = ws.next(), if input.is_empty() => {
                heard = tokio::time::Instant::now();
                let msg = match msg {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "stream: the client's side failed");
                        return Ended::ClientGone;
                    }
                    None => return Ended::ClientGone,
                };
                match msg {
                    Message::Binary(data) => input = data,
                    Message::Text(text) => {
                        let control = match Control::parse(text.as_str()) {
                            Ok(c) => c,
                            Err(e) => return Ended::Refused(Fault::new(FaultCode::BadParams, e.0)),
                        };
                        if let Err(f) = on_control(control, fd.get_ref().as_fd()).await {
                            return Ended::Refused(f);
                        }
                    }
                    Message::Close(_) => return Ended::ClientGone,
                    // tungstenite answers pings itself; a pong only proves the client is there.
                    Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                }
            }
            ready = fd.writable(), if !input.is_empty() && fd_open => {
                let Ok(mut ready) = ready else { return Ended::FdClosed };
                match ready.try_io(|fd| raw_write(fd.get_ref().as_fd(), &input)) {
                    Ok(Ok(n)) => input.advance(n),
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "stream: writing to the descriptor failed");
                        fd_open = false;
                        input.clear();
                    }
                    Err(_would_block) => {}
                }
            }
            ready = fd.readable(), if fd_open => {
                let Ok(mut ready) = ready else { return Ended::FdClosed };
                match ready.try_io(|fd| raw_read(fd.get_ref().as_fd(), &mut buf)) {
                    Ok(Ok(0)) | Ok(Err(_)) => {
                        // EOF, or EIO from a pty master whose slave side is all closed.
                        fd_open = false;
                        if result.is_none() {
                            return Ended::FdClosed;
                        }
                    }
                    Ok(Ok(n)) => {
                        let frame = Message::Binary(Bytes::copy_from_slice(&buf[..n]));
                        if !send(ws, frame).await {
                            return Ended::ClientGone;
                        }
                        if result.is_some() {
                            drain.as_mut().reset(tokio::time::Instant::now() + DRAIN_AFTER_FINISH);
                        }
                    }
                    Err(_would_block) => {}
                }
            }
            t = &mut finished, if result.is_none() => {
                result = Some(t);
                drain.as_mut().reset(tokio::time::Instant::now() + DRAIN_AFTER_FINISH);
            }
            () = &mut drain, if result.is_some() => break,
            _ = ping.tick() => {
                if heard.elapsed() >= ws::IDLE_LIMIT {
                    tracing::debug!("stream: the client stayed silent; dropped");
                    return Ended::ClientGone;
                }
                if heard.elapsed() >= ws::PING_EVERY && !send(ws, Message::Ping(Bytes::new())).await {
                    return Ended::ClientGone;
                }
            }
        }
        if !fd_open && let Some(t) = result.take() {
            return Ended::Finished(t);
        }
    }
    match result {
        Some(t) => Ended::Finished(t),
        // Not reached: the loop breaks only once `finished` resolved.
        None => Ended::FdClosed,
    }
}

async fn send<S>(ws: &mut WebSocketStream<S>, msg: Message) -> bool
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    use futures_util::SinkExt as _;
    matches!(
        tokio::time::timeout(ws::IDLE_LIMIT, ws.send(msg)).await,
        Ok(Ok(()))
    )
}

fn set_nonblocking(fd: &OwnedFd) -> std::io::Result<()> {
    let raw = fd.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own, with no pointers.
    let flags = unsafe { libc::fcntl(raw, libc::F_GETFL) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn raw_read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> std::io::Result<usize> {
    // SAFETY: read(2) into a buffer we own, of its length.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    usize::try_from(n).map_err(|_| std::io::Error::last_os_error())
}

fn raw_write(fd: BorrowedFd<'_>, data: &[u8]) -> std::io::Result<usize> {
    // SAFETY: write(2) from a slice we hold, of its length.
    let n = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
    usize::try_from(n).map_err(|_| std::io::Error::last_os_error())
}

#[cfg(test)]
mod tests;
