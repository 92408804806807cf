//! The WebSocket streams on apid's HTTPS port (docs/api.md, "Streams"): their paths, the first
//! message of an exec, and the JSON control messages both ways. apid and cairnctl parse and
//! write them here, so the two cannot drift apart.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const PATH_PREFIX: &str = "/streams/";
pub const EXEC_PATH: &str = "/streams/exec";
pub const CONSOLE_PATH: &str = "/streams/console";

/// The largest WebSocket message (and frame) either side accepts; a peer sending more is cut
/// off. Output is sent in pieces of at most [`CHUNK`].
pub const MAX_MESSAGE: usize = 64 << 10;
/// The most bytes one BINARY frame of output carries.
pub const CHUNK: usize = 16 << 10;

/// Bounds of an exec's first message.
pub const MAX_ARGS: usize = 1024;
pub const MAX_ENV: usize = 256;

/// The first message of `/streams/exec` (a TEXT frame).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecStart {
    /// The container.
    pub ct: String,
    /// The program and its arguments; PATH is searched inside the container.
    pub argv: Vec<String>,
    /// Only `true` is served here (a pty); a command without one is `ct.exec`.
    #[serde(default = "yes")]
    pub tty: bool,
    #[serde(default = "default_rows")]
    pub rows: u16,
    #[serde(default = "default_cols")]
    pub cols: u16,
    /// Added to the command's environment (PATH and container=cairn are always set; TERM
    /// defaults to xterm).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

fn yes() -> bool {
    true
}
fn default_rows() -> u16 {
    24
}
fn default_cols() -> u16 {
    80
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct StreamError(pub String);

impl ExecStart {
    /// Parses and checks the whole first message; the error says what is wrong.
    pub fn parse(text: &str) -> Result<ExecStart, StreamError> {
        let start: ExecStart = serde_json::from_str(text)
            .map_err(|e| StreamError(format!("the first message (exec request): {e}")))?;
        start.check()?;
        Ok(start)
    }

    pub fn check(&self) -> Result<(), StreamError> {
        let bad = |m: String| Err(StreamError(m));
        if self.ct.is_empty() {
            return bad("ct: give the container's name".into());
        }
        if !self.tty {
            return bad(
                "tty: only true is served on this stream; run a command without a terminal with ct.exec"
                    .into(),
            );
        }
        if self.argv.first().is_none_or(String::is_empty) {
            return bad("argv: give the program to run".into());
        }
        if self.argv.len() > MAX_ARGS {
            return bad(format!("argv: more than {MAX_ARGS} arguments"));
        }
        if let Some(i) = self.argv.iter().position(|a| a.contains('\0')) {
            return bad(format!("argv[{i}] has a NUL byte"));
        }
        check_size(self.rows, self.cols)?;
        if self.env.len() > MAX_ENV {
            return bad(format!("env: more than {MAX_ENV} variables"));
        }
        for (k, v) in &self.env {
            if k.is_empty() || k.contains(['=', '\0']) || v.contains('\0') {
                return bad(format!(
                    "env: {k:?} is not a variable name (empty, or with '=' or NUL) or its value has a NUL byte"
                ));
            }
        }
        Ok(())
    }
}

/// A terminal size the kernel and every program take: 1 to 1000 rows and columns.
pub fn check_size(rows: u16, cols: u16) -> Result<(), StreamError> {
    if !(1..=1000).contains(&rows) || !(1..=1000).contains(&cols) {
        return Err(StreamError(format!(
            "window size {rows}x{cols}: rows and cols must be 1 to 1000"
        )));
    }
    Ok(())
}

/// The first message of `/streams/console` (a TEXT frame): the guest whose console to attach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleStart {
    /// "ct" or "vm".
    pub kind: String,
    pub name: String,
}

impl ConsoleStart {
    /// Parses and checks the whole first message; the error says what is wrong.
    pub fn parse(text: &str) -> Result<ConsoleStart, StreamError> {
        let start: ConsoleStart = serde_json::from_str(text)
            .map_err(|e| StreamError(format!("the first message (console request): {e}")))?;
        if start.kind != "ct" && start.kind != "vm" {
            return Err(StreamError(format!(
                "kind: {:?} is not a guest kind; expected \"ct\" or \"vm\"",
                start.kind
            )));
        }
        if start.name.is_empty() {
            return Err(StreamError("name: give the guest's name".into()));
        }
        Ok(start)
    }

    pub fn to_json(&self) -> String {
        serde_json::json!({ "kind": self.kind, "name": self.name }).to_string()
    }
}

/// A TEXT frame from the client after the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// `{"resize":[rows,cols]}`
    Resize { rows: u16, cols: u16 },
    /// `{"signal":N}`: sent to the command (its foreground process group).
    Signal(i32),
}

impl Control {
    pub fn parse(text: &str) -> Result<Control, StreamError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            resize: Option<(u16, u16)>,
            signal: Option<i32>,
        }
        let raw: Raw = serde_json::from_str(text).map_err(|e| {
            StreamError(format!(
                "control message: {e} (expected {{\"resize\":[rows,cols]}} or {{\"signal\":N}})"
            ))
        })?;
        match (raw.resize, raw.signal) {
            (Some((rows, cols)), None) => {
                check_size(rows, cols)?;
                Ok(Control::Resize { rows, cols })
            }
            (None, Some(n)) if (1..=64).contains(&n) => Ok(Control::Signal(n)),
            (None, Some(n)) => Err(StreamError(format!(
                "control message: signal {n} is not a signal number (1 to 64)"
            ))),
            _ => Err(StreamError(
                "control message: give exactly one of \"resize\" and \"signal\"".into(),
            )),
        }
    }

    pub fn to_json(&self) -> String {
        match self {
            Control::Resize { rows, cols } => format!("{{\"resize\":[{rows},{cols}]}}"),
            Control::Signal(n) => format!("{{\"signal\":{n}}}"),
        }
    }
}

