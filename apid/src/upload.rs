//! Streamed uploads on the API's HTTPS port: `PUT /uploads/NAME` with the API's Basic auth
//! stores the body as `STATE/uploads/NAME` — written as it arrives in pieces of at most
//! [`PIECE`] bytes, never held whole in memory, its sha256 computed on the way — and answers
//! `201` with `{"name", "size", "sha256"}` (JSON). Methods then name it `upload:NAME`
//! (`host.update("upload:cairn-0.1.1.update")`).
//!
//! A file appears whole or not at all: the body goes to a hidden `.NAME.part`, is synced, and
//! only then renamed over `NAME`. A client that sends `X-Cairn-Sha256` gets its upload refused
//! (and nothing kept) when the bytes that arrived hash differently. The state filesystem keeps
//! [`RESERVE`] free for the daemons' records, whatever the uploads.

use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt as _;
use sha2::{Digest, Sha256};

use crate::admission::{Held, Refusal, Shares};

pub const PATH_PREFIX: &str = "/uploads/";
/// The request header naming the sha256 (hex) the client expects the upload to have.
pub const SHA256_HEADER: &str = "x-cairn-sha256";
/// What `upload:NAME` arguments start with.
pub const SCHEME: &str = "upload:";

/// Bytes gathered before one write to the file.
const PIECE: usize = 1 << 20;
/// Free space on the state filesystem that uploads leave alone.
const RESERVE: u64 = 64 << 20;
/// The largest upload: a disk image is the largest thing anyone sends.
const MAX_BYTES: u64 = 64 << 30;
/// Uploads at once, in all and from one client (each costs a [`PIECE`] and a disk stream).
const MAX_UPLOADS: usize = 4;
const MAX_UPLOADS_PER_CLIENT: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error(
        "bad upload name {0:?}: 1 to 128 of A-Z a-z 0-9 . _ -, not starting with a dot (PUT /uploads/NAME)"
    )]
    Name(String),
    #[error("no upload named {0:?} (PUT /uploads/{0} first)")]
    Missing(String),
    #[error("too many uploads at once: {0}; retry when one has finished")]
    Busy(Refusal),
    #[error("the upload is larger than {} GiB", MAX_BYTES >> 30)]
    TooLarge,
    #[error(
        "no room on the state filesystem: {free} bytes free beside {RESERVE} kept for records, {need} more needed"
    )]
    NoSpace { free: u64, need: u64 },
    #[error("the upload stalled: nothing arrived for {} s", .0.as_secs())]
    Stalled(Duration),
    #[error(
        "the upload's sha256 is {got}, not the {want} that {SHA256_HEADER} announced; nothing kept"
    )]
    Digest { want: String, got: String },
    #[error("{SHA256_HEADER} is not 64 hex digits")]
    BadDigestHeader,
    #[error("reading the upload: {0}")]
    Read(String),
    #[error("storing the upload: {0}")]
    Io(String),
}

/// What was stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

impl Stored {
    pub fn to_json(&self) -> String {
        serde_json::json!({ "name": self.name, "size": self.size, "sha256": self.sha256 })
            .to_string()
    }
}

/// Where uploads are kept, and how many may run at once.
pub struct Uploads {
    dir: PathBuf,
    running: Arc<Shares>,
    /// How long the body may send nothing before the upload is dropped.
    stall: Duration,
}

