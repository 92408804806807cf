//! Files sent to the host (`PUT /uploads/NAME`), read in pieces as the connection takes them,
//! with a progress bar and the sha256 computed on the way, held to the one the host reports.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use sha2::{Digest, Sha256};

use crate::client::Client;
use crate::progress::Progress;

const PIECE: usize = 256 << 10;

/// The name a local file is uploaded under: its file name, with what the host does not take
/// in a name (see apid's `upload::valid_name`) replaced by `_`.
pub fn name_for(path: &Path) -> String {
    let base = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut name: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(128)
        .collect();
    if name.is_empty() {
        name.push_str("upload");
    } else if name.starts_with('.') {
        name.replace_range(..1, "_");
    }
    name
}

/// A file as a request body, hashed and counted as it is sent.
pub struct FileBody {
    file: std::fs::File,
    len: u64,
    sent: u64,
    hash: Sha256,
    /// Filled with the digest once the last byte is read.
    digest: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    progress: Progress,
}

impl Body for FileBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        // A local file reads quickly enough to do it here, on the one thread a CLI has.
        let mut buf = vec![0u8; PIECE];
        let n = match self.file.read(&mut buf) {
            Ok(n) => n,
            Err(e) => return Poll::Ready(Some(Err(e))),
        };
        if n == 0 {
            if self.sent != self.len {
                let e = std::io::Error::other("the file changed size while it was sent");
                return Poll::Ready(Some(Err(e)));
            }
            return Poll::Ready(None);
        }
        // Never more than was announced: hyper stops asking once Content-Length is sent.
        let n = n.min(usize::try_from(self.len - self.sent).unwrap_or(usize::MAX));
        buf.truncate(n);
        self.hash.update(&buf);
        self.sent += n as u64;
        if self.sent == self.len {
            let digest = model::hex(&std::mem::take(&mut self.hash).finalize());
            if let Ok(mut d) = self.digest.lock() {
                *d = Some(digest);
            }
        }
        let (sent, len) = (self.sent, self.len);
        self.progress.update(sent, len, "uploading");
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(buf)))))
    }

    fn is_end_stream(&self) -> bool {
        self.sent >= self.len
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len - self.sent.min(self.len))
    }
}

/// A local file being sent (its body went into the request): what it was once sent.
pub struct Sending {
    pub len: u64,
    digest: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    tty: bool,
    started: std::time::Instant,
}

/// `path` as a request body, hashed and drawn on a terminal as it goes.
pub fn sending(path: &Path) -> anyhow::Result<(FileBody, Sending)> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = file.metadata()?.len();
    let digest = std::sync::Arc::new(std::sync::Mutex::new(None));
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let body = FileBody {
        file,
        len,
        sent: 0,
        hash: Sha256::new(),
        digest: digest.clone(),
        progress: Progress::of_bytes(),
    };
    let sending = Sending {
        len,
        digest,
        tty,
        started: std::time::Instant::now(),
    };
    Ok((body, sending))
}

impl Sending {
    /// Once the request is answered: the sha256 of what was sent, checked against the one the
    /// host reports (`theirs`), and a line saying how it went ("`verb` `what`: N bytes in …").
    pub fn finish(&self, verb: &str, what: &str, theirs: &str) -> anyhow::Result<String> {
        if self.tty {
            // The bar's line, unless the body's end closed it already.
            eprint!("\r\x1b[K");
        }
        let ours = match self.digest.lock().ok().and_then(|d| d.clone()) {
            Some(d) => d,
            None if self.len == 0 => model::hex(&Sha256::digest(b"")),
            None => bail!("{what} was not sent whole"),
        };
        if ours != theirs {
            bail!("the host stored {what} with sha256 {theirs}, not the {ours} sent");
        }
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        eprintln!(
            "{verb} {what}: {} bytes in {secs:.1} s ({:.1} MiB/s), sha256 {ours}",
            self.len,
            self.len as f64 / secs / f64::from(1 << 20)
        );
        Ok(ours)
    }
}

/// Uploads `path`; returns the name it is stored under on the host.
pub async fn push(client: &Client, path: &Path) -> anyhow::Result<String> {
    Ok(push_hashed(client, path).await?.0)
}

/// Uploads `path`; returns the name it is stored under on the host and its sha256 (hex).
pub async fn push_hashed(client: &Client, path: &Path) -> anyhow::Result<(String, String)> {
    let name = name_for(path);
    let (body, sending) = sending(path)?;
    let answer = client.upload(&name, body, sending.len).await;
    let answer = answer.with_context(|| format!("uploading {}", path.display()))?;
    let stored: serde_json::Value = serde_json::from_str(&answer)
        .map_err(|e| anyhow!("the host's answer to the upload is not JSON ({e}): {answer}"))?;
    let digest = sending.finish(
        "uploaded",
        &name,
        stored["sha256"].as_str().unwrap_or_default(),
    )?;
    Ok((name, digest))
}

/// `cairnctl upload FILE...`: each file uploaded in turn; prints `upload:NAME sha256:HEX` per
/// file (or a JSON array of {file, source, sha256}).
pub async fn push_all(client: &Client, files: &[PathBuf], json: bool) -> anyhow::Result<()> {
    let mut stored = Vec::new();
    for file in files {
        let (name, digest) = push_hashed(client, file).await?;
        let source = format!("upload:{name}");
        if !json {
            println!("{source} sha256:{digest}");
        }
        stored.push(serde_json::json!({
            "file": file.display().to_string(),
            "source": source,
            "sha256": format!("sha256:{digest}"),
        }));
    }
    if json {
        println!("{}", serde_json::Value::Array(stored));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_names_become_names_the_host_takes() {
        assert_eq!(
            name_for(Path::new("/x/cairn-0.1.1.update")),
            "cairn-0.1.1.update"
        );
        assert_eq!(name_for(Path::new("my disk (1).raw")), "my_disk__1_.raw");
        assert_eq!(name_for(Path::new(".hidden")), "_hidden");
        assert_eq!(name_for(Path::new("/")), "upload");
        assert_eq!(name_for(Path::new(&"é".repeat(200))).len(), 128);
    }
}
