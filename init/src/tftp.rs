//! A TFTP read (RFC 1350, octet mode, 512-byte blocks) for `cairn.config=tftp://…`: the PXE
//! server a fleet boots from already serves TFTP, so it can serve each host's config too.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;

const RRQ: u16 = 1;
const DATA: u16 = 3;
const ACK: u16 = 4;
const ERROR: u16 = 5;
const BLOCK: usize = 512;
/// Each packet is sent again this often while no answer comes, this many times.
const RETRY: Duration = Duration::from_secs(1);
const TRIES: u32 = 5;

/// The whole file `name` from the TFTP server at `server`, at most `max` bytes.
pub async fn get(server: SocketAddr, name: &str, max: usize) -> Result<Vec<u8>, String> {
    let bind = if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let sock = UdpSocket::bind(bind)
        .await
        .map_err(|e| format!("binding a UDP socket: {e}"))?;
    let mut request = RRQ.to_be_bytes().to_vec();
    request.extend(name.as_bytes());
    request.push(0);
    request.extend(b"octet\0");
    // The server answers from a port of its own (its transfer id), which the rest of the
    // transfer then goes to.
    let mut last = request;
    let mut peer: Option<SocketAddr> = None;
    let mut file = Vec::new();
    let mut want: u16 = 1;
    let mut buf = [0u8; 4 + BLOCK];
    let mut tries = 0;
    loop {
        sock.send_to(&last, peer.unwrap_or(server))
            .await
            .map_err(|e| format!("sending to {server}: {e}"))?;
        let (n, from) = match tokio::time::timeout(RETRY, sock.recv_from(&mut buf)).await {
            Ok(r) => r.map_err(|e| format!("receiving from {server}: {e}"))?,
            Err(_) => {
                tries += 1;
                if tries >= TRIES {
                    return Err(format!("{server}: no answer to {name:?}"));
                }
                continue;
            }
        };
        if from.ip() != server.ip() || peer.is_some_and(|p| p != from) || n < 4 {
            continue;
        }
        let op = u16::from_be_bytes([buf[0], buf[1]]);
        let arg = u16::from_be_bytes([buf[2], buf[3]]);
        match op {
            ERROR => {
                let msg = String::from_utf8_lossy(&buf[4..n]);
                return Err(format!(
                    "{server}: {name:?}: error {arg}: {}",
                    msg.trim_end_matches('\0')
                ));
            }
            DATA if arg == want => {
                peer = Some(from);
                tries = 0;
                file.extend_from_slice(&buf[4..n]);
                if file.len() > max {
                    return Err(format!("{name:?} is larger than {max} bytes"));
                }
                last = [ACK.to_be_bytes(), arg.to_be_bytes()].concat();
                if n - 4 < BLOCK {
                    // The last ACK goes once: a server that misses it only retries the end.
                    let _ = sock.send_to(&last, from).await;
                    return Ok(file);
                }
                want = want.wrapping_add(1);
            }
            // A repeat of the block before (our ACK was lost): `last` acknowledges it again.
            DATA => {}
            _ => return Err(format!("{server}: unexpected TFTP opcode {op}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-file TFTP server on loopback, as small as the protocol allows: answers a read
    /// request for `name` with `data`, or an error for any other name.
    async fn serve_once(data: Vec<u8>, name: &'static str) -> SocketAddr {
        let listen = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = listen.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 600];
            let (n, client) = listen.recv_from(&mut buf).await.unwrap();
            let asked = String::from_utf8_lossy(&buf[2..n])
                .split('\0')
                .next()
                .unwrap()
                .to_string();
            let tid = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            if asked != name {
                let mut e = vec![0, 5, 0, 1];
                e.extend(b"File not found\0");
                tid.send_to(&e, client).await.unwrap();
                return;
            }
            let blocks: Vec<&[u8]> = data.chunks(BLOCK).collect();
            let count = if data.len().is_multiple_of(BLOCK) {
                blocks.len() + 1
            } else {
                blocks.len()
            };
            for i in 0..count {
                let chunk = blocks.get(i).copied().unwrap_or(&[]);
                let mut p = vec![0, 3];
                p.extend(((i + 1) as u16).to_be_bytes());
                p.extend(chunk);
                tid.send_to(&p, client).await.unwrap();
                let (_, _) = tid.recv_from(&mut buf).await.unwrap();
                assert_eq!(&buf[..4], &[0, 4, ((i + 1) >> 8) as u8, (i + 1) as u8]);
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_file_of_several_blocks_arrives_whole() {
        for len in [0, 10, 512, 1500] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let server = serve_once(data.clone(), "host.toml").await;
            assert_eq!(
                get(server, "host.toml", 4096).await.unwrap(),
                data,
                "{len} bytes"
            );
        }
    }

    #[tokio::test]
    async fn errors_and_oversized_files_are_refused() {
        let server = serve_once(vec![1; 10], "host.toml").await;
        let e = get(server, "other.toml", 4096).await.unwrap_err();
        assert!(e.contains("File not found"), "{e}");
        let server = serve_once(vec![1; 1500], "host.toml").await;
        let e = get(server, "host.toml", 1000).await.unwrap_err();
        assert!(e.contains("larger than 1000"), "{e}");
    }
}
