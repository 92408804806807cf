//! `cairn.config=<URL>` on the kernel command line: one PXE menu for a whole fleet, each host
//! fetching its own file. `${mac}`, `${uuid}`, `${serial}` and `${hostname}` in the URL become
//! this host's first NIC's MAC (`52:54:00:12:34:56`), its SMBIOS UUID and serial number and its
//! hostname. The host boots into maintenance mode (which brings up DHCP), fetches the URL until
//! it answers, and applies what it got like `host.applyConfig`. `http://` and `tftp://` (the
//! PXE server's own protocol); `https://` is refused with that said (see the note on
//! [`fetch`]).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The kernel command line's parameter.
const PARAM: &str = "cairn.config=";
/// A host.toml larger than this is not one.
const MAX_BYTES: usize = 4 << 20;
const TIMEOUT: Duration = Duration::from_secs(10);

/// The URL `cairn.config=` gives on `cmdline`, if any.
pub fn from_cmdline(cmdline: &str) -> Option<String> {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix(PARAM))
        .filter(|u| !u.is_empty())
        .map(str::to_string)
}

/// What `${name}` stands for on this host.
pub struct Vars {
    pub mac: String,
    pub uuid: String,
    pub serial: String,
    pub hostname: String,
}

impl Vars {
    pub fn of_this_host(mac: Option<&str>) -> Vars {
        let dmi = |f: &str| {
            std::fs::read_to_string(format!("/sys/class/dmi/id/{f}"))
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        Vars {
            mac: mac.unwrap_or_default().to_lowercase(),
            uuid: dmi("product_uuid").to_lowercase(),
            serial: dmi("product_serial"),
            hostname: nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
        }
    }

    pub fn expand(&self, url: &str) -> String {
        url.replace("${mac}", &self.mac)
            .replace("${uuid}", &self.uuid)
            .replace("${serial}", &self.serial)
            .replace("${hostname}", &self.hostname)
    }
}

/// The file at `url` as text: http:// or tftp://. Not https:// yet: verifying a server
/// certificate needs trust roots the image does not carry (a pinned CA or fingerprint on the
/// command line is the plan), and a config fetched over unverified TLS is no safer than HTTP.
pub async fn fetch(url: &str) -> Result<String, String> {
    if let Some(rest) = url.strip_prefix("tftp://") {
        return fetch_tftp(url, rest).await;
    }
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        format!("{url}: only http:// and tftp:// URLs are fetched (not https:// yet)")
    })?;
    let (authority, path, addr) = split(rest, 80);
    let work = async {
        let mut stream = tokio::net::TcpStream::connect(&addr)
            .await
            .map_err(|e| format!("connecting to {addr}: {e}"))?;
        let request =
            format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: cairn-init\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("sending the request to {addr}: {e}"))?;
        let mut body = Vec::new();
        stream
            .take(MAX_BYTES as u64 + 64 * 1024)
            .read_to_end(&mut body)
            .await
            .map_err(|e| format!("reading the answer from {addr}: {e}"))?;
        Ok::<Vec<u8>, String>(body)
    };
    let answer = tokio::time::timeout(TIMEOUT, work)
        .await
        .map_err(|_| format!("{url}: no answer within {} s", TIMEOUT.as_secs()))??;
    body_of(url, &answer)
}

/// A URL's `host[:port]/path` after its scheme: the authority, the path (`/` when none) and
/// the address to connect to (`default_port` when the authority names none).
pub fn split(rest: &str, default_port: u16) -> (&str, &str, String) {
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:{default_port}")
    };
    (authority, path, addr)
}

/// `tftp://host[:port]/name`.
async fn fetch_tftp(url: &str, rest: &str) -> Result<String, String> {
    let (authority, path, with_port) = split(rest, 69);
    let name = path
        .strip_prefix('/')
        .filter(|n| !n.is_empty())
        .ok_or_else(|| format!("{url}: no file name"))?;
    let server = tokio::net::lookup_host(&with_port)
        .await
        .map_err(|e| format!("{url}: {e}"))?
        .next()
        .ok_or_else(|| format!("{url}: {authority} has no address"))?;
    let work = crate::tftp::get(server, name, MAX_BYTES);
    let data = tokio::time::timeout(TIMEOUT, work)
        .await
        .map_err(|_| format!("{url}: no answer within {} s", TIMEOUT.as_secs()))?
        .map_err(|e| format!("{url}: {e}"))?;
    String::from_utf8(data).map_err(|_| format!("{url}: not UTF-8 text"))
}

/// The body of an HTTP/1.x answer with status 200.
fn body_of(url: &str, answer: &[u8]) -> Result<String, String> {
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("{url}: not an HTTP answer"))?;
    let head = String::from_utf8_lossy(&answer[..split]);
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("{url}: {status}"));
    }
    let body = &answer[split + 4..];
    if body.len() > MAX_BYTES {
        return Err(format!("{url}: larger than {MAX_BYTES} bytes"));
    }
    String::from_utf8(body.to_vec()).map_err(|_| format!("{url}: not UTF-8 text"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_comes_from_the_command_line_with_this_hosts_values() {
        let cmdline = "console=ttyS0 cairn.config=http://10.0.2.2:8000/${mac}.toml quiet";
        let url = from_cmdline(cmdline).unwrap();
        let vars = Vars {
            mac: "52:54:00:12:34:56".into(),
            uuid: "u-1".into(),
            serial: "s-1".into(),
            hostname: "h".into(),
        };
        assert_eq!(
            vars.expand(&url),
            "http://10.0.2.2:8000/52:54:00:12:34:56.toml"
        );
        assert_eq!(
            vars.expand("http://x/${uuid}/${serial}/${hostname}"),
            "http://x/u-1/s-1/h"
        );
        assert_eq!(from_cmdline("console=ttyS0 cairn.config="), None);
        assert_eq!(from_cmdline("quiet"), None);
    }

    #[test]
    fn only_a_200_answer_is_a_config() {
        let ok = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n[host]\n";
        assert_eq!(body_of("u", ok).unwrap(), "[host]\n");
        let missing = b"HTTP/1.0 404 File not found\r\n\r\nnope";
        assert_eq!(
            body_of("u", missing).unwrap_err(),
            "u: HTTP/1.0 404 File not found"
        );
        assert!(body_of("u", b"garbage").is_err());
    }

    #[tokio::test]
    async fn https_is_refused_with_the_reason() {
        let e = fetch("https://10.0.2.2/host.toml").await.unwrap_err();
        assert!(e.contains("not https:// yet"), "{e}");
        let e = fetch("tftp://127.0.0.1").await.unwrap_err();
        assert!(e.contains("no file name"), "{e}");
    }
}