/// A TEXT frame from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerMessage {
    /// `{"exit":CODE}`: the command ended (128+N when killed by signal N); the server closes.
    Exit(i32),
    /// `{"error":{"code":FAULT,"message":"..."}}`: the stream ends; FAULT as in
    /// `model::fault`.
    Error { code: i32, message: String },
}

impl ServerMessage {
    pub fn to_json(&self) -> String {
        match self {
            ServerMessage::Exit(code) => serde_json::json!({ "exit": code }).to_string(),
            ServerMessage::Error { code, message } => {
                serde_json::json!({ "error": { "code": code, "message": message } }).to_string()
            }
        }
    }

    pub fn parse(text: &str) -> Result<ServerMessage, StreamError> {
        #[derive(Deserialize)]
        struct Fault {
            code: i32,
            message: String,
        }
        #[derive(Deserialize)]
        struct Raw {
            exit: Option<i32>,
            error: Option<Fault>,
        }
        let raw: Raw =
            serde_json::from_str(text).map_err(|e| StreamError(format!("server message: {e}")))?;
        match (raw.exit, raw.error) {
            (Some(code), None) => Ok(ServerMessage::Exit(code)),
            (None, Some(f)) => Ok(ServerMessage::Error {
                code: f.code,
                message: f.message,
            }),
            _ => Err(StreamError(format!(
                "server message not understood: {text}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_start_defaults_and_checks() {
        let s = ExecStart::parse(r#"{"ct":"web","argv":["sh"]}"#).unwrap();
        assert_eq!((s.tty, s.rows, s.cols), (true, 24, 80));
        let s = ExecStart::parse(
            r#"{"ct":"web","argv":["sh","-l"],"tty":true,"rows":50,"cols":132,"env":{"TERM":"xterm"}}"#,
        )
        .unwrap();
        assert_eq!((s.rows, s.cols, s.env["TERM"].as_str()), (50, 132, "xterm"));
        for (bad, says) in [
            (r#"{"ct":"","argv":["sh"]}"#, "ct:"),
            (r#"{"ct":"a","argv":[]}"#, "argv:"),
            (r#"{"ct":"a","argv":[""]}"#, "argv:"),
            (r#"{"ct":"a","argv":["sh"],"tty":false}"#, "tty:"),
            (r#"{"ct":"a","argv":["sh"],"rows":0}"#, "window size"),
            (r#"{"ct":"a","argv":["sh"],"cols":1001}"#, "window size"),
            (r#"{"ct":"a","argv":["sh"],"rows":70000}"#, "first message"),
            (r#"{"ct":"a","argv":["a\u0000b"]}"#, "argv[0]"),
            (r#"{"ct":"a","argv":["sh"],"env":{"A=B":"c"}}"#, "env:"),
            (r#"{"ct":"a","argv":["sh"],"bogus":1}"#, "unknown field"),
            ("not json", "first message"),
        ] {
            let e = ExecStart::parse(bad).unwrap_err();
            assert!(e.0.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn console_start_is_checked() {
        let s = ConsoleStart::parse(r#"{"kind":"vm","name":"deb"}"#).unwrap();
        assert_eq!((s.kind.as_str(), s.name.as_str()), ("vm", "deb"));
        assert_eq!(ConsoleStart::parse(&s.to_json()).unwrap(), s);
        for (bad, says) in [
            (r#"{"kind":"pod","name":"a"}"#, "kind:"),
            (r#"{"kind":"ct","name":""}"#, "name:"),
            (r#"{"kind":"ct"}"#, "console request"),
            (r#"{"kind":"ct","name":"a","tail":1}"#, "unknown field"),
            ("[]", "console request"),
        ] {
            let e = ConsoleStart::parse(bad).unwrap_err();
            assert!(e.0.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn control_messages_round_trip_and_are_checked() {
        for c in [
            Control::Resize {
                rows: 40,
                cols: 100,
            },
            Control::Signal(2),
        ] {
            assert_eq!(Control::parse(&c.to_json()).unwrap(), c);
        }
        for bad in [
            "{}",
            r#"{"resize":[1,2],"signal":2}"#,
            r#"{"resize":[0,2]}"#,
            r#"{"resize":[1]}"#,
            r#"{"signal":0}"#,
            r#"{"signal":65}"#,
            r#"{"other":1}"#,
            "[",
        ] {
            assert!(Control::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn server_messages_round_trip() {
        for m in [
            ServerMessage::Exit(130),
            ServerMessage::Error {
                code: 104,
                message: "no container \"x\"".into(),
            },
        ] {
            assert_eq!(ServerMessage::parse(&m.to_json()).unwrap(), m);
        }
        assert_eq!(
            ServerMessage::Exit(7).to_json(),
            r#"{"exit":7}"#,
            "the documented form"
        );
        assert!(ServerMessage::parse(r#"{"exit":1,"error":{"code":1,"message":""}}"#).is_err());
    }
}
