//! The start handshake, typed: JSON lines, one message each, on the control socket (hostd ↔
//! monitor) and on the guest's report pipe (guest's first process → monitor).
//!
//! ```text
//! monitor → hostd   Pid { pid }        the guest's first process exists, in its cgroup,
//!                                      with its id maps; it waits for Go
//! hostd   → monitor Go | Abort         (e.g. after attaching the guest's network port)
//! guest   → monitor Ready | Failed     (a guest that execs says Ready by closing the pipe)
//! monitor → hostd   Ready | Failed     relayed; any step of the monitor's own may fail too
//! guest   → monitor Ended(reason)      later, just before a clean exit (a VM's reason)
//! ```
//!
//! A failure carries an [`ErrorKind`]: the guest's own input was wrong (hostd answers
//! "invalid argument"), or the host failed.

use std::io::{BufRead, Write};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Whose fault a failed start is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The guest's input: a kernel that is no kernel, a command that does not exist.
    Invalid,
    /// The host: the kernel refused, a file could not be written.
    Failure,
}

/// Why a guest did not start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct StartError {
    pub kind: ErrorKind,
    pub message: String,
}

impl StartError {
    pub fn invalid(message: impl Into<String>) -> StartError {
        StartError {
            kind: ErrorKind::Invalid,
            message: message.into(),
        }
    }

    pub fn failure(message: impl Into<String>) -> StartError {
        StartError {
            kind: ErrorKind::Failure,
            message: message.into(),
        }
    }
}

/// Monitor → hostd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToParent {
    Pid { pid: u32 },
    Ready,
    Failed(StartError),
}

/// hostd → monitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToMonitor {
    Go,
    Abort,
}

/// The guest's first process → its monitor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Report<R> {
    Ready,
    Failed(StartError),
    /// The guest's own account of its end, sent just before it exits.
    Ended(R),
}

/// Writes one message as one line in one write(2), so a reader never sees half of it.
pub fn send<T: Serialize>(w: &mut impl Write, msg: &T) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line)
}

/// Reads one message; Ok(None) at end of file.
pub fn recv<T: DeserializeOwned>(r: &mut impl BufRead) -> std::io::Result<Option<T>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    serde_json::from_str(line.trim_end())
        .map(Some)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{line:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_as_lines() {
        let mut buf = Vec::new();
        send(&mut buf, &ToParent::Pid { pid: 42 }).unwrap();
        send(
            &mut buf,
            &ToParent::Failed(StartError::invalid("kernel x: not ELF")),
        )
        .unwrap();
        send(&mut buf, &Report::<u8>::Ended(3)).unwrap();
        let mut r = std::io::BufReader::new(&buf[..]);
        assert_eq!(recv(&mut r).unwrap(), Some(ToParent::Pid { pid: 42 }));
        let failed: ToParent = recv(&mut r).unwrap().unwrap();
        assert_eq!(
            failed,
            ToParent::Failed(StartError {
                kind: ErrorKind::Invalid,
                message: "kernel x: not ELF".into()
            })
        );
        assert_eq!(recv(&mut r).unwrap(), Some(Report::<u8>::Ended(3)));
        assert_eq!(recv::<ToParent>(&mut r).unwrap(), None);
        let mut bad = std::io::BufReader::new(&b"err something\n"[..]);
        assert!(recv::<ToParent>(&mut bad).is_err());
    }
}
