//! `cairnctl ct push LOCAL NAME:/path` and `cairnctl ct pull NAME:/path LOCAL`, as `incus file
//! push|pull`: files streamed into and out of a container through apid's
//! `PUT|GET /ct/NAME/files?path=…` (the host opens them inside the container's root).
//! `cairnctl template import NAME FILE` with a local FILE uploads it first (`crate::upload`).

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, bail};
use clap::Args;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::StatusCode;

use crate::client::{CallError, Client};
use crate::progress::Progress;

/// The header carrying a pulled file's permission bits, and a refusal's fault code.
const MODE_HEADER: &str = "x-cairn-mode";
const FAULT_HEADER: &str = "x-cairn-fault";

#[derive(Args, Debug)]
pub struct PushArgs {
    /// The local file to send.
    pub local: PathBuf,
    /// Where it goes: the container's name and an absolute path in it, NAME:/path.
    pub target: String,
    /// Its permission bits in octal, e.g. 0755 (default: the local file's).
    #[arg(long, value_parser = octal)]
    pub mode: Option<u32>,
    /// Its owner as the container sees it (default 0, the container's root).
    #[arg(long, default_value_t = 0)]
    pub uid: u32,
    /// Its group as the container sees it (default 0).
    #[arg(long, default_value_t = 0)]
    pub gid: u32,
}

#[derive(Args, Debug)]
pub struct PullArgs {
    /// What to fetch: the container's name and an absolute path in it, NAME:/path.
    pub source: String,
    /// Where it goes: a local file, a directory (the file keeps its name), or - for stdout.
    pub local: PathBuf,
}

fn octal(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("{s:?} is not a mode: octal permission bits, 0 to 7777"))
}

/// `NAME:/path` split; the path must be absolute.
pub fn split_target(s: &str) -> anyhow::Result<(&str, &str)> {
    match s.split_once(':') {
        Some((name, path)) if !name.is_empty() && path.starts_with('/') => Ok((name, path)),
        _ => bail!("{s:?}: expected NAME:/absolute/path (a container and a path in it)"),
    }
}

/// Percent-encodes a query value (everything but unreserved characters and `/`).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn files_uri(name: &str, path: &str) -> String {
    format!("/ct/{name}/files?path={}", encode(path))
}

/// A refused transfer as the fault the host named (X-Cairn-Fault), else as HTTP.
async fn refusal(resp: hyper::Response<hyper::body::Incoming>) -> CallError {
    let status = resp.status();
    let code = resp
        .headers()
        .get(FAULT_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok());
    let body = Limited::new(resp.into_body(), 64 << 10)
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_string())
        .unwrap_or_default();
    match (status, code) {
        (StatusCode::UNAUTHORIZED, _) => CallError::Unauthorized,
        (_, Some(code)) => CallError::Fault {
            code,
            message: body,
        },
        _ => CallError::Http { status, body },
    }
}

pub async fn push(client: &Client, args: &PushArgs) -> anyhow::Result<()> {
    let (name, path) = split_target(&args.target)?;
    let meta = std::fs::metadata(&args.local)
        .with_context(|| format!("reading {}", args.local.display()))?;
    if !meta.is_file() {
        bail!("{} is not a regular file", args.local.display());
    }
    let mode = args.mode.unwrap_or(meta.permissions().mode() & 0o7777);
    let uri = format!(
        "{}&mode={mode:04o}&uid={}&gid={}",
        files_uri(name, path),
        args.uid,
        args.gid
    );
    let (body, sending) = crate::upload::sending(&args.local)?;
    let mut send = client.connect().await?;
    let req = client
        .request(hyper::Method::PUT, &uri)
        .header(hyper::header::CONTENT_TYPE, "application/octet-stream")
        .header(hyper::header::CONTENT_LENGTH, sending.len)
        .body(body)
        .map_err(|e| anyhow!("{e}"))?;
    let resp = send
        .send_request(req)
        .await
        .map_err(|e| anyhow!("sending {}: {e}", args.local.display()))?;
    if resp.status() != StatusCode::CREATED {
        return Err(refusal(resp).await).with_context(|| format!("pushing to {}", args.target));
    }
    let answer = Limited::new(resp.into_body(), 64 << 10)
        .collect()
        .await
        .map_err(|e| anyhow!("reading the answer: {e}"))?
        .to_bytes();
    let stored: serde_json::Value = serde_json::from_slice(&answer)
        .map_err(|e| anyhow!("the host's answer is not JSON ({e})"))?;
    sending.finish(
        "pushed",
        &args.target,
        stored["sha256"].as_str().unwrap_or_default(),
    )?;
    Ok(())
}