/// Whether `name` may name an upload (a file in one directory: no separators, no `..`).
pub fn valid_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl Uploads {
    /// Uploads in `dir` (created); what a killed upload left half-written there is removed.
    pub fn new(dir: &Path, stall: Duration) -> std::io::Result<Uploads> {
        std::fs::create_dir_all(dir)?;
        for entry in std::fs::read_dir(dir)?.flatten() {
            if entry.file_name().to_string_lossy().ends_with(".part") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(Uploads {
            dir: dir.to_path_buf(),
            running: Shares::new(MAX_UPLOADS, MAX_UPLOADS_PER_CLIENT),
            stall,
        })
    }

    /// One of the uploads' slots, for another stream of a file (`crate::files`): files in and
    /// out of containers share the uploads' caps.
    pub fn hold_stream(&self, peer: IpAddr) -> Result<Held, UploadError> {
        self.running.hold(peer, 1).map_err(UploadError::Busy)
    }

    /// How long a stream may send nothing before it is dropped.
    pub fn stall(&self) -> Duration {
        self.stall
    }

    /// The file an `upload:NAME` argument names, when it names one that is there.
    pub fn resolve(&self, arg: &str) -> Option<Result<PathBuf, UploadError>> {
        let name = arg.strip_prefix(SCHEME)?;
        if !valid_name(name) {
            return Some(Err(UploadError::Name(name.to_string())));
        }
        let path = self.dir.join(name);
        Some(if path.is_file() {
            Ok(path)
        } else {
            Err(UploadError::Missing(name.to_string()))
        })
    }

    /// Stores `body` as `name`. `declared` is its Content-Length, `want` the announced sha256.
    /// `body` is a request's (an upload) or a response's (a download, `crate::fetch`).
    pub async fn receive<B>(
        &self,
        name: &str,
        peer: IpAddr,
        declared: Option<u64>,
        want: Option<&str>,
        mut body: B,
    ) -> Result<Stored, UploadError>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        if !valid_name(name) {
            return Err(UploadError::Name(name.to_string()));
        }
        let want = want
            .map(|w| {
                let w = w.trim().to_ascii_lowercase();
                (w.len() == 64 && w.bytes().all(|b| b.is_ascii_hexdigit()))
                    .then_some(w)
                    .ok_or(UploadError::BadDigestHeader)
            })
            .transpose()?;
        let _slot: Held = self.running.hold(peer, 1).map_err(UploadError::Busy)?;
        if declared.is_some_and(|n| n > MAX_BYTES) {
            return Err(UploadError::TooLarge);
        }
        self.check_room(declared.unwrap_or(0))?;
        let part = Part::create(&self.dir, name)?;
        let mut hash = Sha256::new();
        let mut piece = Vec::with_capacity(PIECE);
        let mut size = 0u64;
        loop {
            let frame = match tokio::time::timeout(self.stall, body.frame()).await {
                Err(_) => return Err(UploadError::Stalled(self.stall)),
                Ok(None) => break,
                Ok(Some(frame)) => frame.map_err(|e| UploadError::Read(e.to_string()))?,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            size += data.len() as u64;
            if size > MAX_BYTES {
                return Err(UploadError::TooLarge);
            }
            hash.update(&data);
            piece.extend_from_slice(&data);
            if piece.len() >= PIECE {
                // Checked per piece as well: other uploads and the daemons write beside this one.
                self.check_room(piece.len() as u64)?;
                piece = part.write(piece).await?;
            }
        }
        if !piece.is_empty() {
            self.check_room(piece.len() as u64)?;
            part.write(piece).await?;
        }
        let sha256 = model::hex(&hash.finalize());
        if let Some(want) = want
            && want != sha256
        {
            return Err(UploadError::Digest { want, got: sha256 });
        }
        part.keep(&self.dir.join(name)).await?;
        tracing::info!(name, size, %sha256, %peer, "upload stored");
        Ok(Stored {
            name: name.to_string(),
            size,
            sha256,
        })
    }

    fn check_room(&self, need: u64) -> Result<(), UploadError> {
        let free = crate::sys::free_bytes(&self.dir).map_err(|e| UploadError::Io(e.to_string()))?;
        if free < need.saturating_add(RESERVE) {
            return Err(UploadError::NoSpace {
                free: free.saturating_sub(RESERVE),
                need,
            });
        }
        Ok(())
    }
}

/// Removes the uploaded file at `path` once an import took it (a failed import keeps it for
/// another try); a file that cannot be removed is only logged.
pub fn consume(path: &str) {
    if let Err(e) = std::fs::remove_file(path) {
        tracing::warn!(path, error = %e, "cannot remove an imported upload");
    }
}

/// A path argument that may name an upload (`upload:NAME`): the uploaded file's host path,
/// else the argument as given. An upload that is not there -> 104, a bad name -> 102.
pub fn host_path(uploads: Option<&Uploads>, arg: &str) -> Result<String, crate::methods::Fault> {
    use crate::methods::Fault;
    use model::fault::FaultCode;
    match uploads.and_then(|u| u.resolve(arg)) {
        Some(Ok(path)) => Ok(path.display().to_string()),
        Some(Err(e @ UploadError::Missing(_))) => {
            Err(Fault::new(FaultCode::NotFound, e.to_string()))
        }
        Some(Err(e)) => Err(Fault::new(FaultCode::BadParams, e.to_string())),
        None if arg.starts_with(SCHEME) => Err(Fault::new(
            FaultCode::Conflict,
            format!("{arg}: this API keeps no uploads"),
        )),
        None => Ok(arg.to_string()),
    }
}

/// The hidden file an upload is written to; removed on drop unless kept.
struct Part {
    path: PathBuf,
    file: Arc<std::fs::File>,
    kept: bool,
}

impl Part {
    fn create(dir: &Path, name: &str) -> Result<Part, UploadError> {
        let path = dir.join(format!(".{name}.part"));
        let file = std::fs::File::create(&path)
            .map_err(|e| UploadError::Io(format!("{}: {e}", path.display())))?;
        Ok(Part {
            path,
            file: Arc::new(file),
            kept: false,
        })
    }

    /// Appends `piece` off the async threads; gives the buffer back, emptied, for the next one.
    async fn write(&self, mut piece: Vec<u8>) -> Result<Vec<u8>, UploadError> {
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || {
            (&*file).write_all(&piece)?;
            piece.clear();
            Ok(piece)
        })
        .await
        .map_err(|e| UploadError::Io(e.to_string()))?
        .map_err(|e: std::io::Error| match e.raw_os_error() {
            Some(libc::ENOSPC) => UploadError::NoSpace { free: 0, need: 0 },
            _ => UploadError::Io(e.to_string()),
        })
    }

    /// Syncs the file and renames it to `to` (then syncs the directory, so the name stays).
    async fn keep(mut self, to: &Path) -> Result<(), UploadError> {
        let (file, from, to) = (self.file.clone(), self.path.clone(), to.to_path_buf());
        tokio::task::spawn_blocking(move || {
            file.sync_all()?;
            std::fs::rename(&from, &to)?;
            if let Some(dir) = to.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        })
        .await
        .map_err(|e| UploadError::Io(e.to_string()))?
        .map_err(|e: std::io::Error| UploadError::Io(e.to_string()))?;
        self.kept = true;
        Ok(())
    }
}

