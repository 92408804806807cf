//! Records on disk that are either old or new, never torn.

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Writes to a temporary name (unique per process, so two writers never share one), syncs it,
/// renames it over `path` and syncs the directory: a reader never sees half a file, and after
/// a power cut `path` holds the old contents or the new ones, never an empty or torn file.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    write_atomic_mode(path, data, 0o666)
}

/// [`write_atomic`] of a file made with `mode` (less the umask) from its first byte: for a
/// file of secrets, which must never be readable by others, not even for a moment.
pub fn write_atomic_mode(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    // A leftover of a crashed writer would keep its own mode: `mode` applies to new files.
    let _ = std::fs::remove_file(&tmp);
    let result = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(data)?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    sync_dir_of(path)
}

/// Syncs the directory holding `path`, so that a name just made or renamed there survives a
/// power cut.
pub fn sync_dir_of(path: &Path) -> std::io::Result<()> {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}
