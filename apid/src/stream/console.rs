//! `GET /streams/console`: a guest's console, attached. The first TEXT frame names the guest
//! (`model::stream::ConsoleStart`); hostd hands apid a socket connected to the container's
//! monitor or the VM's VMM (Host1.ConsoleAttach), which [`super::bridge`] joins to the
//! WebSocket: what the client sends is typed on the console, what the guest prints from now on
//! comes back. One attacher per guest, the newest wins: the one taken over reads why, then its
//! socket ends, and so does its stream. The stream also ends with the guest. Control messages
//! are ignored: a console has no window size of ours to set and takes no signals (Ctrl-C is a
//! byte like any other).

use model::fault::FaultCode;
use model::stream::{ConsoleStart, Control};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::{ControlFuture, Ended, Fault, ws};
use crate::bus::{Bus, CALL_TIMEOUT};

pub async fn serve<S>(ws: &mut WebSocketStream<S>, bus: &Bus)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let start = super::first_text(ws, "the guest: {\"kind\":\"ct\"|\"vm\",\"name\":NAME}")
        .await
        .and_then(|text| {
            ConsoleStart::parse(&text).map_err(|e| Fault::new(FaultCode::BadParams, e.0))
        });
    let start = match start {
        Ok(s) => s,
        Err(f) => return ws::fail(ws, f.code, f.message).await,
    };
    let (kind, name) = (start.kind.clone(), start.name.clone());
    let attached = bus
        .hostd_call(CALL_TIMEOUT, |h| async move {
            h.console_attach(&kind, &name).await
        })
        .await;
    let fd = match attached {
        Ok(fd) => fd,
        Err(e) => return ws::fail(ws, e.fault_code(), e.to_string()).await,
    };
    tracing::info!(kind = %start.kind, name = %start.name, "console attached");
    let ignore = |_: Control, _: std::os::fd::BorrowedFd<'_>| -> ControlFuture {
        Box::pin(std::future::ready(Ok(())))
    };
    match super::bridge(ws, fd.into(), ignore, std::future::pending::<()>()).await {
        Ended::Refused(f) => ws::fail(ws, f.code, f.message).await,
        // The guest ended, or a newer attacher took the console (its notice was the output's
        // last bytes).
        Ended::FdClosed | Ended::Finished(()) => {
            tracing::info!(kind = %start.kind, name = %start.name, "console closed");
            ws::close_with(ws, CloseCode::Normal).await;
        }
        Ended::ClientGone => {
            tracing::info!(kind = %start.kind, name = %start.name, "console detached");
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::{SinkExt as _, StreamExt as _};
    use model::stream::ServerMessage;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::Role;

    use super::*;

    /// Serves one console stream whose client sends `first`; the server's TEXT answer.
    async fn answer_to(first: Message) -> ServerMessage {
        let (a, b) = tokio::io::duplex(64 << 10);
        let bus = Bus::new(None);
        let server = async move {
            let mut socket = ws::server(a, Vec::new()).await;
            serve(&mut socket, &bus).await;
        };
        let client = async move {
            let mut c = WebSocketStream::from_raw_socket(b, Role::Client, Some(ws::config())).await;
            c.send(first).await.unwrap();
            loop {
                match c.next().await {
                    Some(Ok(Message::Text(t))) => return ServerMessage::parse(t.as_str()).unwrap(),
                    Some(Ok(_)) => continue,
                    other => panic!("no answer: {other:?}"),
                }
            }
        };
        tokio::join!(server, client).1
    }

    #[tokio::test(flavor = "current_thread")]
    async fn bad_requests_are_refused_with_what_is_wrong() {
        for (first, says) in [
            (Message::text(r#"{"kind":"pod","name":"x"}"#), "kind:"),
            (Message::text(r#"{"kind":"ct"}"#), "console request"),
            (Message::binary(&b"{}"[..]), "TEXT frame"),
        ] {
            match answer_to(first).await {
                ServerMessage::Error { code, message } => {
                    assert_eq!(code, FaultCode::BadParams.code(), "{message}");
                    assert!(message.contains(says), "{message}");
                }
                other => panic!("{other:?}"),
            }
        }
        // A good request that hostd cannot be asked (no bus here): a fault, not a hang.
        match answer_to(Message::text(r#"{"kind":"vm","name":"deb"}"#)).await {
            ServerMessage::Error { message, .. } => assert!(message.contains("bus"), "{message}"),
            other => panic!("{other:?}"),
        }
    }
}
