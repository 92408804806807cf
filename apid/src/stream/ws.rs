//! The WebSocket side of a stream: the RFC 6455 upgrade of a `GET /streams/…` request (checked
//! here, answered by hyper with 101), then tungstenite's framing over the TLS stream hyper hands
//! back, with apid's bounds: messages of at most [`model::stream::MAX_MESSAGE`], pings while
//! idle, and a clean close.

use std::time::Duration;

use bytes::Bytes;
use futures_util::SinkExt as _;
use http_body_util::Full;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Response, StatusCode};
use model::fault::FaultCode;
use model::stream::{MAX_MESSAGE, ServerMessage};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, handshake::derive_accept_key};

/// A ping is sent after this long without a frame from the client...
pub const PING_EVERY: Duration = Duration::from_secs(30);
/// ...and the stream is dropped when nothing (not even a pong) came for this long, or when a
/// frame to the client could not be written for this long.
pub const IDLE_LIMIT: Duration = Duration::from_secs(90);

/// Why an upgrade request is refused: the HTTP status and a line saying what is wrong.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused(pub StatusCode, pub String);

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .unwrap_or("")
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    })
}

/// Checks an upgrade request (RFC 6455 section 4.2.1) and returns the value of
/// `Sec-WebSocket-Accept` for the 101 answer.
pub fn check_upgrade(method: &Method, headers: &HeaderMap) -> Result<String, Refused> {
    if method != Method::GET {
        return Err(Refused(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed: streams are opened with GET and Upgrade: websocket".into(),
        ));
    }
    if !has_token(headers, header::UPGRADE, "websocket")
        || !has_token(headers, header::CONNECTION, "upgrade")
    {
        return Err(Refused(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade required: a stream is a WebSocket (Connection: Upgrade, Upgrade: websocket)"
                .into(),
        ));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(Refused(
            StatusCode::UPGRADE_REQUIRED,
            "Sec-WebSocket-Version: only 13 (RFC 6455) is spoken".into(),
        ));
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .map(HeaderValue::as_bytes)
        .unwrap_or_default();
    // 16 random bytes in base64: 24 characters.
    if key.len() != 24 {
        return Err(Refused(
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Key: missing or not 16 bytes in base64".into(),
        ));
    }
    Ok(derive_accept_key(key))
}

/// The 101 answer that switches the connection to WebSocket.
pub fn switching(accept: &str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    resp
}

/// The framing limits both sides keep.
pub fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
        // What waits unsent for a slow client: a few chunks, not the whole output.
        .max_write_buffer_size(4 * MAX_MESSAGE)
}

/// The server's end of an upgraded connection; `read` is what the client sent after its
/// request (hyper's buffer), which belongs to the first frames.
pub async fn server<S>(io: S, read: Vec<u8>) -> WebSocketStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    WebSocketStream::from_partially_read(io, read, Role::Server, Some(config())).await
}

/// Sends a TEXT frame, giving up after [`IDLE_LIMIT`].
pub async fn send_text<S>(ws: &mut WebSocketStream<S>, text: String) -> bool
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    matches!(
        tokio::time::timeout(IDLE_LIMIT, ws.send(Message::text(text))).await,
        Ok(Ok(()))
    )
}

/// Sends `{"error":…}` and closes (1008 policy violation for a bad request, 1011 otherwise).
pub async fn fail<S>(ws: &mut WebSocketStream<S>, code: FaultCode, message: String)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    tracing::info!(code = code.code(), %message, "stream refused");
    let close = match code {
        FaultCode::Internal | FaultCode::Busy => CloseCode::Error,
        _ => CloseCode::Policy,
    };
    let msg = ServerMessage::Error {
        code: code.code(),
        message,
    };
    if send_text(ws, msg.to_json()).await {
        close_with(ws, close).await;
    }
}

/// A clean close: our close frame, then the client's answer (for at most a few seconds).
pub async fn close_with<S>(ws: &mut WebSocketStream<S>, code: CloseCode)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    use futures_util::StreamExt as _;
    let frame = CloseFrame {
        code,
        reason: "".into(),
    };
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        ws.close(Some(frame)).await?;
        // Until the client's close frame (the stream then ends) or an error.
        while let Some(m) = ws.next().await {
            m?;
        }
        Ok::<_, tokio_tungstenite::tungstenite::Error>(())
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    const GOOD: [(&str, &str); 4] = [
        ("Upgrade", "websocket"),
        ("Connection", "keep-alive, Upgrade"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    #[test]
    fn the_rfc_example_key_is_accepted() {
        // RFC 6455 section 1.3's example.
        assert_eq!(
            check_upgrade(&Method::GET, &headers(&GOOD)).unwrap(),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn bad_upgrades_are_refused_with_what_is_wrong() {
        let e = check_upgrade(&Method::POST, &headers(&GOOD)).unwrap_err();
        assert_eq!(e.0, StatusCode::METHOD_NOT_ALLOWED);
        for drop in 0..GOOD.len() {
            let some: Vec<_> = GOOD
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != drop)
                .map(|(_, p)| *p)
                .collect();
            let e = check_upgrade(&Method::GET, &headers(&some)).unwrap_err();
            assert_ne!(e.0, StatusCode::OK, "{e:?}");
            assert!(!e.1.is_empty());
        }
        let mut v8 = GOOD;
        v8[2] = ("Sec-WebSocket-Version", "8");
        assert!(
            check_upgrade(&Method::GET, &headers(&v8))
                .unwrap_err()
                .1
                .contains("13")
        );
        let mut short = GOOD;
        short[3] = ("Sec-WebSocket-Key", "abc");
        assert_eq!(
            check_upgrade(&Method::GET, &headers(&short)).unwrap_err().0,
            StatusCode::BAD_REQUEST
        );
    }
}
