//! WebSocket streams to apid (docs/api.md, "Streams") over the TLS and token of
//! [`crate::client::Client`], and `ct exec -t` / `ct enter` on top: the local terminal in raw
//! mode, keys go out as BINARY frames, the guest's output comes back in them, a window resize
//! (SIGWINCH) is sent as `{"resize":[rows,cols]}`, and cairnctl exits with the remote command's
//! code (`{"exit":N}`).

use std::io::Write as _;
use std::os::fd::AsFd;
use std::process::ExitCode;

use anyhow::{Context as _, anyhow, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use model::fault::FaultCode;
use model::stream::{Control, ExecStart, MAX_MESSAGE, ServerMessage};
use nix::sys::termios::{self, SetArg, Termios};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::client::{CallError, Client};

pub type Ws = WebSocketStream<TlsStream<TcpStream>>;

/// The framing limits of the server (`model::stream::MAX_MESSAGE`), kept on this side too.
fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

/// Opens stream `path` (e.g. `/streams/exec`): TLS as for calls, the token in the upgrade.
pub async fn open(client: &Client, path: &str) -> anyhow::Result<Ws> {
    let tls = client.tls_stream().await?;
    let mut request = client
        .request(hyper::Method::GET, path)
        .header(hyper::header::CONNECTION, "Upgrade")
        .header(hyper::header::UPGRADE, "websocket")
        .header(hyper::header::SEC_WEBSOCKET_VERSION, "13")
        .header(hyper::header::SEC_WEBSOCKET_KEY, generate_key())
        .body(())
        .context("building the stream's request")?;
    // tungstenite refuses a request whose URI has no ws/wss scheme ("URL scheme not
    // supported"); the TLS under it is ours already, so wss:// only names the target.
    let host = request
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_string();
    *request.uri_mut() = format!("wss://{host}{path}")
        .parse()
        .context("the stream's URL")?;
    match tokio_tungstenite::client_async_with_config(request, tls, Some(config())).await {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(resp)) => {
            if resp.status() == hyper::StatusCode::UNAUTHORIZED {
                return Err(CallError::Unauthorized.into());
            }
            let body = resp
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).trim().to_string())
                .unwrap_or_default();
            Err(CallError::Http {
                status: resp.status(),
                body,
            }
            .into())
        }
        Err(e) => Err(anyhow!("opening the stream {path}: {e}")),
    }
}

/// The local terminal in raw mode (no echo, no line editing, no signals from keys: Ctrl-C is a
/// byte for the remote side), restored when dropped.
pub struct RawTerminal {
    saved: Termios,
}

impl RawTerminal {
    /// Raw mode on stdin, if stdin is a terminal.
    pub fn enter() -> Option<RawTerminal> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).ok()?;
        Some(RawTerminal { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

/// The size (rows, cols) of the terminal on stdin, else stdout.
pub fn window_size() -> Option<(u16, u16)> {
    for fd in [libc::STDIN_FILENO, libc::STDOUT_FILENO] {
        let mut ws = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one winsize to the pointer, which lives across the call.
        if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_row > 0 {
            return Some((ws.ws_row, ws.ws_col.max(1)));
        }
    }
    None
}

/// Reads stdin on a thread of its own (a blocking read the runtime need not wait for at exit)
/// and hands what it read over; the channel ends with stdin.
pub fn stdin_reader() -> tokio::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    std::thread::spawn(move || {
        use std::io::Read as _;
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 4096];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    rx
}

/// The login shell of a container, as `pct enter` gives it: bash if the container has it,
/// else sh.
pub fn login_shell() -> Vec<String> {
    [
        "/bin/sh",
        "-c",
        "if [ -x /bin/bash ]; then exec /bin/bash -l; else exec /bin/sh -l; fi",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// `ct exec -t NAME -- CMD…`: runs `argv` on a pty in container `ct` with this terminal.
pub async fn exec(client: &Client, ct: &str, argv: Vec<String>) -> anyhow::Result<ExitCode> {
    let (rows, cols) = window_size().unwrap_or((24, 80));
    let mut env = std::collections::BTreeMap::new();
    env.insert(
        "TERM".to_string(),
        std::env::var("TERM")
            .ok()
            .filter(|t| !t.is_empty() && t.len() < 64)
            .unwrap_or_else(|| "xterm".into()),
    );
    let start = ExecStart {
        ct: ct.to_string(),
        argv,
        tty: true,
        rows,
        cols,
        env,
    };
    start.check().map_err(|e| anyhow!("{e}"))?;
    let mut ws = open(client, model::stream::EXEC_PATH).await?;
    ws.send(Message::text(
        serde_json::to_string(&start).context("encoding the exec request")?,
    ))
    .await
    .context("sending the exec request")?;
    let raw = RawTerminal::enter();
    let code = session(&mut ws).await;
    drop(raw);
    let code = code?;
    Ok(ExitCode::from(u8::try_from(code & 0xff).unwrap_or(255)))
}

/// Bridges this terminal and `ws` until the server says how the command ended.
async fn session(ws: &mut Ws) -> anyhow::Result<i32> {
    let mut input = stdin_reader();
    let mut stdin_open = true;
    let mut winch = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
        .context("watching the window size")?;
    let mut stdout = std::io::stdout();
    loop {
        tokio::select! {
            msg = ws.next() => {
                let msg = match msg {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => bail!("the stream broke: {e}"),
                    None => bail!("the server closed the stream without an exit code"),
                };
                match msg {
                    Message::Binary(data) => {
                        stdout.write_all(&data).context("writing to the terminal")?;
                        stdout.flush().context("writing to the terminal")?;
                    }
                    Message::Text(text) => match ServerMessage::parse(text.as_str()) {
                        Ok(ServerMessage::Exit(code)) => {
                            let _ = ws.close(None).await;
                            return Ok(code);
                        }
                        Ok(ServerMessage::Error { code, message }) => {
                            let _ = ws.close(None).await;
                            let name = FaultCode::from_code(code).map_or("fault", FaultCode::name);
                            bail!("{name} ({code}): {message}");
                        }
                        // A newer server's message this client does not know: not ours to act on.
                        Err(_) => {}
                    },
                    Message::Close(_) => bail!("the server closed the stream without an exit code"),
                    _ => {}
                }
            }
            data = input.recv(), if stdin_open => match data {
                Some(data) => ws.send(Message::binary(data)).await.context("sending input")?,
                // Local stdin ended: Ctrl-D for the remote side, which then decides.
                None => {
                    stdin_open = false;
                    ws.send(Message::binary(&b"\x04"[..])).await.context("sending input")?;
                }
            },
            _ = winch.recv() => {
                if let Some((rows, cols)) = window_size() {
                    let resize = Control::Resize { rows, cols }.to_json();
                    ws.send(Message::text(resize)).await.context("sending the window size")?;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_login_shell_prefers_bash_and_falls_back_to_sh() {
        let argv = login_shell();
        assert_eq!(argv[0], "/bin/sh");
        assert!(argv[2].contains("exec /bin/bash -l") && argv[2].contains("exec /bin/sh -l"));
        let start = ExecStart {
            ct: "web".into(),
            argv,
            tty: true,
            rows: 24,
            cols: 80,
            env: Default::default(),
        };
        assert!(start.check().is_ok());
    }
}
