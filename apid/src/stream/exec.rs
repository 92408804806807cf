//! `GET /streams/exec`: a command on a pty in a container. The first TEXT frame says what to
//! run (`model::stream::ExecStart`); hostd starts it and hands apid the pty's master
//! (Host1.ExecTty), which [`super::bridge`] joins to the WebSocket. A resize is TIOCSWINSZ on
//! that master, a signal goes to hostd (Host1.ExecSignal), and the exit code (Host1.ExecWait)
//! ends the stream as `{"exit":N}`. A client that goes away closes the master: the kernel hangs
//! the terminal up and the command gets SIGHUP, as an ssh session's would.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

use model::fault::FaultCode;
use model::stream::{Control, ExecStart, ServerMessage};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::{ControlFuture, Ended, Fault, ws};
use crate::bus::{Bus, CALL_TIMEOUT};

/// An interactive command runs as long as it runs: the wait for its end has no deadline worth
/// the name.
const RUNS_FOR: Duration = Duration::from_secs(30 * 24 * 3600);
/// After the pty closed (the command and everything it started let go of it), the exit code
/// is due at once; this only bounds a hostd that does not answer then.
const EXIT_AFTER_CLOSE: Duration = Duration::from_secs(30);

/// Sets a pty's window size (the kernel then sends SIGWINCH to its foreground group).
pub fn resize(fd: BorrowedFd<'_>, rows: u16, cols: u16) -> std::io::Result<()> {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which lives across the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &size) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn bus_fault(e: crate::bus::BusError) -> Fault {
    Fault::new(e.fault_code(), e.to_string())
}

pub async fn serve<S>(ws: &mut WebSocketStream<S>, bus: &Bus)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let start = super::first_text(ws, "the exec request (JSON)")
        .await
        .and_then(|text| {
            ExecStart::parse(&text).map_err(|e| Fault::new(FaultCode::BadParams, e.0))
        });
    let start = match start {
        Ok(s) => s,
        Err(f) => return ws::fail(ws, f.code, f.message).await,
    };
    let env_json = serde_json::to_string(&start.env).unwrap_or_else(|_| "{}".into());
    let (name, argv, rows, cols) = (start.ct.clone(), start.argv.clone(), start.rows, start.cols);
    let started = bus
        .hostd_call(CALL_TIMEOUT, |h| async move {
            h.exec_tty(&name, argv, &env_json, rows, cols).await
        })
        .await;
    let (id, fd) = match started {
        Ok(v) => v,
        Err(e) => {
            let f = bus_fault(e);
            return ws::fail(ws, f.code, f.message).await;
        }
    };
    tracing::info!(ct = %start.ct, id, argv0 = %start.argv[0], "exec -t started");
    let on_control = |c: Control, fd: BorrowedFd<'_>| -> ControlFuture {
        match c {
            Control::Resize { rows, cols } => {
                let done = resize(fd, rows, cols).map_err(|e| {
                    Fault::new(FaultCode::Internal, format!("resizing the terminal: {e}"))
                });
                Box::pin(std::future::ready(done))
            }
            Control::Signal(n) => {
                let bus = bus.clone();
                Box::pin(async move {
                    bus.hostd_call(CALL_TIMEOUT, |h| async move { h.exec_signal(id, n).await })
                        .await
                        .map_err(bus_fault)
                })
            }
        }
    };
    let wait = bus.hostd_call(RUNS_FOR, |h| async move { h.exec_wait(id).await });
    // One wait for the whole stream: the bridge may end on the pty's end before it has the
    // code, which then follows at once.
    let mut exited = std::pin::pin!(wait);
    let ended = super::bridge(ws, fd.into(), on_control, exited.as_mut()).await;
    let code = match ended {
        Ended::Finished(code) => code,
        Ended::FdClosed => match tokio::time::timeout(EXIT_AFTER_CLOSE, exited).await {
            Ok(code) => code,
            Err(_) => {
                let m = format!("hostd did not say how exec {id} ended within 30 s");
                return ws::fail(ws, FaultCode::Internal, m).await;
            }
        },
        Ended::ClientGone => {
            tracing::info!(ct = %start.ct, id, "exec -t: the client went away; the terminal is hung up");
            return;
        }
        Ended::Refused(f) => return ws::fail(ws, f.code, f.message).await,
    };
    match code {
        Ok(code) => {
            tracing::info!(ct = %start.ct, id, code, "exec -t ended");
            if ws::send_text(ws, ServerMessage::Exit(code).to_json()).await {
                ws::close_with(ws, CloseCode::Normal).await;
            }
        }
        Err(e) => {
            let f = bus_fault(e);
            ws::fail(ws, f.code, f.message).await;
        }
    }
}
