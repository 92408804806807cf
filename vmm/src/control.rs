//! The VMM process's control protocol: one JSON request line per connection on its unix
//! socket (`vmm.sock` in its jail root), one JSON response line back. A snapshot request
//! carries the target directory as an SCM_RIGHTS fd, so the jailed VMM writes into a host
//! directory it cannot name.

use std::io::{BufRead, BufReader, IoSlice, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use serde::{Deserialize, Serialize};

/// Socket file name inside the jail root.
pub const SOCKET: &str = "vmm.sock";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Info,
    Pause,
    Resume,
    /// Writes the snapshot into the directory whose fd comes with the request.
    Snapshot,
    CtrlAltDel,
    ConsoleInput {
        data: String,
    },
    /// Keeps the connection: after the response line, everything the guest prints streams to
    /// it and every byte sent on it is console input, until either side closes.
    Attach,
    /// Ends the VM now.
    Stop,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub paused: bool,
    /// The refusal is for now only (the console input queue is full): try again later.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub busy: bool,
    /// KVM_CREATE_VM → end of the guest's first console line, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_line_ms: Option<f64>,
}

impl Response {
    pub fn ok() -> Response {
        Response {
            ok: true,
            ..Default::default()
        }
    }
    pub fn err(e: impl ToString) -> Response {
        Response {
            ok: false,
            error: Some(e.to_string()),
            ..Default::default()
        }
    }

    /// A refusal for now only: the same request may succeed later.
    pub fn busy(e: impl ToString) -> Response {
        Response {
            busy: true,
            ..Response::err(e)
        }
    }
}

/// Why a control request failed on the client side.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("VMM control socket {path}: {reason}")]
    Io { path: String, reason: String },
    #[error("the VMM refused: {0}")]
    Refused(String),
    /// Refused for now only (see [`Response::busy`]).
    #[error("{0}")]
    Busy(String),
}

/// Sends one request (with `fd` attached, if any) and reads the answer; blocking.
pub fn request(
    socket: &Path,
    req: &Request,
    fd: Option<BorrowedFd<'_>>,
    timeout: Duration,
) -> Result<Response, ControlError> {
    let io = |reason: String| ControlError::Io {
        path: socket.display().to_string(),
        reason,
    };
    let stream = UnixStream::connect(socket).map_err(|e| io(format!("connect: {e}")))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| io(e.to_string()))?;
    let mut line = serde_json::to_vec(req).map_err(|e| io(e.to_string()))?;
    line.push(b'\n');
    let fds = fd.map(|f| [f.as_raw_fd()]);
    let cmsgs: Vec<ControlMessage> = fds
        .as_ref()
        .map(|f| ControlMessage::ScmRights(f))
        .into_iter()
        .collect();
    sendmsg::<()>(
        stream.as_raw_fd(),
        &[IoSlice::new(&line)],
        &cmsgs,
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| io(format!("send: {e}")))?;
    let mut answer = String::new();
    BufReader::new(&stream)
        .read_line(&mut answer)
        .map_err(|e| io(format!("read: {e}")))?;
    if answer.is_empty() {
        return Err(io("the VMM closed the connection without answering".into()));
    }
    let resp: Response =
        serde_json::from_str(&answer).map_err(|e| io(format!("bad answer {answer:?}: {e}")))?;
    if !resp.ok {
        let why = resp.error.unwrap_or_else(|| "no reason given".into());
        return Err(if resp.busy {
            ControlError::Busy(why)
        } else {
            ControlError::Refused(why)
        });
    }
    Ok(resp)
}

/// Attaches to the VM's console: sends [`Request::Attach`] and reads the answer a byte at a
/// time (what follows it on the stream is already the guest's output), then hands back the
/// connection — its reads are the console's output, its writes the console's input. The VMM
/// keeps one attached client: a newer one replaces it.
pub fn attach(socket: &Path, timeout: Duration) -> Result<UnixStream, ControlError> {
    use std::io::Read;
    let io = |reason: String| ControlError::Io {
        path: socket.display().to_string(),
        reason,
    };
    let mut stream = UnixStream::connect(socket).map_err(|e| io(format!("connect: {e}")))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| io(e.to_string()))?;
    let mut line = serde_json::to_vec(&Request::Attach).map_err(|e| io(e.to_string()))?;
    line.push(b'\n');
    stream
        .write_all(&line)
        .map_err(|e| io(format!("send: {e}")))?;
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while !answer.ends_with(b"\n") {
        match stream.read(&mut byte) {
            Ok(0) => return Err(io("the VMM closed the connection without answering".into())),
            Ok(_) if answer.len() >= 4096 => return Err(io("an answer line too long".into())),
            Ok(_) => answer.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io(format!("read: {e}"))),
        }
    }
    let resp: Response = serde_json::from_slice(&answer).map_err(|e| {
        io(format!(
            "bad answer {:?}: {e}",
            String::from_utf8_lossy(&answer)
        ))
    })?;
    if !resp.ok {
        return Err(ControlError::Refused(
            resp.error.unwrap_or_else(|| "no reason given".into()),
        ));
    }
    stream
        .set_read_timeout(None)
        .map_err(|e| io(e.to_string()))?;
    Ok(stream)
}

/// Writes one response line.
pub fn respond(mut stream: &UnixStream, resp: &Response) {
    if let Ok(mut line) = serde_json::to_vec(resp) {
        line.push(b'\n');
        let _ = stream.write_all(&line);
    }
}
