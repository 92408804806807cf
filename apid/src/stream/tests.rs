//! The bridge over a real socket pair and an in-memory WebSocket, both ends tungstenite's.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;

use futures_util::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::protocol::Role;

use super::*;

async fn pair() -> (
    WebSocketStream<tokio::io::DuplexStream>,
    WebSocketStream<tokio::io::DuplexStream>,
) {
    let (a, b) = tokio::io::duplex(256 << 10);
    let server = ws::server(a, Vec::new()).await;
    let client = WebSocketStream::from_raw_socket(b, Role::Client, Some(ws::config())).await;
    (server, client)
}

fn no_controls(_: Control, _: BorrowedFd<'_>) -> ControlFuture {
    Box::pin(std::future::ready(Ok(())))
}

#[tokio::test(flavor = "current_thread")]
async fn bytes_flow_both_ways_and_the_end_of_the_fd_ends_the_bridge() {
    let (mut server, mut client) = pair().await;
    let (ours, theirs) = UnixStream::pair().unwrap();
    let guest = std::thread::spawn(move || {
        use std::io::{Read as _, Write as _};
        let mut theirs = theirs;
        let mut got = [0u8; 5];
        theirs.read_exact(&mut got).unwrap();
        theirs.write_all(b"echo:").unwrap();
        theirs.write_all(&got).unwrap();
        // Dropped: the bridge sees the end.
    });
    let bridge = bridge(
        &mut server,
        OwnedFd::from(ours),
        no_controls,
        std::future::pending::<()>(),
    );
    let talk = async {
        client.send(Message::binary(&b"hello"[..])).await.unwrap();
        let mut got = Vec::new();
        while got.len() < 10 {
            match client.next().await {
                Some(Ok(Message::Binary(b))) => got.extend_from_slice(&b),
                other => panic!("unexpected {other:?}"),
            }
        }
        got
    };
    let (ended, got) = tokio::join!(bridge, talk);
    assert_eq!(ended, Ended::FdClosed);
    assert_eq!(got, b"echo:hello");
    guest.join().unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn controls_reach_the_callback_and_bad_ones_refuse() {
    let (mut server, mut client) = pair().await;
    let (ours, _theirs) = UnixStream::pair().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let on_control = move |c: Control, _: BorrowedFd<'_>| -> ControlFuture {
        record.lock().unwrap().push(c);
        let refuse = matches!(c, Control::Signal(9));
        Box::pin(std::future::ready(if refuse {
            Err(Fault::new(FaultCode::Conflict, "no"))
        } else {
            Ok(())
        }))
    };
    let talk = async {
        for t in [
            r#"{"resize":[40,100]}"#,
            r#"{"signal":2}"#,
            r#"{"signal":9}"#,
        ] {
            client.send(Message::text(t)).await.unwrap();
        }
    };
    let (ended, ()) = tokio::join!(
        bridge(
            &mut server,
            OwnedFd::from(ours),
            on_control,
            std::future::pending::<()>()
        ),
        talk
    );
    assert_eq!(ended, Ended::Refused(Fault::new(FaultCode::Conflict, "no")));
    assert_eq!(
        *seen.lock().unwrap(),
        [
            Control::Resize {
                rows: 40,
                cols: 100
            },
            Control::Signal(2),
            Control::Signal(9)
        ]
    );

    let (mut server, mut client) = pair().await;
    let (ours, _theirs) = UnixStream::pair().unwrap();
    client.send(Message::text("{\"bogus\":1}")).await.unwrap();
    let ended = bridge(
        &mut server,
        OwnedFd::from(ours),
        no_controls,
        std::future::pending::<()>(),
    )
    .await;
    assert!(
        matches!(&ended, Ended::Refused(f) if f.code == FaultCode::BadParams),
        "{ended:?}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn finishing_sends_the_last_output_then_returns_its_value() {
    let (mut server, mut client) = pair().await;
    let (ours, theirs) = UnixStream::pair().unwrap();
    use std::io::Write as _;
    (&theirs).write_all(b"last words").unwrap();
    // `theirs` stays open, as a background child's copy of a pty would.
    let ended = bridge(
        &mut server,
        OwnedFd::from(ours),
        no_controls,
        std::future::ready(7),
    )
    .await;
    assert_eq!(ended, Ended::Finished(7));
    match client.next().await {
        Some(Ok(Message::Binary(b))) => assert_eq!(&b[..], b"last words"),
        other => panic!("unexpected {other:?}"),
    }
    drop(theirs);
}

#[tokio::test(flavor = "current_thread")]
async fn a_client_that_closes_ends_the_bridge_and_oversized_frames_are_refused() {
    let (mut server, mut client) = pair().await;
    let (ours, _theirs) = UnixStream::pair().unwrap();
    client.close(None).await.unwrap();
    let ended = bridge(
        &mut server,
        OwnedFd::from(ours),
        no_controls,
        std::future::pending::<()>(),
    )
    .await;
    assert_eq!(ended, Ended::ClientGone);

    // A client whose own limit is larger sends a frame over ours: the server drops it.
    let (a, b) = tokio::io::duplex(1 << 20);
    let mut server = ws::server(a, Vec::new()).await;
    let big = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default();
    let mut client = WebSocketStream::from_raw_socket(b, Role::Client, Some(big)).await;
    let (ours, _theirs) = UnixStream::pair().unwrap();
    let send = client.send(Message::binary(vec![0u8; model::stream::MAX_MESSAGE + 1]));
    let (ended, _) = tokio::join!(
        bridge(
            &mut server,
            OwnedFd::from(ours),
            no_controls,
            std::future::pending::<()>()
        ),
        send
    );
    assert_eq!(ended, Ended::ClientGone);
}
