//! The API's server certificate as a TLS 1.2 handshake shows it, before any key exchange: the
//! appliance makes its certificate at first boot, and `image run` prints its fingerprint for
//! the user to pin (cairnctl, curl). TLS 1.2 sends the Certificate message in the clear, so a
//! ClientHello and a bounded read of the answer's records are enough; no verification happens
//! here, and the connection is dropped after it.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// More than any certificate chain apid sends; a server sending more is not ours.
const MAX_HANDSHAKE: usize = 256 << 10;
/// The largest TLS record (2^14 bytes of plaintext plus what protection may add).
const MAX_RECORD: usize = (1 << 14) + 2048;

/// The DER of the first (leaf) certificate the server on the loopback `port` sends.
pub fn server_certificate(port: u16) -> Result<Vec<u8>> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .context("setting a read timeout")?;
    std::io::Write::write_all(&mut s, &crate::qemu::client_hello())
        .with_context(|| format!("sending a ClientHello to {addr}"))?;
    leaf_certificate(&mut s)
}

/// Reads TLS records from `r` until the handshake's Certificate message is whole.
pub fn leaf_certificate(r: &mut impl Read) -> Result<Vec<u8>> {
    let mut handshake = Vec::new();
    loop {
        let mut head = [0u8; 5];
        r.read_exact(&mut head).context("reading a TLS record")?;
        let len = usize::from(u16::from_be_bytes([head[3], head[4]]));
        if len > MAX_RECORD {
            bail!("a TLS record of {len} bytes: not a TLS server");
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).context("reading a TLS record")?;
        match head[0] {
            0x16 => handshake.extend_from_slice(&body),
            0x15 => bail!("the server refused the handshake (TLS alert {:?})", body),
            other => bail!("unexpected TLS record type {other} before the certificate"),
        }
        if handshake.len() > MAX_HANDSHAKE {
            bail!("no certificate in the first {MAX_HANDSHAKE} bytes of the handshake");
        }
        if let Some(cert) = find_certificate(&handshake)? {
            return Ok(cert);
        }
    }
}

/// The leaf certificate when `hs` (handshake messages so far) holds the whole Certificate
/// message; `None` while it is incomplete.
fn find_certificate(hs: &[u8]) -> Result<Option<Vec<u8>>> {
    let mut at = 0;
    while hs.len() >= at + 4 {
        let kind = hs[at];
        let len = u24(&hs[at + 1..at + 4]);
        let Some(body) = hs.get(at + 4..at + 4 + len) else {
            return Ok(None);
        };
        match kind {
            // Certificate: a 3-byte list length, then 3-byte-length-prefixed certificates.
            11 => {
                let first = body
                    .get(3..6)
                    .map(u24)
                    .and_then(|n| body.get(6..6 + n))
                    .filter(|c| !c.is_empty());
                return match first {
                    Some(cert) => Ok(Some(cert.to_vec())),
                    None => bail!("the server's Certificate message holds no certificate"),
                };
            }
            // ServerHelloDone: the server sent no certificate.
            14 => bail!("the server sent no certificate"),
            _ => at += 4 + len,
        }
    }
    Ok(None)
}

fn u24(b: &[u8]) -> usize {
    (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut r = vec![kind, 3, 3];
        r.extend_from_slice(&(body.len() as u16).to_be_bytes());
        r.extend_from_slice(body);
        r
    }

    fn message(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![kind];
        m.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn the_leaf_is_found_across_records() {
        let leaf = b"leaf-der".to_vec();
        let mut list = Vec::new();
        for c in [&leaf[..], b"ca-der"] {
            list.extend_from_slice(&(c.len() as u32).to_be_bytes()[1..]);
            list.extend_from_slice(c);
        }
        let mut cert_body = (list.len() as u32).to_be_bytes()[1..].to_vec();
        cert_body.extend_from_slice(&list);
        let mut hs = message(2, b"server hello");
        hs.extend(message(11, &cert_body));
        hs.extend(message(14, b""));
        // Split inside the Certificate message: it must be put together again.
        let (a, b) = hs.split_at(20);
        let mut wire = record(0x16, a);
        wire.extend(record(0x16, b));
        assert_eq!(leaf_certificate(&mut wire.as_slice()).unwrap(), leaf);
    }

    #[test]
    fn alerts_and_missing_certificates_are_errors() {
        let alert = record(0x15, &[2, 40]);
        assert!(leaf_certificate(&mut alert.as_slice()).is_err());
        let mut hs = message(2, b"hello");
        hs.extend(message(14, b""));
        assert!(leaf_certificate(&mut record(0x16, &hs).as_slice()).is_err());
        let truncated = record(0x16, &message(2, b"hello"));
        assert!(
            leaf_certificate(&mut truncated.as_slice()).is_err(),
            "EOF is an error"
        );
        let mut huge = vec![0x16, 3, 3, 0xff, 0xff];
        huge.resize(64, 0);
        assert!(leaf_certificate(&mut huge.as_slice()).is_err());
    }
}
