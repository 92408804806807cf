//! File-level work of a dir pool: reflinks, sparse copies, preallocation and the sizes a
//! filesystem reports.

use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use nix::errno::Errno;
use nix::unistd::{Whence, lseek};

nix::ioctl_write_int!(ficlone, 0x94, 9);

/// How a copy was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Copied {
    /// The filesystem shares the blocks (xfs with reflink, btrfs): instant, no space used.
    Reflink,
    /// Only the data extents were copied; holes stay holes.
    Sparse,
}

/// Copies `from` to the new file `to` (which must not exist): a reflink where the filesystem
/// has them, else a sparse copy. `to` is synced; on an error it is removed.
pub fn copy(from: &Path, to: &Path) -> std::io::Result<Copied> {
    let src = File::open(from)?;
    let dst = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to)?;
    let result = copy_into(&src, &dst).and_then(|how| {
        dst.sync_all()?;
        Ok(how)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(to);
    }
    result
}

fn copy_into(src: &File, dst: &File) -> std::io::Result<Copied> {
    // SAFETY: two open descriptors; FICLONE reads the source's number from the argument.
    match unsafe { ficlone(dst.as_raw_fd(), src.as_raw_fd() as libc::c_ulong) } {
        Ok(_) => return Ok(Copied::Reflink),
        // Not this filesystem's (or not across these two): copy the data instead.
        Err(Errno::EOPNOTSUPP | Errno::ENOTTY | Errno::EXDEV | Errno::EINVAL) => {}
        Err(e) => return Err(e.into()),
    }
    let len = src.metadata()?.len();
    let mut at = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    while at < len {
        let offset = i64::try_from(at).map_err(std::io::Error::other)?;
        let data = match lseek(src, offset, Whence::SeekData) {
            Ok(d) => d as u64,
            // No data after `at`: the rest is a hole.
            Err(Errno::ENXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let hole = lseek(src, data as i64, Whence::SeekHole).map_err(std::io::Error::from)? as u64;
        let mut pos = data;
        while pos < hole {
            let want = usize::try_from((hole - pos).min(buf.len() as u64)).unwrap_or(buf.len());
            let n = std::os::unix::fs::FileExt::read_at(src, &mut buf[..want], pos)?;
            if n == 0 {
                break;
            }
            std::os::unix::fs::FileExt::write_all_at(dst, &buf[..n], pos)?;
            pos += n as u64;
        }
        at = hole;
    }
    dst.set_len(len)?;
    Ok(Copied::Sparse)
}

/// Allocates every byte of `file` up to `len` (a fully provisioned volume).
pub fn preallocate(file: &File, len: u64) -> std::io::Result<()> {
    let len = i64::try_from(len).map_err(std::io::Error::other)?;
    nix::fcntl::fallocate(file, nix::fcntl::FallocateFlags::empty(), 0, len)
        .map_err(std::io::Error::from)
}

/// Bytes a file holds on its filesystem (its blocks, not its length).
pub fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.blocks() * 512)
}

/// (capacity, used, free to unprivileged writers) of the filesystem holding `path`.
pub fn space(path: &Path) -> std::io::Result<(u64, u64, u64)> {
    let st = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
    let frsize = st.fragment_size();
    let capacity = st.blocks() * frsize;
    let free = st.blocks_free() * frsize;
    let avail = st.blocks_available() * frsize;
    Ok((capacity, capacity.saturating_sub(free), avail))
}