/// Where a pulled `source_path` goes: `local`, or inside it when it is a directory.
fn destination(local: &Path, source_path: &str) -> PathBuf {
    if local.is_dir() {
        let base = source_path.rsplit('/').next().unwrap_or("file");
        local.join(base)
    } else {
        local.to_path_buf()
    }
}

pub async fn pull(client: &Client, args: &PullArgs) -> anyhow::Result<()> {
    let (name, path) = split_target(&args.source)?;
    let mut send = client.connect::<Empty<bytes::Bytes>>().await?;
    let req = client
        .request(hyper::Method::GET, &files_uri(name, path))
        .body(Empty::new())
        .map_err(|e| anyhow!("{e}"))?;
    let resp = send
        .send_request(req)
        .await
        .map_err(|e| anyhow!("asking for {}: {e}", args.source))?;
    if resp.status() != StatusCode::OK {
        return Err(refusal(resp).await).with_context(|| format!("pulling {}", args.source));
    }
    let mode = resp
        .headers()
        .get(MODE_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| u32::from_str_radix(v, 8).ok())
        .unwrap_or(0o644);
    let len = resp
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let to_stdout = args.local.as_os_str() == "-";
    let dest = destination(&args.local, path);
    // Whole or nothing here too: a hidden part beside the destination, renamed at the end.
    let part = dest.with_file_name(format!(
        ".{}.part",
        dest.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    let mut out: Box<dyn std::io::Write> = if to_stdout {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(
            std::fs::File::create(&part).with_context(|| format!("creating {}", part.display()))?,
        )
    };
    // Not over what it writes to the terminal.
    let mut progress = (!to_stdout).then(Progress::of_bytes);
    let mut body = resp.into_body();
    let mut got = 0u64;
    let result: anyhow::Result<()> = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| anyhow!("receiving {}: {e}", args.source))?;
            if let Ok(data) = frame.into_data() {
                out.write_all(&data)?;
                got += data.len() as u64;
                if let Some(p) = progress.as_mut() {
                    p.update(got, len, "pulling");
                }
            }
        }
        out.flush()?;
        if got != len {
            bail!("{} arrived with {got} of its {len} bytes", args.source);
        }
        Ok(())
    }
    .await;
    drop(out);
    if let Some(p) = progress.as_mut() {
        p.finish();
    }
    if to_stdout {
        return result;
    }
    if let Err(e) = result {
        let _ = std::fs::remove_file(&part);
        return Err(e);
    }
    std::fs::set_permissions(&part, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", part.display()))?;
    std::fs::rename(&part, &dest).with_context(|| format!("renaming into {}", dest.display()))?;
    eprintln!(
        "pulled {} into {} ({got} bytes, mode {mode:04o})",
        args.source,
        dest.display()
    );
    Ok(())
}

/// Whether `cairnctl template import NAME PATH` names a local file to upload first (not a URL,
/// bundled:NAME or upload:NAME, and a file that is here).
pub fn is_local_template(path: &str) -> bool {
    !path.contains("://")
        && !path.starts_with("bundled:")
        && !path.starts_with("upload:")
        && Path::new(path).is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_encoding() {
        assert_eq!(split_target("web1:/etc/x").unwrap(), ("web1", "/etc/x"));
        assert_eq!(split_target("a:/b:c").unwrap(), ("a", "/b:c"));
        for bad in ["web1", "web1:etc", ":/x", "/x"] {
            assert!(split_target(bad).is_err(), "{bad}");
        }
        assert_eq!(encode("/a b/ü&x=1"), "/a%20b/%C3%BC%26x%3D1");
        assert_eq!(files_uri("c", "/x y"), "/ct/c/files?path=/x%20y");
        assert_eq!(octal("0751"), Ok(0o751));
        assert_eq!(octal("4755"), Ok(0o4755));
        assert!(octal("8").is_err() && octal("17777").is_err());
    }

    #[test]
    fn pulled_files_keep_their_name_in_a_directory() {
        let dir = std::env::temp_dir();
        assert_eq!(destination(&dir, "/etc/hostname"), dir.join("hostname"));
        assert_eq!(
            destination(Path::new("/nonexistent/out"), "/etc/hostname"),
            Path::new("/nonexistent/out")
        );
        assert!(!is_local_template("https://h/x.tar"));
        assert!(!is_local_template("bundled:busybox"));
        assert!(!is_local_template("/nonexistent.tar"));
    }
}