impl Drop for Part {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_in_the_directory() {
        for good in ["cairn-0.1.1.update", "a", "disk_1.raw", &"x".repeat(128)] {
            assert!(valid_name(good), "{good}");
        }
        for bad in [
            "",
            ".hidden",
            "..",
            "a/b",
            "../x",
            "a b",
            "é",
            &"x".repeat(129),
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn upload_arguments_resolve_only_to_uploads_that_are_there() {
        let dir = std::env::temp_dir().join(format!("cairn-uploads-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(".left.part"), b"half").unwrap();
        let uploads = Uploads::new(&dir, Duration::from_secs(1)).unwrap();
        assert!(
            !dir.join(".left.part").exists(),
            "a killed upload's part is removed"
        );
        std::fs::write(dir.join("b.update"), b"x").unwrap();
        assert!(uploads.resolve("http://h/b.update").is_none());
        assert_eq!(
            uploads.resolve("upload:b.update").unwrap().unwrap(),
            dir.join("b.update")
        );
        let missing = uploads.resolve("upload:c.update").unwrap().unwrap_err();
        assert!(matches!(missing, UploadError::Missing(_)), "{missing}");
        let escape = uploads.resolve("upload:../b.update").unwrap().unwrap_err();
        assert!(matches!(escape, UploadError::Name(_)), "{escape}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
