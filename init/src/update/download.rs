//! Fetching a bundle over plain HTTP/1.0 straight onto the state partition: streamed in 1 MiB
//! pieces, never held whole in memory (a bundle is tens of MiB), synced before it is read.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use super::UpdateError;

/// Larger than any OS slot (256 MiB) can hold.
const MAX_BYTES: u64 = 256 << 20;
const TIMEOUT: Duration = Duration::from_secs(30);

/// GETs `url` (http://) into `to`; `progress(done, total)` after each piece (total 0 when the
/// server does not say).
pub fn get(url: &str, to: &Path, mut progress: impl FnMut(u64, u64)) -> Result<u64, UpdateError> {
    let fail = |m: String| UpdateError::Io(format!("{url}: {m}"));
    // The URL rules apid's downloads follow too (model::url).
    let parsed = model::url::HttpUrl::parse(url).map_err(UpdateError::Invalid)?;
    if parsed.https {
        return Err(UpdateError::Invalid(format!("{url}: not an http:// URL")));
    }
    let (authority, path) = (parsed.host_header(), parsed.path.as_str());
    let sock = (parsed.host.as_str(), parsed.port)
        .to_socket_addrs()
        .map_err(|e| fail(e.to_string()))?
        .next()
        .ok_or_else(|| fail("no address".into()))?;
    let mut stream =
        TcpStream::connect_timeout(&sock, TIMEOUT).map_err(|e| fail(format!("connect: {e}")))?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .map_err(|e| fail(e.to_string()))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: cairn-init\r\n\r\n"
    )
    .map_err(|e| fail(format!("sending the request: {e}")))?;
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader
        .read_line(&mut status)
        .map_err(|e| fail(format!("reading the answer: {e}")))?;
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(fail(status.trim().to_string()));
    }
    let mut total = 0u64;
    loop {
        let mut line = String::new();
        let n = reader
            .read_line(&mut line)
            .map_err(|e| fail(format!("reading the headers: {e}")))?;
        if n == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            total = v.trim().parse().unwrap_or(0);
        }
    }
    if total > MAX_BYTES {
        return Err(UpdateError::Invalid(format!(
            "{url}: {total} bytes is no bundle"
        )));
    }
    let io = |e: std::io::Error| UpdateError::Io(format!("writing {}: {e}", to.display()));
    let mut out = std::fs::File::create(to).map_err(io)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| fail(format!("reading the body: {e}")))?;
        if n == 0 {
            break;
        }
        done += n as u64;
        if done > MAX_BYTES {
            return Err(UpdateError::Invalid(format!(
                "{url}: larger than any bundle"
            )));
        }
        out.write_all(&buf[..n]).map_err(io)?;
        progress(done, total);
    }
    if total != 0 && done != total {
        return Err(fail(format!("ended after {done} of {total} bytes")));
    }
    out.sync_all().map_err(io)?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn a_bundle_comes_over_http_with_progress_and_https_is_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        let sent = body.clone();
        let server = std::thread::spawn(move || {
            let (sock, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(sock.try_clone().unwrap());
            let mut request = String::new();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                request.push_str(&line);
                if line == "\r\n" || line.is_empty() {
                    break;
                }
            }
            let mut sock = sock;
            write!(
                sock,
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n",
                sent.len()
            )
            .unwrap();
            sock.write_all(&sent).unwrap();
            request
        });
        let to = std::env::temp_dir().join(format!("cairn-download-{}", std::process::id()));
        let mut seen = Vec::new();
        let url = format!("http://{addr}/b.update?x=1");
        let n = get(&url, &to, |done, total| seen.push((done, total))).unwrap();
        let request = server.join().unwrap();
        assert!(
            request.starts_with("GET /b.update?x=1 HTTP/1.0\r\n"),
            "{request}"
        );
        assert!(request.contains(&format!("Host: {addr}\r\n")), "{request}");
        assert_eq!(n, body.len() as u64);
        assert_eq!(std::fs::read(&to).unwrap(), body);
        assert_eq!(seen.last(), Some(&(n, n)));
        std::fs::remove_file(&to).unwrap();

        for bad in ["https://h/b.update", "http://u:p@h/b.update", "ftp://h/b"] {
            assert!(
                matches!(get(bad, &to, |_, _| {}), Err(UpdateError::Invalid(_))),
                "{bad}"
            );
        }
    }
}
